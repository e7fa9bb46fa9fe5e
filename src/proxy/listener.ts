/**
 * The proxy's listener: accepts redirected connections, refuses those without a datapath
 * record (no open relay) or over the connection cap, builds the connection context and
 * hands it to dispatch. Owns the stats and graceful close.
 */
import * as net from 'node:net';
import type { ConnAuthz, ConnContext, Dialer, OrigDstLookup, ProtocolHandler, ProxyLimits, RouteResolver, TunnelRouter } from './context.ts';
import type { Endpoints } from '../telemetry/events.ts';
import { defaultLimits, dialsDirect, DrainSignal } from './context.ts';
import type { ConnCloseEvent, RequestEvent, TelemetrySink } from '../telemetry/events.ts';
import { nullSink } from '../telemetry/events.ts';
import { dispatch } from './dispatch.ts';
import type { DispatchConfig } from './dispatch.ts';
import { abortSocket, ignoreError } from './opaque.ts';
import { DEFAULT_OPAQUE_PORTS, PortSet } from './ports.ts';
import type { KernelSplicer } from './kernel-splice.ts';
import { DEFAULT_KNOWN_HTTP1_MAX, KnownHttp1 } from './known-http1.ts';
import { sharedSweeper, type Sweeper } from './sweep.ts';
import { localPair } from './local-pair.ts';
import { unevaluated } from '../policy/conn-authz.ts';
import { HeapSettle, type HeapSettleOptions } from './heap-settle.ts';
import { plainIp } from '../util/ip.ts';
import { nativeIoCounts, nativeIoOps } from './native-socket.ts';
import { socketFd } from './kernel-splice.ts';
import type { SocketOrig, SocketOrigLookup } from '../datapath/socket-lookup.ts';
import { LogLimit, suppressedField } from '../util/log-limit.ts';

export type LogFn = (level: 'info' | 'warn' | 'error', msg: string, fields?: object) => void;

/** The inbound listener (docs/policy.md): connections the kernel's capture hands the agent. */
export interface InboundListenOptions {
  host: string;
  port: number;
  /** One of several listeners on the address (the proxy workers). */
  reusePort?: boolean;
  /** A listening socket's fd with IP_TRANSPARENT (TPROXY hands connections to transparent sockets only). */
  listenFd: (host: string, port: number, reusePort: boolean) => number;
  /** The upstream dialer of a connection from this client: it connects with the client's own address. */
  dialFrom: (sourceIp: string) => Dialer;
}

/** A connection as the policy sees it when it is accepted: telemetry's endpoints, without what is learnt later. */
export type ConnectionInfo = Pick<Endpoints, 'direction' | 'sourceIp' | 'sourcePort' | 'sourcePodKey' | 'destIp' | 'destPort'>;

/**
 * The destination's inbound policy for a connection: its decisions (null when no policy governs
 * the destination, e.g. a pod of another node) and the client's identity when known.
 */
export type Authorize = (c: ConnectionInfo) => { authz: ConnAuthz | null; clientId?: string };

