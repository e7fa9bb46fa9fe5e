// The agent's discovery link: one HTTP/2 GET to the controller's /v1/discovery, held open; every
// line is parsed (model.ts parseMessage) and applied to the agent's DiscoveryStore, its one
// writer. A route record this agent cannot read whole is applied as a refused route (it fails
// closed), recorded and counted; the link stays. A line that does not parse, a line over the
// bound, a version mismatch or a stream that does not start with reset drops the link: the store
// keeps its last good world (a snapshot cut off before its synced is dropped), the error is
// recorded, and the link comes back after a backoff, starting over with reset ... synced. The
// data path never waits on any of this.
//
// Its own HTTP/2 connection, not the report client's: a snapshot is megabytes and wants wider
// flow-control windows than reports, and a report's acknowledgement timeout must not cut the
// discovery stream (nor the other way round).
import * as http2 from 'node:http2';
import { readLines } from '../controller/lines.ts';
import { HEADER_AGENT_ID, HEADER_NODE, PATH_DISCOVERY } from '../controller/protocol.ts';
import { DISCOVERY_VERSION, DiscoveryError, parseMessage } from './model.ts';
import type { DiscoveryStore } from './store.ts';

export interface DiscoveryClientOptions {
  /** http://host:port (see controllerUrl). */
  url: string;
  node: string;
  agentId: string;
  store: DiscoveryStore;
  /** Reconnect backoff, ms (with jitter; reset once a world is received). */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** Retry interval when the controller serves no discovery (it may be restarted with it). */
  notServedRetryMs?: number;
  /** No connection, or no answer to the GET, within this: the attempt fails. */
  connectTimeoutMs?: number;
  /** A PING every this often; none acknowledged within another interval drops the link (a controller that vanished without a FIN). */
  pingIntervalMs?: number;
  /** The link down (or never synced) this long makes the agent's status degraded. */
  staleAfterMs?: number;
  /** The bearer for the controller (controller/agent-token.ts), asked at each connect: kubelet rotates the token. */
  auth?: () => Record<string, string>;
  log: (level: 'info' | 'warn', msg: string, fields?: Record<string, unknown>) => void;
  /** Errors worth the agent's recentErrors: bad lines from the controller, a synced link lost. */
  onError: (msg: string) => void;
}

/**
 * connecting: no stream yet; syncing: the stream is open, the first world not complete;
 * synced: the world is current and deltas flow; backoff: waiting to reconnect;
 * not-served: the controller runs without discovery; stopped.
 */
export type DiscoveryLinkState = 'connecting' | 'syncing' | 'synced' | 'backoff' | 'not-served' | 'stopped';

/** The link may be down this long before status says degraded (routing from a world this old is worth a look). */
export const DISCOVERY_STALE_MS = 60_000;

const MAX_ERROR_BODY = 4096;
/** Flow-control windows of the discovery connection: a snapshot of a big cluster is tens of megabytes. */
export const STREAM_WINDOW = 1 << 20;
export const SESSION_WINDOW = 8 << 20;

export class DiscoveryClient {
  private readonly o: Required<Omit<DiscoveryClientOptions, 'log' | 'onError' | 'store' | 'auth'>> & Pick<DiscoveryClientOptions, 'log' | 'onError' | 'store' | 'auth'>;
  private session?: http2.ClientHttp2Session;
  private stateV: DiscoveryLinkState = 'connecting';
  private backoffMs: number;
  private retryTimer?: NodeJS.Timeout;
  private pingTimer?: NodeJS.Timeout;
  private readonly startedAt = Date.now();
  private connectedSince: number | null = null;
  private lastSyncAt: number | null = null;
  /** When the link last stopped being synced (the start, before the first sync). */
  private downSince: number | null = this.startedAt;
  private lastError: string | null = null;
  private stats = { reconnects: 0, lines: 0, bytes: 0, badLines: 0, refusedRoutes: 0, syncs: 0 };

  constructor(o: DiscoveryClientOptions) {
    this.o = { minBackoffMs: 250, maxBackoffMs: 10_000, notServedRetryMs: 30_000, connectTimeoutMs: 10_000, pingIntervalMs: 15_000, staleAfterMs: DISCOVERY_STALE_MS, ...o };
    this.backoffMs = this.o.minBackoffMs;
  }

