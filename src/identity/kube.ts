// The identity service's two questions to the API server, through @kubernetes/client-node:
// a TokenReview, and the pods of a node (a field selector, so the server filters).
import { AuthenticationV1Api, CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import type { IdentityKube } from './service.ts';
import type { NodePod, ReviewStatus } from './authorize.ts';

export const IDENTITY_RBAC_HINT = 'the identity service\'s ServiceAccount needs create on tokenreviews (authentication.k8s.io) and list on pods; apply the ClusterRole from mesh-agent install';

function explain(e: unknown, what: string): Error {
  const code = (e as { code?: number }).code;
  const msg = (e as Error).message?.split('\n')[0] ?? String(e);
  return new Error(code === 403 ? `${what}: forbidden; ${IDENTITY_RBAC_HINT}` : `${what}: ${msg}`);
}

export function kubeIdentity(kc: KubeConfig): IdentityKube {
  const auth = kc.makeApiClient(AuthenticationV1Api);
  const core = kc.makeApiClient(CoreV1Api);
  return {
    async reviewToken(token, audiences) {
      try {
        const r = await auth.createTokenReview({ body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences } } });
        return (r.status ?? {}) as ReviewStatus;
      } catch (e) {
        throw explain(e, 'TokenReview');
      }
    },
    async podsOnNode(node) {
      try {
        const list = await core.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${node}` });
        return list.items.map((p): NodePod => ({
          namespace: p.metadata?.namespace ?? '',
          name: p.metadata?.name ?? '',
          serviceAccount: p.spec?.serviceAccountName || 'default',
          phase: p.status?.phase,
          hostNetwork: p.spec?.hostNetwork === true,
        }));
      } catch (e) {
        throw explain(e, `listing the pods of node ${node}`);
      }
    },
  };
}
