// Tap on the agent: filters the controller sends, a rate limit per tap, and the records sent
// back. A sink joins the telemetry hub only while at least one tap is active, so the proxy
// pays nothing for tap when nobody taps. Matching is on pod IPs: the controller resolves
// resources to IPs from every node's inventory (a destination pod on another node is
// unknown to this agent by name, but its IP is on the wire).
import type { ConnBytesEvent, ConnCloseEvent, ConnOpenEvent, Endpoints, RequestEvent, TelemetrySink, TlsIds } from './events.ts';
import type { PairSide } from './report.ts';

export interface TapFilter {
  id: string;
  /** Requests from these pod IPs ... */
  srcIps: string[];
  /** ... and/or to these. */
  dstIps: string[];
  /** 'either': from srcIps or to dstIps (tap deploy/web); 'both': from srcIps to dstIps (tap deploy/web --to deploy/api). */
  match: 'either' | 'both';
  /** Upper-case HTTP method, exact. */
  method?: string;
  pathPrefix?: string;
  /** Requests per second this tap may emit (token bucket, one second of burst). */
  maxRps: number;
}

/** What a tap sends for one finished request (the CLI renders it as req, rsp and end). */
export interface TapRecord {
  /** Per tap and agent, from 1. */
  n: number;
  src: { ip: string; port: number };
  dst: { ip: string; port: number };
  protocol: 'http1' | 'http2';
  method: string;
  authority: string;
  path: string;
  status: number;
  grpcStatus?: number;
  /** Request start to response headers, µs. */
  latencyUs: number;
  /** Response headers to end of response, µs (as Linkerd's end event counts it). */
  durationUs: number;
  requestBytes: number;
  responseBytes: number;
  success: boolean;
  error?: string;
  startedAt: number;
  /** The request went through an mTLS tunnel: both SPIFFE IDs (tap prints tls=true). */
  tls?: TlsIds;
}

export const MAX_TAP_RPS = 10_000;
/** The longest path prefix a tap filters on (an agent ignores a filter with a longer one). */
export const MAX_TAP_PATH = 4096;
const MAX_IPS = 100_000;

const strings = (v: unknown, what: string): string[] => {
  if (!Array.isArray(v) || v.length > MAX_IPS || !v.every((x) => typeof x === 'string')) throw new Error(`tap filter ${what}: needs an array of IP strings`);
  return v as string[];
};

/** A TapFilter from untrusted JSON, or an error naming the bad field. */
export function parseTapFilter(v: any): TapFilter {
  if (!v || typeof v !== 'object') throw new Error('tap filter: expected an object');
  if (typeof v.id !== 'string' || v.id === '' || v.id.length > 64) throw new Error('tap filter id: needs a short string');
  if (v.match !== 'either' && v.match !== 'both') throw new Error('tap filter match: needs "either" or "both"');
  if (typeof v.maxRps !== 'number' || !(v.maxRps > 0) || v.maxRps > MAX_TAP_RPS) throw new Error(`tap filter maxRps: needs a number in (0, ${MAX_TAP_RPS}]`);
  if (v.method !== undefined && (typeof v.method !== 'string' || !/^[A-Z]{1,32}$/.test(v.method))) throw new Error('tap filter method: needs an upper-case HTTP method');
  if (v.pathPrefix !== undefined && (typeof v.pathPrefix !== 'string' || v.pathPrefix.length > MAX_TAP_PATH)) throw new Error('tap filter pathPrefix: needs a string');
  return { id: v.id, srcIps: strings(v.srcIps, 'srcIps'), dstIps: strings(v.dstIps, 'dstIps'), match: v.match, method: v.method, pathPrefix: v.pathPrefix, maxRps: v.maxRps };
}

/** Compiled filter: sets for the per-request test. */
export class TapMatcher {
  readonly filter: TapFilter;
  private src: Set<string>;
  private dst: Set<string>;
  constructor(f: TapFilter) {
    this.filter = f;
    this.src = new Set(f.srcIps);
    this.dst = new Set(f.dstIps);
  }
  /**
   * `side`: which side of the request this agent sees (ReportAggregator.sideOf). Seen only as
   * the client's (the destination's agent captures it on its way in and shows it too), a request
   * matches as one the tapped pods sent, not as one they received: that is the other agent's record.
   */
  matches(ev: RequestEvent, side?: PairSide): boolean {
    const f = this.filter;
    const from = this.src.has(ev.sourceIp);
    const to = this.dst.has(ev.destIp) && side !== 'client';
    if (f.match === 'both' ? !(from && this.dst.has(ev.destIp)) : !(from || to)) return false;
    if (f.method !== undefined && ev.method.toUpperCase() !== f.method) return false;
    if (f.pathPrefix !== undefined && !ev.path.startsWith(f.pathPrefix)) return false;
    return true;
  }
}

/** Token bucket: `rate` tokens a second, holding at most `burst`. */
export class TokenBucket {
  private tokens: number;
  private last: number;
  readonly rate: number;
  readonly burst: number;
  constructor(rate: number, burst = Math.max(1, rate), now = performance.now()) {
    this.rate = rate;
    this.burst = burst;
    this.tokens = burst;
    this.last = now;
  }
  take(now = performance.now()): boolean {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.rate) / 1000);
    this.last = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

