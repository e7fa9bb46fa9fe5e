// The client side of the tunnels (docs/identity.md): HBONE, ambient's wire format. One TLS 1.3
// connection to the destination node's agent (port 15008), made with the source workload's
// certificate and naming the destination's identity in SNI, carries HTTP/2; each tunnelled
// connection is a CONNECT stream with :authority = destination pod IP:port. Connections are
// pooled per (source identity, destination identity, destination node), as ztunnel's pool, with
// at most 100 streams each; one unused for 5 minutes is closed. The server's certificate must
// chain to the trust anchor and name the destination pod's ServiceAccount: node:tls checks the
// chain, we check the URI SAN (peerIdentity), and a connection that fails either is refused,
// counted and logged with both identities and the reason.
import type * as http2 from 'node:http2';
import type * as net from 'node:net';
import type * as tls from 'node:tls';
import type { CredentialStore } from '../identity/credentials.ts';
import { peerIdentity } from '../identity/spiffe.ts';
import { formatAuthority, formatForwarded, type Path } from './path.ts';
import { clientUpstream, failedUpstream } from './upstream.ts';
import { nodeHttp2, nodeTls } from '../util/builtins.ts';
import { LogLimit, suppressedField } from '../util/log-limit.ts';
import { DEFAULT_KEEPALIVE, keepAlive, type KeepaliveOptions } from './keepalive.ts';

export const MAX_STREAMS_PER_CONNECTION = 100;
export const IDLE_CONNECTION_MS = 5 * 60_000;
/** ztunnel's HBONE windows: 4 MiB per stream, 16 MiB per connection, so one bulk stream is not held to 64 KiB in flight. */
export const STREAM_WINDOW = 4 * 1024 * 1024;
export const CONNECTION_WINDOW = 16 * 1024 * 1024;
export const H2_SETTINGS: http2.Settings = { initialWindowSize: STREAM_WINDOW, maxFrameSize: 64 * 1024, enablePush: false };
/**
 * What one tunnel connection may hold in memory, for node:http2 (maxSessionMemory, in MB; Node's
 * default is 10). Node gives the connection window back as data arrives, not as it is read, so
 * what a connection can hold unread is its streams' windows: up to MAX_STREAMS_PER_CONNECTION x
 * STREAM_WINDOW (the listener advertises that many streams at most). Under the default, three or
 * four streams whose readers stall (a pod that does not read an upload, a client that does not
 * read a download) reached the cap, and Node then stopped reading the socket: every other stream
 * of the connection froze, with the peer's WINDOW_UPDATEs, PINGs and GOAWAY, until those readers
 * read.
 */
export const SESSION_MEMORY_MB = Math.ceil((MAX_STREAMS_PER_CONNECTION * STREAM_WINDOW + CONNECTION_WINDOW) / 2 ** 20) + 16;
/**
 * A stopping agent's shutdown notice, as a PING payload (8 bytes). RFC 9113 6.8 has a server
 * shut down in two steps: a first GOAWAY naming stream 2^31-1 (take no new streams, but those in
 * flight are still served), then, a round trip later, the real one. nghttp2, under node:http2,
 * ignores every new stream once any GOAWAY is sent, so a CONNECT crossing it would be refused
 * (REFUSED_STREAM) and its connection reset. The notice is this PING instead: the client takes
 * no new stream on the connection from it on, and its ACK comes after every stream the client
 * opened before: when the ACK is back the server sends its GOAWAY, which then refuses nothing.
 */
export const DRAIN_PING = Buffer.from('mesh-drn');
/** A refusal is logged once per peer address and kind in this long, on either side of the tunnels (stats count them all). */
export const REFUSAL_LOG_INTERVAL_MS = 10_000;

export type LogFn = (level: 'info' | 'warn' | 'error', msg: string, fields?: object) => void;

export interface HboneStats {
  /** TLS connections opened to other agents, and those open now. */
  connectionsOpened: number;
  connectionsOpen: number;
  /** Streams (tunnelled connections) opened. */
  streams: number;
  /** Handshakes this agent refused (the other agent's certificate), by reason. */
  refusedServers: Record<string, number>;
  /** Connections that could not be tunnelled: no certificate for the source identity. */
  noCredential: number;
}

interface Conn {
  key: string;
  session: http2.ClientHttp2Session;
  /** The credential serial the connection presented: a renewed certificate gets new connections. */
  serial: string;
  /** New streams only before this: the earlier of the two certificates' ends. */
  usableUntil: number;
  active: number;
  broken: Error | null;
  idleTimer: NodeJS.Timeout | null;
  streams: Set<http2.ClientHttp2Stream>;
}

export class HbonePool {
  private readonly conns = new Map<string, Conn[]>();
  private readonly creds: CredentialStore;
  private readonly trustDomain: string;
  private readonly port: number;
  private readonly log: LogFn;
  /** A peer that keeps failing is one line per interval, with the count. */
  private readonly limited: LogLimit;
  private closed = false;
  readonly stats: HboneStats = { connectionsOpened: 0, connectionsOpen: 0, streams: 0, refusedServers: {}, noCredential: 0 };

