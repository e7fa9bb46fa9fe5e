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

export const RBAC_HINT = "the agent's ServiceAccount lacks list/watch on pods; apply the ClusterRole from mesh-agent install";

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

/** One line saying what failed and what to do about it. */
export function describeFailure(what: string, server: string, e: unknown, rbacHint = RBAC_HINT): string {
  const status = statusOf(e);
  if (status === 401 || status === 403) return `${what}: HTTP ${status}: ${rbacHint}`;
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
