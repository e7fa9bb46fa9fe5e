// A raw TCP origin on loopback for the HTTP/1 forwarder's tests: `onConn` scripts each accepted
// connection byte by byte (half-open allowed); it counts what it accepted and closes them all.
import * as net from 'node:net';
import { once } from 'node:events';

export async function startRawOrigin(onConn: (s: net.Socket) => void) {
  const sockets = new Set<net.Socket>();
  let accepted = 0;
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    accepted++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    onConn(s);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as net.AddressInfo).port,
    get accepted() {
      return accepted;
    },
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}