  /** A TLS connection not ready within this (TCP, handshake, the checks) is given up, with its streams. */
  private readonly connectTimeoutMs: number;
  /** PINGs on each connection (keepalive.ts); tests shorten them. */
  private readonly keepalive: KeepaliveOptions;

  /** `now`: the clock of the refusal lines' interval (NodeTunnels passes its sweeper's; tests move it), default Date.now. */
  constructor(o: { creds: CredentialStore; trustDomain: string; port: number; log: LogFn; connectTimeoutMs?: number; now?: () => number; keepalive?: KeepaliveOptions }) {
    this.limited = new LogLimit(o.now);
    this.creds = o.creds;
    this.trustDomain = o.trustDomain;
    this.port = o.port;
    this.log = o.log;
    this.connectTimeoutMs = o.connectTimeoutMs ?? 5000;
    this.keepalive = o.keepalive ?? DEFAULT_KEEPALIVE;
  }

  /** A stream to ip:port through the tunnel of `path`, as the source identity; connecting until the other agent answers. */
  open(srcUri: string, path: Extract<Path, { kind: 'tunnel' }>, ip: string, port: number, from: string): net.Socket {
    const cred = this.creds.get(srcUri);
    if (cred === null || this.closed) {
      this.stats.noCredential++;
      const why = this.closed ? 'the proxy is closing' : this.creds.reason(srcUri);
      return failedUpstream(`no tunnel to ${ip}:${port} for ${srcUri}: ${why}`, 'EACCES');
    }
    const key = `${srcUri}|${path.dstUri}|${path.nodeIp}`;
    const c = this.pick(key, cred.serial) ?? this.connect(key, srcUri, cred, path);
    const stream = c.session.request({ ':method': 'CONNECT', ':authority': formatAuthority(ip, port), forwarded: formatForwarded(from) }, { endStream: false });
    this.stats.streams++;
    c.active++;
    c.streams.add(stream);
    if (c.idleTimer) {
      clearTimeout(c.idleTimer);
      c.idleTimer = null;
    }
    stream.once('close', () => {
      c.streams.delete(stream);
      if (--c.active === 0 && !c.broken) {
        c.idleTimer = setTimeout(() => this.retire(c), this.usable(c) ? IDLE_CONNECTION_MS : 0);
        c.idleTimer.unref();
      }
    });
    return clientUpstream(stream, `${ip}:${port} via ${path.nodeIp}:${this.port} (${path.dstUri})`);
  }

  private usable(c: Conn): boolean {
    return c.broken === null && !c.session.closed && !c.session.destroyed && Date.now() < c.usableUntil;
  }

  private pick(key: string, serial: string): Conn | null {
    const list = this.conns.get(key);
    if (list === undefined) return null;
    let found: Conn | null = null;
    for (const c of [...list]) {
      // A connection made with a certificate since renewed takes no new streams: close it once it carries none.
      if (c.serial !== serial) {
        if (c.active === 0) this.retire(c);
        continue;
      }
      if (found === null && c.active < MAX_STREAMS_PER_CONNECTION && this.usable(c)) found = c;
    }
    return found;
  }

