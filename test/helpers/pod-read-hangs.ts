// An API server stand-in for abandoning a pod read: lists (the node's pods, namespaces) are
// answered at once; watches and reads of namespace default's pods (KubeSource.getPod) never are.
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

/** `seen.reads`: pod reads received; `seen.closed`: their connections closed (abandoned by the client). */
export async function podReadHangs(t: { teardown(f: () => Promise<void> | void): void }): Promise<{ seen: { reads: number; closed: number }; url: string }> {
  const seen = { reads: 0, closed: 0 };
  const server = http.createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    if (u.searchParams.get('watch') === 'true') return;
    if (u.pathname === '/api/v1/namespaces/default/pods') {
      seen.reads++;
      req.socket.on('close', () => seen.closed++);
      return;
    }
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
