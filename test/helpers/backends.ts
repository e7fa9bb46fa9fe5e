// Loopback HTTP servers playing a Service's pods in the in-process routing tests: each answers
// its own name (or what a handler does), and counts requests, bodies and cancellations.
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { once } from 'node:events';
import { DiscoveryStore } from '../../src/discovery/store.ts';
import type { DiscoMessage } from '../../src/discovery/model.ts';
import type { RouteRecord } from '../../src/routing/route-model.ts';

export const HOST = '127.0.0.1';

export type Handler = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse, body: Buffer, n: number) => void;

export interface Backend {
  name: string;
  port: number;
  /** Requests seen, counted when their head arrives. */
  hits: number;
  /** Request bodies seen, in order. */
  bodies: Buffer[];
  /** Requests whose connection or stream closed before the response was sent. */
  cancelled: number;
  server: net.Server;
  close(): Promise<void>;
}

/**
 * A server (HTTP/1, or h2c with `h2`) answering its own name, with `status` if given, or what
 * `handle` does with request number n. `host` and `port`: where it listens (default HOST, any
 * port), e.g. pods of a Service without ports, which share one port on different addresses.
 */
export async function backend(name: string, opts: { h2?: boolean; status?: number; handle?: Handler; host?: string; port?: number } = {}): Promise<Backend> {
  const b: Backend = { name, port: 0, hits: 0, bodies: [], cancelled: 0, server: null as unknown as net.Server, close: async () => {} };
  const onRequest = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => {
    const n = b.hits++;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    res.on('close', () => { if (!res.writableEnded) b.cancelled++; });
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      b.bodies.push(body);
      if (opts.handle) opts.handle(req, res, body, n);
      else {
        res.statusCode = opts.status ?? 200;
        res.setHeader('content-type', 'text/plain');
        res.end(name);
      }
    });
  };
  const server: net.Server = opts.h2 ? http2.createServer(onRequest) : http.createServer(onRequest);
  const sockets = new Set<net.Socket>();
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  server.listen(opts.port ?? 0, opts.host ?? HOST);
  await once(server, 'listening');
  b.server = server;
  b.port = (server.address() as net.AddressInfo).port;
  b.close = () => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((r) => server.close(() => r()));
  };
  return b;
}

/** Service shop/api at VIP:80, its one endpoint `port`, one route sending every request to it (routed-stream.ts). */
export function routedWorld(port: number): DiscoveryStore {
  const store = new DiscoveryStore();
  const route: RouteRecord = {
    kind: 'HTTPRoute', namespace: 'shop', name: 'r', createdAt: 0, parents: [{ namespace: 'shop', name: 'api' }],
    rules: [{ matches: [], backends: [{ namespace: 'shop', name: 'api', port: 80, weight: 1 }] }],
  };
  const msgs: DiscoMessage[] = [
    { type: 'reset', version: 1 },
    { type: 'service', op: 'set', service: { namespace: 'shop', name: 'api', clusterIPs: ['10.96.7.7'], ports: [{ name: 'http', port: 80, targetPort: 'http' }], annotations: {} } },
    { type: 'slice', op: 'set', slice: { namespace: 'shop', name: 'api-0', service: 'api', ports: [{ name: 'http', port }], endpoints: [{ ip: HOST, ready: true, pod: 'api-0', node: 'node-1' }] } },
    { type: 'route', op: 'set', route },
    { type: 'synced' },
  ];
  for (const m of msgs) store.apply(m);
  return store;
}
