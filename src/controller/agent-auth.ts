// Who may speak as a node's agent on the controller's port (docs/controller.md "Who can reach
// it"): the agent presents its projected ServiceAccount token, the API server's TokenReview says
// whose it is and which node it is bound to (the identity service's check, identity/authorize.ts),
// and the node must be the one the request speaks for. A verdict is kept for a bounded time,
// keyed by the token's hash, so an agent's report every interval costs no API call. What a caller
// without a token can cost: a token that is no JWT, nothing; others, a review within the gate's
// bounds (identity/review-gate.ts); and accepted verdicts are kept apart from refused ones, so
// junk tokens never push an agent's out.
import { createHash } from 'node:crypto';
import { authenticateAgent, bearerToken, junkTokenRefusal, type ReviewStatus } from '../identity/authorize.ts';
import { ReviewBusyError, ReviewGate } from '../identity/review-gate.ts';
import { LogLimit, suppressedField } from '../util/log-limit.ts';
import { HEADER_NODE } from './protocol.ts';

/** The audience of the token agents present to the controller (its own: see docs/controller.md). */
export const CONTROLLER_AUDIENCE = 'mesh-agent-controller';
/** A verdict is reused this long (a revoked token is still let in for at most this). */
export const VERDICT_TTL_MS = 60_000;
/** The bound of each of the two verdict maps (accepted, refused). */
export const VERDICT_ENTRIES = 4096;
/** A refusal is logged once per peer address and cause in this long (status counts them all). */
export const REFUSAL_LOG_INTERVAL_MS = 60_000;

export type AgentAuthMode = 'token' | 'none';

export function parseAgentAuthMode(v: string, flag: string): AgentAuthMode {
  if (v === 'token' || v === 'none') return v;
  throw new Error(`${flag} ${JSON.stringify(v)}: expected token (agents present a ServiceAccount token, checked with TokenReview) or none`);
}

/** A refusal: 401 (no or bad token), 403 (not the agents' ServiceAccount, or another node), 503 (the API server could not be asked, or too many reviews under way: then retryAfterS). */
export class AgentAuthError extends Error {
  readonly status: 401 | 403 | 503;
  readonly retryAfterS: number | undefined;
  constructor(status: 401 | 403 | 503, msg: string, retryAfterS?: number) {
    super(msg);
    this.status = status;
    this.retryAfterS = retryAfterS;
  }
}

export interface AgentAuthOptions {
  /** A TokenReview (identity/kube.ts tokenReviewer); throws when the API server cannot answer. */
  review(token: string, audiences: string[]): Promise<ReviewStatus>;
  /** The agents' ServiceAccount: only its tokens are agents. */
  agent: { namespace: string; name: string };
  audience?: string;
  ttlMs?: number;
  /** Each verdict map's bound (default VERDICT_ENTRIES). */
  maxEntries?: number;
  now?: () => number;
  log: (level: 'info' | 'warn', msg: string, fields?: Record<string, unknown>) => void;
  /** Bounds the reviews in flight (default: review-gate.ts's bounds). */
  gate?: ReviewGate;
}

type Verdict = { ok: true; node: string } | { ok: false; status: 401 | 403; reason: string };

const CAUSE = { 401: 'unauthenticated', 403: 'forbidden', 503: 'unavailable' } as const;

export class AgentAuth {
  readonly audience: string;
  private readonly o: AgentAuthOptions;
  private readonly now: () => number;
  /** Two maps, each bounded: a refused token never evicts an accepted one. */
  private readonly accepted = new Map<string, { verdict: Verdict; until: number }>();
  private readonly refusals = new Map<string, { verdict: Verdict; until: number }>();
  /** Reviews under way, so an agent's three streams opened at once cost one. */
  private readonly pending = new Map<string, Promise<Verdict>>();
  private readonly gate: ReviewGate;
  private readonly logLimit: LogLimit;
  /** busy: 503 because the gate's bound was reached (the API server not asked). */
  readonly stats = { reviews: 0, cacheHits: 0, refused: { unauthenticated: 0, forbidden: 0, unavailable: 0, busy: 0 }, lastRefusal: null as null | { at: string; node: string; peer: string; status: number; reason: string } };

  constructor(o: AgentAuthOptions) {
    this.o = o;
    this.audience = o.audience ?? CONTROLLER_AUDIENCE;
    this.now = o.now ?? Date.now;
    this.gate = o.gate ?? new ReviewGate();
    this.logLimit = new LogLimit(this.now);
  }