  start(): void {
    this.connect();
  }

  get state(): DiscoveryLinkState {
    return this.stateV;
  }

  private connect(): void {
    if (this.stateV === 'stopped') return;
    this.stateV = 'connecting';
    const s = http2.connect(this.o.url, { settings: { initialWindowSize: STREAM_WINDOW } });
    this.session = s;
    s.on('error', (e) => this.fail(s, `controller ${this.o.url}: ${(e as NodeJS.ErrnoException).code ?? e.message}`));
    s.on('goaway', () => this.fail(s, `controller ${this.o.url} is going away`));
    s.on('close', () => this.fail(s, `controller ${this.o.url}: connection closed`));
    const timer = setTimeout(() => this.fail(s, `controller ${this.o.url}: no discovery stream within ${this.o.connectTimeoutMs}ms`), this.o.connectTimeoutMs);
    s.once('close', () => clearTimeout(timer));
    s.once('connect', () => {
      if (this.session !== s) return;
      try {
        s.setLocalWindowSize(SESSION_WINDOW);
      } catch {
        // only a larger window; the default works, slower
      }
    });
    let req: http2.ClientHttp2Stream;
    try {
      req = s.request({ ':method': 'GET', ':path': PATH_DISCOVERY, [HEADER_NODE]: this.o.node, [HEADER_AGENT_ID]: this.o.agentId, ...this.o.auth?.() });
    } catch (e) {
      this.fail(s, `opening the discovery stream: ${(e as Error).message}`);
      return;
    }
    req.on('error', () => {}); // close decides
    req.on('response', (h) => {
      clearTimeout(timer);
      const status = Number(h[':status']);
      if (status === 200) this.onStream(s, req);
      else this.onRefused(s, req, status);
    });
    req.on('close', () => {
      if (this.session !== s) return;
      const code = req.rstCode;
      this.fail(s, code === http2.constants.NGHTTP2_ENHANCE_YOUR_CALM
        ? 'the controller closed the discovery stream: this agent did not read its updates fast enough (is the node overloaded?)'
        : `the controller closed the discovery stream${code ? ` (HTTP/2 code ${code})` : ''}`);
    });
  }

  private onStream(s: http2.ClientHttp2Session, req: http2.ClientHttp2Stream): void {
    this.stateV = 'syncing';
    this.connectedSince = Date.now();
    this.startPings(s);
    let first = true;
    let version = DISCOVERY_VERSION;
    req.on('data', (d: string) => (this.stats.bytes += Buffer.byteLength(d)));
    readLines(req, (line) => {
      if (this.session !== s) return;
      this.stats.lines++;
      let m;
      try {
        m = parseMessage(line, version);
        if (first && m.type !== 'reset') throw new DiscoveryError(`the stream must start with reset, got ${m.type}`);
        if (m.type === 'reset') version = m.version; // an older controller's records are read as it meant them
      } catch (e) {
        this.stats.badLines++;
        this.protocolError(s, `the controller sent an invalid discovery line (${(e as Error).message}): ${line.slice(0, 200)}`);
        return;
      }
      first = false;
      if (m.type === 'route' && m.op === 'set' && m.route.refused !== undefined) {
        // Applied all the same: the record fails its route closed (route-model.ts parseStreamedRoute).
        this.stats.refusedRoutes++;
        const r = m.route;
        this.o.onError(`the controller sent a route this agent cannot read (${r.refused}); requests to ${r.parents.map((p) => `${p.namespace}/${p.name}${p.port !== undefined ? `:${p.port}` : ''}`).join(', ')} that it could take answer 500 until the agents and the controller run the same release`);
      }
      try {
        this.o.store.apply(m);
      } catch (e) {
        // A listener of the store failed: not the controller's fault, the store is consistent; say so and go on.
        this.o.onError(`discovery: a consumer of the store failed on a ${m.type} update: ${(e as Error).stack ?? e}`);
      }
      if (m.type === 'synced') this.onSynced();
    }, (n) => {
      this.stats.badLines++;
      this.protocolError(s, `the controller sent a discovery line of over ${n} bytes`);
    });
  }

  private onSynced(): void {
    const was = this.stateV;
    this.stateV = 'synced';
    this.lastSyncAt = Date.now();
    this.downSince = null;
    this.backoffMs = this.o.minBackoffMs;
    this.stats.syncs++;
    if (was !== 'synced') this.o.log('info', 'discovery synced from the controller', { url: this.o.url, ...this.o.store.counts() });
  }

