// A listening TCP socket inside a node's network namespace, served by this process. A socket
// belongs to the namespace it was created in, not to the process using it, so a short-lived
// helper in the node namespace makes it and hands it over (SCM_RIGHTS through Node's IPC
// channel), then exits. This is how the cluster's API server, running in the test's process,
// listens on the control plane's address on the fabric.
import type { Server } from 'node:net';
import type { SimNode } from './node.ts';

// CommonJS, no TypeScript: the helper should start as fast as Node can.
const HELPER = `
const net = require('node:net');
const [host, port] = [process.argv[1], Number(process.argv[2])];
const s = net.createServer();
s.on('error', (e) => process.send({ error: e.message }, () => process.exit(1)));
s.listen({ host, port }, () => process.send({ listening: true }, s, () => { s.close(); process.disconnect(); }));
`;

export function listenInNode(node: SimNode, host: string, port: number, timeoutMs = 20_000): Promise<Server> {
  const child = node.spawnInNode(process.execPath, ['-e', HELPER, host, String(port)], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return new Promise<Server>((resolve, reject) => {
    const fail = (why: string) => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`listening on ${host}:${port} in ${node.nodeNs} failed: ${why}${stderr ? `; ${stderr.trim()}` : ''}`));
    };
    const timer = setTimeout(() => fail(`no socket from the helper within ${timeoutMs} ms`), timeoutMs);
    child.once('error', (e) => fail(e.message));
    child.once('exit', (code, signal) => fail(`the helper exited (${signal ?? code}) before handing over the socket`));
    child.on('message', (m: { listening?: boolean; error?: string }, handle: unknown) => {
      if (m.error) return fail(m.error);
      clearTimeout(timer);
      child.removeAllListeners('exit');
      resolve(handle as Server);
    });
  });
}
