// The destination side of the tunnels (docs/identity.md): the agent's TLS 1.3 listener on port
// 15008. The client names the identity it wants in SNI; the agent presents that workload's
// certificate (it holds one per ServiceAccount of its node's meshed pods) and asks for the
// client's, which must chain to the trust anchor and carry a SPIFFE ID of this trust domain.
// Each HTTP/2 CONNECT stream is then checked: its :authority must be a meshed pod of this node
// whose ServiceAccount is the identity presented, never anything else (no open relay); one whose
// target this node's pod table does not hold yet (a pod just created, which the client's agent
// learnt from discovery before this agent's pod watch told it) waits for the table to learn it,
// within the connect timeout, then is decided as any other. Then
// the pod's inbound policy (docs/policy.md) decides with the client's verified SPIFFE ID: a
// connection it allows whole is connected to the pod and forwarded as bytes, recorded as inbound
// with tls="true" and the client's SPIFFE ID; any other goes to the proxy, as a captured
// connection does, which decides HTTP request by request (403, gRPC status 7) and closes
// anything else. Refusals are counted and logged with both identities.
import type * as http2 from 'node:http2';
import * as net from 'node:net';
import type * as tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import type { CredentialStore } from '../identity/credentials.ts';
import { peerIdentity, spiffeId } from '../identity/spiffe.ts';
import { terminateOnRevoke, type ConnAuthz, type ConnContext, type ProxyLimits } from '../proxy/context.ts';
import type { ConnectionInfo } from '../proxy/listener.ts';
import { abortSocket, forwardOpaque } from '../proxy/opaque.ts';
import { sharedSweeper, type Sweeper } from '../proxy/sweep.ts';
import type { RequestEvent, TelemetrySink } from '../telemetry/events.ts';
import { H2_SETTINGS, CONNECTION_WINDOW, DRAIN_PING, MAX_STREAMS_PER_CONNECTION, REFUSAL_LOG_INTERVAL_MS, SESSION_MEMORY_MB, type LogFn } from './hbone-pool.ts';
import { parseAuthority, parseForwarded } from './path.ts';
import { serverDownstream } from './upstream.ts';
import { DEFAULT_KEEPALIVE, keepAlive, type KeepaliveOptions } from './keepalive.ts';
import { KeyedWaits } from '../util/keyed-waits.ts';
import { LogLimit, suppressedField } from '../util/log-limit.ts';
import { nodeHttp2, nodeTls } from '../util/builtins.ts';
import { plainIp } from '../util/ip.ts';

/** CONNECTs waiting at once for their pod; more are refused at once (a peer naming addresses that never become pods). */
const MAX_POD_WAITS = 1024;

/** A pod of this node, as the listener checks a CONNECT target. */
export interface LocalPod {
  namespace: string;
  name: string;
  serviceAccount: string;
  meshed: boolean;
}

/**
 * The destination pods' inbound policies (docs/policy.md), with the client's verified identity:
 * a connection the policy allows whole is forwarded as bytes; any other goes to the proxy, which
 * decides HTTP request by request and closes anything else.
 */
export interface TunnelPolicy {
  authorize(c: ConnectionInfo, clientUri: string): ConnAuthz | null;
  /** Null when the pod's policy is known; else a promise settling when it is (an agent starting): the stream waits for it. */
  ready?(ip: string): Promise<unknown> | null;
  serve(ctx: ConnContext): void;
}

/** The inbound sink: the metrics, which can count a request's authorization decision alone. */
export type TunnelTelemetry = TelemetrySink & { requestAuthz?(ev: RequestEvent): void };

export interface TunnelServerOptions {
  listen: { host: string; port: number; reusePort?: boolean };
  trustDomain: string;
  creds: CredentialStore;
  /**
   * This node's pods. `onChange` is told after each change of the table: a CONNECT to an address
   * it does not hold waits for a change that adds it (a new pod; an agent, or a proxy worker, before
   * its first list), at most the connect timeout; without it, such a CONNECT is refused at once.
   */
  pods: { byIp(ip: string): LocalPod | null; onChange?(fn: () => void): () => void };
  /** The inbound connections' events (the agent's metrics). */
  telemetry: TunnelTelemetry;
  /** Late bound: the proxy that serves what the policy does not allow whole is made after the tunnels. */
  policy?: () => TunnelPolicy | null;
  limits: ProxyLimits;
  log: LogFn;
  /** Its clock also times the refusal lines (REFUSAL_LOG_INTERVAL_MS). */
  sweeper?: Sweeper;
  /** PINGs on each connection (keepalive.ts); default DEFAULT_KEEPALIVE. */
  keepalive?: KeepaliveOptions;
}

