// What `mesh-agent install` adds for identity (docs/identity.md): the identity service's
// ServiceAccount, its RBAC (TokenReview, pods), the issuer Secret (the only place its key is), the
// trust roots ConfigMap, its Deployment and Service; and what the agents' DaemonSet gains: the
// trust roots, a projected token for the identity service's audience, the tunnel port. Pure data.

/** Where the identity service and the agents find their identity files (src/cli/identity-flags.ts defaults). */
export const IDENTITY_MOUNTS = {
  trustRoots: '/var/run/mesh-agent/identity/trust-roots',
  issuer: '/var/run/mesh-agent/identity/issuer',
  tokens: '/var/run/secrets/tokens',
} as const;
export const TRUST_ROOTS_KEY = 'ca-bundle.crt';
export const TOKEN_PATH = 'mesh-agent-identity';
export const IDENTITY_AUDIENCE = 'mesh-agent-identity';
export const IDENTITY_PORT = 8080;
export const TUNNEL_PORT = 15008;
/** The agent's projected volume of tokens, one per audience (the controller's, the identity service's). */
export const TOKENS_VOLUME = 'tokens';
/** A projected token lives this long; kubelet renews it at 80% (the agent reads the file at each request). */
export const TOKEN_SECONDS = 3600;

export interface IdentityInstall {
  trustDomain: string;
  /** PEM trust anchor(s), what every agent trusts. */
  anchorsPem: string;
  issuerCertPem: string;
  /** Goes into the Secret and nowhere else. */
  issuerKeyPem: string;
  /** Workload certificates' lifetime, as `identity --certificate-lifetime` takes it (default 24h). */
  certificateLifetime?: string;
}

export function identityNames(ns: string) {
  return {
    sa: 'mesh-agent-identity',
    secret: 'mesh-agent-identity-issuer',
    roots: 'mesh-agent-identity-trust-roots',
    addr: `mesh-agent-identity.${ns}.svc:${IDENTITY_PORT}`,
  };
}

/** The identity service's objects. `meta` and `labels` are install's helpers; `clusterName` suffixes cluster-scoped names. */
export function identityObjects(ns: string, image: string, clusterName: string, labels: Record<string, string>, agentSa: string, id: IdentityInstall): object[] {
  const n = identityNames(ns);
  const meta = (name: string) => ({ name, namespace: ns, labels });
  return [
    // Its token is how it reviews the agents' tokens and lists pods.
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: meta(n.sa), automountServiceAccountToken: true },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRole',
      metadata: { name: `${clusterName}-identity`, labels },
      // TokenReview (who asks) and the pods of the asking node (what it may have): nothing else.
      rules: [
        { apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] },
        { apiGroups: [''], resources: ['pods'], verbs: ['list'] },
      ],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name: `${clusterName}-identity`, labels },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: `${clusterName}-identity` },
      subjects: [{ kind: 'ServiceAccount', name: n.sa, namespace: ns }],
    },
    { apiVersion: 'v1', kind: 'ConfigMap', metadata: meta(n.roots), data: { [TRUST_ROOTS_KEY]: id.anchorsPem } },
    { apiVersion: 'v1', kind: 'Secret', metadata: meta(n.secret), type: 'kubernetes.io/tls', stringData: { 'tls.crt': id.issuerCertPem, 'tls.key': id.issuerKeyPem } },
    {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: meta('mesh-agent-identity'),
      spec: {
        replicas: 1,
        selector: { matchLabels: labels },
        template: {
          metadata: { labels, annotations: { 'mesh-agent.io/inject': 'disabled' } },
          spec: {
            serviceAccountName: n.sa,
            automountServiceAccountToken: true,
            securityContext: { runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: { type: 'RuntimeDefault' } },
            containers: [
              {
                name: 'identity',
                image,
                imagePullPolicy: 'IfNotPresent',
                args: ['identity', '--listen', `0.0.0.0:${IDENTITY_PORT}`, '--trust-domain', id.trustDomain,
                  '--agent-service-account', `${ns}/${agentSa}`, '--service-account', `${ns}/${n.sa}`,
                  '--certificate-lifetime', id.certificateLifetime ?? '24h', '--status-access', 'loopback'],
                ports: [{ name: 'identity', containerPort: IDENTITY_PORT, protocol: 'TCP' }],
                readinessProbe: { tcpSocket: { port: 'identity' }, periodSeconds: 5 },
                livenessProbe: { tcpSocket: { port: 'identity' }, periodSeconds: 10 },
                resources: { requests: { cpu: '50m', memory: '96Mi' }, limits: { memory: '256Mi' } },
                securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } },
                volumeMounts: [
                  { name: 'issuer', mountPath: IDENTITY_MOUNTS.issuer, readOnly: true },
                  { name: 'trust-roots', mountPath: IDENTITY_MOUNTS.trustRoots, readOnly: true },
                ],
              },
            ],
            volumes: [
              { name: 'issuer', secret: { secretName: n.secret, defaultMode: 0o400 } },
              { name: 'trust-roots', configMap: { name: n.roots } },
            ],
          },
        },
      },
    },
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: meta('mesh-agent-identity'),
      spec: { type: 'ClusterIP', selector: labels, ports: [{ name: 'identity', port: IDENTITY_PORT, targetPort: 'identity', protocol: 'TCP' }] },
    },
  ];
}

/**
 * The agent DaemonSet's pod spec and container, given identity: the trust roots, a projected
 * token bound to the agent's pod (and so its node) for the identity service's audience, the tunnel
 * port, and the flags config keys do not carry.
 */
export function withIdentity(pod: any, ns: string, id: IdentityInstall): void {
  const n = identityNames(ns);
  const c = pod.containers[0];
  c.args.push('--trust-domain', id.trustDomain, '--identity-service-account', `${ns}/${n.sa}`);
  c.ports.push({ name: 'tunnel', containerPort: TUNNEL_PORT, protocol: 'TCP' });
  c.volumeMounts.push({ name: 'identity-trust-roots', mountPath: IDENTITY_MOUNTS.trustRoots, readOnly: true });
  pod.volumes.push({ name: 'identity-trust-roots', configMap: { name: n.roots } });
  // Beside the controller's token, in the one projected volume at IDENTITY_MOUNTS.tokens (manifests.ts).
  const tokens = pod.volumes.find((v: any) => v.name === TOKENS_VOLUME);
  if (!tokens) throw new Error(`the agent's pod has no ${TOKENS_VOLUME} volume to add the identity token to`);
  tokens.projected.sources.push({ serviceAccountToken: { audience: IDENTITY_AUDIENCE, expirationSeconds: TOKEN_SECONDS, path: TOKEN_PATH } });
}
