// Sweeps what crashed runs left behind: namespaces, cgroups and CNI directories whose creator pid is dead.
// Those of live processes are left alone, so concurrent test files never hurt each other.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { destroyCgroupTree, findCgroup2Mount } from './cgroup2.ts';
import { ownerPidOfCgroup, ownerPidOfCniDir, ownerPidOfNetns, ownerPidOfTempDir } from './layout.ts';
import { deleteNetns, listNetns } from './network.ts';
import { procStatField } from '../util/proc-stat.ts';

/** A zombie counts as dead: it will never clean up after itself. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return false;
  }
  return procStatField(stat, 'state') !== 'Z';
}

function countProcs(dir: string): number {
  let n = 0;
  const walk = (d: string): void => {
    try {
      n += fs.readFileSync(path.join(d, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).length;
      for (const e of fs.readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(path.join(d, e.name));
    } catch {
      // vanished meanwhile
    }
  };
  walk(dir);
  return n;
}

/**
 * Removes leftovers of dead creators: processes (via their cgroups) first, then cgroups, then
 * netns. Another sweep may run at the same time (two demos starting, a test's hook): what it
 * removes first is done, not an error, and is not reported here. Every item is tried; the
 * failures, if any, are thrown together at the end.
 */
export async function cleanupLeftovers(): Promise<string[]> {
  const removed: string[] = [];
  const failed: string[] = [];
  const cg2 = findCgroup2Mount();
  for (const name of fs.readdirSync(cg2)) {
    const pid = ownerPidOfCgroup(name);
    if (pid === undefined || isAlive(pid)) continue;
    const dir = path.join(cg2, name);
    const procs = countProcs(dir);
    try {
      if (await destroyCgroupTree(dir)) removed.push(`cgroup ${dir}` + (procs ? ` (killed ${procs} process${procs > 1 ? 'es' : ''})` : ''));
    } catch (e) {
      failed.push((e as Error).message);
    }
  }
  // Pod namespaces before node namespaces, so each veth pair goes with its pod.
  const stale = listNetns().filter((n) => {
    const pid = ownerPidOfNetns(n);
    return pid !== undefined && !isAlive(pid);
  });
  stale.sort((a, b) => Number(a.endsWith('-node')) - Number(b.endsWith('-node')));
  for (const ns of stale) {
    try {
      if (await deleteNetns(ns)) removed.push(`netns ${ns}`);
    } catch (e) {
      failed.push((e as Error).message);
    }
  }
  for (const name of fs.readdirSync(os.tmpdir())) {
    const cni = ownerPidOfCniDir(name);
    const pid = cni ?? ownerPidOfTempDir(name);
    if (pid === undefined || isAlive(pid)) continue;
    const dir = path.join(os.tmpdir(), name);
    if (!fs.existsSync(dir)) continue; // another run's sweep got there first
    fs.rmSync(dir, { recursive: true, force: true });
    removed.push(cni !== undefined ? `CNI directory ${dir}` : `dir ${dir}`);
  }
  if (failed.length) throw new Error(`removing what dead runs left failed: ${failed.join('; ')}${removed.length ? ` (removed: ${removed.join(', ')})` : ''}`);
  return removed;
}
