// Who may speak as a node's agent on the controller's port (docs/controller.md "Who can reach
// it"): the agent presents its projected ServiceAccount token, the API server's TokenReview says
// whose it is and which node it is bound to (the identity service's check, identity/authorize.ts),
// and the node must be the one the request speaks for. A verdict is kept for a bounded time,
// keyed by the token's hash, so an agent's report every interval costs no API call.
import { createHash } from 'node:crypto';
import { authenticateAgent, type ReviewStatus } from '../identity/authorize.ts';
import { HEADER_NODE } from './protocol.ts';

/** The audience of the token agents present to the controller (its own: see docs/controller.md). */
export const CONTROLLER_AUDIENCE = 'mesh-agent-controller';
/** A verdict is reused this long (a revoked token is still let in for at most this). */
export const VERDICT_TTL_MS = 60_000;
export const VERDICT_ENTRIES = 4096;

export type AgentAuthMode = 'token' | 'none';

export function parseAgentAuthMode(v: string, flag: string): AgentAuthMode {
  if (v === 'token' || v === 'none') return v;
  throw new Error(`${flag} ${JSON.stringify(v)}: expected token (agents present a ServiceAccount token, checked with TokenReview) or none`);
}

/** A refusal: 401 (no or bad token), 403 (not the agents' ServiceAccount, or another node), 503 (the API server could not be asked). */
export class AgentAuthError extends Error {
  readonly status: 401 | 403 | 503;
  constructor(status: 401 | 403 | 503, msg: string) {
    super(msg);
    this.status = status;
  }
}

export interface AgentAuthOptions {
  /** A TokenReview (identity/kube.ts tokenReviewer); throws when the API server cannot answer. */
  review(token: string, audiences: string[]): Promise<ReviewStatus>;
  /** The agents' ServiceAccount: only its tokens are agents. */
  agent: { namespace: string; name: string };
  audience?: string;
  ttlMs?: number;
  maxEntries?: number;
  now?: () => number;
  log: (level: 'info' | 'warn', msg: string, fields?: Record<string, unknown>) => void;
}

type Verdict = { ok: true; node: string } | { ok: false; status: 401 | 403; reason: string };

const CAUSE = { 401: 'unauthenticated', 403: 'forbidden', 503: 'unavailable' } as const;
/** Distinct (node, cause) pairs logged before the set starts over: a flood of made-up node names must not grow it. */
const LOGGED_LIMIT = 1024;

export class AgentAuth {
  readonly audience: string;
  private readonly o: AgentAuthOptions;
  private readonly now: () => number;
  private readonly verdicts = new Map<string, { verdict: Verdict; until: number }>();
  /** Reviews under way, so an agent's three streams opened at once cost one. */
  private readonly pending = new Map<string, Promise<Verdict>>();
  private readonly logged = new Set<string>();
  readonly stats = { reviews: 0, cacheHits: 0, refused: { unauthenticated: 0, forbidden: 0, unavailable: 0 }, lastRefusal: null as null | { at: string; node: string; status: number; reason: string } };

  constructor(o: AgentAuthOptions) {
    this.o = o;
    this.audience = o.audience ?? CONTROLLER_AUDIENCE;
    this.now = o.now ?? Date.now;
  }

  /**
   * The node the request's bearer token is bound to, which must be `claimed` (the mesh-node
   * header) when given; a report's node is checked with bind() once its body is read.
   * Throws AgentAuthError, counted and logged once per node and cause.
   */
  async check(authorization: string | undefined, claimed: string | undefined): Promise<string> {
    let node: string;
    try {
      const token = /^Bearer (\S+)$/i.exec(authorization ?? '')?.[1];
      if (token === undefined) throw new AgentAuthError(401, `no bearer token: this controller runs with --agent-auth token; the agent sends its projected ServiceAccount token (audience ${this.audience}, run --controller-token-file, which mesh-agent install mounts) in the Authorization header`);
      const v = await this.verdict(token);
      if (!v.ok) throw new AgentAuthError(v.status, `${v.reason} (the controller's --agent-auth token)`);
      node = v.node;
    } catch (e) {
      if (e instanceof AgentAuthError) this.refused(claimed, e);
      throw e;
    }
    if (claimed !== undefined) this.bind(node, claimed);
    return node;
  }

  /** The token's node must be the one the request speaks for. */
  bind(tokenNode: string, claimed: string): void {
    if (tokenNode === claimed) return;
    const e = new AgentAuthError(403, `the token is bound to node ${tokenNode}, not ${JSON.stringify(claimed.slice(0, 253))} (the ${HEADER_NODE} header, or a report's node): an agent speaks for its own node only; run it with --node (or $NODE_NAME) set to its node's name, as install sets it from spec.nodeName`);
    this.refused(claimed, e);
    throw e;
  }

  private async verdict(token: string): Promise<Verdict> {
    const key = createHash('sha256').update(token).digest('base64url');
    const now = this.now();
    const hit = this.verdicts.get(key);
    if (hit !== undefined && hit.until > now) {
      this.stats.cacheHits++;
      return hit.verdict;
    }
    if (hit !== undefined) this.verdicts.delete(key);
    let p = this.pending.get(key);
    if (p === undefined) {
      p = this.review(token, key).finally(() => this.pending.delete(key));
      this.pending.set(key, p);
    }
    return p;
  }

  private async review(token: string, key: string): Promise<Verdict> {
    this.stats.reviews++;
    let st: ReviewStatus;
    try {
      st = await this.o.review(token, [this.audience]);
    } catch (e) {
      // Never let an agent in on a review that did not happen; it retries after a backoff.
      throw new AgentAuthError(503, `the controller cannot check the agent's token now: ${(e as Error).message}; the agent retries`);
    }
    const verdict = authenticateAgent(st, this.o.agent, this.audience, 'speak for a node to the controller');
    // A verdict outlives neither the bound nor the token (its exp; read unverified, it can only shorten the wait).
    const until = Math.min(this.now() + (this.o.ttlMs ?? VERDICT_TTL_MS), expiry(token) ?? Infinity);
    while (this.verdicts.size >= (this.o.maxEntries ?? VERDICT_ENTRIES)) this.verdicts.delete(this.verdicts.keys().next().value!);
    this.verdicts.set(key, { verdict, until });
    return verdict;
  }

  private refused(claimed: string | undefined, e: AgentAuthError): void {
    const cause = CAUSE[e.status];
    this.stats.refused[cause]++;
    const node = claimed === undefined ? '(no node header)' : claimed.slice(0, 253);
    this.stats.lastRefusal = { at: new Date(this.now()).toISOString(), node, status: e.status, reason: e.message };
    const k = `${node}\n${cause}`;
    if (this.logged.has(k)) return;
    if (this.logged.size >= LOGGED_LIMIT) this.logged.clear();
    this.logged.add(k);
    this.o.log('warn', 'agent refused (logged once per node and cause; /v1/status agentAuth counts them all)', { node, status: e.status, reason: e.message });
  }

  state() {
    return { mode: 'token' as const, audience: this.audience, serviceAccount: `${this.o.agent.namespace}/${this.o.agent.name}`, verdictsCached: this.verdicts.size, ...this.stats };
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