export interface TunnelServerStats {
  /** TLS connections from other agents accepted, and open now. */
  accepted: number;
  open: number;
  /** Handshakes refused, by reason (not-tls, no-certificate-for-sni, no-client-certificate, untrusted, expired, not-yet-valid, bad-identity...). */
  refusedClients: Record<string, number>;
  /** CONNECTs served, and refused by reason (not-connect, bad-authority, not-a-meshed-pod, wrong-identity, connect-failed). */
  streams: number;
  refusedStreams: Record<string, number>;
  /** Of `streams`, those the destination pod's policy allows only some requests of, or none: served by the proxy. */
  inspected: number;
  /** Handshakes waiting now for a certificate on its way (an agent starting, a new pod). */
  waitingHandshakes: number;
  /** CONNECTs to an address this node's pod table did not hold, waiting now for it to, and all that waited. */
  waitingForPods: number;
  waitedForPods: number;
}

interface PeerInfo {
  clientUri: string;
  serverUri: string;
  remoteIp: string;
}

let nextConnId = 1e9; // apart from the listener's ids in logs

export class TunnelServer {
  private readonly o: TunnelServerOptions;
  private server: net.Server | null = null;
  #tls: tls.Server | null = null;
  #h2: http2.Http2Server | null = null;
  private readonly peers = new WeakMap<http2.Http2Session, PeerInfo>();
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  private readonly sockets = new Set<tls.TLSSocket>();
  private pending: PeerInfo | null = null;
  /** Refusals are caused by what peers send: one line per peer and kind per interval. */
  readonly #logLimit: LogLimit;
  readonly stats: TunnelServerStats = { accepted: 0, open: 0, refusedClients: {}, streams: 0, refusedStreams: {}, inspected: 0, waitingHandshakes: 0, waitingForPods: 0, waitedForPods: 0 };
  /** CONNECTs by the address they wait for, released by a change of the pod table that adds it. */
  readonly #podWaits = new KeyedWaits<string>();
  readonly #offPods: (() => void) | undefined;

  constructor(o: TunnelServerOptions) {
    this.o = o;
    const sweeper = o.sweeper ?? sharedSweeper;
    this.#logLimit = new LogLimit(() => sweeper.now());
    const pods = o.pods;
    this.#offPods = pods.onChange?.(() => this.#podWaits.releaseWhere((ip) => pods.byIp(ip) !== null));
  }

