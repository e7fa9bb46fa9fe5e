// Who may have a certificate for what (docs/identity.md): the identity service's decisions,
// pure. A CSR comes with the agent's ServiceAccount token; the API server's TokenReview says
// whose it is and which node it is bound to; the agent then gets certificates only for
// identities that have a pod on that node (ztunnel's node authorizer in istiod), so a
// compromised node can impersonate only the workloads it already runs.

export interface ReviewStatus {
  authenticated?: boolean;
  error?: string;
  user?: { username?: string; extra?: Record<string, string[] | undefined> };
  audiences?: string[];
}

/** The pods of a node, as far as the decision needs them. */
export interface NodePod {
  namespace: string;
  name: string;
  serviceAccount: string;
  phase?: string;
  hostNetwork?: boolean;
}

export type Refusal = { ok: false; status: 401 | 403; reason: string };

export const NODE_NAME_EXTRA = 'authentication.kubernetes.io/node-name';

/** The token of an `Authorization: Bearer TOKEN` header, or undefined; the scheme is case-insensitive (RFC 9110 §11.1). */
export function bearerToken(authorization: string | undefined): string | undefined {
  return /^Bearer (\S+)$/i.exec(authorization ?? '')?.[1];
}

/** The start of a 401 for a bearer token that is no JWT (the caller adds its fix), or null for a JWT. */
export function junkTokenRefusal(token: string): string | null {
  const why = notAJwt(token);
  return why === null ? null : `the bearer token is not a JWT (${why}), so it is no ServiceAccount token and the API server was not asked`;
}

/**
 * Why `token` cannot be a ServiceAccount token, or null. One is a JWT: three base64url parts
 * joined by dots, the first a JSON object. Checked before a TokenReview, so junk costs the API
 * server nothing.
 */
export function notAJwt(token: string): string | null {
  const parts = token.split('.');
  if (parts.length !== 3 || !parts.every((p) => /^[A-Za-z0-9_-]+$/.test(p))) return 'not three base64url parts joined by dots';
  let header: unknown;
  try {
    header = JSON.parse(Buffer.from(parts[0]!, 'base64url').toString('utf8'));
  } catch {
    header = null;
  }
  return header !== null && typeof header === 'object' && !Array.isArray(header) ? null : 'its first part is not a JSON object';
}

/**
 * The token must be the agent's ServiceAccount's, for our audience, bound to a node (a projected
 * token: kubelet binds it to the agent's pod and so to its node). Returns the node.
 */
export function authenticateAgent(st: ReviewStatus, agent: { namespace: string; name: string }, audience: string, what = 'ask for workload certificates'): { ok: true; node: string } | Refusal {
  if (st.authenticated !== true) return { ok: false, status: 401, reason: `the token was not accepted by the API server's TokenReview: ${st.error || 'not authenticated'}` };
  const audienceRefusal = audienceProblem(st.audiences, audience);
  if (audienceRefusal !== null) return { ok: false, status: 401, reason: audienceRefusal };
  const want = `system:serviceaccount:${agent.namespace}:${agent.name}`;
  const user = st.user?.username ?? '';
  if (user !== want) return { ok: false, status: 403, reason: `the token is ${user || 'nobody\'s'}, not the agent's ServiceAccount (${want}); only node agents may ${what}` };
  const nodes = st.user?.extra?.[NODE_NAME_EXTRA] ?? [];
  if (nodes.length !== 1 || !nodes[0]) return { ok: false, status: 403, reason: `the token is not bound to a node (no ${NODE_NAME_EXTRA} in its review); mount a projected ServiceAccount token (Kubernetes 1.30+ binds it to the node)` };
  return { ok: true, node: nodes[0] };
}

/**
 * Why a review's status.audiences does not show the token is for `audience`, or null. The
 * TokenReview API: a client that sets spec.audiences must find one of them in status.audiences,
 * which only an audience-aware authenticator fills; an answer without it may have accepted a
 * token meant for any other service (one an agent sent elsewhere, replayed here).
 */
export function audienceProblem(audiences: string[] | undefined, audience: string): string | null {
  if (!Array.isArray(audiences) || audiences.length === 0) {
    return `the API server's TokenReview accepted the token without saying it is for audience ${audience} (no status.audiences): the authenticator that accepted it is not audience-aware, so the token could be one meant for another service; refused. Fix the cluster's authentication: a webhook token authenticator must check spec.audiences and return status.audiences (the built-in ServiceAccount authenticator does)`;
  }
  if (!audiences.includes(audience)) return `the token is for ${JSON.stringify(audiences.slice(0, 8))}, not audience ${audience}; mount a projected token with that audience`;
  return null;
}

const TERMINAL = new Set(['Succeeded', 'Failed']);

/** The identity (namespace, ServiceAccount) must have a running, non-host-network pod on the node. */
export function authorizeForNode(node: string, pods: NodePod[], namespace: string, serviceAccount: string): { ok: true; pod: string } | Refusal {
  const pod = pods.find((p) => p.namespace === namespace && p.serviceAccount === serviceAccount && !p.hostNetwork && !TERMINAL.has(p.phase ?? ''));
  if (pod === undefined) return { ok: false, status: 403, reason: `no running pod of ServiceAccount ${namespace}/${serviceAccount} on node ${node}; an agent gets certificates only for the workloads of its own node` };
  return { ok: true, pod: pod.name };
}