export function tapRecord(ev: RequestEvent, n: number, tls: TlsIds | null = null): TapRecord {
  const r: TapRecord = {
    n,
    src: { ip: ev.sourceIp, port: ev.sourcePort },
    dst: { ip: ev.destIp, port: ev.destPort },
    protocol: ev.protocol,
    method: ev.method,
    authority: ev.authority,
    path: ev.path,
    status: ev.status,
    latencyUs: Math.round(ev.latencyMs * 1000),
    durationUs: Math.max(0, Math.round((ev.durationMs - ev.latencyMs) * 1000)),
    requestBytes: ev.requestBytes,
    responseBytes: ev.responseBytes,
    success: ev.success,
    startedAt: ev.startedAt,
  };
  if (ev.grpcStatus !== undefined) r.grpcStatus = ev.grpcStatus;
  if (ev.error !== undefined) r.error = ev.error;
  if (tls !== null) r.tls = { clientId: tls.clientId, serverId: tls.serverId };
  return r;
}

interface Session {
  matcher: TapMatcher;
  bucket: TokenBucket;
  n: number;
  limited: number;
}

/**
 * The agent's active taps. Joins the hub (`add` returns the remover) with the first tap and
 * leaves it with the last, so without taps no tap code runs per request.
 */
export class TapRegistry {
  private sessions = new Map<string, Session>();
  private remove: (() => void) | null = null;
  private hub: { add(sink: TelemetrySink): () => void };
  private emit: (id: string, rec: TapRecord) => void;

  private onFilters: ((filters: TapFilter[]) => void) | undefined;
  private tlsOf: (ep: Endpoints) => TlsIds | null = (ep) => ep.tls ?? null;
  private sideOf: (ep: Endpoints) => PairSide | undefined = () => undefined;

  /** Which side of a request this agent sees (ReportAggregator.sideOf), so a request two agents see is shown once. */
  setSide(sideOf: (ep: Endpoints) => PairSide | undefined): void {
    this.sideOf = sideOf;
  }

  /** How to tell a tunnelled request's identities (tunnel/tunnels.ts tlsOf). */
  setTls(tlsOf: (ep: Endpoints) => TlsIds | null): void {
    this.tlsOf = tlsOf;
  }

  /**
   * `onFilters` hears the active filters after every start and stop: the agent hands them to its
   * proxy workers, whose matches come back through offer().
   */
  constructor(hub: { add(sink: TelemetrySink): () => void }, emit: (id: string, rec: TapRecord) => void, onFilters?: (filters: TapFilter[]) => void) {
    this.hub = hub;
    this.emit = emit;
    this.onFilters = onFilters;
  }

  /** The filters of the active taps. */
  filters(): TapFilter[] {
    return [...this.sessions.values()].map((s) => s.matcher.filter);
  }

  /**
   * Makes the active taps these (a proxy worker, told by the main thread): new ones start,
   * changed ones are replaced, the others stop.
   */
  sync(filters: readonly TapFilter[]): void {
    const ids = new Set(filters.map((f) => f.id));
    for (const id of [...this.sessions.keys()]) if (!ids.has(id)) this.stop(id);
    for (const f of filters) this.start(f);
  }

  /**
   * A record another thread matched (a proxy worker): rate-limited and numbered here, with the
   * records this thread matched, so a tap's rate and numbering are the agent's, not a worker's.
   */
  offer(id: string, rec: TapRecord): void {
    const s = this.sessions.get(id);
    if (s === undefined) return; // stopped meanwhile
    if (!s.bucket.take()) {
      s.limited++;
      return;
    }
    this.emit(id, { ...rec, n: ++s.n });
  }

  /** Starts a tap, or replaces the filter of a running one (the controller resends it when pods change). */
  start(f: TapFilter): void {
    const old = this.sessions.get(f.id);
    const bucket = old && old.bucket.rate === f.maxRps ? old.bucket : new TokenBucket(f.maxRps);
    this.sessions.set(f.id, { matcher: new TapMatcher(f), bucket, n: old?.n ?? 0, limited: old?.limited ?? 0 });
    if (!this.remove) {
      const sink: TelemetrySink = {
        connOpen(_: ConnOpenEvent) {},
        connBytes(_: ConnBytesEvent) {},
        connClose(_: ConnCloseEvent) {},
        request: (ev) => this.onRequest(ev),
      };
      this.remove = this.hub.add(sink);
    }
    this.onFilters?.(this.filters());
  }

  stop(id: string): void {
    if (!this.sessions.delete(id)) return;
    if (this.sessions.size === 0) this.detach();
    this.onFilters?.(this.filters());
  }

  stopAll(): void {
    const had = this.sessions.size > 0;
    this.sessions.clear();
    this.detach();
    if (had) this.onFilters?.([]);
  }

  private detach() {
    this.remove?.();
    this.remove = null;
  }

  get active(): number {
    return this.sessions.size;
  }

  /** Whether the registry has a sink in the hub (for tests of "costs nothing"). */
  get attached(): boolean {
    return this.remove !== null;
  }

  private onRequest(ev: RequestEvent) {
    const side = this.sideOf(ev);
    for (const [id, s] of this.sessions) {
      if (!s.matcher.matches(ev, side)) continue;
      if (!s.bucket.take()) {
        s.limited++;
        continue;
      }
      this.emit(id, tapRecord(ev, ++s.n, this.tlsOf(ev)));
    }
  }
}
