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
