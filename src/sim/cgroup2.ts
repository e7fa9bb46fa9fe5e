// cgroup v2 plumbing: find the mount, create, kill and remove subtrees (async and sync
// variants; the sync ones serve process-exit cleanup, where nothing can be awaited).
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export { findCgroup2Mount, parseCgroup2Mount } from '../datapath/cgroup2.ts';

/** The cgroup v2 path of a process relative to the hierarchy root ("0::" line). */
export function cgroupOfPid(pid: number): string {
  const text = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8');
  const line = text.split('\n').find((l) => l.startsWith('0::'));
  if (line === undefined) throw new Error(`process ${pid} has no cgroup v2 entry in /proc/${pid}/cgroup`);
  return line.slice(3);
}

export async function makeCgroup(dir: string): Promise<void> {
  try {
    await fsp.mkdir(dir, { recursive: true });
  } catch (e) {
    throw new Error(`creating cgroup ${dir} failed: ${(e as Error).message}${permissionHint(e)}`);
  }
}

export function permissionHint(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'EACCES' || code === 'EPERM' ? '; run as root' : '';
}

/** Every directory of the subtree, deepest first (the order rmdir needs). */
function subtreeDeepestFirst(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) if (e.isDirectory()) walk(path.join(d, e.name));
    out.push(d);
  };
  walk(dir);
  return out;
}

function isPopulated(dir: string): boolean {
  try {
    return /^populated 1$/m.test(fs.readFileSync(path.join(dir, 'cgroup.events'), 'utf8'));
  } catch {
    return false;
  }
}

/** Kills every process in the subtree: cgroup.kill (5.14+), else SIGKILL each listed pid. */
function killSubtree(dir: string): void {
  try {
    fs.writeFileSync(path.join(dir, 'cgroup.kill'), '1');
    return;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' && !fs.existsSync(dir)) return;
  }
  for (const d of subtreeDeepestFirst(dir)) {
    let procs = '';
    try {
      procs = fs.readFileSync(path.join(d, 'cgroup.procs'), 'utf8');
    } catch {
      continue;
    }
    for (const p of procs.split('\n').filter(Boolean)) {
      try {
        process.kill(Number(p), 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}

/** Removes dirs in order; one already gone (ENOENT) is done. `removed` counts those this call removed. */
function rmdirAll(dirs: string[]): { failed: string[]; removed: Set<string> } {
  const failed: string[] = [];
  const removed = new Set<string>();
  for (const d of dirs) {
    try {
      fs.rmdirSync(d);
      removed.add(d);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') failed.push(`${d}: ${(e as Error).message}`);
    }
  }
  return { failed, removed };
}

/**
 * Kills everything in the subtree, waits until it is empty, removes it deepest-first.
 * Idempotent, and safe beside another call on the same tree: whatever vanishes meanwhile is
 * done. True if this call removed the tree's top directory.
 */
export async function destroyCgroupTree(dir: string, timeoutMs = 5000): Promise<boolean> {
  if (!fs.existsSync(dir)) return false;
  const deadline = Date.now() + timeoutMs;
  killSubtree(dir);
  while (isPopulated(dir)) {
    if (Date.now() > deadline) throw new Error(`cgroup ${dir} still has processes ${timeoutMs} ms after cgroup.kill`);
    await sleep(10);
    killSubtree(dir); // catches a process that forked between the kill and its death
  }
  const { failed, removed } = rmdirAll(subtreeDeepestFirst(dir));
  if (failed.length) throw new Error(`removing cgroup tree failed: ${failed.join('; ')}`);
  return removed.has(dir);
}

const sleepCell = new Int32Array(new SharedArrayBuffer(4));

/** Synchronous twin of destroyCgroupTree for 'exit' and signal handlers; best effort, never throws. */
export function destroyCgroupTreeSync(dir: string, timeoutMs = 2000): void {
  if (!fs.existsSync(dir)) return;
  const deadline = Date.now() + timeoutMs;
  killSubtree(dir);
  while (isPopulated(dir) && Date.now() < deadline) {
    Atomics.wait(sleepCell, 0, 0, 10);
    killSubtree(dir);
  }
  rmdirAll(subtreeDeepestFirst(dir));
}
