// API server stand-ins that take a request and never answer it, for abandoning a read or a watch:
// lists (the node's pods, namespaces) are answered at once, the requests `silent` picks never are.
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

/** `seen.reads`: the silent requests received; `seen.closed`: their connections closed (abandoned by the client). */
export async function silentApiServer(t: { teardown(f: () => Promise<void> | void): void }, silent: (u: URL) => boolean, ignored: (u: URL) => boolean = () => false): Promise<{ seen: { reads: number; closed: number }; url: string }> {
  const seen = { reads: 0, closed: 0 };
  const server = http.createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    if (silent(u)) {
      seen.reads++;
      req.socket.on('close', () => seen.closed++);
      return;
    }
    if (ignored(u)) return;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ items: [], metadata: { resourceVersion: '5' } }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => {
    server.closeAllConnections();
    server.close(() => r());
  }));
  return { seen, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

/** Reads of namespace default's pods (KubeSource.getPod) never answered; watches never either, uncounted. */
export const podReadHangs = (t: { teardown(f: () => Promise<void> | void): void }) =>
  silentApiServer(t, (u) => u.pathname === '/api/v1/namespaces/default/pods', (u) => u.searchParams.get('watch') === 'true');
