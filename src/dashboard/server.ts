// The dashboard: a read-only web UI served by the controller process on its own port. It reads
// the controller's window store and tap relay in process (no second copy of the data), serves
// a JSON API the page renders, Server-Sent Events when a report arrives, and the page's
// assets, built by `./dev setup` (web/build.ts) into dist/web. HTTP/1.1: browsers do not
// speak cleartext HTTP/2, which the controller's agent port is.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ControllerServer } from '../controller/server.ts';
import { streamSink, TapError } from '../controller/tap-relay.ts';
import type { TapOutput } from '../controller/protocol.ts';
import { VERSION } from '../version.ts';
import { ApiError, checkParams, namespaceParam, tapParams, windowParam, workloadParam } from './params.ts';
import { edgesView, knownNamespaces, namespacesView, nodesView, workloadsView, workloadView } from './views.ts';

/** dist/web of the checkout or image: found from this module whether it runs as src/ or as dist/src/. */
export function defaultAssetsDir(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(dir, 'package.json')) && path.dirname(dir) !== dir) dir = path.dirname(dir);
  return path.join(dir, 'dist/web');
}

export interface DashboardOptions {
  log: (level: 'info' | 'warn', msg: string, fields?: Record<string, unknown>) => void;
  assetsDir?: string;
  /** Taps open from pages at once; more are refused (429). */
  maxTaps?: number;
  /** Event streams open at once; more are refused (503). */
  maxEventStreams?: number;
}

/**
 * Host names the dashboard answers to: IP literals, localhost and the controller's Service
 * name. Anything else is refused, so a page on another site that rebinds its DNS name to
 * 127.0.0.1 cannot read the mesh's data through a port-forward (Linkerd's web does the same).
 * A namespace only with .svc after it: "mesh-agent-controller.NS" alone would let in
 * mesh-agent-controller.com, .io, ..., names anyone can register and rebind.
 */
export function hostAllowed(hostHeader: string | undefined): boolean {
  if (!hostHeader) return false;
  const m = /^(\[[^\]]+\]|[^:]+)(:\d+)?$/.exec(hostHeader.toLowerCase());
  if (!m) return false;
  const host = m[1]!.replace(/^\[(.*)\]$/, '$1');
  return net.isIP(host) !== 0 || host === 'localhost' || /^mesh-agent-controller(\.[a-z0-9-]+\.svc(\.cluster\.local)?)?$/.test(host);
}

/**
 * Whether a request to the API comes from the dashboard's own page, or from no page at all
 * (curl, the CLI, a URL typed in). Any site the user has open can send GETs to the forwarded
 * 127.0.0.1:PORT (an <img>, fetch in no-cors mode: it cannot read the answer, but a tap or an
 * event stream starts, and holds one of the few the dashboard allows). Browsers say where a
 * request comes from in Sec-Fetch-Site (sent to localhost and 127.0.0.1) and, for CORS
 * requests, Origin; either one naming another origin is refused.
 */
export function fromOwnPage(headers: http.IncomingHttpHeaders): boolean {
  const site = headers['sec-fetch-site'];
  if (site !== undefined && site !== 'same-origin' && site !== 'none') return false;
  const origin = headers.origin;
  return origin === undefined || origin.toLowerCase() === `http://${String(headers.host).toLowerCase()}`;
}

