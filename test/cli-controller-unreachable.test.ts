import test from 'ava';
import { execFile } from 'node:child_process';
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import { meshBin } from '../src/sim/dist-bin.ts';

const BIN = meshBin();

function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    // Killed after 20 s: a command that waits forever fails here instead of hanging the suite.
    execFile(process.execPath, ['--disable-warning=ExperimentalWarning', BIN, ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr });
    });
  });
}

/** Accepts TCP and never says a word: a wedged controller, or a port-forward to the wrong thing. */
async function silentServer(t: any): Promise<string> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

for (const args of [['tap', 'deploy/web'], ['stat', 'deploy'], ['diagnostics', 'endpoints', 'svc/web']]) {
  test(`${args.join(' ')}: a controller that accepts the connection but never speaks HTTP/2 is a timeout naming its address and the fix, not a wait forever`, async (t) => {
    const addr = await silentServer(t);
    const r = await cli([...args, '--controller', addr]);
    t.is(r.code, 1, r.stderr);
    t.is(r.stdout, '');
    t.true(r.stderr.includes(`http://${addr}`), r.stderr);
    t.regex(r.stderr, /port-forward/);
  });
}
