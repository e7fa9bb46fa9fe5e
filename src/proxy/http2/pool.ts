// Upstream HTTP/2 sessions, shared by every client connection to the same destination
// ip:port, so N client connections cost one upstream connection (as linkerd does per endpoint).
import type * as http2 from 'node:http2';
import type * as net from 'node:net';
import { endpointPoolKey, type ConnContext, type Dialer, type ProxyLimits } from '../context.ts';
import type { BalancedEndpoint } from '../../routing/balancer.ts';
import type { ProxyFailure } from './headers.ts';
import { IdleTimer } from '../../util/idle-timer.ts';
import { nodeHttp2 } from '../../util/builtins.ts';
import { watchCutShort } from './relay.ts';

export interface PoolOptions {
  /** Close an upstream session after this long without streams. */
  idleTimeoutMs?: number;
  /** Open another session to the destination when one carries this many streams. */
  maxStreamsPerSession?: number;
  /** After a session to a destination failed to connect, readyOrConnect opens none there for this long (ms). */
  connectRetryMs?: number;
  /** Streams one session carries in its life (default SESSION_STREAM_IDS); then the next go on a new one. */
  streamsPerSessionLife?: number;
}

/**
 * Streams a client session can open: odd stream IDs up to 2^31-1 (RFC 9113 5.1.1), less a margin.
 * Past them node:http2 fails every new stream (ERR_HTTP2_OUT_OF_STREAMS) while the session still
 * looks open: at 10,000 requests a second to one destination, after some 30 hours. A session that
 * has carried this many takes no more; it closes once idle, and a new one serves (as Envoy drains
 * a connection whose stream IDs run out).
 */
export const SESSION_STREAM_IDS = 2 ** 30 - 16;

/** How long a destination whose connect failed is left alone by warm-ups: a dead endpoint drawn at every request must not be dialled at every request. */
export const DEFAULT_CONNECT_RETRY_MS = 1000;

/** One upstream session and what the forwarder needs to know about it. */
export class UpstreamSession {
  readonly key: string;
  readonly session: http2.ClientHttp2Session;
  /** Set once the session failed before or while connecting: decides 502 vs 504. */
  failure: ProxyFailure | undefined;
  failureDetail = '';
  /**
   * performance.now() when its connection was up (TCP connected; through a tunnel, the other
   * agent answered the CONNECT); 0 until then, and for good if it never was. A stream that waited
   * for it starts its balancer RTT sample here, not at its own start (rttSample, docs/routing.md).
   */
  connectedAt = 0;
  /** The peer's first SETTINGS came: an HTTP/2 session, not only a TCP connection. */
  settled = false;
  /** Streams ever opened on it. */
  served = 0;
  /** The pool closed it (idle, or the pool's close): its end says nothing about the endpoint. */
  closedHere = false;
  /** Its open streams; closes the session once none was open for the pool's idle timeout. */
  readonly #idle: IdleTimer;

  readonly #lifeMax: number;

  constructor(key: string, session: http2.ClientHttp2Session, idleMs: number, lifeMax = SESSION_STREAM_IDS) {
    this.key = key;
    this.session = session;
    this.#lifeMax = lifeMax;
    this.#idle = new IdleTimer(idleMs, () => this.close());
  }

  /** Streams open on the session. */
  get active(): number {
    return this.#idle.open;
  }

  get usable(): boolean {
    const s = this.session;
    return !s.closed && !s.destroyed && this.failure === undefined && !this.goaway && this.served < this.#lifeMax;
  }

  goaway = false;

  capacity(maxStreams: number): number {
    const remoteMax = this.session.remoteSettings?.maxConcurrentStreams ?? Infinity;
    return Math.min(maxStreams, remoteMax) - this.active;
  }

  close(): void {
    this.closedHere = true;
    this.session.close();
  }

  /**
   * Whether its end tells that the endpoint gave no session: a connect that failed, a connection
   * that ended before the peer's SETTINGS (a process that accepts and closes, a server that is not
   * HTTP/2), or a session the peer ended before taking any stream (GOAWAY or close right after its
   * SETTINGS: shutting down, or at its connection limit).
   */
  get endedUnused(): boolean {
    if (!this.settled) return this.failure !== undefined || this.connectedAt > 0;
    return this.served === 0 && !this.closedHere;
  }

