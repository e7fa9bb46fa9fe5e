// Relays taps between the CLI and the agents. A tap names a resource; the relay resolves it
// to pod IPs from the nodes' inventories and sends the filter to the agents that can see
// matching requests: with --to, only the nodes running the source pods (interception is on
// the client's node); without, every agent (a resource's clients may be on any node). As
// pods come and go the filter is resent. The relay applies the tap's rate limit once more
// across all agents, so --max-rps holds for the whole tap.
import * as http2 from 'node:http2';
import { TokenBucket, type TapFilter, type TapRecord } from '../telemetry/tap.ts';
import type { PodInventory } from '../telemetry/report.ts';
import type { AgentAnswer, AgentQuery, TapCommand, TapEndpoint, TapOutput, TapRequest } from './protocol.ts';
import { parseResource, SHORT } from './stat.ts';
import { isLive, type WindowStore } from './store.ts';
import { readLines } from './lines.ts';
import { LogLimit, suppressedField } from '../util/log-limit.ts';

interface AgentLink {
  node: string;
  agentId: string;
  stream: http2.ServerHttp2Stream;
}

/** Where a tap's lines go: the CLI's HTTP/2 stream (JSON lines) or the dashboard's event stream. */
export interface TapSink {
  /** Queues one line; false when the reader is too slow and the line was dropped instead. */
  send(o: TapOutput): boolean;
  onClose(cb: () => void): void;
  close(): void;
}

/** A reader that falls this far behind loses lines rather than growing the controller. */
export const TAP_QUEUE_LIMIT = 1024 * 1024;

/** A TapSink over a writable stream (an HTTP/2 stream, an HTTP/1 response), each line encoded by `encode`. */
export function streamSink(
  out: { write(s: string): unknown; readonly writableLength: number; readonly destroyed: boolean; on(ev: 'close' | 'error', cb: () => void): unknown },
  encode: (o: TapOutput) => string,
  close: () => void,
): TapSink {
  out.on('error', () => {});
  return {
    send(o) {
      if (out.destroyed) return true;
      if (out.writableLength > TAP_QUEUE_LIMIT) return false;
      out.write(encode(o));
      return true;
    },
    onClose: (cb) => out.on('close', cb),
    close,
  };
}

interface Session {
  id: string;
  req: TapRequest;
  out: TapSink;
  bucket: TokenBucket;
  /** Filter JSON last sent, per node (to resend only on change). */
  sent: Map<string, string>;
  /** Linkerd's id base: a small number per agent process (its id), so a restarted agent, which
   * counts its requests from 1 again, never repeats the ids its node's last process gave. */
  base: Map<string, number>;
  /** The tapped resource's pod IPs as last resolved: a request from one of them is outbound. */
  own: Set<string>;
  limited: number;
}

export class TapError extends Error {
  readonly status: number;
  constructor(status: number, msg: string) {
    super(msg);
    this.status = status;
  }
}

type Match = { kind: string; namespace: string; name: string };

function podMatches(p: PodInventory, m: Match): boolean {
  if (m.kind === 'namespace') return p.namespace === m.name;
  if (p.namespace !== m.namespace) return false;
  return m.kind === 'pod' ? p.name === m.name : p.kind === m.kind && p.owner === m.name;
}

/**
 * How deep a value the relay passes on from an agent (a tap record, a query's answer) may nest:
 * a record nests 2 levels (its src, dst and tls), an answer far fewer than this. JSON.parse takes
 * lists nested thousands deep (a 1 MiB line holds 500,000 levels) that JSON.stringify, which
 * writes what is relayed, overflows the stack on: a record like that, thrown out of the stream's
 * reader, took the controller down.
 */
export const MAX_RELAYED_DEPTH = 64;

/** Whether `v` nests deeper than `max` levels (each list or object one), walked without recursion. */
function deeperThan(v: unknown, max: number): boolean {
  const stack: Array<[unknown, number]> = [[v, 1]];
  while (stack.length > 0) {
    const [x, d] = stack.pop()!;
    if (x === null || typeof x !== 'object') continue;
    if (d > max) return true;
    for (const y of Object.values(x)) stack.push([y, d + 1]);
  }
  return false;
}

