// The agent's link to the controller: every interval it closes a report (the aggregator's
// pairs and the node's pods) into a bounded backlog and sends the backlog oldest first over
// one HTTP/2 connection; on failure it reconnects with exponential backoff. The data path
// never waits for any of this: when the controller is away, reports pile up to the bound,
// then the oldest are dropped and counted. The same connection carries the tap stream.
import * as http2 from 'node:http2';
import { randomUUID } from 'node:crypto';
import { readLines } from '../controller/lines.ts';
import { HEADER_AGENT_ID, HEADER_NODE, PATH_AGENT_TAP, PATH_REPORTS, type AgentQuery, type AgentReply, type TapCommand } from '../controller/protocol.ts';
import { MAX_LINE_BYTES } from '../controller/lines.ts';
import { LATENCY_SCHEME } from './histogram.ts';
import { REPORT_VERSION, type AgentSummary, type PodInventory, type Report, ReportAggregator } from './report.ts';
import { parseTapFilter, TapRegistry, type TapFilter, type TapRecord } from './tap.ts';
import type { Endpoints, TelemetrySink, TlsIds } from './events.ts';
import type { WorkloadResolver } from './workload.ts';

export interface ReportClientOptions {
  /** http://host:port (see controllerUrl). */
  url: string;
  node: string;
  hub: { add(sink: TelemetrySink): () => void; workloads: WorkloadResolver };
  inventory: () => PodInventory[];
  /** This node's pods, when every node captures inbound: pairs then say which side was seen (PairSide). */
  localPods?: (ip: string, port: number) => boolean;
  /** The agent's state for the dashboard's nodes page, sent with every report; the link fields are filled in here. */
  summary?: () => Omit<AgentSummary, 'link'>;
  intervalMs?: number;
  /** Reports kept while the controller is unreachable. */
  backlog?: number;
  /** Reconnect backoff, ms. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** A report not acknowledged within this fails the connection. */
  requestTimeoutMs?: number;
  /** Answers the controller's diagnostics queries (`mesh-agent diagnostics`); throws (or rejects) with what is wrong. */
  onQuery?: (q: AgentQuery) => unknown;
  /**
   * Runs before each interval closes (the agent merges its proxy workers' counts into
   * `aggregator` here); the report waits for it.
   */
  beforeInterval?: () => Promise<void>;
  /** Hears the active tap filters after each change (the agent's proxy workers match them too, then offerTap()). */
  onTapFilters?: (filters: TapFilter[]) => void;
  /** A tapped request's mTLS identities, if it went through a tunnel (tunnel/tunnels.ts tlsOf). */
  tls?: (ep: Endpoints) => TlsIds | null;
  /** The bearer for the controller (agent-token.ts), asked at each request: kubelet rotates the token. */
  auth?: () => Record<string, string>;
  log: (level: 'info' | 'warn', msg: string, fields?: Record<string, unknown>) => void;
}

type OptionalHooks = 'hub' | 'inventory' | 'localPods' | 'summary' | 'log' | 'onQuery' | 'beforeInterval' | 'onTapFilters' | 'tls' | 'auth';

export type LinkState = 'connecting' | 'connected' | 'backoff' | 'stopped';

/** Tap events queued on the stream beyond this are dropped: a slow controller must not grow the agent. */
const TAP_WRITE_LIMIT = 1024 * 1024;

export class ReportClient {
  readonly agentId = randomUUID();
  private o: Required<Omit<ReportClientOptions, OptionalHooks>> & Pick<ReportClientOptions, OptionalHooks>;
  /** This interval's pairs; the agent merges its proxy workers' into it (beforeInterval). */
  readonly aggregator: ReportAggregator;
  private removeAgg: () => void;
  private taps: TapRegistry;
  private backlogQ: Report[] = [];
  private seq = 0;
  private intervalStart = Date.now();
  private timer?: NodeJS.Timeout;
  private retryTimer?: NodeJS.Timeout;
  private session?: http2.ClientHttp2Session;
  private tapStream?: http2.ClientHttp2Stream;
  private inflight = false;
  private backoffMs: number;
  private stateV: LinkState = 'connecting';
  private stats = { sent: 0, dropped: 0, rejected: 0, reconnects: 0, tapEvents: 0, tapDropped: 0 };
  private lastError: string | null = null;
  private lastAckAt: number | null = null;
  private connectedSince: number | null = null;

