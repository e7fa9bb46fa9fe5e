// The CNI plugin's own token (docs/install.md, "The CNI plugin"), as linkerd-cni's and
// istio-cni's: a ServiceAccount of its own (mesh-agent-cni) whose role only gets pods, its token
// asked of the API server (TokenRequest) by the install container with the agent's credentials.
// Bound to no object, it outlives the agent pod that asked for it (a rolling update deletes that
// pod before the next one rewrites the kubeconfig), and on the host it can read pods, nothing more.
// Runs in cni-install, not in the plugin.

export const PLUGIN_SERVICE_ACCOUNT = 'mesh-agent-cni';
/**
 * 24 h, renewed at half: a 12 h API server outage (or lost RBAC) before the plugin's token
 * expires, while a copy taken from the host is good for a day at most. An API server may shorten
 * it (--service-account-max-token-expiration): the answer's expiry is what counts.
 */
export const PLUGIN_TOKEN_SECONDS = 86_400;
/**
 * After a refused or failed request, ask again after 30 s, doubling to 10 min: every node asks,
 * so a cluster whose RBAC was not re-applied should not get a TokenRequest per node per poll.
 * Either bound is short beside the 12 h a renewal has before the token expires.
 */
export const TOKEN_RETRY_MIN_MS = 30_000;
export const TOKEN_RETRY_MAX_MS = 600_000;
/**
 * A retry due within this goes now: cni-install's setInterval schedules its next poll from the
 * loop's time before this poll's file checks, and the request's mark is read after them, so by
 * Date.now() a poll comes early by as much as those checks' time varies (up to 15 ms measured);
 * comparing strictly put the retry a whole poll (30 s) later. Far below the 30 s poll.
 */
const RETRY_EARLY_MS = 3_000;

/** What TokenRequest needs of a client: a POST answered with the object (LeanKubeApi.create). */
export interface TokenPoster {
  create(path: string, body: object): Promise<any>;
}

export interface IssuedToken {
  token: string;
  issuedAt: number;
  expiresAt: number;
}

/** POST .../serviceaccounts/SA/token: the API server's own audience, no boundObjectRef. */
export async function requestToken(api: TokenPoster, namespace: string, serviceAccount: string, expirationSeconds = PLUGIN_TOKEN_SECONDS, now = Date.now()): Promise<IssuedToken> {
  const path = `/api/v1/namespaces/${encodeURIComponent(namespace)}/serviceaccounts/${encodeURIComponent(serviceAccount)}/token`;
  const o = await api.create(path, { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { expirationSeconds } });
  const token = o?.status?.token;
  const expiresAt = Date.parse(o?.status?.expirationTimestamp);
  if (typeof token !== 'string' || token === '' || !Number.isFinite(expiresAt)) throw new Error(`the API server's answer to ${path} has no status.token or status.expirationTimestamp`);
  return { token, issuedAt: now, expiresAt };
}

/** When to ask again: half the lifetime the API server granted. */
export function renewAt(t: IssuedToken): number {
  return t.issuedAt + (t.expiresAt - t.issuedAt) / 2;
}

export interface PluginTokenOptions {
  request: () => Promise<IssuedToken>;
  /** The agent's own token: today's token, bound to this pod, while none of the plugin's own is valid. */
  fallback: () => string;
  /** Where the fix is: the ServiceAccount and namespace, for the log. */
  serviceAccount: string;
  namespace: string;
  log: (level: string, msg: string, fields?: object) => void;
  now?: () => number;
}

/** The plugin's token: its own while valid, renewed at half its life, else the agent's (logged with the fix). */
export class PluginToken {
  readonly #o: PluginTokenOptions;
  #issued: IssuedToken | null = null;
  #inflight: Promise<boolean> | null = null;
  #lastError = '';
  #retryAt = 0;
  #retryMs = 0;
  /** Whether current() was the plugin's own token at the last refresh: its expiry since is a change too. */
  #wasOwn = false;

  constructor(o: PluginTokenOptions) {
    this.#o = o;
  }

  #now(): number {
    return this.#o.now?.() ?? Date.now();
  }

  /** Whether the plugin's own token is what current() gives. */
  get own(): boolean {
    return this.#issued !== null && this.#issued.expiresAt > this.#now();
  }

  current(): string {
    return this.own ? this.#issued!.token : this.#o.fallback();
  }

  /** When the next request is due (a refresh up to RETRY_EARLY_MS before it asks): 0 when the last one succeeded (or none was made). */
  get retryAt(): number {
    return this.#retryAt;
  }

  /**
   * Asks for a token when there is none or renewal is due, and the backoff after a failure has
   * passed; resolves whether current() changed (an own token expiring while we wait is a change
   * too). Never rejects.
   */
  refresh(): Promise<boolean> {
    const now = this.#now();
    if ((this.#issued && now < renewAt(this.#issued)) || now < this.#retryAt - RETRY_EARLY_MS) return Promise.resolve(this.#changed());
    this.#inflight ??= this.#request().finally(() => (this.#inflight = null));
    return this.#inflight;
  }

  #changed(): boolean {
    const changed = this.#wasOwn !== this.own;
    this.#wasOwn = this.own;
    return changed;
  }

  async #request(): Promise<boolean> {
    // The backoff counts from when the request went out: a poll of the same period then retries
    // on time, not one period late because the refusal took a few milliseconds.
    const sent = this.#now();
    try {
      this.#issued = await this.#o.request();
      this.#wasOwn = true;
      this.#lastError = '';
      this.#retryAt = this.#retryMs = 0;
      this.#o.log('info', `the CNI plugin's token issued for ServiceAccount ${this.#o.namespace}/${this.#o.serviceAccount}`, { expires: new Date(this.#issued.expiresAt).toISOString(), renewAt: new Date(renewAt(this.#issued)).toISOString() });
      return true;
    } catch (e) {
      const msg = (e as Error).message;
      this.#retryMs = Math.min(TOKEN_RETRY_MAX_MS, this.#retryMs ? this.#retryMs * 2 : TOKEN_RETRY_MIN_MS);
      this.#retryAt = sent + this.#retryMs;
      // Logged when the reason changes, not at every retry.
      if (msg !== this.#lastError) {
        this.#lastError = msg;
        const then = this.own ? `the plugin keeps its token until ${new Date(this.#issued!.expiresAt).toISOString()}, then gets this container's own` : 'the plugin\'s kubeconfig gets this container\'s own token instead, which the API server refuses once this pod is deleted (a rolling update) and which can do all the agent can';
        this.#o.log('warn', `cannot get a token for ServiceAccount ${this.#o.namespace}/${this.#o.serviceAccount} (${msg}): ${then}; re-apply \`mesh-agent install\` (it makes that ServiceAccount and lets the agent's create its token)`);
      }
      return this.#changed();
    }
  }
}
