// The identity service's two questions to the API server, through @kubernetes/client-node:
// a TokenReview, and the pods of a node (a field selector, so the server filters).
import { AuthenticationV1Api, CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import type { IdentityKube } from './service.ts';
import type { NodePod, ReviewStatus } from './authorize.ts';

export const IDENTITY_RBAC_HINT = 'the identity service\'s ServiceAccount needs create on tokenreviews (authentication.k8s.io) and list on pods; apply the ClusterRole from mesh-agent install';

function explain(e: unknown, what: string, rbacHint = IDENTITY_RBAC_HINT): Error {
  const code = (e as { code?: number }).code;
  const msg = (e as Error).message?.split('\n')[0] ?? String(e);
  return new Error(code === 403 ? `${what}: forbidden; ${rbacHint}` : `${what}: ${msg}`);
}

/** A TokenReview through client-node; a 403 names the RBAC the caller's ServiceAccount lacks (rbacHint). */
export function tokenReviewer(kc: KubeConfig, rbacHint: string): (token: string, audiences: string[]) => Promise<ReviewStatus> {
  const auth = kc.makeApiClient(AuthenticationV1Api);
  return async (token, audiences) => {
    try {
      const r = await auth.createTokenReview({ body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences } } });
      return (r.status ?? {}) as ReviewStatus;
    } catch (e) {
      throw explain(e, 'TokenReview', rbacHint);
    }
  };
}

export function kubeIdentity(kc: KubeConfig): IdentityKube {
  const core = kc.makeApiClient(CoreV1Api);
  return {
    reviewToken: tokenReviewer(kc, IDENTITY_RBAC_HINT),
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