  constructor(opts: ReportClientOptions) {
    this.o = { intervalMs: 5000, backlog: 120, minBackoffMs: 250, maxBackoffMs: 10_000, requestTimeoutMs: 10_000, ...opts };
    if (!Number.isInteger(this.o.backlog) || this.o.backlog < 1) throw new Error(`report backlog ${this.o.backlog} is not a positive integer; pass --report-backlog N with N >= 1`);
    this.backoffMs = this.o.minBackoffMs;
    this.aggregator = new ReportAggregator(opts.hub.workloads, opts.localPods, opts.tls);
    this.removeAgg = opts.hub.add(this.aggregator);
    this.taps = new TapRegistry(opts.hub, (id, rec) => this.sendTap(id, rec), opts.onTapFilters);
    if (opts.tls) this.taps.setTls(opts.tls);
    this.taps.setSide((ev) => this.aggregator.sideOf(ev));
  }

  start(): void {
    this.intervalStart = Date.now();
    this.timer = setInterval(() => {
      const before = this.o.beforeInterval;
      if (!before) return this.closeInterval();
      // A failing merge must not stop the reports: the interval closes with what this thread has.
      before().catch((e) => this.o.log('warn', `collecting the proxy workers' counts for a report failed: ${(e as Error).message}`)).finally(() => {
        if (this.stateV !== 'stopped') this.closeInterval();
      });
    }, this.o.intervalMs);
    this.connect();
  }

  /** Ends the current interval: its report joins the backlog, the oldest falls off past the bound. */
  closeInterval(now = Date.now()): void {
    // Make room first, so this report's drop count includes the report it displaced.
    // The report being sent stays (it may yet be acknowledged); the next oldest goes instead.
    const keep = this.inflight ? 1 : 0;
    while (this.backlogQ.length >= this.o.backlog && this.backlogQ.length > keep) {
      this.backlogQ.splice(keep, 1);
      this.stats.dropped++;
    }
    const r: Report = {
      version: REPORT_VERSION,
      latencyScheme: LATENCY_SCHEME,
      node: this.o.node,
      agentId: this.agentId,
      seq: ++this.seq,
      start: this.intervalStart,
      end: now,
      pairs: this.aggregator.flush(),
      pods: this.o.inventory(),
      dropped: this.stats.dropped,
    };
    if (this.o.summary) r.agent = { ...this.o.summary(), link: { backlog: this.backlogQ.length, backlogLimit: this.o.backlog, dropped: this.stats.dropped, reconnects: this.stats.reconnects } };
    this.intervalStart = now;
    this.backlogQ.push(r);
    this.drain();
  }

  private connect(): void {
    if (this.stateV === 'stopped') return;
    this.stateV = 'connecting';
    const s = http2.connect(this.o.url);
    this.session = s;
    s.on('error', (e) => this.fail(s, `controller ${this.o.url}: ${(e as NodeJS.ErrnoException).code ?? e.message}`));
    s.on('goaway', () => this.fail(s, `controller ${this.o.url} is going away`));
    s.on('close', () => this.fail(s, `controller ${this.o.url}: connection closed`));
    // A black-holed address never answers nor refuses: give up on it like on a refusal.
    const connectTimer = setTimeout(() => this.fail(s, `controller ${this.o.url}: no connection within ${this.o.requestTimeoutMs}ms`), this.o.requestTimeoutMs);
    s.once('close', () => clearTimeout(connectTimer));
    s.once('connect', () => {
      clearTimeout(connectTimer);
      if (this.session !== s) return;
      this.stateV = 'connected';
      this.connectedSince = Date.now();
      this.backoffMs = this.o.minBackoffMs;
      this.o.log('info', 'connected to the controller', { url: this.o.url });
      this.openTapStream(s);
      this.drain();
    });
  }

