// A listening TCP socket inside a node's network namespace, served by this process. A socket
// belongs to the namespace it was created in, not to the process using it, so a short-lived
// helper in the node namespace makes it and hands it over (SCM_RIGHTS through Node's IPC
// channel). This is how the cluster's API server, running in the test's process, listens on the
// control plane's address on the fabric.
import type { ChildProcess } from 'node:child_process';
import type { Server } from 'node:net';
import type { SimNode } from './node.ts';

// CommonJS, no TypeScript: the helper should start as fast as Node can. It never leaves by
// itself, on success or on error: we disconnect once we hold the socket (the helper then exits),
// and kill it once we have its error. A helper that left right after its send could be reaped
// before we read its message, and the handover then failed with "exited (0) before handing over
// the socket" (once in stop 23's CI; about once in 300 to 3,000 handovers on loopback). Leaving is
// easy: a child's IPC channel does not keep it alive (Node refs it only while the child listens for
// 'message' or 'disconnect'; disconnect()'s wait for our handle ACK holds no reference), so without
// its 'disconnect' listener the helper exits right after its send callback. Reaped first: libuv
// handles SIGCHLD after the I/O callbacks of the same poll batch and then waits on every child, so
// a SIGCHLD from any child, in a batch polled before the helper's message arrived, reaps a helper
// that has left since, and 'exit' comes before the message. test/sim-listen-in.test.ts forces that.
const HELPER = `
const net = require('node:net');
const [host, port] = [process.argv[1], Number(process.argv[2])];
const s = net.createServer();
process.on('disconnect', () => process.exit(0));
s.on('error', (e) => process.send({ error: e.message }));
s.listen({ host, port }, () => process.send({ listening: true }, s, () => s.close()));
`;

export function listenInNode(node: SimNode, host: string, port: number, timeoutMs = 20_000): Promise<Server> {
  return listenVia((args) => node.spawnInNode(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] }), host, port, node.nodeNs, timeoutMs);
}

/** The handover itself; `spawn` starts Node with the given arguments and an IPC channel on fd 3. */
export function listenVia(spawn: (args: string[]) => ChildProcess, host: string, port: number, where: string, timeoutMs = 20_000): Promise<Server> {
  const child = spawn(['-e', HELPER, host, String(port)]);
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return new Promise<Server>((resolve, reject) => {
    let settled = false;
    const fail = (why: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`listening on ${host}:${port} in ${where} failed: ${why}${stderr ? `; ${stderr.trim()}` : ''}`));
    };
    const timer = setTimeout(() => fail(`no socket from the helper within ${timeoutMs} ms`), timeoutMs);
    child.once('error', (e) => fail(e.message));
    child.once('exit', (code, signal) => fail(`the helper exited (${signal ?? code}) before handing over the socket`));
    child.on('message', (m: { listening?: boolean; error?: string }, handle: unknown) => {
      // A socket that comes after we gave up (the timeout, or the helper's exit seen first) would
      // listen in this process with no one to serve or close it.
      if (settled) return (handle as Server | undefined)?.close();
      if (m.error) return fail(m.error); // the helper stays until fail() kills it
      if (!handle) return fail('the helper said it listens but no socket came with its message');
      settled = true;
      clearTimeout(timer);
      child.removeAllListeners('exit');
      child.disconnect(); // we hold the socket: the helper may go
      resolve(handle as Server);
    });
  });
}