/** A kind of bad tap line is logged once per node in this long (status counts every one). */
export const BAD_LINE_LOG_INTERVAL_MS = 60_000;

/** How long a diagnostics query waits for an agent's answer. */
export const QUERY_TIMEOUT_MS = 5000;

interface PendingQuery {
  node: string;
  resolve: (a: AgentAnswer) => void;
  timer: NodeJS.Timeout;
}

export class TapRelay {
  private agents = new Map<string, AgentLink>();
  private sessions = new Map<string, Session>();
  private queries = new Map<string, PendingQuery>();
  private seq = 0;
  private store: WindowStore;
  private log: (level: 'info' | 'warn', msg: string, fields?: Record<string, unknown>) => void;
  private readonly logLimit = new LogLimit();
  /** The agents' tap lines dropped as bad, by kind (/v1/status tapBadLines): a line too long also closes the stream. */
  readonly badLines = { notObject: 0, tooDeep: 0, tooLong: 0 };

  constructor(store: WindowStore, log: TapRelay['log']) {
    this.store = store;
    this.log = log;
  }

  /** An agent's tap stream. A newer stream from the same node (a restarted agent) replaces the old one. */
  addAgent(node: string, agentId: string, stream: http2.ServerHttp2Stream): void {
    const old = this.agents.get(node);
    if (old && old.stream !== stream) {
      old.stream.close();
      // What was sent went to the old link: the new one (a restarted agent) has no taps yet.
      for (const s of this.sessions.values()) s.sent.delete(node);
    }
    const link: AgentLink = { node, agentId, stream };
    this.agents.set(node, link);
    stream.on('close', () => {
      // A replaced stream closes after its successor was sent the filters: forget them only for the current link.
      if (this.agents.get(node) !== link) return;
      this.agents.delete(node);
      for (const s of this.sessions.values()) s.sent.delete(node);
    });
    readLines(stream, (line) => this.onAgentLine(link, line), (n) => {
      this.badLine(node, 'tooLong', `agent on ${node} sent a tap line of over ${n} bytes; closing its tap stream (it reconnects; run agent and controller of the same release)`);
      stream.close(http2.constants.NGHTTP2_PROTOCOL_ERROR);
    });
    this.refresh();
  }

  links(): Array<{ node: string; agentId: string }> {
    return [...this.agents.values()].map((l) => ({ node: l.node, agentId: l.agentId }));
  }

  get activeTaps(): number {
    return this.sessions.size;
  }

  /** Starts a tap whose lines go to `out`; throws TapError for a request that cannot start (nothing is written then). */
  start(req: TapRequest, out: TapSink): void {
    const { kind, name } = parseResourceOr400(req.resource);
    if (req.to !== undefined) parseResourceOr400(req.to);
    if (this.agents.size === 0) throw new TapError(503, 'no agent is connected to the controller; check `mesh-agent status` on the nodes (CONTROLLER line)');
    const src = this.resolve({ kind, namespace: req.namespace, name });
    if (src.ips.length === 0) throw new TapError(404, `${req.resource} in namespace ${req.namespace}: no pods with an IP in the agents' reports; check the name and namespace (-n)`);
    const id = `t${++this.seq}`;
    const s: Session = { id, req, out, bucket: new TokenBucket(req.maxRps), sent: new Map(), base: new Map(), own: new Set(src.ips), limited: 0 };
    this.sessions.set(id, s);
    out.onClose(() => this.end(s));
    this.write(s, { type: 'started', agents: this.targets(s).length, pods: src.ips.length });
    this.log('info', 'tap started', { id, resource: req.resource, namespace: req.namespace, to: req.to });
    this.refresh();
  }

