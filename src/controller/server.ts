// The controller: agents report to it and hold a tap stream open; the CLI asks it for stat
// and tap. One HTTP/2 cleartext (h2c) server built on node:http2: reports, long-lived
// bidirectional tap streams and the CLI's queries share one connection per client, with no
// code generation or runtime dependency (gRPC would add both for the same framing), and
// `curl --http2-prior-knowledge` can talk to it. The install's Service marks the port
// appProtocol kubernetes.io/h2c accordingly.
import * as http2 from 'node:http2';
import { MAX_BODY, HEADER_AGENT_ID, HEADER_NODE, PATH_AGENT_TAP, PATH_DIAG_AUTHZ, PATH_DIAG_ENDPOINTS, PATH_DIAG_POLICY, PATH_DISCOVERY, PATH_REPORTS, PATH_STAT, PATH_STATUS, PATH_TAP } from './protocol.ts';
import type { DiscoveryHub } from '../discovery/hub.ts';
import { parseReport } from '../telemetry/report.ts';
import { isLive, WindowStore, DEFAULT_RETENTION_MS } from './store.ts';
import { parseWindow, resourceKind, stat } from './stat.ts';
import { streamSink, TapError, TapRelay } from './tap-relay.ts';
import { checkTapRequest } from './tap-request.ts';
import { AgentAuthError, type AgentAuth } from './agent-auth.ts';
import type { LoopbackAccess } from '../util/loopback-access.ts';
import { drainUnread } from '../util/http2-drain.ts';

export interface ControllerOptions {
  retentionMs?: number;
  /** Discovery for the agents (--resources or the API server); without it GET /v1/discovery answers 404. */
  discovery?: { hub: DiscoveryHub; source: { state(): object }; routes?: { state(): object }; access?: { state(): object } };
  log: (level: 'info' | 'warn', msg: string, fields?: Record<string, unknown>) => void;
  /** --agent-auth token: reports, the agents' tap stream and discovery need a node's agent's token; absent: served to anyone (--agent-auth none). */
  agentAuth?: AgentAuth;
  /** --cli-access loopback: stat, tap, diagnostics and status only for loopback peers (port-forward); absent: for anyone. */
  cliAccess?: LoopbackAccess;
}

/**
 * The CLI's endpoints and the status: what --cli-access limits (not the agents'). The status names
 * nodes, tap links and the last refusal; its readers are the CLI's dashboard through port-forward
 * and the sim (--cli-access any), and the probes are tcpSocket.
 */
const CLI_ROUTES = new Set([`GET ${PATH_STAT}`, `POST ${PATH_TAP}`, `GET ${PATH_DIAG_ENDPOINTS}`, `GET ${PATH_DIAG_POLICY}`, `GET ${PATH_DIAG_AUTHZ}`, `GET ${PATH_STATUS}`]);

class HttpError extends Error {
  readonly status: number;
  constructor(status: number, msg: string) {
    super(msg);
    this.status = status;
  }
}

export class ControllerServer {
  readonly store: WindowStore;
  readonly relay: TapRelay;
  private server: http2.Http2Server;
  private opts: ControllerOptions;
  private sessions = new Set<http2.ServerHttp2Session>();
  readonly startedAt = Date.now();
  private reportListeners = new Set<(node: string) => void>();
  /** Where the dashboard listens, when it runs beside this server (`mesh-agent dashboard` reads it from /v1/status). */
  dashboard: { host: string; port: number } | null = null;

  constructor(opts: ControllerOptions) {
    this.opts = opts;
    this.store = new WindowStore({ retentionMs: opts.retentionMs ?? DEFAULT_RETENTION_MS });
    this.relay = new TapRelay(this.store, opts.log);
    this.server = http2.createServer({ maxSessionMemory: 64 });
    this.server.on('session', (s) => {
      this.sessions.add(s);
      s.on('close', () => this.sessions.delete(s));
      s.on('error', () => {});
    });
    this.server.on('stream', (stream, headers) => {
      stream.on('error', () => {}); // a peer resetting its stream is not our failure
      this.handle(stream, headers).catch((e) => this.fail(stream, e, headers));
    });
    this.server.on('sessionError', () => {});
  }

  private fail(stream: http2.ServerHttp2Stream, e: unknown, request: http2.IncomingHttpHeaders) {
    const status = e instanceof HttpError || e instanceof TapError || e instanceof AgentAuthError ? e.status : 500;
    if (status === 500) this.opts.log('warn', `controller request failed: ${(e as Error).stack ?? e}`);
    const retry = e instanceof AgentAuthError && e.retryAfterS !== undefined ? { 'retry-after': String(e.retryAfterS) } : {};
    this.reply(stream, status, { error: (e as Error).message }, retry, request);
  }

