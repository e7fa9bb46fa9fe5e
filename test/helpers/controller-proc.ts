// The real controller as a child process (`mesh-agent controller`), with an agent's discovery
// link reading its stream into a DiscoveryStore, for tests of what reaches the agents.
import type { ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { SimApiServer } from '../../src/sim/index.ts';
import { requestJson } from '../../src/controller/client.ts';
import { DiscoveryClient } from '../../src/discovery/client.ts';
import { DiscoveryStore } from '../../src/discovery/store.ts';
import { exited } from './procs.ts';
import { freePort } from './ports.ts';
import { until, waitFor } from './until.ts';
import { meshBin } from '../../src/sim/dist-bin.ts';
import { testTempDir } from './temp-dir.ts';

const BIN = meshBin();

/** A kubeconfig file for the stand-in API server, in a temporary directory of its own, removed at the test's end. */
export function kubeconfigFile(t: ExecutionContext, api: SimApiServer): string {
  const dir = testTempDir(t);
  const f = path.join(dir, 'kubeconfig');
  fs.writeFileSync(f, JSON.stringify({
    apiVersion: 'v1', kind: 'Config', 'current-context': 'sim',
    clusters: [{ name: 'sim', cluster: { server: api.url, 'insecure-skip-tls-verify': true } }], users: [{ name: 'sim', user: { token: 'sim' } }], contexts: [{ name: 'sim', context: { cluster: 'sim', user: 'sim' } }],
  }));
  return f;
}

/** Starts `mesh-agent controller --agent-auth none ARGS` (these tests are about what reaches the agents; who may is test/controller-agent-auth.test.ts's) on a free port, waits until its discovery synced, and links a store to it. */
export async function startController(t: ExecutionContext, args: string[]) {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child: ChildProcess = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', BIN, 'controller', '--listen', `127.0.0.1:${port}`, '--dashboard-listen', 'off', '--agent-auth', 'none', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (d) => (log += d));
  t.teardown(async () => {
    child.kill('SIGTERM');
    await exited(child);
  });
  await until(() => requestJson(url, 'GET', '/v1/status', undefined, 1000), (s: any) => s.discovery?.synced === true, 'controller synced', { ms: 30_000, context: () => log });
  const store = new DiscoveryStore();
  const client = new DiscoveryClient({ url, node: 'n0', agentId: 'a', store, log: () => {}, onError: () => {} });
  client.start();
  t.teardown(() => client.stop());
  await waitFor(() => client.state === 'synced', 10_000);
  return { url, store, log: () => log };
}
