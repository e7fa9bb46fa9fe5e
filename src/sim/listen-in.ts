// A listening TCP socket inside a node's network namespace, served by this process. A socket
// belongs to the namespace it was created in, not to the process using it, so a short-lived
// helper in the node namespace makes it and hands it over (SCM_RIGHTS through Node's IPC
// channel). This is how the cluster's API server, running in the test's process, listens on the
// control plane's address on the fabric.
import type { ChildProcess } from 'node:child_process';
import type { Server } from 'node:net';
import type { SimNode } from './node.ts';

// CommonJS, no TypeScript: the helper should start as fast as Node can. It must not close the
// channel itself: a helper that disconnected right after sending sometimes lost the socket
// ("exited (0) before handing over the socket": once in stop 23's CI, about once in 300 handovers
// on loopback; which ordering inside Node loses it was not pinned down). It leaves when we
// disconnect, which we do once we hold the socket, so it cannot end before the handover.
const HELPER = `
const net = require('node:net');
const [host, port] = [process.argv[1], Number(process.argv[2])];
const s = net.createServer();
process.on('disconnect', () => process.exit(0));
s.on('error', (e) => process.send({ error: e.message }, () => process.exit(1)));
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
    const fail = (why: string) => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`listening on ${host}:${port} in ${where} failed: ${why}${stderr ? `; ${stderr.trim()}` : ''}`));
    };
    const timer = setTimeout(() => fail(`no socket from the helper within ${timeoutMs} ms`), timeoutMs);
    child.once('error', (e) => fail(e.message));
    child.once('exit', (code, signal) => fail(`the helper exited (${signal ?? code}) before handing over the socket`));
    child.on('message', (m: { listening?: boolean; error?: string }, handle: unknown) => {
      if (m.error) return fail(m.error);
      if (!handle) return fail('the helper said it listens but no socket came with its message');
      clearTimeout(timer);
      child.removeAllListeners('exit');
      child.disconnect(); // we hold the socket: the helper may go
      resolve(handle as Server);
    });
  });
}