  private reply(stream: http2.ServerHttp2Stream, status: number, body: unknown, headers: http2.OutgoingHttpHeaders = {}, request?: http2.IncomingHttpHeaders) {
    if (stream.destroyed || stream.closed) return;
    if (!stream.headersSent) stream.respond({ ':status': status, 'content-type': 'application/json', ...headers });
    stream.end(JSON.stringify(body));
    drainUnread(stream, request?.['content-length']); // false: node:http2 resets it once the reply is out
  }

  private async handle(stream: http2.ServerHttp2Stream, h: http2.IncomingHttpHeaders): Promise<void> {
    const method = h[':method'];
    const url = new URL(h[':path'] ?? '/', 'http://controller');
    const route = `${method} ${url.pathname}`;
    const peer = peerOf(stream);
    if (this.opts.cliAccess && CLI_ROUTES.has(route)) {
      const refusal = this.opts.cliAccess.refusal(peer, route);
      if (refusal) throw new HttpError(403, refusal);
    }
    switch (route) {
      case `POST ${PATH_REPORTS}`: {
        const auth = this.opts.agentAuth;
        const header = h[HEADER_NODE];
        // Before the body is read: a refused peer never gets 16 MB of it parsed.
        const tokenNode = auth ? await auth.check(h.authorization, typeof header === 'string' ? header : undefined, peer) : null;
        const body = await readJson(stream);
        let report;
        try {
          report = parseReport(body);
        } catch (e) {
          throw new HttpError(400, (e as Error).message);
        }
        if (auth && tokenNode !== null) auth.bind(tokenNode, report.node, peer);
        const result = this.store.add(report, Date.now());
        this.relay.refresh();
        if (result === 'added') for (const fn of this.reportListeners) fn(report.node);
        this.reply(stream, 200, { result });
        return;
      }
      case `POST ${PATH_AGENT_TAP}`: {
        const { node, agentId } = agentHeaders(h, 'the tap stream');
        await this.opts.agentAuth?.check(h.authorization, node, peer);
        stream.respond({ ':status': 200, 'content-type': 'application/x-ndjson' });
        this.relay.addAgent(node, agentId, stream);
        this.opts.log('info', 'agent connected', { node, agentId });
        stream.on('close', () => this.opts.log('info', 'agent tap stream closed', { node, agentId }));
        return;
      }
      case `GET ${PATH_DISCOVERY}`: {
        const { node, agentId } = agentHeaders(h, 'the discovery stream');
        await this.opts.agentAuth?.check(h.authorization, node, peer);
        const d = this.opts.discovery;
        if (!d) throw new HttpError(404, DISCOVERY_OFF);
        stream.respond({ ':status': 200, 'content-type': 'application/x-ndjson' });
        const unsubscribe = d.hub.subscribe(stream, { node, agentId }, (_why, slow) => {
          if (!stream.destroyed) stream.close(slow ? http2.constants.NGHTTP2_ENHANCE_YOUR_CALM : http2.constants.NGHTTP2_CANCEL);
        });
        stream.on('close', unsubscribe);
        return;
      }
      case `GET ${PATH_STAT}`: {
        const q = url.searchParams;
        let query;
        try {
          const kind = resourceKind(q.get('kind') ?? '');
          query = {
            kind,
            namespace: q.get('namespace') || null,
            name: q.get('name') || undefined,
            windowMs: parseWindow(q.get('window') ?? '1m', this.store.retentionMs),
          };
        } catch (e) {
          throw new HttpError(400, (e as Error).message);
        }
        this.reply(stream, 200, stat(this.store, query, Date.now()));
        return;
      }
      case `POST ${PATH_TAP}`: {
        const req = checkTapRequest(await readJson(stream));
        stream.respond({ ':status': 200, 'content-type': 'application/x-ndjson' });
        try {
          this.relay.start(req, streamSink(stream, (o) => JSON.stringify(o) + '\n', () => stream.close()));
        } catch (e) {
          // Headers are out: the error travels as the stream's one line.
          stream.end(JSON.stringify({ type: 'error', status: (e as TapError).status ?? 500, error: (e as Error).message }) + '\n');
        }
        return;
      }
      case `GET ${PATH_DIAG_ENDPOINTS}`:
      case `GET ${PATH_DIAG_POLICY}`:
      case `GET ${PATH_DIAG_AUTHZ}`: {
        const which = url.pathname === PATH_DIAG_POLICY ? 'policy' : url.pathname === PATH_DIAG_AUTHZ ? 'authz' : 'endpoints';
        const q = url.searchParams;
        const namespace = q.get('namespace') ?? '';
        const name = q.get('name') ?? '';
        const node = q.get('node') || undefined;
        const dns = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
        if (!dns.test(namespace) || !dns.test(name)) throw new HttpError(400, `diagnostics ${which}: needs namespace and name, each a Kubernetes name`);
        if (node !== undefined && (node.length > 253 || !/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(node))) throw new HttpError(400, `diagnostics ${which}: node ${JSON.stringify(node.slice(0, 60))} is not a node name`);
        if (which === 'endpoints' || which === 'authz') {
          this.reply(stream, 200, { agents: await this.relay.query({ kind: which, namespace, name }, node) });
          return;
        }
        const fromNamespace = q.get('fromNamespace') || namespace;
        if (!dns.test(fromNamespace)) throw new HttpError(400, `diagnostics policy: fromNamespace ${JSON.stringify(fromNamespace.slice(0, 60))} is not a namespace name`);
        this.reply(stream, 200, { agents: await this.relay.query({ kind: 'policy', namespace, name, fromNamespace }, node) });
        return;
      }
      case `GET ${PATH_STATUS}`: {
        const now = Date.now();
        this.reply(stream, 200, {
          uptimeSeconds: Math.round((now - this.startedAt) / 1000),
          retentionMs: this.store.retentionMs,
          dashboard: this.dashboard,
          activeTaps: this.relay.activeTaps,
          tapLinks: this.relay.links(),
          tapBadLines: this.relay.badLines,
          discovery: this.discoveryState(),
          agentAuth: this.opts.agentAuth?.state() ?? { mode: 'none' },
          cliAccess: this.opts.cliAccess?.state() ?? { mode: 'any' },
          nodes: this.store.all().map((n) => ({
            node: n.node, agentId: n.agentId, live: isLive(n, now), lastSeenMsAgo: now - n.lastSeen,
            intervalMs: n.intervalMs, reports: n.reports.length, received: n.received, duplicates: n.duplicates, dropped: n.dropped, pods: n.pods.length,
          })),
        });
        return;
      }
      default:
        throw new HttpError(404, `no route ${route}; the controller serves POST ${PATH_REPORTS}, POST ${PATH_AGENT_TAP}, GET ${PATH_DISCOVERY}, GET ${PATH_STAT}, POST ${PATH_TAP}, GET ${PATH_DIAG_ENDPOINTS}, GET ${PATH_DIAG_POLICY}, GET ${PATH_DIAG_AUTHZ}, GET ${PATH_STATUS}`);
    }
  }