  /**
   * The node the request's bearer token is bound to, which must be `claimed` (the mesh-node
   * header) when given; a report's node is checked with bind() once its body is read. `peer`:
   * the connection's TCP peer address (the gate's bounds, the log's key).
   * Throws AgentAuthError, counted, and logged once a minute per peer and cause.
   */
  async check(authorization: string | undefined, claimed: string | undefined, peer?: string): Promise<string> {
    let node: string;
    try {
      const token = bearerToken(authorization);
      if (token === undefined) throw new AgentAuthError(401, `no bearer token: this controller runs with --agent-auth token; the agent sends its projected ServiceAccount token (audience ${this.audience}, run --controller-token-file, which mesh-agent install mounts) in the Authorization header`);
      const v = await this.verdict(token, peer);
      if (!v.ok) throw new AgentAuthError(v.status, `${v.reason} (the controller's --agent-auth token)`);
      node = v.node;
    } catch (e) {
      if (e instanceof AgentAuthError) this.refused(claimed, peer, e);
      throw e;
    }
    // A valid agent token from this address: a flood from others cannot hold its reviews back.
    this.gate.trust(peer);
    if (claimed !== undefined) this.bind(node, claimed, peer);
    return node;
  }

  /** The token's node must be the one the request speaks for. */
  bind(tokenNode: string, claimed: string, peer?: string): void {
    if (tokenNode === claimed) return;
    const e = new AgentAuthError(403, `the token is bound to node ${tokenNode}, not ${JSON.stringify(claimed.slice(0, 253))} (the ${HEADER_NODE} header, or a report's node): an agent speaks for its own node only; run it with --node (or $NODE_NAME) set to its node's name, as install sets it from spec.nodeName`);
    this.refused(claimed, peer, e);
    throw e;
  }

  private async verdict(token: string, peer: string | undefined): Promise<Verdict> {
    const key = createHash('sha256').update(token).digest('base64url');
    const now = this.now();
    const map = this.accepted.has(key) ? this.accepted : this.refusals;
    const hit = map.get(key);
    if (hit !== undefined && hit.until > now) {
      this.stats.cacheHits++;
      return hit.verdict;
    }
    if (hit !== undefined) map.delete(key);
    const junk = junkTokenRefusal(token);
    if (junk !== null) throw new AgentAuthError(401, `${junk}; the agent sends its projected ServiceAccount token (audience ${this.audience}, run --controller-token-file, which mesh-agent install mounts)`);
    let p = this.pending.get(key);
    if (p === undefined) {
      p = this.review(token, key, peer).finally(() => this.pending.delete(key));
      this.pending.set(key, p);
    }
    return p;
  }

  private async review(token: string, key: string, peer: string | undefined): Promise<Verdict> {
    let st: ReviewStatus;
    try {
      st = await this.gate.run(peer, () => {
        this.stats.reviews++;
        return this.o.review(token, [this.audience]);
      });
    } catch (e) {
      // Never let an agent in on a review that did not happen, nor cache it; it retries after a backoff.
      if (e instanceof ReviewBusyError) throw new AgentAuthError(503, e.answer('the controller'), e.retryAfterS);
      throw new AgentAuthError(503, `the controller cannot check the agent's token now: ${(e as Error).message}; the agent retries`);
    }
    const verdict = authenticateAgent(st, this.o.agent, this.audience, 'speak for a node to the controller');
    // A verdict outlives neither the bound nor the token (its exp; read unverified, it can only shorten the wait).
    const until = Math.min(this.now() + (this.o.ttlMs ?? VERDICT_TTL_MS), expiry(token) ?? Infinity);
    const map = verdict.ok ? this.accepted : this.refusals;
    while (map.size >= (this.o.maxEntries ?? VERDICT_ENTRIES)) map.delete(map.keys().next().value!);
    map.set(key, { verdict, until });
    return verdict;
  }

  private refused(claimed: string | undefined, peer: string | undefined, e: AgentAuthError): void {
    const cause = e.retryAfterS !== undefined ? 'busy' : CAUSE[e.status];
    this.stats.refused[cause]++;
    const node = claimed === undefined ? '(no node header)' : claimed.slice(0, 253);
    const from = peer ?? 'unknown';
    this.stats.lastRefusal = { at: new Date(this.now()).toISOString(), node, peer: from, status: e.status, reason: e.message };
    // Keyed by the peer, not the node: the mesh-node header is the caller's to make up.
    const held = this.logLimit.hit(`${from}\n${cause}`, REFUSAL_LOG_INTERVAL_MS);
    if (held === null) return;
    this.o.log('warn', 'agent refused (logged once a minute per peer address and cause, suppressed: how many since the last line; /v1/status agentAuth counts them all)', { node, peer: from, status: e.status, reason: e.message, ...suppressedField(held) });
  }

  state() {
    return {
      mode: 'token' as const, audience: this.audience, serviceAccount: `${this.o.agent.namespace}/${this.o.agent.name}`,
      verdictsCached: this.accepted.size, refusalsCached: this.refusals.size, ...this.stats, reviewGate: this.gate.state(),
    };
  }
}

/** A JWT's exp (ms), if it has one. */
function expiry(token: string): number | undefined {
  try {
    const exp = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8'))?.exp;
    return typeof exp === 'number' ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}