  private connect(key: string, srcUri: string, cred: { context: tls.SecureContext; serial: string; notAfter: number }, path: Extract<Path, { kind: 'tunnel' }>): Conn {
    const sock = nodeTls().connect({
      host: path.nodeIp,
      port: this.port,
      servername: path.serverName,
      secureContext: cred.context,
      ALPNProtocols: ['h2'],
      minVersion: 'TLSv1.3',
      // node:tls checks the chain (authorized); who the server is, we check (URI SAN, CVE-2021-44531).
      rejectUnauthorized: false,
      checkServerIdentity: () => undefined,
    });
    sock.setNoDelay(true);
    const session = nodeHttp2().connect(`https://${path.nodeIp}:${this.port}`, { createConnection: () => sock, settings: H2_SETTINGS, maxSessionMemory: SESSION_MEMORY_MB });
    const c: Conn = { key, session, serial: cred.serial, usableUntil: cred.notAfter, active: 0, broken: null, idleTimer: null, streams: new Set() };
    this.stats.connectionsOpened++;
    this.stats.connectionsOpen++;
    let list = this.conns.get(key);
    if (list === undefined) this.conns.set(key, (list = []));
    list.push(c);
    // Ours runs before the session's own setup, which waits for the same event.
    sock.prependOnceListener('secureConnect', () => {
      const refuse = (reason: string, presented: string | null) => this.refuse(c, sock, srcUri, path, reason, presented);
      const cert = sock.getPeerCertificate();
      const p = peerIdentity(cert?.subjectaltname, this.trustDomain);
      if (!sock.authorized) return refuse(`its certificate does not verify against the trust anchor: ${String(sock.authorizationError)}`, p.ok ? p.uri : p.claimed);
      if (!p.ok) return refuse(p.reason, p.claimed);
      if (p.uri !== path.dstUri) return refuse(`it presented ${p.uri}, not the destination's identity`, p.uri);
      if (sock.alpnProtocol !== 'h2') return refuse(`it did not agree to HTTP/2 (ALPN ${String(sock.alpnProtocol)})`, p.uri);
      const peerEnd = Date.parse(cert.valid_to);
      if (Number.isFinite(peerEnd)) c.usableUntil = Math.min(c.usableUntil, peerEnd);
    });
    // TCP, the handshake and the checks within the connect timeout, or the connection and its streams fail (a node
    // whose agent or 15008 does not answer must not hold the streams queued on it for good).
    const timer = setTimeout(() => {
      this.fail(c, Object.assign(new Error(`tunnel to ${path.dstUri} at ${path.nodeIp}:${this.port}: no TLS connection within ${this.connectTimeoutMs} ms`), { code: 'ETIMEDOUT' }));
    }, this.connectTimeoutMs);
    timer.unref();
    session.on('connect', () => {
      clearTimeout(timer);
      if (session.destroyed) return;
      session.setLocalWindowSize(CONNECTION_WINDOW);
      keepAlive(session, this.keepalive, (e) => {
        this.log('warn', `tunnel connection to ${path.nodeIp}:${this.port} is dead: ${e.message}; its streams fail, the next ones take a new connection`, { client: srcUri, server: path.dstUri });
        this.fail(c, Object.assign(new Error(`tunnel to ${path.dstUri} at ${path.nodeIp}:${this.port}: ${e.message}`), { code: e.code }));
      });
    });
    session.once('close', () => clearTimeout(timer));
    session.on('error', (e: Error) => this.fail(c, e));
    sock.on('error', (e: Error) => this.fail(c, e));
    session.on('goaway', () => {
      c.usableUntil = 0; // finishes what it carries, takes no more
    });
    // The other agent is stopping (DRAIN_PING): the same, before its GOAWAY.
    session.on('ping', (payload: Buffer) => {
      if (payload.equals(DRAIN_PING)) c.usableUntil = 0;
    });
    session.once('close', () => {
      this.stats.connectionsOpen--;
      if (c.idleTimer) clearTimeout(c.idleTimer);
      const l = this.conns.get(key);
      const i = l?.indexOf(c) ?? -1;
      if (i >= 0) l!.splice(i, 1);
      if (l?.length === 0) this.conns.delete(key);
      const err = c.broken ?? Object.assign(new Error(`tunnel connection to ${path.nodeIp}:${this.port} closed`), { code: 'ECONNRESET' });
      for (const s of c.streams) if (!s.destroyed) s.destroy(err);
    });
    return c;
  }

  private refuse(c: Conn, sock: tls.TLSSocket, srcUri: string, path: Extract<Path, { kind: 'tunnel' }>, reason: string, presented: string | null): void {
    const kind = /CERT_HAS_EXPIRED/.test(reason) ? 'expired' : reason.startsWith('its certificate does not verify') ? 'untrusted' : reason.startsWith('it presented') ? 'wrong-identity' : reason.startsWith('it did not agree') ? 'no-h2' : 'bad-certificate';
    this.stats.refusedServers[kind] = (this.stats.refusedServers[kind] ?? 0) + 1;
    const suppressed = this.limited.hit(`${path.nodeIp}|${kind}`, REFUSAL_LOG_INTERVAL_MS);
    if (suppressed !== null) {
      this.log('warn', `refused the agent at ${path.nodeIp}:${this.port}: ${reason}; it must present ${path.dstUri} under this mesh's trust anchor`, {
        client: srcUri, server: path.dstUri, presented, reason, ...suppressedField(suppressed),
      });
    }
    this.fail(c, Object.assign(new Error(`tunnel to ${path.dstUri} at ${path.nodeIp}: the other agent's certificate was refused: ${reason}`), { code: 'EPROTO' }));
    sock.destroy();
  }

  private fail(c: Conn, e: Error): void {
    if (c.broken) return;
    c.broken = Object.assign(new Error(e.message.startsWith('tunnel') ? e.message : `tunnel connection: ${(e as NodeJS.ErrnoException).code ?? e.message}`), { code: (e as NodeJS.ErrnoException).code ?? 'EPROTO' });
    for (const s of c.streams) if (!s.destroyed) s.destroy(c.broken);
    if (!c.session.destroyed) c.session.destroy();
  }

  private retire(c: Conn): void {
    c.idleTimer = null;
    if (c.active === 0 && !c.session.closed) c.session.close();
  }

  /** Closes every connection: GOAWAY, streams in flight finish (the proxy's drain waits for them). */
  close(): void {
    this.closed = true;
    for (const list of this.conns.values()) for (const c of list) if (!c.session.closed) c.session.close();
  }
}
