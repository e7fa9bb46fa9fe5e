// The socket handover the simulated cluster's API server listens through (src/sim/listen-in.ts),
// on loopback: the same IPC protocol, without a node namespace.
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import * as net from 'node:net';
import { listenVia } from '../src/sim/listen-in.ts';
import { procStatField, procStatInt } from '../src/util/proc-stat.ts';

const helpers: ChildProcess[] = [];
const start = (args: string[]) => {
  const c = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
  helpers.push(c);
  return c;
};
test.after.always(() => helpers.forEach((c) => c.kill('SIGKILL')));

type Settled = 'exited' | 'waits';

/** /proc's lines about a child, for an error message. */
const procOf = (pid: number) =>
  ['stat', 'wchan', 'syscall'].map((f) => {
    try {
      return `${f}: ${readFileSync(`/proc/${pid}/${f}`, 'utf8').trim()}`;
    } catch (e) {
      return `${f}: ${(e as Error).message}`;
    }
  }).join('; ');

/**
 * Where a child stands, read from /proc without reaping it: 'exited' once waitpid could reap it
 * (its main thread is a zombie and no other thread is left), 'waits' while its main thread sleeps
 * in epoll_wait with no timeout (its event loop has nothing left to do but wait for input from us;
 * a Node process first polls after its main script and the ticks that queued, so not before the
 * helper has sent), else null (still running, or it moved between our reads).
 */
function settled(pid: number): Settled | null {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const state = procStatField(stat, 'state');
  if (state === 'Z') return procStatInt(stat, 'num_threads') === 1 ? 'exited' : null;
  if (state !== 'S' || !/epoll/.test(readFileSync(`/proc/${pid}/wchan`, 'utf8'))) return null;
  // epoll_wait(fd, events, maxevents, timeout) and epoll_pwait(..., timeout, sigmask): the 4th
  // argument, -1 for no timeout. A timer would let the helper leave on its own later.
  const timeout = readFileSync(`/proc/${pid}/syscall`, 'utf8').trim().split(' ')[4];
  return timeout?.startsWith('0x') && BigInt.asIntN(32, BigInt(timeout)) === -1n ? 'waits' : null;
}

/** Blocks this process's event loop (nothing is read, nothing is reaped) until the child settles. */
function holdUntilSettled(pid: number, want?: Settled): Settled {
  const pause = new Int32Array(new SharedArrayBuffer(4));
  const deadline = Date.now() + 20_000;
  for (;;) {
    const s = settled(pid);
    if (s && (!want || s === want)) return s;
    if (Date.now() > deadline) {
      throw new Error(
        `child ${pid} neither exited nor waited for input (its main thread asleep in epoll_wait with no timeout) within 20 s; ` +
          `telling them apart needs /proc/PID/wchan to name the kernel function a task sleeps in and /proc/PID/syscall (${procOf(pid)})`,
      );
    }
    Atomics.wait(pause, 0, 0, 1); // a pause between reads of /proc; what ends the hold is the state
  }
}

// The race the handover had (the helper leaving right after its send) is forced here, not hoped
// for. A helper's IPC channel is unref'd (Node refs it only while the helper listens for 'message'
// or 'disconnect'), so a helper without such a listener exits right after its send callback: its
// disconnect() waits for our handle ACK, but nothing keeps its process alive meanwhile. We learn of
// the exit when libuv handles a SIGCHLD: it runs after the I/O callbacks of the same poll batch and
// waits on every child, so a SIGCHLD (from any child) handled in a batch that was polled before
// the helper's message arrived reaps the helper first, and 'exit' comes before the message. Here:
// a bystander child prints and exits while we hold our loop, so our next poll returns its output
// and its SIGCHLD in one batch; in the output's callback, inside that batch, we start the handover
// and hold until the helper has exited or waits for us. A helper that left is reaped at the batch's
// end, before we read its message (the handover fails as stop 23's CI did); one that waits is not.
async function handoverWhileReaping(port: number, { killWhenItWaits = false } = {}) {
  const bystander = spawn('/bin/echo', ['bystander'], { stdio: ['ignore', 'pipe', 'ignore'] });
  let helper: ChildProcess | undefined;
  let helperWas: Settled | undefined;
  let message: Promise<unknown[]> | undefined;
  const handover = new Promise<net.Server>((resolve, reject) => {
    bystander.stdout!.once('data', () => {
      const spawnAndHold = (args: string[]) => {
        helper = start(args);
        message = once(helper, 'message'); // ours runs before listenVia's, which it adds after this
        helperWas = holdUntilSettled(helper.pid!);
        if (killWhenItWaits && helperWas === 'waits') {
          helper.kill('SIGKILL');
          holdUntilSettled(helper.pid!, 'exited');
        }
        return helper;
      };
      try {
        listenVia(spawnAndHold, '127.0.0.1', port, 'loopback').then(resolve, reject);
      } catch (e) {
        reject(e as Error);
      }
    });
  });
  holdUntilSettled(bystander.pid!, 'exited');
  const outcome = await handover.catch((e: Error) => e);
  return { outcome, helper: helper!, helperWas, message: message! };
}

test('the helper stays until we hold the socket, even when its exit would be reaped before we read its message', async (t) => {
  const { outcome, helper, helperWas } = await handoverWhileReaping(0);
  if (!(outcome instanceof Error)) t.teardown(() => outcome.close());
  const handover = outcome instanceof Error ? outcome.message : 'we hold the socket';
  t.is(helperWas, 'waits', `the helper left before we read its message, and must stay until we disconnect (the handover: ${handover})`);
  if (outcome instanceof Error) return t.fail(outcome.message);
  // We disconnected once we held the socket; that, not its send, ends the helper.
  const [code] = await once(helper, 'exit');
  t.is(code, 0);
  // The socket still listens here after the helper is gone.
  const accepted = once(outcome, 'connection');
  const { port } = outcome.address() as net.AddressInfo;
  const c = net.connect(port, '127.0.0.1');
  const [sock] = (await accepted) as [net.Socket];
  sock.destroy();
  c.destroy();
});

// The error path under the same ordering: a helper that exits right after sending its error is
// reaped before we read the error, and the handover reports only an exit, not the cause.
test('a port in use is an error that names the address and the cause, even when the helper\'s exit would be reaped first', async (t) => {
  const taken = net.createServer();
  await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
  t.teardown(() => taken.close());
  const { port } = taken.address() as net.AddressInfo;
  const { outcome, helperWas } = await handoverWhileReaping(port);
  const handover = outcome instanceof Error ? outcome.message : 'we hold a socket';
  t.is(helperWas, 'waits', `the helper left before we read its error, and must stay until we have it (the handover: ${handover})`);
  t.true(outcome instanceof Error);
  t.regex((outcome as Error).message, new RegExp(`listening on 127\\.0\\.0\\.1:${port} in loopback failed: .*EADDRINUSE`));
});

// A helper that dies after sending (killed here once it waits for us) is reaped before we read its
// message, so the handover fails; the socket that arrives after that must not stay listening here.
test('a socket that arrives after the helper was seen to exit is closed, not left listening', async (t) => {
  const { outcome, helperWas, message } = await handoverWhileReaping(0, { killWhenItWaits: true });
  t.is(helperWas, 'waits');
  t.regex(String(outcome), /the helper exited \(SIGKILL\) before handing over the socket/);
  const [, late] = (await message) as [unknown, net.Server | undefined];
  t.teardown(() => late?.close());
  t.true(late instanceof net.Server, 'the helper\'s message came with its socket');
  t.false(late!.listening, 'the socket that came after the failure still listens in this process');
});