  /** A non-200 answer: 404 is a controller without discovery (or older than it); anything else is a failure. */
  private onRefused(s: http2.ClientHttp2Session, req: http2.ClientHttp2Stream, status: number): void {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => {
      if (body.length < MAX_ERROR_BODY) body += d;
    });
    req.on('end', () => {
      if (this.session !== s) return;
      let why = body.slice(0, MAX_ERROR_BODY);
      try {
        why = JSON.parse(body).error ?? why;
      } catch {
        // not JSON: the raw text says it
      }
      if (status === 404) {
        const first = this.stateV !== 'not-served' && this.lastError !== why;
        this.lastError = why;
        this.close(s);
        this.stateV = 'not-served';
        if (first) this.o.log('info', `the controller serves no discovery (${why}); agent forwards to original destinations, asks again in ${this.o.notServedRetryMs}ms`);
        this.retryTimer = setTimeout(() => this.connect(), this.o.notServedRetryMs);
        return;
      }
      this.fail(s, `the controller refused the discovery stream (HTTP ${status}): ${why}`);
    });
  }

  private startPings(s: http2.ClientHttp2Session): void {
    clearInterval(this.pingTimer);
    let outstanding = false;
    this.pingTimer = setInterval(() => {
      if (this.session !== s) return;
      if (outstanding) {
        this.fail(s, `controller ${this.o.url}: no answer to a ping within ${this.o.pingIntervalMs}ms`);
        return;
      }
      outstanding = true;
      try {
        s.ping(() => (outstanding = false));
      } catch {
        // the session is closing: its close handler decides
      }
    }, this.o.pingIntervalMs);
    this.pingTimer.unref();
  }

  /** Bad input from the controller: recorded as an error, then the link drops like any other failure. */
  private protocolError(s: http2.ClientHttp2Session, msg: string): void {
    const full = `${msg}; dropped the link, keeping the last good state (${describeCounts(this.o.store.counts())}); reconnecting`;
    this.o.onError(full);
    this.fail(s, msg, true);
  }

  private close(s: http2.ClientHttp2Session): void {
    this.session = undefined;
    clearInterval(this.pingTimer);
    if (!s.destroyed) s.destroy();
    // A snapshot cut off before its synced never replaces the live world.
    this.o.store.dropStaged();
    this.connectedSince = null;
  }

  /** Every failure of the link ends here: drop it, keep the store, retry after a backoff. */
  private fail(s: http2.ClientHttp2Session, why: string, recorded = false): void {
    if (this.session !== s) return;
    const was = this.stateV;
    this.close(s);
    if (this.stateV === 'stopped') return;
    if (was === 'synced') {
      this.downSince = Date.now();
      if (!recorded) this.o.onError(`lost the discovery link: ${why}; routing from the last state (${describeCounts(this.o.store.counts())}) until it is back`);
    }
    this.lastError = why;
    this.stateV = 'backoff';
    this.stats.reconnects++;
    const delay = this.backoffMs * (0.5 + Math.random() / 2);
    this.backoffMs = Math.min(this.o.maxBackoffMs, this.backoffMs * 2);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  /** For the agent's /status. */
  status(now = Date.now()) {
    const st = this.o.store;
    return {
      url: this.o.url,
      state: this.stateV,
      connectedSince: iso(this.connectedSince),
      lastSyncAt: iso(this.lastSyncAt),
      lastUpdateAt: iso(st.lastUpdateAt || null),
      everSynced: st.synced,
      downSince: iso(this.downSince),
      downForMs: this.downSince === null || this.stateV === 'not-served' ? 0 : now - this.downSince,
      staleAfterMs: this.o.staleAfterMs,
      ...st.counts(),
      ...this.stats,
      lastError: this.lastError,
    };
  }

  stop(): void {
    this.stateV = 'stopped';
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    const s = this.session;
    this.session = undefined;
    s?.destroy();
    this.o.store.dropStaged();
  }
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

function describeCounts(c: { services: number; slices: number; endpoints: number; pods: number }): string {
  return `${c.services} services, ${c.endpoints} endpoints, ${c.pods} pods`;
}
