import test from 'ava';
import { execFile, spawn } from 'node:child_process';
import * as http2 from 'node:http2';
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

test('tap: Ctrl-C while the controller is still answering the connection ends tap then, not after a second Ctrl-C', async (t) => {
  // A controller slow to answer (a port-forward still connecting): its HTTP/2 server gets the
  // connection only once the test has sent SIGINT; it then streams a tap that never ends.
  const h2 = http2.createServer();
  h2.on('stream', (stream) => {
    stream.respond({ ':status': 200, 'content-type': 'application/json' });
    stream.write(JSON.stringify({ type: 'started', agents: 1, pods: 1 }) + '\n');
  });
  const sockets = new Set<net.Socket>();
  let interrupted!: () => void;
  const sent = new Promise<void>((r) => (interrupted = r));
  let accepted!: () => void;
  const connected = new Promise<void>((r) => (accepted = r));
  const front = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
    s.pause();
    accepted();
    void sent.then(() => h2.emit('connection', s));
  });
  await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    front.close();
    h2.close();
  });
  const addr = `127.0.0.1:${(front.address() as AddressInfo).port}`;
  const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', BIN, 'tap', 'deploy/web', '--controller', addr], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  await connected;
  child.kill('SIGINT');
  interrupted();
  const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  const code = await exited;
  clearTimeout(killer);
  t.is(code, 0, `tap went on after Ctrl-C: ${stderr}`);
});
