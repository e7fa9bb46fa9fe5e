// Pure helpers of the list/watch loop: reconnect backoff with jitter, and turning a failed
// list or watch into a message that names the fix.

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
}

/** Exponential backoff with "equal jitter": half the step is fixed, half random, so agents on
 *  every node of a cluster do not reconnect to a restarted API server in lockstep. */
export class Backoff {
  private attempt = 0;
  private readonly o: BackoffOptions;
  private readonly random: () => number;

  constructor(o: BackoffOptions, random: () => number = Math.random) {
    this.o = o;
    this.random = random;
  }

  next(): number {
    const step = Math.min(this.o.maxMs, this.o.initialMs * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    return Math.round(step / 2 + (this.random() * step) / 2);
  }

  reset() {
    this.attempt = 0;
  }
}

/** The agent's hint for a refused list or watch of `resource`: the kind refused, not always pods. */
export function agentRbacHint(resource: string): string {
  return `the agent's ServiceAccount lacks list/watch on ${resource}; apply the ClusterRole from mesh-agent install`;
}

export const RBAC_HINT = agentRbacHint('pods');

/**
 * A 401: the API server does not take the credentials at all, whatever the RBAC rules; no
 * ClusterRole ends it. A projected token the kubelet rotates may (the token file is read again at
 * every request).
 */
export const TOKEN_HINT = 'the ServiceAccount token was refused: it expired or was revoked (its pod or ServiceAccount deleted), or the API server does not accept its issuer; the token file is read again at every request, so a token the kubelet rotates ends this on its own; if it lasts, restart the pod so the kubelet mounts a new token (with a kubeconfig: renew its credentials)';

/** HTTP status of a failed request, from the client library's error shapes (ApiException.code,
 *  the watcher's statusCode) or from a Status object in a watch ERROR event. */
export function statusOf(e: unknown): number | undefined {
  const o = e as { code?: unknown; statusCode?: unknown } | null;
  if (typeof o?.statusCode === 'number') return o.statusCode;
  if (typeof o?.code === 'number') return o.code;
  return undefined;
}

function networkCode(e: unknown): string | undefined {
  let c: any = e;
  for (let i = 0; c && i < 4; i++, c = c.cause) {
    if (typeof c.code === 'string') return c.code;
  }
  return undefined;
}

/** The API server's own words for a refused request: the Status object's message in the body, else the error's. */
export function serverMessage(e: unknown): string {
  const o = e as { body?: unknown; message?: unknown } | null;
  let body: any = o?.body;
  if (typeof body === 'string') {
    try {
      body = JSON.parse(body);
    } catch {
      body = undefined;
    }
  }
  if (typeof body?.message === 'string' && body.message !== '') return body.message;
  return typeof o?.message === 'string' ? o.message : String(e);
}

/** `/api/v1/pods` -> pods in the core group; `/apis/discovery.k8s.io/v1/endpointslices` -> endpointslices in discovery.k8s.io. */
export function resourceOf(path: string): { group: string; resource: string } {
  const p = path.split('/').filter(Boolean);
  return p[0] === 'apis' ? { group: p[1] ?? '', resource: p.at(-1) ?? '' } : { group: '', resource: p.at(-1) ?? '' };
}

/** The RBAC rule a refused list or watch of `path` needs: "list and watch on pods (core group)". */
export function grantFor(path: string): string {
  const { group, resource } = resourceOf(path);
  return `list and watch on ${resource} (${group === '' ? 'core group' : `API group ${group}`})`;
}

/**
 * The line said once when a list or watch is refused (403), not at every retry: the hint (whose
 * ServiceAccount, which ClusterRole), the rule to grant, and the API server's words. A 401 names
 * the token instead: no rule to grant ends it.
 */
export function describeRefusal(what: string, path: string, status: number, message: string, rbacHint = agentRbacHint(resourceOf(path).resource)): string {
  const fix = status === 401 ? TOKEN_HINT : `${rbacHint}; it needs ${grantFor(path)}`;
  return `${what}: HTTP ${status}: ${fix} (the API server: ${message}); retried with backoff, said again only once it is accepted or refused anew`;
}

/** One line saying what failed and what to do about it; `rbacHint` is said on a 403 (agentRbacHint of the kind refused). */
export function describeFailure(what: string, server: string, e: unknown, rbacHint: string): string {
  const status = statusOf(e);
  if (status === 401) return `${what}: HTTP 401: ${TOKEN_HINT}`;
  if (status === 403) return `${what}: HTTP 403: ${rbacHint}`;
  if (status === 410) return `${what}: resourceVersion expired (410 Gone); relisting`;
  const net = networkCode(e);
  if (net && /^(ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|ETIMEDOUT|UND_ERR_CONNECT_TIMEOUT)$/.test(net)) {
    return `${what}: cannot reach the API server at ${server} (${net}); check the kubeconfig server or KUBERNETES_SERVICE_HOST and the node's network`;
  }
  // Reset mid-stream: an API server restart or a load balancer's idle cut; routine, retried.
  if (net && /^(ECONNRESET|EPIPE|UND_ERR_\w+)$/.test(net)) return `${what}: connection to the API server at ${server} lost (${net})`;
  if ((e as Error)?.name === 'TimeoutError') return `${what}: the API server at ${server} did not answer in time; retrying`;
  const msg = (e as Error)?.message ?? String(e);
  return `${what}: ${status ? `HTTP ${status}: ` : ''}${msg}`;
}