  /** Opens a stream; the caller must listen for 'error' on it. */
  request(headers: http2.OutgoingHttpHeaders, opts: http2.ClientSessionRequestOptions): http2.ClientHttp2Stream {
    const stream = this.session.request(headers, opts);
    this.#idle.enter();
    this.served++;
    stream.once('close', this.#streamClosed);
    return stream;
  }

  // One function for every stream's 'close', not a closure per stream.
  readonly #streamClosed = (): void => {
    this.#idle.leave();
    if (this.served >= this.#lifeMax && this.#idle.open === 0) this.close(); // its stream IDs are spent
  };

  disposeTimers() {
    this.#idle.stop();
  }
}

export class Http2SessionPool {
  readonly #idleMs: number;
  readonly #maxStreams: number;
  readonly #byKey = new Map<string, UpstreamSession[]>();
  readonly #connectRetryMs: number;
  readonly #lifeMax: number;
  /** performance.now() of the last failed connect, by key (dropped once it is older than connectRetryMs or a session connects). */
  readonly #connectFailedAt = new Map<string, number>();
  /** Sessions ever opened, for tests and metrics. */
  opened = 0;

  constructor(opts: PoolOptions = {}) {
    this.#idleMs = opts.idleTimeoutMs ?? 60_000;
    this.#maxStreams = opts.maxStreamsPerSession ?? 250;
    this.#connectRetryMs = opts.connectRetryMs ?? DEFAULT_CONNECT_RETRY_MS;
    this.#lifeMax = opts.streamsPerSessionLife ?? SESSION_STREAM_IDS;
  }

  /**
   * Takes the dispatcher's eager connection: it becomes the destination's first session
   * when none is usable, otherwise it is closed (one upstream connection is enough).
   */
  offer(ip: string, port: number, socket: net.Socket, connectTimeoutMs: number, key = keyOf(ip, port)): void {
    socket.on('error', () => {}); // errors surface through the session, or not at all
    if (socket.destroyed || this.#pick(key)) {
      socket.destroy();
      return;
    }
    this.#open(ip, port, () => socket, connectTimeoutMs, key);
  }

  /**
   * A session with room for one more stream, opening one through `via.dial(ip, port)` if needed.
   * `key`: keyOf(ip, port), which a Service's endpoint already holds (BalancedEndpoint.key), so a
   * request builds no string and no closure to find its session; with context.ts INSPECTED
   * appended, a kind of session to the destination that never serves the others.
   */
  acquire(ip: string, port: number, via: { dial: Dialer }, connectTimeoutMs: number, key = keyOf(ip, port)): UpstreamSession {
    return this.#pick(key) ?? this.#open(ip, port, () => via.dial(ip, port), connectTimeoutMs, key);
  }