/** One Server-Sent Event. */
export function sseEvent(event: string, data: unknown): string {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

const TYPES: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.svg': 'image/svg+xml' };
const SECURITY = {
  'content-security-policy': "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};
const HEARTBEAT_MS = 15_000;

export class DashboardServer {
  private server: http.Server;
  private c: ControllerServer;
  private o: Required<DashboardOptions>;
  private assets: Map<string, { body: Buffer; gz?: Buffer }> | null = null;
  private events = new Set<http.ServerResponse>();
  private taps = new Set<http.ServerResponse>();
  private offReport: () => void;
  private heartbeat: NodeJS.Timeout;

  constructor(controller: ControllerServer, opts: DashboardOptions) {
    this.c = controller;
    this.o = { assetsDir: defaultAssetsDir(), maxTaps: 8, maxEventStreams: 64, ...opts };
    this.server = http.createServer((req, res) => this.handle(req, res));
    this.offReport = controller.onReport((node) => {
      const line = sseEvent('report', { node, at: Date.now() });
      // A reader that does not keep up misses a notice; the page refetches at the next one.
      for (const r of this.events) if (r.writableLength < 64 * 1024) r.write(line);
    });
    this.heartbeat = setInterval(() => {
      for (const r of [...this.events, ...this.taps]) r.write(': keep-alive\n\n');
    }, HEARTBEAT_MS).unref();
  }

  listen(host: string, port: number): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      this.server.once('error', (e) => reject(new Error(`dashboard listen on ${host}:${port} failed: ${e.message}; pass --dashboard-listen with a free address`)));
      this.server.listen(port, host, () => {
        const a = this.server.address();
        const bound = { host, port: typeof a === 'object' && a ? a.port : port };
        this.c.dashboard = bound;
        resolve(bound);
      });
    });
  }

  close(): Promise<void> {
    this.offReport();
    clearInterval(this.heartbeat);
    for (const r of [...this.events, ...this.taps]) r.destroy();
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    res.on('error', () => {});
    try {
      if (!hostAllowed(req.headers.host)) {
        throw new ApiError(403, `host "${req.headers.host ?? ''}" is not allowed: open the dashboard by IP address or localhost (mesh-agent dashboard prints the URL)`);
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') throw new ApiError(405, `${req.method} is not allowed: the dashboard is read-only (GET)`);
      const url = new URL(req.url ?? '/', 'http://dashboard');
      if (url.pathname.startsWith('/api/')) {
        if (!fromOwnPage(req.headers)) {
          throw new ApiError(403, `a request from another site (${req.headers.origin ?? `Sec-Fetch-Site: ${req.headers['sec-fetch-site']}`}) is refused: the dashboard's API answers only its own page`);
        }
        return this.api(url, req, res);
      }
      this.asset(url.pathname, req, res);
    } catch (e) {
      this.fail(res, e);
    }
  }

  private fail(res: http.ServerResponse, e: unknown): void {
    const status = e instanceof ApiError || e instanceof TapError ? e.status : 500;
    if (status === 500) this.o.log('warn', `dashboard request failed: ${(e as Error).stack ?? e}`);
    if (res.headersSent) return void res.end();
    this.json(res, status, { error: (e as Error).message });
  }

  private json(res: http.ServerResponse, status: number, body: unknown): void {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...SECURITY }).end(JSON.stringify(body));
  }

  private api(url: URL, req: http.IncomingMessage, res: http.ServerResponse): void {
    const q = url.searchParams;
    const route = url.pathname;
    checkParams(route, q);
    const store = this.c.store;
    const now = Date.now();
    const window = () => windowParam(q, store.retentionMs);
    // A namespace must be one the agents report (pods or traffic in the window): a typo gets a 404 that lists them.
    const knownNs = (ns: string, w: { text: string; ms: number }) => {
      const known = knownNamespaces(store, w.ms, now);
      if (!known.includes(ns)) {
        throw new ApiError(404, `namespace ${ns}: no agent reports a pod in it or traffic to it in the last ${w.text}${known.length ? `; namespaces: ${known.join(', ')}` : '; no agent has reported traffic yet'}`);
      }
    };
    switch (route) {
      case '/api/health':
        return this.json(res, 200, { ok: true, version: VERSION, retentionMs: store.retentionMs });
      case '/api/namespaces':
        return this.json(res, 200, namespacesView(store, window().ms, now));
      case '/api/workloads': {
        const ns = namespaceParam(q);
        const w = window();
        knownNs(ns, w);
        return this.json(res, 200, workloadsView(store, ns, w.ms, now));
      }
      case '/api/edges': {
        const ns = namespaceParam(q);
        const w = window();
        knownNs(ns, w);
        return this.json(res, 200, edgesView(store, { namespace: ns }, w.ms, now));
      }
      case '/api/workload': {
        const ref = workloadParam(q);
        const w = window();
        knownNs(ref.namespace, w);
        const view = workloadView(store, ref, w.ms, now);
        if (!view) throw new ApiError(404, `${ref.kind} ${ref.name} in namespace ${ref.namespace}: no pod of it is reported and no traffic to or from it in the last ${w.text}`);
        return this.json(res, 200, view);
      }
      case '/api/nodes':
        return this.json(res, 200, nodesView(store, this.c.relay.links(), now));
      case '/api/events':
        if (req.method === 'HEAD') return this.getOnly(res, route);
        return this.eventStream(req, res);
      case '/api/tap':
        // HEAD has no body to stream into: a tap it started would run unseen until the connection closed.
        if (req.method === 'HEAD') return this.getOnly(res, route);
        return this.tap(tapParams(q), res);
    }
  }

  private getOnly(res: http.ServerResponse, route: string): void {
    res.setHeader('allow', 'GET');
    this.json(res, 405, { error: `HEAD is not allowed on ${route}: it is a stream; open it with GET` });
  }

  private sseHead(res: http.ServerResponse): void {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive', ...SECURITY });
    res.flushHeaders();
  }

  private eventStream(_req: http.IncomingMessage, res: http.ServerResponse): void {
    if (this.events.size >= this.o.maxEventStreams) throw new ApiError(503, `${this.o.maxEventStreams} pages are already following updates; close some dashboard tabs`);
    this.sseHead(res);
    res.write('retry: 2000\n\n');
    res.write(sseEvent('hello', { at: Date.now() }));
    this.events.add(res);
    res.on('close', () => this.events.delete(res));
  }

  private tap(req: ReturnType<typeof tapParams>, res: http.ServerResponse): void {
    if (this.taps.size >= this.o.maxTaps) throw new ApiError(429, `${this.o.maxTaps} taps are already open from dashboards; stop one first`);
    // start() throws (404, 503, 400) before anything is written: the page gets the status and the message.
    const sink = streamSink(res, (o: TapOutput) => sseEvent(o.type, o), () => res.end());
    let started = false;
    const deferred: TapOutput[] = [];
    this.c.relay.start(req, {
      send: (o) => (started ? sink.send(o) : (deferred.push(o), true)),
      onClose: sink.onClose,
      close: sink.close,
    });
    started = true;
    this.sseHead(res);
    for (const o of deferred) sink.send(o);
    this.taps.add(res);
    res.on('close', () => this.taps.delete(res));
  }

  private asset(pathname: string, req: http.IncomingMessage, res: http.ServerResponse): void {
    const assets = this.loadAssets();
    if (!assets) {
      res.writeHead(503, { 'content-type': 'text/plain; charset=utf-8', ...SECURITY }).end(`the dashboard's web assets are not built (${this.o.assetsDir} is missing): run ./dev setup, which builds them (node web/build.ts)\n`);
      return;
    }
    // The page routes with the URL's fragment, so every other path is the page itself.
    const name = assets.has(pathname.slice(1)) ? pathname.slice(1) : 'index.html';
    const a = assets.get(name);
    if (!a) throw new ApiError(404, `no ${pathname}`);
    const gzip = a.gz && /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''));
    res.writeHead(200, {
      'content-type': TYPES[path.extname(name)] ?? 'application/octet-stream',
      'cache-control': 'no-cache',
      vary: 'accept-encoding',
      ...(gzip ? { 'content-encoding': 'gzip' } : {}),
      ...SECURITY,
    });
    res.end(req.method === 'HEAD' ? undefined : gzip ? a.gz : a.body);
  }

  /** The built files, read once; null while they are not built (a build later is picked up). */
  private loadAssets(): Map<string, { body: Buffer; gz?: Buffer }> | null {
    if (this.assets) return this.assets;
    if (!fs.existsSync(path.join(this.o.assetsDir, 'index.html'))) return null;
    const m = new Map<string, { body: Buffer; gz?: Buffer }>();
    for (const f of fs.readdirSync(this.o.assetsDir)) {
      if (f.endsWith('.gz')) continue;
      const body = fs.readFileSync(path.join(this.o.assetsDir, f));
      const gzPath = path.join(this.o.assetsDir, `${f}.gz`);
      m.set(f, { body, gz: fs.existsSync(gzPath) ? fs.readFileSync(gzPath) : undefined });
    }
    this.assets = m;
    return m;
  }
}