  listen(): Promise<{ host: string; port: number }> {
    // The TLS server (its OpenSSL context with the anchors, and what making it loads) is made on
    // the first connection, not here: each proxy thread listens on 15008, and on a node whose pods
    // never take a tunnel it was 0.4-0.7 MB of memory per thread for nothing (docs/benchmarks.md,
    // "Memory as installed"). Made synchronously in the accept: the first connection waits for
    // that alone (0.5 ms once the thread has made a TLS context, as it does for its node's first
    // certificate; docs/identity.md).
    // As every socket of the agent, and the client's end of the tunnel: no Nagle delay on a
    // small record (a response) while an earlier one waits for its ACK.
    const server = net.createServer({ allowHalfOpen: false, noDelay: true }, (sock) => {
      let tlsServer: tls.Server;
      try {
        tlsServer = this.tlsServer();
      } catch (e) {
        sock.destroy();
        this.refused('tls-context', `the listener cannot make its TLS context: ${(e as Error).message}; check the trust anchors (--identity-trust-anchors-file)`, sock.remoteAddress ?? '?', null, null);
        return;
      }
      tlsServer.emit('connection', sock);
    });
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      const { host, port, reusePort } = this.o.listen;
      server.listen({ host, port, ...(reusePort ? { reusePort: true } : {}) }, () => {
        server.removeListener('error', reject);
        server.on('error', (e) => this.o.log('error', 'tunnel listener error', { error: String(e) }));
        const a = server.address() as AddressInfo;
        resolve({ host: a.address, port: a.port });
      });
    });
  }

  /** Whether the TLS server has been made (the first connection makes it). */
  get tlsMade(): boolean {
    return this.#tls !== null;
  }

  /** The TLS server the listener's connections are handed to; it does not listen itself. */
  private tlsServer(): tls.Server {
    if (this.#tls !== null) return this.#tls;
    const { creds } = this.o;
    const server = nodeTls().createServer({
      // The certificate is the one the client asks for by name; the verify store must be set
      // here, on the server's own context (OpenSSL keeps it when SNI switches the context).
      // A certificate on its way (a new pod's first, or an agent just started: it knows no
      // identity yet) is waited for within the connect timeout: a client arriving during a
      // restart is served, not refused (docs/policy.md, fail-open and fail-closed).
      SNICallback: (name, cb) => {
        const c = creds.bySni(name);
        if (c !== null) return cb(null, c.context);
        const refuse = (why: string) => cb(new Error(`no certificate for ${name}: ${why}`), undefined);
        this.stats.waitingHandshakes++;
        creds.waitSni(name, this.o.limits.upstreamConnectTimeoutMs).finally(() => this.stats.waitingHandshakes--).then(
          (w) => (w === null ? refuse(creds.uriOfSni(name) === null ? 'not an identity of this node' : creds.reason(creds.uriOfSni(name)!)) : cb(null, w.context)),
          (e: Error) => refuse(e.message),
        );
      },
      ca: creds.anchorsPem,
      requestCert: true,
      rejectUnauthorized: false, // we check, so the refusal can be counted and logged with its reason
      ALPNProtocols: ['h2'],
      minVersion: 'TLSv1.3',
    });
    server.on('secureConnection', (sock) => this.onSecure(sock));
    server.on('tlsClientError', (err: NodeJS.ErrnoException, sock: tls.TLSSocket) => {
      const kind = /wrong version number|http request|unexpected eof|packet length too long|unknown protocol/i.test(err.message) ? 'not-tls'
        : /no certificate for|callback/i.test(err.message) || /SNI/i.test(err.message) ? 'no-certificate-for-sni'
          : /no shared|protocol version|unsupported protocol/i.test(err.message) ? 'not-tls-1.3'
            : 'handshake';
      this.refused(kind, `${err.code ?? ''} ${err.message}`.trim(), sock?.remoteAddress ?? '?', null, sock?.servername ? creds.uriOfSni(sock.servername) : null);
    });
    this.#tls = server;
    return server;
  }

  /** The HTTP/2 server the verified connections are handed to, made with the first (node:http2 loads then). */
  private h2(): http2.Http2Server {
    if (this.#h2 !== null) return this.#h2;
    const h2 = nodeHttp2().createServer({ settings: { ...H2_SETTINGS, maxConcurrentStreams: MAX_STREAMS_PER_CONNECTION }, maxSessionMemory: SESSION_MEMORY_MB });
    h2.on('session', (s) => {
      if (this.pending) this.peers.set(s, this.pending);
      this.sessions.add(s);
      s.once('close', () => this.sessions.delete(s));
      s.on('error', () => {});
      s.on('connect', () => {
        if (!s.destroyed) s.setLocalWindowSize(CONNECTION_WINDOW);
      });
      // A client agent that vanished without a FIN or RST: its connection and streams end.
      keepAlive(s, this.o.keepalive ?? DEFAULT_KEEPALIVE, (e) => {
        const peer = this.peers.get(s);
        this.o.log('warn', `tunnel connection from ${peer?.remoteIp ?? '?'} is dead: ${e.message}; its streams are reset`, { client: peer?.clientUri ?? null });
        s.destroy(e);
      });
    });
    h2.on('stream', (stream, headers) => this.onStream(stream, headers));
    this.#h2 = h2;
    return h2;
  }

  private refused(kind: string, reason: string, from: string, client: string | null, server: string | null): void {
    this.stats.refusedClients[kind] = (this.stats.refusedClients[kind] ?? 0) + 1;
    const held = this.#logLimit.hit(`${from}|${kind}`, REFUSAL_LOG_INTERVAL_MS);
    if (held === null) return;
    this.o.log('warn', `refused a tunnel connection from ${from}: ${reason}`, { kind, client, server, refusedClients: this.stats.refusedClients[kind], ...suppressedField(held) });
  }

  private onSecure(sock: tls.TLSSocket): void {
    sock.on('error', () => {});
    const from = sock.remoteAddress ?? '?';
    const serverUri = sock.servername ? this.o.creds.uriOfSni(sock.servername) : null;
    const cert = sock.getPeerCertificate();
    const p = peerIdentity(cert?.subjectaltname, this.o.trustDomain);
    const claimed = p.ok ? p.uri : p.claimed;
    if (cert === null || cert === undefined || Object.keys(cert).length === 0) {
      this.refused('no-client-certificate', 'it presented no certificate (not a mesh agent)', from, null, serverUri);
      sock.destroy();
      return;
    }
    if (!sock.authorized) {
      const code = String(sock.authorizationError);
      const kind = code === 'CERT_HAS_EXPIRED' ? 'expired' : code === 'CERT_NOT_YET_VALID' ? 'not-yet-valid' : 'untrusted';
      this.refused(kind, `its certificate does not verify against the trust anchor: ${code}`, from, claimed, serverUri);
      sock.destroy();
      return;
    }
    if (!p.ok) {
      this.refused('bad-identity', p.reason, from, claimed, serverUri);
      sock.destroy();
      return;
    }
    if (serverUri === null || sock.alpnProtocol !== 'h2') {
      this.refused('protocol', serverUri === null ? 'no server name' : `ALPN ${String(sock.alpnProtocol)}, not h2`, from, claimed, serverUri);
      sock.destroy();
      return;
    }
    this.stats.accepted++;
    this.stats.open++;
    this.sockets.add(sock);
    sock.once('close', () => {
      this.stats.open--;
      this.sockets.delete(sock);
      if (this.sockets.size === 0) this.#endDrainWaits();
    });
    this.pending = { clientUri: p.uri, serverUri, remoteIp: plainIp(from) };
    try {
      this.h2().emit('connection', sock);
    } finally {
      this.pending = null;
    }
  }

  private refuseStream(stream: http2.ServerHttp2Stream, status: number, kind: string, reason: string, peer: PeerInfo | undefined): void {
    this.stats.refusedStreams[kind] = (this.stats.refusedStreams[kind] ?? 0) + 1;
    const held = this.#logLimit.hit(`stream|${peer?.remoteIp}|${kind}`, REFUSAL_LOG_INTERVAL_MS);
    if (held !== null) this.o.log('warn', `refused a tunnelled connection: ${reason}`, { kind, client: peer?.clientUri, server: peer?.serverUri, from: peer?.remoteIp, ...suppressedField(held) });
    if (stream.destroyed || stream.closed) return;
    try {
      stream.respond({ ':status': status, 'mesh-agent-error': reason.slice(0, 300) }, { endStream: true });
    } catch {
      stream.destroy();
    }
  }

  /** A CONNECT: what the stream alone says is checked here; a target this node's pod table does not hold yet first waits for it to. */
  private onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    stream.on('error', () => {});
    if (stream.destroyed || stream.closed) return;
    const peer = this.peers.get(stream.session!);
    if (peer === undefined) return this.refuseStream(stream, 421, 'no-peer', 'a stream on a connection that was not verified', peer);
    if (headers[':method'] !== 'CONNECT') return this.refuseStream(stream, 405, 'not-connect', `method ${String(headers[':method'])}: this port carries only CONNECT tunnels`, peer);
    const target = parseAuthority(headers[':authority']);
    if (target === null) return this.refuseStream(stream, 400, 'bad-authority', `:authority ${JSON.stringify(headers[':authority'])?.slice(0, 80)} is not a pod IP:port`, peer);
    const sourceIp = parseForwarded(headers.forwarded) ?? peer.remoteIp;
    const pod = this.o.pods.byIp(target.ip);
    if (pod !== null || this.#offPods === undefined || this.#podWaits.size >= MAX_POD_WAITS) return this.#toPod(stream, peer, target, sourceIp, pod, 0);
    this.stats.waitedForPods++;
    this.stats.waitingForPods++;
    stream.pause();
    const ms = this.o.limits.upstreamConnectTimeoutMs;
    void this.#podWaits.wait(target.ip, ms).then((learnt) => {
      this.stats.waitingForPods--;
      this.#toPod(stream, peer, target, sourceIp, this.o.pods.byIp(target.ip), learnt ? 0 : ms);
    });
  }

  /**
   * After the wait for the pod (`pod`: the table's answer after it; `waitedMs`: how long it waited
   * in vain, 0 when it did not): the target must be a meshed pod of this node of the identity the
   * client asked for; then its policy decides, once known.
   */
  #toPod(stream: http2.ServerHttp2Stream, peer: PeerInfo, target: { ip: string; port: number }, sourceIp: string, pod: LocalPod | null, waitedMs: number): void {
    if (stream.destroyed || stream.closed) return;
    if (pod === null || !pod.meshed) {
      const waited = pod === null && waitedMs > 0 ? `; this node's pod table did not learn it within ${waitedMs} ms` : '';
      return this.refuseStream(stream, 403, 'not-a-meshed-pod', `${target.ip} is not a meshed pod of this node (no open relay${waited})`, peer);
    }
    const podUri = spiffeId({ trustDomain: this.o.trustDomain, namespace: pod.namespace, serviceAccount: pod.serviceAccount });
    if (podUri !== peer.serverUri) return this.refuseStream(stream, 403, 'wrong-identity', `${target.ip} is pod ${pod.namespace}/${pod.name} of ${podUri}, not of ${peer.serverUri} which the client asked for`, peer);
    // The pod's inbound policy, with the identity the handshake verified (docs/policy.md); an
    // agent just started may still be learning it: the stream waits (bounded) rather than fails.
    const pending = this.o.policy?.()?.ready?.(target.ip) ?? null;
    if (pending === null) return this.#serve(stream, peer, pod, target, sourceIp);
    stream.pause();
    void pending.then(() => this.#serve(stream, peer, pod, target, sourceIp));
  }

  /** After the waits: the policy's decision, then the stream connected to the pod (allowed whole) or handed to the proxy. */
  #serve(stream: http2.ServerHttp2Stream, peer: PeerInfo, pod: LocalPod, target: { ip: string; port: number }, sourceIp: string): void {
    if (stream.destroyed || stream.closed) return;
    const policy = this.o.policy?.() ?? null;
    let authz: ConnAuthz | null = null;
    try {
      authz = policy?.authorize({ direction: 'inbound', sourceIp, sourcePort: 0, sourcePodKey: 0n, destIp: target.ip, destPort: target.port }, peer.clientUri) ?? null;
    } catch (e) {
      // Never an allow-all by accident: a policy that cannot be evaluated refuses.
      return this.refuseStream(stream, 403, 'policy-error', `the inbound policy of ${pod.namespace}/${pod.name} could not be evaluated: ${(e as Error).message}`, peer);
    }
    this.stats.streams++;
    const limits = this.o.limits;
    const tlsIds = { clientId: peer.clientUri, serverId: peer.serverUri };
    if (authz !== null && authz.verdict !== 'allow') {
      // Only some requests, or nothing, may pass: the proxy decides, the stream as its client.
      this.stats.inspected++;
      stream.respond({ ':status': 200 });
      const sink = this.o.telemetry;
      policy!.serve({
        connId: nextConnId++,
        client: serverDownstream(stream),
        endpoints: { direction: 'inbound', sourceIp, sourcePort: 0, sourcePodKey: 0n, destIp: target.ip, destPort: target.port, tls: tlsIds },
        // The client's agent records these requests (it parses them); here only their decisions.
        telemetry: {
          connOpen: (ev) => sink.connOpen(ev),
          connBytes: (ev) => sink.connBytes(ev),
          connClose: (ev) => sink.connClose(ev),
          request: (ev) => sink.requestAuthz?.(ev),
        },
        dial: (ip, port) => net.connect({ host: ip, port, allowHalfOpen: true, noDelay: true }),
        openedAt: Date.now(),
        route: null,
        lease: null,
        authz,
        poolScope: '',
      });
      return;
    }
    const allowed = authz !== null ? authz.tcp() : null;
    stream.pause();
    const up = net.connect({ host: target.ip, port: target.port, allowHalfOpen: true, noDelay: true });
    const timer = setTimeout(() => up.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })), limits.upstreamConnectTimeoutMs);
    const ctx: ConnContext = {
      connId: nextConnId++,
      client: serverDownstream(stream),
      // A connection the policy allows whole: its decision goes with its close event (counted).
      endpoints: { direction: 'inbound', sourceIp, sourcePort: 0, sourcePodKey: 0n, destIp: target.ip, destPort: target.port, tls: tlsIds, ...(allowed !== null ? { authz: allowed } : {}) },
      telemetry: this.o.telemetry,
      dial: () => {
        throw new Error('no dialling from a tunnel\'s destination end');
      },
      openedAt: Date.now(),
    };
    const failed = (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const code = e.code ?? 'EIO';
      this.refuseStream(stream, code === 'ETIMEDOUT' ? 504 : 503, 'connect-failed', `connecting to ${target.ip}:${target.port}: ${code}`, peer);
    };
    up.once('error', failed);
    up.once('connect', () => {
      clearTimeout(timer);
      up.removeListener('error', failed);
      // The client agent gave up on the stream before the pod answered (its RST_STREAM): the pod
      // gets a reset, as from a client that reset its connection, not an empty request and a FIN.
      if (stream.destroyed || stream.closed) {
        abortSocket(up);
        return;
      }
      stream.respond({ ':status': 200 });
      try {
        ctx.telemetry.connOpen({ ...ctx.endpoints, connId: ctx.connId, openedAt: ctx.openedAt });
      } catch {
        // a broken sink must not refuse traffic
      }
      // Forwarded as bytes, its requests are never decided here: a policy change that no longer
      // allows it whole resets it (the client's agent reconnects, and its new stream is decided).
      if (authz !== null && allowed !== null) terminateOnRevoke(ctx, authz, allowed, () => abortSocket(ctx.client));
      forwardOpaque(ctx, up, limits, { protocol: 'opaque', detectedBy: 'tunnel', detectMs: 0, splicer: null, sweeper: this.o.sweeper });
    });
  }

  #cutNow = false;
  /** What close() calls wait on for the connections to finish (each call its own). */
  readonly #drainWaits = new Set<() => void>();

  #endDrainWaits(): void {
    for (const f of [...this.#drainWaits]) f();
  }

  /** Ends the drain (close(), now or to come) at once: the sessions still open are closed. */
  cutDrain(): void {
    this.#cutNow = true;
    this.#endDrainWaits();
  }

  /**
   * Stops accepting, asks every connection to finish (the DRAIN_PING notice, then GOAWAY once
   * its ACK is back: a CONNECT that crossed the notice is served, not refused), and after
   * drainMs closes what is left.
   */
  async close(drainMs: number): Promise<void> {
    this.#offPods?.();
    // Streams still waiting for their pod are decided now (their sessions are about to go).
    this.#podWaits.releaseAll();
    const server = this.server;
    if (!server) return;
    const closed = new Promise<void>((r) => server.close(() => r()));
    for (const s of this.sessions) {
      if (s.destroyed || s.closed) continue;
      // The callback runs on the ACK, or with an error when the session ends first.
      if (!s.ping(DRAIN_PING, () => s.close())) s.close();
    }
    // Until the last connection closes, the deadline, or a cut: whichever comes first.
    await new Promise<void>((resolve) => {
      if (this.sockets.size === 0 || this.#cutNow || drainMs <= 0) return resolve();
      const over = () => {
        this.#drainWaits.delete(over);
        clearTimeout(deadline);
        resolve();
      };
      const deadline = setTimeout(over, drainMs);
      this.#drainWaits.add(over);
    });
    for (const s of this.sockets) s.destroy();
    await closed;
  }
}
