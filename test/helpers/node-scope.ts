// What an end-to-end test starts around its simulated node, ended at the test's end, also on
// failure: its child processes killed, then the node destroyed, then its temporary directory
// removed (ava runs teardowns last registered first).
import type { ChildProcess } from 'node:child_process';
import type { SimNode } from '../../src/sim/index.ts';
import { testTempDir } from './temp-dir.ts';

export interface NodeScope {
  tmp: string;
  children: ChildProcess[];
  node?: SimNode;
}

export function nodeScope(t: { teardown(f: () => void | Promise<void>): void }): NodeScope {
  const s: NodeScope = { tmp: testTempDir(t), children: [] };
  t.teardown(async () => {
    for (const c of s.children) c.kill('SIGKILL');
    await s.node?.destroy();
  });
  return s;
}
