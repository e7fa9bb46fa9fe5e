// The socket handover the simulated cluster's API server listens through (src/sim/listen-in.ts),
// on loopback: the same IPC protocol, without a node namespace.
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import * as net from 'node:net';
import { listenVia } from '../src/sim/listen-in.ts';

const helpers: ChildProcess[] = [];
const start = (args: string[]) => {
  const c = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
  helpers.push(c);
  return c;
};
test.after.always(() => helpers.forEach((c) => c.kill('SIGKILL')));

// The race it fixed (the helper leaving right after its send; stop 23's CI lost the socket once)
// showed about once in 300 handovers on loopback, and blocking our loop while the helper sends did
// not force it (the helper cannot leave before Node's handle ACK, which our loop sends): so this
// checks the protocol works, and catches the old race only by chance.
test('the helper hands over a listening socket and leaves once we hold it; 30 in a row', async (t) => {
  for (let i = 0; i < 30; i++) {
    const before = helpers.length;
    const server = await listenVia(start, '127.0.0.1', 0, 'loopback');
    const helper = helpers[before]!;
    const [code] = await once(helper, 'exit');
    t.is(code, 0, `helper ${i} exited ${code}`);
    // The socket still listens here after the helper is gone.
    const accepted = once(server, 'connection');
    const { port } = server.address() as net.AddressInfo;
    const c = net.connect(port, '127.0.0.1');
    const [sock] = (await accepted) as [net.Socket];
    sock.destroy();
    c.destroy();
    server.close();
  }
});

test('a port in use is an error that names the address and the cause', async (t) => {
  const taken = net.createServer();
  await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
  const { port } = taken.address() as net.AddressInfo;
  const e = await t.throwsAsync(listenVia(start, '127.0.0.1', port, 'loopback'));
  t.regex(e!.message, new RegExp(`listening on 127\\.0\\.0\\.1:${port} in loopback failed: .*EADDRINUSE`));
  taken.close();
});