  /** Drops the connection and retries after a backoff; every failure path of the link ends here. */
  private fail(s: http2.ClientHttp2Session, why: string): void {
    if (this.session !== s) return;
    this.session = undefined;
    this.tapStream = undefined;
    this.inflight = false;
    this.taps.stopAll();
    if (!s.destroyed) s.destroy();
    if (this.stateV === 'stopped') return;
    if (this.stateV === 'connected') this.o.log('warn', `lost the controller link: ${why}; agent keeps proxying, reports wait in the backlog`);
    this.lastError = why;
    this.connectedSince = null;
    this.stateV = 'backoff';
    this.stats.reconnects++;
    const delay = this.backoffMs * (0.5 + Math.random() / 2);
    this.backoffMs = Math.min(this.o.maxBackoffMs, this.backoffMs * 2);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  private drain(): void {
    const s = this.session;
    if (!s || this.stateV !== 'connected' || this.inflight || this.backlogQ.length === 0) return;
    const r = this.backlogQ[0]!;
    this.inflight = true;
    let status = 0;
    let body = '';
    let req: http2.ClientHttp2Stream;
    try {
      req = s.request({ ':method': 'POST', ':path': PATH_REPORTS, 'content-type': 'application/json', [HEADER_NODE]: this.o.node, ...this.o.auth?.() });
    } catch (e) {
      this.fail(s, `sending a report: ${(e as Error).message}`);
      return;
    }
    req.setTimeout(this.o.requestTimeoutMs, () => this.fail(s, `the controller did not acknowledge a report within ${this.o.requestTimeoutMs}ms`));
    req.on('response', (h) => (status = Number(h[':status'])));
    req.setEncoding('utf8');
    req.on('data', (d: string) => {
      if (body.length < 4096) body += d;
    });
    req.on('error', () => {}); // the session's handlers decide
    req.on('close', () => {
      if (this.session !== s) return;
      this.inflight = false;
      // Refused as an agent: the report is not at fault; keep it and come back (a rotated token, a fixed RBAC).
      if (status === 401 || status === 403) {
        this.fail(s, `the controller refused this agent's report (HTTP ${status}): ${errorOf(body)}`);
        return;
      }
      if (status === 200 || (status >= 400 && status < 500)) {
        const i = this.backlogQ.indexOf(r);
        if (i >= 0) this.backlogQ.splice(i, 1);
        if (status === 200) {
          this.stats.sent++;
          this.lastAckAt = Date.now();
        } else {
          // Resending cannot fix a report the controller refuses; say why, keep the rest flowing.
          this.stats.rejected++;
          this.lastError = `the controller refused a report (HTTP ${status}): ${body.slice(0, 300)}`;
          this.o.log('warn', this.lastError);
        }
        this.drain();
      } else {
        this.fail(s, status ? `the controller answered a report with HTTP ${status}` : 'report stream closed without an answer');
      }
    });
    req.end(JSON.stringify(r));
  }

  private openTapStream(s: http2.ClientHttp2Session): void {
    let st: http2.ClientHttp2Stream;
    try {
      st = s.request({ ':method': 'POST', ':path': PATH_AGENT_TAP, [HEADER_NODE]: this.o.node, [HEADER_AGENT_ID]: this.agentId, 'content-type': 'application/x-ndjson', ...this.o.auth?.() }, { endStream: false });
    } catch (e) {
      this.fail(s, `opening the tap stream: ${(e as Error).message}`);
      return;
    }
    this.tapStream = st;
    let refused = 0;
    let why = '';
    st.on('response', (h) => {
      if (Number(h[':status']) !== 200) refused = Number(h[':status']);
    });
    st.on('error', () => {});
    st.on('close', () => {
      if (this.tapStream === st) this.fail(s, refused ? `the controller refused the tap stream (HTTP ${refused}): ${errorOf(why)}` : 'the controller closed the tap stream');
    });
    readLines(st, (line) => {
      if (refused) {
        why ||= line;
        return;
      }
      if (line.trim() === '') return;
      try {
        const cmd = JSON.parse(line) as TapCommand;
        if (cmd?.op === 'start') this.taps.start(parseTapFilter(cmd.filter));
        else if (cmd?.op === 'stop' && typeof cmd.id === 'string') this.taps.stop(cmd.id);
        else if (cmd?.op === 'query' && typeof cmd.id === 'string' && cmd.id.length <= 64) void this.answer(st, cmd.id, cmd.query);
        else throw new Error('unknown op');
      } catch (e) {
        this.o.log('warn', `ignored a tap command from the controller: ${(e as Error).message}: ${line.slice(0, 200)}`);
      }
    }, (n) => {
      this.o.log('warn', `the controller sent a tap command line of over ${n} bytes; closing the tap stream (it reconnects; run agent and controller of the same release)`);
      st.close();
    });
  }

  private async answer(st: http2.ClientHttp2Stream, id: string, q: AgentQuery): Promise<void> {
    let reply: AgentReply;
    try {
      if (!this.o.onQuery) throw new Error('this agent answers no diagnostics queries');
      reply = { reply: id, result: await this.o.onQuery(q) };
    } catch (e) {
      reply = { reply: id, error: (e as Error).message };
    }
    let line = JSON.stringify(reply);
    if (line.length >= MAX_LINE_BYTES) line = JSON.stringify({ reply: id, error: `the answer is over ${MAX_LINE_BYTES} bytes` });
    if (!st.destroyed) st.write(line + '\n');
  }

  /** The active taps' filters (what a proxy worker starting now must match). */
  tapFilters(): TapFilter[] {
    return this.taps.filters();
  }

  /** A tap record a proxy worker matched: rate-limited and numbered with this thread's (TapRegistry.offer). */
  offerTap(id: string, record: TapRecord): void {
    this.taps.offer(id, record);
  }

  private sendTap(id: string, record: TapRecord): void {
    const st = this.tapStream;
    if (!st || st.destroyed || st.writableLength > TAP_WRITE_LIMIT) {
      this.stats.tapDropped++;
      return;
    }
    this.stats.tapEvents++;
    st.write(JSON.stringify({ tap: id, record }) + '\n');
  }

  /** For the agent's /status: link state, backlog and what was lost. */
  state() {
    return {
      url: this.o.url,
      agentId: this.agentId,
      state: this.stateV,
      connectedSince: this.connectedSince ? new Date(this.connectedSince).toISOString() : null,
      lastAckAt: this.lastAckAt ? new Date(this.lastAckAt).toISOString() : null,
      lastError: this.lastError,
      intervalMs: this.o.intervalMs,
      backlog: this.backlogQ.length,
      backlogLimit: this.o.backlog,
      ...this.stats,
      pairsOverflow: this.aggregator.overflow,
      activeTaps: this.taps.active,
    };
  }

  async stop(): Promise<void> {
    this.stateV = 'stopped';
    clearInterval(this.timer);
    clearTimeout(this.retryTimer);
    this.removeAgg();
    this.taps.stopAll();
    const s = this.session;
    this.session = undefined;
    this.tapStream = undefined;
    // The tap stream never ends by itself, so a graceful close would wait forever.
    s?.destroy();
  }
}

/** A controller's JSON error body's message, or the text as it came. */
function errorOf(body: string): string {
  try {
    const e = JSON.parse(body)?.error;
    if (typeof e === 'string') return e;
  } catch {
    // not JSON: the text says it
  }
  return body.slice(0, 300);
}