  /** Resend filters that changed (pods started or stopped, agents came or went). Called on every report. */
  refresh(): void {
    for (const s of this.sessions.values()) {
      const f = this.filter(s);
      for (const link of this.targets(s, f)) {
        const text = JSON.stringify(f);
        if (s.sent.get(link.node) === text) continue;
        s.sent.set(link.node, text);
        if (!s.base.has(link.agentId)) s.base.set(link.agentId, s.base.size);
        this.command(link, { op: 'start', filter: f });
      }
    }
  }

  private idBase(s: Session, agentId: string): number {
    let b = s.base.get(agentId);
    if (b === undefined) s.base.set(agentId, (b = s.base.size));
    return b;
  }

  private filter(s: Session): TapFilter {
    const { kind, name } = parseResource(s.req.resource);
    const src = this.resolve({ kind, namespace: s.req.namespace, name });
    s.own = new Set(src.ips);
    let dstIps = src.ips;
    if (s.req.to !== undefined) {
      const to = parseResource(s.req.to);
      dstIps = this.resolve({ kind: to.kind, namespace: s.req.toNamespace ?? s.req.namespace, name: to.name }).ips;
    }
    const f: TapFilter = { id: s.id, srcIps: src.ips, dstIps, match: s.req.to !== undefined ? 'both' : 'either', maxRps: s.req.maxRps };
    if (s.req.method) f.method = s.req.method;
    if (s.req.path) f.pathPrefix = s.req.path;
    return f;
  }

  private targets(s: Session, f = this.filter(s)): AgentLink[] {
    if (f.match === 'either') return [...this.agents.values()];
    return [...this.agents.values()].filter((l) => this.resolveOn(l.node, f.srcIps));
  }

  private resolveOn(node: string, ips: string[]): boolean {
    const set = new Set(ips);
    return (this.store.get(node)?.pods ?? []).some((p) => p.ip !== null && set.has(p.ip));
  }

  private resolve(m: Match): { ips: string[] } {
    const ips: string[] = [];
    const now = Date.now();
    for (const n of this.store.all()) {
      if (!isLive(n, now)) continue;
      for (const p of n.pods) if (p.ip && podMatches(p, m)) ips.push(p.ip);
    }
    return { ips: [...new Set(ips)].sort() };
  }

  private endpoint(ip: string, port: number): TapEndpoint {
    const now = Date.now();
    for (const n of this.store.all()) {
      if (!isLive(n, now)) continue;
      const p = n.pods.find((x) => x.ip === ip);
      if (p) return { ip, port, resource: `${SHORT[p.kind] ?? p.kind}/${p.owner}`, namespace: p.namespace, pod: p.name };
    }
    return { ip, port };
  }

  /**
   * Asks agents a diagnostics question over their links: one node's agent, or every connected
   * agent when node is undefined. Each answers, fails, or times out on its own.
   */
  query(q: AgentQuery, node?: string, timeoutMs = QUERY_TIMEOUT_MS): Promise<AgentAnswer[]> {
    const links = node === undefined ? [...this.agents.values()] : [this.agents.get(node)].filter((l): l is AgentLink => l !== undefined);
    if (links.length === 0) {
      return Promise.reject(new TapError(node === undefined ? 503 : 404, node === undefined
        ? 'no agent is connected to the controller; check `mesh-agent status` on the nodes (CONTROLLER line)'
        : `no agent of node ${node} is connected to the controller; the connected ones: ${[...this.agents.keys()].sort().join(', ') || 'none'}`));
    }
    return Promise.all(links.sort((a, b) => (a.node < b.node ? -1 : 1)).map((link) => new Promise<AgentAnswer>((resolve) => {
      const id = `q${++this.seq}`;
      const timer = setTimeout(() => {
        this.queries.delete(id);
        resolve({ node: link.node, error: `no answer within ${timeoutMs} ms` });
      }, timeoutMs);
      this.queries.set(id, { node: link.node, resolve, timer });
      this.command(link, { op: 'query', id, query: q });
    })));
  }

