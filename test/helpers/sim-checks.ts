// What the simulated node and cluster tests check on the machine itself.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { procStatField } from '../../src/util/proc-stat.ts';

export function ipNetnsList(): string[] {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(' ')[0]);
}

/** Dead means gone, or a zombie (reaping an orphan is pid 1's business, not ours). */
export function isDead(pid: number): boolean {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return true;
  }
  return procStatField(stat, 'state') === 'Z';
}