  private discoveryState() {
    const d = this.opts.discovery;
    if (!d) return { configured: false, why: DISCOVERY_OFF };
    return { configured: true, source: d.source.state(), ...d.hub.state(), agentStreams: d.hub.agents(), ...(d.routes ? { routeObjects: d.routes.state() } : {}), ...(d.access ? { accessObjects: d.access.state() } : {}) };
  }

  /** Calls fn after every report the store added (the dashboard's live updates); returns the remover. */
  onReport(fn: (node: string) => void): () => void {
    this.reportListeners.add(fn);
    return () => this.reportListeners.delete(fn);
  }

  listen(host: string, port: number): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      this.server.once('error', (e) => reject(new Error(`controller listen on ${host}:${port} failed: ${e.message}; pass --listen with a free address`)));
      this.server.listen(port, host, () => {
        const a = this.server.address();
        resolve({ host, port: typeof a === 'object' && a ? a.port : port });
      });
    });
  }

  close(): Promise<void> {
    this.relay.closeAll();
    this.opts.discovery?.hub.closeAll('the controller is stopping');
    for (const s of this.sessions) s.destroy();
    return new Promise((r) => this.server.close(() => r()));
  }
}

export const DISCOVERY_OFF = 'discovery is not configured on this controller: run it with --resources FILE|DIR, or in a cluster (or with --kubeconfig FILE) to watch the API server';

/** The TCP peer of the stream's session, which no header can change; undefined once the session is gone (its socket proxy throws then). */
function peerOf(stream: http2.ServerHttp2Stream): string | undefined {
  try {
    return stream.session?.socket?.remoteAddress;
  } catch {
    return undefined;
  }
}

function agentHeaders(h: http2.IncomingHttpHeaders, what: string): { node: string; agentId: string } {
  const node = h[HEADER_NODE];
  const agentId = h[HEADER_AGENT_ID];
  if (typeof node !== 'string' || node === '' || typeof agentId !== 'string' || agentId === '') {
    throw new HttpError(400, `${what} needs the ${HEADER_NODE} and ${HEADER_AGENT_ID} headers`);
  }
  return { node, agentId };
}

function readJson(stream: http2.ServerHttp2Stream): Promise<any> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    stream.on('data', (d: Buffer) => {
      size += d.length;
      if (size > MAX_BODY) {
        reject(new HttpError(413, `body over ${MAX_BODY} bytes`));
        // Stop reading; the 413 is sent by the handler, then the stream is reset so a client
        // that keeps sending cannot hold it open.
        stream.pause();
        setTimeout(() => stream.close(http2.constants.NGHTTP2_CANCEL), 1000).unref();
        return;
      }
      chunks.push(d);
    });
    stream.on('end', () => {
      if (size > MAX_BODY) return;
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch (e) {
        reject(new HttpError(400, `body is not JSON: ${(e as Error).message}`));
      }
    });
    stream.on('error', reject);
  });
}