  private onAgentLine(link: AgentLink, line: string): void {
    if (line.trim() === '') return;
    let msg: { tap?: unknown; record?: TapRecord; reply?: unknown; result?: unknown; error?: unknown } | null;
    try {
      msg = JSON.parse(line);
    } catch {
      msg = null;
    }
    // `null` parses too: a line must be an object before any field is read.
    if (!msg || typeof msg !== 'object') {
      this.badLine(link.node, 'notObject', `agent on ${link.node} sent a tap line that is not a JSON object; ignored (run agent and controller of the same release)`, { line: line.slice(0, 200) });
      return;
    }
    if (typeof msg.reply === 'string') {
      const q = this.queries.get(msg.reply);
      // Only the asked agent answers its question; a late or stray reply is dropped.
      if (q === undefined || q.node !== link.node) return;
      this.queries.delete(msg.reply);
      clearTimeout(q.timer);
      if (typeof msg.error === 'string') q.resolve({ node: link.node, error: msg.error.slice(0, 1000) });
      else if (deeperThan(msg.result, MAX_RELAYED_DEPTH)) q.resolve({ node: link.node, error: `the agent's answer is nested deeper than ${MAX_RELAYED_DEPTH} levels; not relayed (run agent and controller of the same release)` });
      else q.resolve({ node: link.node, result: msg.result });
      return;
    }
    const s = typeof msg.tap === 'string' ? this.sessions.get(msg.tap) : undefined;
    const r = msg.record;
    // A tap that just ended may still have records in flight: dropped quietly.
    if (!s || !r || typeof r !== 'object' || typeof r.src?.ip !== 'string' || typeof r.dst?.ip !== 'string' || !Number.isFinite(r.startedAt)) return;
    if (deeperThan(r, MAX_RELAYED_DEPTH)) {
      this.badLine(link.node, 'tooDeep', `agent on ${link.node} sent a tap record nested deeper than ${MAX_RELAYED_DEPTH} levels; dropped (run agent and controller of the same release)`);
      return;
    }
    if (!s.bucket.take()) {
      s.limited++;
      return;
    }
    this.write(s, {
      type: 'request',
      id: `${this.idBase(s, link.agentId)}:${Number(r.n) || 0}`,
      node: link.node,
      // A request within the resource (web calling web) is one record here, shown as its sender's.
      direction: s.req.to !== undefined || s.own.has(r.src.ip) ? 'outbound' : 'inbound',
      source: this.endpoint(r.src.ip, Number(r.src.port) || 0),
      destination: this.endpoint(r.dst.ip, Number(r.dst.port) || 0),
      record: r,
    });
  }

  /** Counted always; logged once per node and kind a minute, with how many were held back. */
  private badLine(node: string, kind: keyof TapRelay['badLines'], msg: string, fields: Record<string, unknown> = {}): void {
    this.badLines[kind]++;
    const held = this.logLimit.hit(`${node}\n${kind}`, BAD_LINE_LOG_INTERVAL_MS);
    if (held !== null) this.log('warn', `${msg} (logged once a minute per node; /v1/status tapBadLines counts them all)`, { ...fields, ...suppressedField(held) });
  }

  private write(s: Session, o: TapOutput): void {
    if (!s.out.send(o)) s.limited++;
  }

  private command(link: AgentLink, c: TapCommand): void {
    if (!link.stream.destroyed && !link.stream.closed) link.stream.write(JSON.stringify(c) + '\n');
  }

  private end(s: Session): void {
    if (!this.sessions.delete(s.id)) return;
    for (const node of s.sent.keys()) {
      const link = this.agents.get(node);
      if (link) this.command(link, { op: 'stop', id: s.id });
    }
    this.log('info', 'tap ended', { id: s.id, rateLimited: s.limited });
  }

  closeAll(): void {
    for (const [id, q] of this.queries) {
      clearTimeout(q.timer);
      q.resolve({ node: q.node, error: 'the controller is shutting down' });
      this.queries.delete(id);
    }
    for (const s of this.sessions.values()) s.out.close();
    for (const l of this.agents.values()) l.stream.close();
  }
}

function parseResourceOr400(text: string): { kind: string; name: string } {
  try {
    return parseResource(text);
  } catch (e) {
    throw new TapError(400, (e as Error).message);
  }
}