  /**
   * Whether `key` has a connected session that takes streams: a balancer's ready endpoint
   * (Balancer.pick). With `connect`, when it has none at all, one is opened now through `via`
   * (a warm-up: it closes after the idle timeout if no stream comes), so the endpoint is ready
   * for a later request without this one waiting for the connect; while one connects, not
   * ready. After a connect to `key` failed, none is opened for connectRetryMs.
   */
  readyOrConnect(ip: string, port: number, via: { dial: Dialer }, connectTimeoutMs: number, key = keyOf(ip, port), connect = true): boolean {
    const list = this.#byKey.get(key);
    if (list !== undefined) {
      if (this.#connected(list) !== undefined) return true;
      for (const u of list) if (u.usable) return false; // connecting (or full: acquire opens the next)
    }
    if (!connect) return false;
    const failedAt = this.#connectFailedAt.get(key);
    if (failedAt !== undefined) {
      if (performance.now() - failedAt < this.#connectRetryMs) return false;
      this.#connectFailedAt.delete(key);
    }
    try {
      this.#open(ip, port, () => via.dial(ip, port), connectTimeoutMs, key);
    } catch {
      // a dial that throws at once: the request that picks this endpoint gets the error
    }
    return false;
  }

  /** Sessions currently pooled for a destination. */
  sessions(ip: string, port: number): readonly UpstreamSession[] {
    return this.#byKey.get(keyOf(ip, port)) ?? [];
  }

  close(): void {
    for (const list of this.#byKey.values()) {
      for (const u of list) {
        u.disposeTimers();
        u.close();
      }
    }
    this.#byKey.clear();
    this.#connectFailedAt.clear();
  }

  #noteConnectFailed(key: string): void {
    const now = performance.now();
    // Keys of endpoints long gone would stay otherwise: past a thousand, the expired go.
    if (this.#connectFailedAt.size >= 1024) for (const [k, at] of this.#connectFailedAt) if (now - at >= this.#connectRetryMs) this.#connectFailedAt.delete(k);
    this.#connectFailedAt.set(key, now);
  }

  #pick(key: string): UpstreamSession | undefined {
    const list = this.#byKey.get(key);
    if (!list) return undefined;
    // A connected one first: readyOrConnect called the endpoint ready for it, and one still
    // connecting ahead of it in the list would make the request wait for that connect.
    const c = this.#connected(list);
    if (c !== undefined) return c;
    for (const u of list) if (u.usable && u.capacity(this.#maxStreams) > 0) return u;
    return undefined;
  }

  /** A connected session with room for a stream: what makes its endpoint ready. */
  #connected(list: readonly UpstreamSession[]): UpstreamSession | undefined {
    for (const u of list) if (u.usable && u.connectedAt > 0 && u.capacity(this.#maxStreams) > 0) return u;
    return undefined;
  }

  #open(ip: string, port: number, connect: () => net.Socket, connectTimeoutMs: number, key: string): UpstreamSession {
    const host = ip.includes(':') ? `[${ip}]` : ip;
    watchCutShort();
    let socket: net.Socket | undefined;
    const session = nodeHttp2().connect(`http://${host}:${port}`, {
      createConnection: () => (socket = connect()),
      settings: { enablePush: false },
      // A RequestHeaderModifier's `add` of a field node:http2 holds single-valued: another field
      // (handler.ts says why; node:http2 takes the option for clients too, @types/node lists it for servers only).
      strictSingleValueFields: false,
    } as http2.ClientSessionOptions);
    const u = new UpstreamSession(key, session, this.#idleMs, this.#lifeMax);
    this.opened++;
    const list = this.#byKey.get(key) ?? [];
    list.push(u);
    this.#byKey.set(key, list);

    const remove = () => {
      if (u.endedUnused) this.#noteConnectFailed(key);
      const l = this.#byKey.get(key);
      if (!l) return;
      const i = l.indexOf(u);
      if (i >= 0) l.splice(i, 1);
      if (l.length === 0) this.#byKey.delete(key);
    };
    // A connection that never completes fails every stream queued on it with 504.
    const timer = setTimeout(() => {
      u.failure = 'connect-timeout';
      u.failureDetail = `no connection within ${connectTimeoutMs} ms`;
      remove();
      session.destroy();
    }, connectTimeoutMs);
    timer.unref();
    // When the connection is up, from the socket: node:http2 sets a session up over a stream that
    // is not a native socket (a tunnel's CONNECT stream, tunnel/upstream.ts) at once, so the
    // session's 'connect' comes before the other agent has answered; the socket's comes after.
    // The connect timeout ends there too, so it bounds a CONNECT the other agent never answers.
    const connected = () => {
      u.connectedAt = performance.now();
      clearTimeout(timer);
      this.#connectFailedAt.delete(key);
    };
    const s = socket as net.Socket | undefined;
    if (s === undefined) session.once('connect', connected); // createConnection is called synchronously today
    else if (s.connecting) s.once('connect', connected);
    else if (!s.destroyed) connected();
    session.once('remoteSettings', () => { u.settled = true; });
    session.on('error', (err: NodeJS.ErrnoException) => {
      if (!u.failure) {
        u.failure = 'unreachable';
        u.failureDetail = err.code ?? err.message;
      }
      remove();
    });
    // After GOAWAY the session finishes its streams but takes no new ones.
    session.on('goaway', () => {
      u.goaway = true;
      remove();
    });
    session.once('close', () => {
      clearTimeout(timer);
      u.disposeTimers();
      remove();
    });
    return u;
  }
}

/**
 * The balancer's RTT sample of a stream that started at `t0` (performance.now()) on session `u`
 * and was answered at `now`: from when the session was connected, if the stream had to wait for
 * that. linkerd2-proxy puts an HTTP/2 endpoint among the balancer's candidates only once its
 * connection is up (tower's ready cache over Reconnect), so a connect, and through a tunnel its
 * handshake, is never in a PeakEwma sample there; here the stream of a new session waits for it,
 * and only the wait is left out (docs/routing.md). A session that never connected (connectedAt 0)
 * keeps the whole wait in the sample: that is a failure's. A comparison, no allocation.
 */
export function rttSample(u: UpstreamSession | null | undefined, t0: number, now: number): number {
  const connectedAt = u?.connectedAt ?? 0;
  return now - (connectedAt > t0 ? connectedAt : t0);
}

/** As a Service endpoint's key (routing/balancer.ts BalancedEndpoint): the port has no colon, so IPv6 stays unambiguous. */
export function keyOf(ip: string, port: number): string {
  return ip + ':' + port;
}

/**
 * The balancer's `ready` for a request of this client connection (Balancer.pick): an endpoint
 * with a connected session in the pool under the key the request would use (INSPECTED apart);
 * a drawn one without any session starts connecting (Http2SessionPool.readyOrConnect).
 */
export function sessionReady(pool: Http2SessionPool, ctx: ConnContext, limits: ProxyLimits): (b: BalancedEndpoint, drawn: boolean) => boolean {
  return (b, drawn) => pool.readyOrConnect(b.ep.ip, b.ep.port, ctx, limits.upstreamConnectTimeoutMs, endpointPoolKey(ctx, b.ep.ip, b.ep.port, b.key), drawn);
}
