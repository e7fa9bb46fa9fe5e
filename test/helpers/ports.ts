// A loopback port nobody listens on right now, for a server another process (or a later step of the
// test) binds after this returns. It comes from below the kernel's ephemeral range: a port the
// kernel handed out for `listen(0)` could be handed again to some parallel test's outgoing
// connect() before our server binds it (EADDRINUSE), which no port below the range can be.
import * as fs from 'node:fs';
import * as net from 'node:net';

const LOWEST = 10_000;

function ephemeralLow(): number {
  try {
    const low = Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > LOWEST + 1000 ? low : 32768;
  } catch {
    return 32768;
  }
}

function bindable(port: number): Promise<boolean> {
  const s = net.createServer();
  return new Promise((resolve) => {
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

export async function freePort(): Promise<number> {
  const high = ephemeralLow() - 1;
  for (let i = 0; i < 200; i++) {
    const port = LOWEST + Math.floor(Math.random() * (high - LOWEST + 1));
    if (await bindable(port)) return port;
  }
  throw new Error(`no free loopback port between ${LOWEST} and ${high} after 200 tries; something holds most of them`);
}

/**
 * A loopback port that refuses connections (ECONNREFUSED) until the test ends, and that no other
 * test can be given meanwhile. A server's port closed after listen(0) is free again, and a
 * parallel test's listen(0) may take it, so a "dead" endpoint would answer (seen with the
 * --native-io variants running beside their originals). Here one accepted connection keeps the
 * port bound after its listener closes: the kernel never hands a bound port out for listen(0)
 * (autobind takes only ports with no socket bound to them), and with no listener a SYN to it is
 * answered with a reset.
 */
export async function refusedPort(t: { teardown(fn: () => void): void }): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', resolve);
  });
  const port = (srv.address() as net.AddressInfo).port;
  const accepted = new Promise<net.Socket>((resolve) => srv.once('connection', resolve));
  const held = net.connect(port, '127.0.0.1');
  held.on('error', () => {});
  const server = await accepted;
  server.on('error', () => {});
  // The listening socket is closed here and now (libuv closes a TCP handle's fd inside uv_close);
  // close()'s callback would wait for the held connection, which is the point.
  srv.close();
  t.teardown(() => {
    held.destroy();
    server.destroy();
  });
  return port;
}