export interface ProxyOptions {
  /** reusePort: one of several listeners on the address (the proxy workers); the kernel spreads connections. */
  listen: { host: string; port: number; reusePort?: boolean };
  /** The datapath record of an accepted connection; null => refused (no open relay). */
  lookup: OrigDstLookup;
  /**
   * The same by the socket's fd, its peer included (datapath/socket-lookup.ts): one native call
   * instead of Node's remoteAddress and lookup(). Used for sockets with an fd; else `lookup`.
   */
  lookupSocket?: SocketOrigLookup;
  /**
   * Services behind ClusterIPs (routing/router.ts): their connections and requests are balanced
   * across the Service's endpoints. Without it every connection goes to its original destination.
   */
  router?: RouteResolver;
  /** Default: net.connect with allowHalfOpen and noDelay. Custom dialers should set allowHalfOpen too. */
  dial?: Dialer;
  /**
   * mTLS tunnels to meshed pods of other nodes (docs/identity.md): when given, each connection
   * dials through it as its source pod's identity (replacing `dial`), and waits for that
   * identity's first certificate if it is on its way.
   */
  tunnels?: TunnelRouter;
  telemetry?: TelemetrySink;
  limits?: Partial<ProxyLimits>;
  /** Neither side decided the protocol within this: opaque ('deadline'). Default 1000 ms. */
  detectTimeoutMs?: number;
  /** Destination ports that skip detection. Default DEFAULT_OPAQUE_PORTS. */
  opaquePorts?: PortSet;
  /** Per destination IP: its declared opaque ports, replacing opaquePorts; null = use opaquePorts. */
  opaquePortsOf?: (destIp: string) => PortSet | null;
  /** Open connections cap; new ones over it are reset. Default 10000. */
  maxConnections?: number;
  /**
   * The cap's count shared by several proxies (the agent's workers): each keeps its open
   * connections in its own slot, and the cap holds their sum. Default: this proxy alone.
   */
  openSlots?: { counts: Int32Array; slot: number };
  handlers?: { http1?: ProtocolHandler; http2?: ProtocolHandler };
  log?: LogFn;
  /** connBytes report interval while a connection lives (ms). Default 5000. */
  bytesReportMs?: number;
  /** Runs idle timeouts and byte reports; default the shared timers and Date.now() (sweep.ts). Tests pass a manual clock. */
  sweeper?: Sweeper;
  /** Kernel splice for opaque tunnels (--kernel-splice, docs/proxy.md); default none: Node copies. */
  splicer?: KernelSplicer | null;
  /** HTTP/1 connections' sockets driven from C++ (--native-io, docs/proxy.md); default false: Node's streams. */
  nativeIo?: boolean;
  /**
   * Destinations remembered as HTTP/1 client-first, which skip the eager dial (docs/proxy.md).
   * Default 4096; 0 = none (every connection dials at accept).
   */
  knownHttp1Max?: number;
  /** Also accept captured inbound connections (docs/policy.md). */
  inbound?: InboundListenOptions;
  /** Inbound authorization (docs/policy.md): asked for every connection, both listeners. */
  authorize?: Authorize;
  /**
   * Null when the destination's inbound policy is known; else a promise settling when it is (a
   * starting agent learning the TrafficTargets): the connection waits for it, paused, before
   * authorize() is asked (policy/authorizer.ts ready()).
   */
  policyReady?: (destIp: string) => Promise<unknown> | null;
  /**
   * Where the inbound policy's decisions on connections served in-process (a Service endpoint of
   * this node: local-pair.ts) are counted alone, the connection's own metrics being the outbound
   * side's (the agent's metrics; default: not counted).
   */
  decisions?: { requestAuthz(ev: RequestEvent): void; connAuthz(ev: ConnCloseEvent): void };
  /**
   * Once a burst of long-lived connections is over, give back the young generation it grew
   * (heap-settle.ts); null: never. Default on, after 500 more open connections.
   */
  heapSettle?: HeapSettleOptions | null;
}

export interface ProxyStats {
  /** Open dispatched connections (refused ones never count). */
  open: number;
  /** Every TCP connection the listener accepted, refused ones included. */
  accepted: number;
  refusedNoRecord: number;
  refusedOverCap: number;
  /** Connections per decided protocol ('http1', 'http2', 'tls', 'opaque'). */
  byProtocol: Record<string, number>;
  /**
   * Connections per way the protocol was decided (the telemetry's `detectedBy`: 'http1',
   * 'server-first', 'deadline', 'opaque-port', 'opaque:<reason>'...): shows whether
   * server-first traffic was caught by the race or waited for the deadline.
   */
  byDetection: Record<string, number>;
  /** Tunnels handed to the kernel (--kernel-splice), and hand-overs that failed (Node copied those). */
  spliced: number;
  spliceFailed: number;
  /**
   * Connections to destinations known to speak HTTP/1 client-first: handled without the eager
   * dial (the HTTP/1 handler took a pooled upstream or dialled), and those that turned out not
   * to be HTTP/1 (or stayed silent) and were dialled late; the destinations remembered.
   */
  eagerDialSkipped: number;
  eagerDialLate: number;
  knownHttp1Dests: number;
  /** Connections to a Service with no ready endpoint, refused at once (opaque) or answered 503 per request. */
  noEndpoints: number;
  /** Of `accepted`, connections the inbound listener accepted (captured on their way to a pod of this node). */
  inboundAccepted: number;
  /**
   * Connections from meshed pods of other nodes (through the mTLS tunnel) that the destination's
   * policy does not allow whole, handed here to be decided request by request.
   */
  tunnelledInspected: number;
  /** Connections of meshed pods of this node to a Service endpoint of this node its policy does not allow whole, served in-process. */
  localInspected: number;
  /** --native-io: HTTP/1 client and upstream sockets this thread drove from C++ (native-socket.ts). */
  nativeIoClients?: number;
  nativeIoUpstreams?: number;
}

