// A stand-in for the dispatcher, for tests and demos: accepts on 127.0.0.1, reads the
// client's first bytes, dials the fixed "original destination" eagerly and hands both to
// the HTTP/2 handler with a ConnContext, as src/proxy/dispatch.ts does in the agent.
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { defaultLimits, type Dialer, type ProtocolHandler, type ProxyLimits } from '../context.ts';
import { RecordingSink } from '../../telemetry/events.ts';

export interface HarnessOptions {
  handler: ProtocolHandler;
  dest: { ip: string; port: number };
  limits?: Partial<ProxyLimits>;
  /** Bytes to read before handing over (the HTTP/2 preface is 24). */
  headBytes?: number;
  /** How upstream connections are opened (default: net.connect). */
  dial?: Dialer;
  /** Skip the eager upstream connection. */
  lazyUpstream?: boolean;
}

export interface Harness {
  port: number;
  sink: RecordingSink;
  /** Client sockets accepted so far. */
  clients: net.Socket[];
  close(): Promise<void>;
}

export async function startHarness(opts: HarnessOptions): Promise<Harness> {
  const sink = new RecordingSink();
  const limits: ProxyLimits = { ...defaultLimits, ...opts.limits };
  const clients: net.Socket[] = [];
  let connId = 0;
  const dial: Dialer = opts.dial ?? ((ip, port) => net.connect(port, ip));
  const server = net.createServer((client) => {
    clients.push(client);
    client.on('error', () => {});
    const upstream = opts.lazyUpstream ? null : dial(opts.dest.ip, opts.dest.port);
    upstream?.on('error', () => {});
    const want = opts.headBytes ?? 24;
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      if (head.length < want) return;
      client.removeListener('data', onData);
      client.pause();
      opts.handler({
        connId: ++connId,
        client,
        endpoints: {
          direction: 'outbound',
          sourceIp: client.remoteAddress ?? '',
          sourcePort: client.remotePort ?? 0,
          sourcePodKey: 0n,
          destIp: opts.dest.ip,
          destPort: opts.dest.port,
        },
        telemetry: sink,
        dial,
        openedAt: Date.now(),
      }, head, upstream, limits);
    };
    client.on('data', onData);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    sink,
    clients,
    close: () => {
      for (const c of clients) c.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export interface UpstreamServer {
  port: number;
  /** Sessions that carried at least one stream (pooling shows as a small number). */
  sessionsWithStreams: Set<http2.ServerHttp2Session>;
  streams: number;
  /** rstCode of every server stream when it closed. */
  closeCodes: number[];
  close(): Promise<void>;
}

/** A plain h2c server (node:http2, prior knowledge) playing the original destination. */
export async function startH2Upstream(
  onStream: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void,
): Promise<UpstreamServer> {
  const server = http2.createServer({ settings: { maxConcurrentStreams: 1000 } });
  const sessionsWithStreams = new Set<http2.ServerHttp2Session>();
  const closeCodes: number[] = [];
  const sessions = new Set<http2.ServerHttp2Session>();
  const result: UpstreamServer = {
    port: 0,
    sessionsWithStreams,
    streams: 0,
    closeCodes,
    close: () => {
      for (const s of sessions) s.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  server.on('session', (s) => {
    sessions.add(s);
    s.on('error', () => {});
    s.once('close', () => sessions.delete(s));
  });
  server.on('stream', (stream, headers) => {
    result.streams++;
    sessionsWithStreams.add(stream.session as http2.ServerHttp2Session);
    stream.on('error', () => {});
    stream.once('close', () => closeCodes.push(stream.rstCode ?? 0));
    onStream(stream, headers);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  result.port = (server.address() as net.AddressInfo).port;
  return result;
}