export const DEFAULT_DETECT_TIMEOUT_MS = 1000;
export const DEFAULT_MAX_CONNECTIONS = 10_000;
export const DEFAULT_DRAIN_MS = 10_000;
/** The listener's accept queue (the kernel caps it at net.core.somaxconn, 4096 by default). */
export const LISTEN_BACKLOG = 4096;
/** At most one line per this interval for each refusal kind. */
export const REFUSAL_LOG_INTERVAL_MS = 10_000;

export const defaultDialer: Dialer = (ip, port) => net.connect({ host: ip, port, allowHalfOpen: true, noDelay: true });

const defaultLog: LogFn = (level, msg, fields) => {
  if (level === 'info') return;
  process.stderr.write(`${JSON.stringify({ level, msg, ...fields })}\n`);
};

export { plainIp };

/** Where a connection goes: its route (a Service's, or none), how its upstream is dialled, and its endpoints' policy. */
type Plan = { route: ConnContext['route']; dial: Dialer; endpointAuthz: ConnContext['endpointAuthz'] };

export class Proxy {
  readonly #opts: ProxyOptions;
  readonly #limits: ProxyLimits;
  readonly #dial: Dialer;
  readonly #telemetry: TelemetrySink;
  readonly #log: LogFn;
  readonly #maxConnections: number;
  readonly #cfg: DispatchConfig;
  readonly #clients = new Set<net.Socket>();
  /** Refusal lines, one per kind ('cap', 'splice', 'noRecord') per REFUSAL_LOG_INTERVAL_MS. */
  readonly #logLimit: LogLimit;
  #server: net.Server | null = null;
  #inboundServer: net.Server | null = null;
  #nextConnId = 0;
  /** What close() calls wait on until no connection is open (each call its own: a second close() must not orphan the first's). */
  readonly #drainWaits = new Set<() => void>();
  #endDrainWaits = (): void => {
    for (const f of [...this.#drainWaits]) f();
  };
  /** cutDrain() was called: the drain ends now, not at its deadline. */
  #cutNow = false;
  readonly #drain = new DrainSignal();
  readonly #knownHttp1: KnownHttp1 | null;
  #stats: ProxyStats = {
    open: 0, accepted: 0, refusedNoRecord: 0, refusedOverCap: 0, byProtocol: {}, byDetection: {}, spliced: 0, spliceFailed: 0,
    eagerDialSkipped: 0, eagerDialLate: 0, knownHttp1Dests: 0, noEndpoints: 0, inboundAccepted: 0, tunnelledInspected: 0, localInspected: 0,
  };
  /** One 'close' listener for every client (`this` is the socket): no closure per connection. */
  readonly #onClientClose: (this: net.Socket) => void;
  /** Open connections of every proxy sharing the cap (this one included). */
  readonly #openNow: () => number;
  readonly #settle: HeapSettle | null;

  constructor(opts: ProxyOptions) {
    const detectTimeoutMs = opts.detectTimeoutMs ?? DEFAULT_DETECT_TIMEOUT_MS;
    if (!(detectTimeoutMs > 0)) throw new Error(`detectTimeoutMs must be > 0, got ${detectTimeoutMs}`);
    const maxConnections = opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    if (!(maxConnections >= 1)) throw new Error(`maxConnections must be >= 1, got ${maxConnections}`);
    this.#opts = opts;
    this.#limits = { ...defaultLimits, ...opts.limits };
    this.#dial = opts.dial ?? defaultDialer;
    this.#telemetry = opts.telemetry ?? nullSink;
    this.#log = opts.log ?? defaultLog;
    // The proxy's clock (a test's manual one moves it on).
    const sweeper = opts.sweeper ?? sharedSweeper;
    this.#logLimit = new LogLimit(() => sweeper.now());
    this.#maxConnections = maxConnections;
    const knownMax = opts.knownHttp1Max ?? DEFAULT_KNOWN_HTTP1_MAX;
    this.#knownHttp1 = knownMax > 0 && opts.handlers?.http1 ? new KnownHttp1(knownMax) : null;
    this.#cfg = {
      limits: this.#limits,
      detectTimeoutMs,
      opaquePorts: opts.opaquePorts ?? PortSet.parse(DEFAULT_OPAQUE_PORTS),
      opaquePortsOf: opts.opaquePortsOf,
      handlers: { ...opts.handlers },
      bytesReportMs: opts.bytesReportMs,
      sweeper: opts.sweeper,
      onDecision: this.#countDecision,
      splicer: opts.splicer ?? null,
      nativeIo: opts.nativeIo === true && this.#nativeIoReady(),
      onSplice: this.#countSplice,
      knownHttp1: this.#knownHttp1,
      onKnownHttp1: this.#countKnownHttp1,
      onNoEndpoints: () => void this.#stats.noEndpoints++,
      log: this.#log,
    };
    const clients = this.#clients;
    const stats = this.#stats;
    const drained = this.#endDrainWaits;
    const settle = opts.heapSettle === null ? null : new HeapSettle(() => stats.open, {
      onShrink: (open, ms, error, startUp) => {
        const grew = startUp ? 'start-up' : 'a burst of connections';
        this.#log('info', error ? `could not give back the young generation ${grew} grew (no effect on traffic; the thread idles a few MB larger): ${error.message}` : `gave back the young generation ${grew} grew`, { open, ms: Math.round(ms) });
      },
      ...opts.heapSettle,
    });
    this.#settle = settle;
    const shared = opts.openSlots;
    if (shared !== undefined && !(shared.slot >= 0 && shared.slot < shared.counts.length)) throw new Error(`openSlots.slot ${shared.slot} is outside 0-${shared.counts.length - 1}`);
    this.#openNow = shared === undefined ? () => stats.open : () => {
      let n = 0;
      for (let i = 0; i < shared.counts.length; i++) n += Atomics.load(shared.counts, i);
      return n;
    };
    this.#onClientClose = function (this: net.Socket) {
      if (!clients.delete(this)) return;
      stats.open--;
      if (shared !== undefined) Atomics.sub(shared.counts, shared.slot, 1);
      settle?.closed();
      if (stats.open === 0) drained();
    };
  }

  async listen(): Promise<{ host: string; port: number }> {
    if (this.#server) throw new Error('proxy already listening');
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, this.#onConnection);
    this.#server = server;
    const { host, port, reusePort } = this.#opts.listen;
    return this.#listenOn(server, { host, port, ...(reusePort ? { reusePort: true } : {}) }, 'proxy');
  }

  /**
   * Starts the inbound listener (opts.inbound). Separate from listen(): the agent starts it only
   * once it knows its pods' policies, so a capture left in place by a previous agent never hands
   * a connection to a proxy that would not know what to allow.
   */
  async listenInbound(): Promise<{ host: string; port: number }> {
    const inbound = this.#opts.inbound;
    if (!inbound) throw new Error('no inbound listener configured');
    if (this.#inboundServer) throw new Error('inbound listener already listening');
    const fd = inbound.listenFd(inbound.host, inbound.port, inbound.reusePort ?? false);
    const s = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, this.#onInbound);
    this.#inboundServer = s;
    try {
      return await this.#listenOn(s, { fd }, 'inbound proxy');
    } catch (e) {
      this.#inboundServer = null;
      throw e;
    }
  }

  /** The inbound listener's address, or null without one. */
  inboundAddress(): { host: string; port: number } | null {
    const a = this.#inboundServer?.address() as net.AddressInfo | null | undefined;
    return a ? { host: a.address, port: a.port } : null;
  }

  #listenOn(server: net.Server, how: net.ListenOptions | { fd: number }, what: string): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      // A node's connection bursts queue here while the proxy is busy: Node's default backlog (511)
      // drops SYNs first, and a dropped SYN costs its client a retransmit timeout (1 s, then 3 s).
      server.listen({ ...(how as net.ListenOptions), backlog: LISTEN_BACKLOG }, () => {
        server.removeListener('error', reject);
        server.on('error', (err) => this.#log('error', `${what} listener error`, { error: String(err) }));
        const addr = server.address() as net.AddressInfo;
        this.#log('info', `${what} listening`, { host: addr.address, port: addr.port });
        resolve({ host: addr.address, port: addr.port });
      });
    });
  }

  /**
   * Stops accepting captured connections (the rest keeps going). The agent calls it once the
   * kernel no longer hands it new ones, so none is reset in the accept queue.
   */
  closeInbound(): Promise<void> {
    const s = this.#inboundServer;
    this.#inboundServer = null;
    return s ? new Promise((r) => s.close(() => r())) : Promise.resolve();
  }

  /** Gives back the young generation this thread's start-up grew, once the proxy is first idle (heap-settle.ts); none with heapSettle null. */
  settleStartUp(): void {
    this.#settle?.settleStartUp();
  }

  /** Stops accepting, lets open connections finish for up to drainMs, then destroys the rest. */
  async close(drainMs = DEFAULT_DRAIN_MS): Promise<void> {
    const server = this.#server;
    if (!server) return;
    this.#settle?.stop();
    const closed = Promise.all([new Promise<void>((resolve) => server.close(() => resolve())), this.closeInbound()]);
    // Keep-alive connections end between exchanges from now on, so their clients lose nothing.
    this.#drain.start();
    if (!this.#cutNow) await this.#drained(drainMs);
    if (this.#stats.open > 0) {
      this.#log('warn', 'drain deadline passed; closing remaining connections', { open: this.#stats.open, drainMs });
      this.#drain.cut(); // a cut that only a reset reports is reset by its handler first
      for (const c of this.#clients) c.destroy();
      await this.#drained(1000); // their 'close' events follow on the next ticks
    }
    await closed;
  }

  /**
   * Ends the drain (close(), now or to come) at once: the connections still open are closed as at
   * its deadline. A second SIGTERM/SIGINT during the drain (cli/run.ts).
   */
  cutDrain(): void {
    this.#cutNow = true;
    this.#endDrainWaits();
  }

  /** Resolves when no connection is open, or after ms. */
  #drained(ms: number): Promise<void> {
    if (this.#stats.open === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#drainWaits.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#drainWaits.add(done);
    });
  }

  stats(): ProxyStats {
    const s = this.#stats;
    const io = this.#cfg.nativeIo ? { nativeIoClients: nativeIoCounts.clients, nativeIoUpstreams: nativeIoCounts.upstreams } : {};
    return { ...s, byProtocol: { ...s.byProtocol }, byDetection: { ...s.byDetection }, knownHttp1Dests: this.#knownHttp1?.size ?? 0, ...io };
  }

  /** --native-io needs the addon's socket calls; without them HTTP/1 stays on Node's sockets, said once. */
  #nativeIoReady(): boolean {
    if (nativeIoOps() !== null) return true;
    this.#log('warn', '--native-io: the datapath addon (build/Release/mesh_bpf.node) has no native socket calls, so HTTP/1 stays on Node\'s sockets; rebuild it with ./dev setup', {});
    return false;
  }

  #countKnownHttp1 = (skippedDial: boolean): void => {
    if (skippedDial) this.#stats.eagerDialSkipped++;
    else this.#stats.eagerDialLate++;
  };

  #countDecision = (protocol: string, detectedBy: string): void => {
    const { byProtocol, byDetection } = this.#stats;
    byProtocol[protocol] = (byProtocol[protocol] ?? 0) + 1;
    byDetection[detectedBy] = (byDetection[detectedBy] ?? 0) + 1;
  };

  /** A refusal's line, unless one of its kind went out within REFUSAL_LOG_INTERVAL_MS (then counted, in `suppressed` of the next). */
  #limitedLog(kind: 'cap' | 'splice' | 'noRecord', level: 'info' | 'warn', msg: string, fields: object): void {
    const held = this.#logLimit.hit(kind, REFUSAL_LOG_INTERVAL_MS);
    if (held !== null) this.#log(level, msg, { ...fields, ...suppressedField(held) });
  }

  #countSplice = (error: string | null): void => {
    if (error === null) {
      this.#stats.spliced++;
      return;
    }
    this.#stats.spliceFailed++;
    this.#limitedLog('splice', 'warn', `kernel splice failed, the proxy copies instead: ${error}; run without --kernel-splice if this persists`,
      { spliceFailed: this.#stats.spliceFailed });
  };

  /**
   * Counts the connection and applies the cap; false when it was refused. `redirected`: an
   * outbound connection, which has a datapath record to look up even when refused; a captured
   * inbound one has none (its lookup would only count a miss).
   */
  #admit(client: net.Socket, redirected = false): boolean {
    client.on('error', ignoreError);
    const stats = this.#stats;
    stats.accepted++;
    const openNow = this.#openNow();
    if (openNow >= this.#maxConnections) {
      stats.refusedOverCap++;
      // Looked up all the same, for the record's sake: one whose client closed first (its FIN
      // before this accept) is kept in the kernel for this lookup, which deletes it; unread, it
      // would stay until the LRU evicts it (docs/architecture.md, sockops).
      if (redirected) this.#peerAndRecord(client);
      abortSocket(client);
      this.#limitedLog('cap', 'warn',
        `connection limit ${this.#maxConnections} reached; refusing new connections; raise --max-connections`,
        { open: openNow, refusedOverCap: stats.refusedOverCap });
      return false;
    }
    return true;
  }

  /** False (and destroyed) when the client is already gone. */
  #hasPeer(client: net.Socket): boolean {
    if (client.remoteAddress !== undefined && client.remotePort !== undefined) return true;
    client.destroy();
    return false;
  }

  /**
   * The client's peer and datapath record: by its fd in one native call where it can tell
   * (datapath/socket-lookup.ts), else Node's peer and lookup(); 'gone' when the peer already left.
   * A lookup that throws is logged and gives no record: the connection is refused.
   */
  #peerAndRecord(client: net.Socket): SocketOrig | 'gone' {
    const bySocket = this.#opts.lookupSocket;
    const fd = bySocket === undefined ? null : socketFd(client);
    try {
      const found = fd === null ? null : bySocket!(fd);
      if (found !== null) return found;
      if (client.remoteAddress === undefined || client.remotePort === undefined) return 'gone';
      const sourceIp = plainIp(client.remoteAddress);
      return { sourceIp, sourcePort: client.remotePort, rec: this.#opts.lookup(sourceIp, client.remotePort) };
    } catch (err) {
      const sourceIp = plainIp(client.remoteAddress ?? '');
      const sourcePort = client.remotePort ?? 0;
      this.#log('error', 'datapath lookup failed; refusing connection', { sourceIp, sourcePort, error: String(err) });
      return { sourceIp, sourcePort, rec: null };
    }
  }

  #onConnection = (client: net.Socket): void => {
    if (!this.#admit(client, true)) return;
    const found = this.#peerAndRecord(client);
    if (found === 'gone') {
      client.destroy(); // already gone
      return;
    }
    const stats = this.#stats;
    const { sourceIp, sourcePort: remotePort, rec } = found;
    if (!rec) {
      stats.refusedNoRecord++;
      abortSocket(client);
      this.#limitedLog('noRecord', 'info', 'refused connection without a datapath record (not redirected; no open relay)',
        { sourceIp, sourcePort: remotePort, refusedNoRecord: stats.refusedNoRecord });
      return;
    }
    const tunnels = this.#opts.tunnels;
    const srcUri = tunnels ? tunnels.identityOf(sourceIp) : null;
    const direct: Dialer = tunnels ? (ip, port) => tunnels.dial(srcUri, sourceIp, ip, port) : this.#dial;
    // Resolved after any wait: discovery's first sync may be what the connection waited for.
    const plan = (): Plan => {
      let route = null;
      try {
        route = this.#opts.router?.resolve(rec.ip, rec.port) ?? null;
      } catch (err) {
        // Routing is an optimisation over the original destination, never a reason to refuse.
        this.#log('error', 'route lookup failed; forwarding to the original destination', { destIp: rec.ip, destPort: rec.port, error: String(err) });
      }
      // A Service's endpoint is chosen after accept: one on this node is authorized when dialled,
      // and one its policy does not allow whole is served in-process by the inbound side.
      const authorize = this.#opts.authorize;
      if (route === null || !authorize) return { route, dial: direct, endpointAuthz: undefined };
      // Once per endpoint: the dial applies the decision, the connection's events count it.
      // Keyed by address, then port: asked on every request, it builds no key string.
      const decided = new Map<string, Map<number, ReturnType<Authorize>>>();
      const at = (ip: string, port: number): ReturnType<Authorize> => {
        let byPort = decided.get(ip);
        if (byPort === undefined) decided.set(ip, (byPort = new Map()));
        let a = byPort.get(port);
        if (a === undefined) byPort.set(port, (a = this.#authorizeEndpoint(authorize, { direction: 'outbound', sourceIp, sourcePort: remotePort, sourcePodKey: rec.podKey, destIp: ip, destPort: port })));
        return a;
      };
      const dial: Dialer = (ip, port) => {
        const a = at(ip, port);
        if (a.authz !== null && !dialsDirect(a.authz)) return this.#serveLocal(a.authz, a.clientId, sourceIp, rec.podKey, ip, port);
        return direct(ip, port);
      };
      return { route, dial, endpointAuthz: (ip, port) => at(ip, port).authz };
    };
    // A pod whose first certificate is on its way: its connection waits for it (paused), so the
    // first connection of a new pod is not refused (docs/identity.md). Before discovery's first
    // sync a meshed pod's connection waits for that too (bounded): until then a meshed pod of
    // another node cannot be told from any address, and would be reached in plaintext.
    const idWait = tunnels?.waitFor(srcUri) ?? null;
    const policyWait = this.#opts.policyReady?.(rec.ip) ?? null;
    const wait = idWait === null ? policyWait : policyWait === null ? idWait : Promise.all([idWait, policyWait]);
    this.#start(client, { direction: 'outbound', sourceIp, sourcePort: remotePort, sourcePodKey: rec.podKey, destIp: rec.ip, destPort: rec.port }, plan, srcUri ?? '', wait);
  };
  /**
   * A connection the kernel captured on its way to a pod of this node: its original destination
   * is the address it was accepted on (TPROXY keeps it), its upstream leaves with the client's
   * own address, and the pod's policy decides what passes.
   */
  #onInbound = (client: net.Socket): void => {
    if (!this.#admit(client) || !this.#hasPeer(client)) return;
    this.#stats.inboundAccepted++;
    const sourceIp = plainIp(client.remoteAddress!);
    const destIp = client.localAddress === undefined ? '' : plainIp(client.localAddress);
    const destPort = client.localPort ?? 0;
    // Its upstreams carry this client's address: pooled for this client alone.
    this.#start(client, { direction: 'inbound', sourceIp, sourcePort: client.remotePort!, sourcePodKey: 0n, destIp, destPort }, () => ({ route: null, dial: this.#opts.inbound!.dialFrom(sourceIp), endpointAuthz: undefined }), `client:${sourceIp}`, null);
  };

  /**
   * A connection that arrived through an mTLS tunnel to a pod of this node whose inbound policy
   * does not allow the client whole connections (tunnel/server.ts): the proxy's own path, so that
   * HTTP is decided request by request (403, gRPC status 7) and anything else is closed, as for a
   * captured connection. The context comes made (the client is the tunnel's stream, its authz
   * decided with the identity the tunnel verified); it counts as an open connection here.
   */
  serveTunnelled(ctx: ConnContext): void {
    this.#stats.tunnelledInspected++;
    this.#serveInspected(ctx);
  }

  /**
   * A Service endpoint's decision. It is first asked where nothing catches (a request on a pooled
   * upstream, an HTTP/2 stream): a policy that cannot be evaluated must refuse, never crash the
   * thread, never allow by accident.
   */
  #authorizeEndpoint(authorize: Authorize, c: ConnectionInfo): ReturnType<Authorize> {
    try {
      return authorize(c);
    } catch (err) {
      this.#log('error', 'inbound policy evaluation failed for a Service endpoint; refusing it', { ...c, sourcePodKey: String(c.sourcePodKey), error: String(err) });
      return { authz: unevaluated(c.destPort) };
    }
  }

  /** An in-process connection to a Service endpoint of this node that its policy does not allow whole (local-pair.ts). */
  #serveLocal(authz: ConnAuthz, clientId: string | undefined, sourceIp: string, podKey: bigint, ip: string, port: number): net.Socket {
    const { upstream, downstream } = localPair();
    const d = this.#opts.decisions;
    this.#stats.localInspected++;
    this.#serveInspected({
      connId: ++this.#nextConnId,
      client: downstream,
      endpoints: { direction: 'inbound', sourceIp, sourcePort: 0, sourcePodKey: podKey, destIp: ip, destPort: port, ...(clientId !== undefined ? { clientId } : {}) },
      // The outbound side's events are this connection's metrics (both sides, same node): here only the decisions.
      telemetry: { connOpen() {}, connBytes() {}, connClose: (ev) => d?.connAuthz(ev), request: (ev) => d?.requestAuthz(ev) },
      dial: this.#dial,
      openedAt: Date.now(),
      route: null,
      lease: null,
      authz,
      poolScope: '',
    });
    return upstream;
  }

  /** A connection whose context comes made (a tunnel's stream, an in-process pair). */
  #serveInspected(ctx: ConnContext): void {
    this.#hold(ctx.client);
    ctx.drain = this.#drain;
    this.#dispatch(ctx);
  }

  /** Counts a client as open (the cap, the drain) until it closes. */
  #hold(client: net.Socket): void {
    this.#stats.open++;
    if (this.#opts.openSlots !== undefined) Atomics.add(this.#opts.openSlots.counts, this.#opts.openSlots.slot, 1);
    this.#clients.add(client);
    client.on('close', this.#onClientClose);
    this.#settle?.opened();
  }

  /** Reports the connection open and dispatches it; a Service's is reported once dispatch knows where it goes (dispatch.ts, opened()). */
  #dispatch(ctx: ConnContext): void {
    if (!ctx.route) {
      try {
        ctx.telemetry.connOpen({ ...ctx.endpoints, connId: ctx.connId, openedAt: ctx.openedAt });
      } catch {
        // a broken sink must not refuse traffic
      }
    }
    dispatch(ctx, this.#cfg);
  }

  #start(client: net.Socket, conn: ConnectionInfo, plan: () => Plan, poolScope: string, wait: Promise<unknown> | null): void {
    const stats = this.#stats;
    this.#hold(client);
    // After any wait: the policy may have been learnt meanwhile.
    const go = (): void => {
      const { route, dial, endpointAuthz } = plan();
      let authz: ConnAuthz | null = null;
      let clientId: string | undefined;
      if (this.#opts.authorize) {
        try {
          const a = this.#opts.authorize(conn);
          authz = a.authz;
          clientId = a.clientId;
        } catch (err) {
          // Never an allow-all by accident: a policy that cannot be evaluated refuses.
          this.#log('error', 'inbound policy evaluation failed; refusing the connection', { ...conn, sourcePodKey: String(conn.sourcePodKey), error: String(err) });
          abortSocket(client);
          return;
        }
      }
      if (conn.direction === 'inbound' && authz === null) {
        // Not a meshed pod of this node (the capture takes only those): a connection made
        // straight to the inbound port. Dialling its destination could reach this listener
        // again and loop until the connection cap; no open relay, as on the outbound port.
        stats.refusedNoRecord++;
        abortSocket(client);
        this.#limitedLog('noRecord', 'info', 'refused a connection to the inbound port that is not for a meshed pod of this node (not captured; no open relay)',
          { sourceIp: conn.sourceIp, destIp: conn.destIp, destPort: conn.destPort, refusedNoRecord: stats.refusedNoRecord });
        return;
      }
      const scope = poolScope !== '' ? poolScope : clientId ?? '';
      const ctx: ConnContext = {
        connId: ++this.#nextConnId,
        client,
        endpoints: {
          direction: conn.direction,
          sourceIp: conn.sourceIp,
          sourcePort: conn.sourcePort,
          sourcePodKey: conn.sourcePodKey,
          destIp: conn.destIp,
          destPort: conn.destPort,
          ...(route ? { dstService: { namespace: route.ref.namespace, name: route.ref.name } } : {}),
          ...(clientId !== undefined ? { clientId } : {}),
        },
        telemetry: this.#telemetry,
        dial,
        openedAt: Date.now(),
        route,
        lease: null,
        drain: this.#drain,
        authz,
        endpointAuthz,
        // Upstreams are pooled per client identity (tunnel or not): one dialled for a Service
        // endpoint of this node carries its client's authorization (local-pair.ts). One whose
        // requests this connection checks one by one has a pool of its own: a Service's
        // connection, authorized when dialled, would otherwise reuse it and skip the checks.
        poolScope: authz !== null && authz.verdict !== 'allow' ? `${scope}|checked` : scope,
      };
      this.#dispatch(ctx);
    };
    if (wait === null) go();
    else void wait.then(go);
  }
}
