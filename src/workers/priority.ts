// A replacement proxy worker starts at a raised scheduling priority and drops it once it listens
// (docs/proxy.md, "Workers"): on a loaded node its start is ~150 ms of its own CPU, and at a fair
// share that CPU takes several times as long in wall time, while the node's connections go to the
// proxies still running. On Linux a new thread inherits its creator's nice value, and
// setpriority(PRIO_PROCESS, 0, …) (os.setPriority(0, …)) changes the calling thread only, so the
// main thread raises its own priority just around `new Worker()`, which creates the thread
// synchronously, and the new thread lowers its own back. Raising needs CAP_SYS_NICE; lowering
// one's own never does.
import * as fs from 'node:fs';
import * as os from 'node:os';

/** How many nice steps above the main thread's a replacement starts (-10 from 0: ~9x the weight). */
export const BOOST_STEPS = 10;

/**
 * How long a replacement may stay raised before it listens. A start stuck before its step back (a
 * loop in its start-up) would otherwise crowd out the proxies still serving until the pool's start
 * timeout; past this the pool lowers the thread itself.
 */
export const BOOST_LIMIT_MS = 2000;

/** The calling process's thread ids (Linux: /proc/self/task); empty where that cannot be read. */
export function threadIds(): Set<number> {
  try {
    return new Set(fs.readdirSync('/proc/self/task').map(Number));
  } catch {
    return new Set();
  }
}

/**
 * Threads of this process back at `nice`, from another thread: setpriority(PRIO_PROCESS, TID)
 * acts on that thread alone, and lowering a thread of one's own user needs no privilege. A thread
 * that has ended meanwhile is passed over. Returns what could not be lowered, with the reason.
 */
export function lowerThreads(tids: Iterable<number>, nice: number): string[] {
  const failed: string[] = [];
  for (const tid of tids) {
    try {
      os.setPriority(tid, nice);
    } catch (e) {
      // os.setPriority throws a SystemError (code ERR_SYSTEM_ERROR): the errno's name is in info.code.
      if ((e as { info?: { code?: string } }).info?.code !== 'ESRCH') failed.push(`thread ${tid}: ${(e as Error).message}`);
    }
  }
  return failed;
}

/**
 * Runs `make` (which creates one thread) with the calling thread's priority raised BOOST_STEPS,
 * so the thread it makes inherits that; the calling thread is back at its own before this returns
 * or throws. `make` gets the nice value the new thread is to return to, or undefined if the
 * priority was not raised (`refused` is told why: no CAP_SYS_NICE, as a rule). Returns what `make`
 * returned and that same nice value, so the caller knows whether the thread started raised.
 */
export function raisedForThread<T>(make: (restoreNice: number | undefined) => T, refused: (e: Error) => void): { value: T; raisedFrom: number | undefined } {
  const nice = os.getPriority(0);
  const target = Math.max(os.constants.priority.PRIORITY_HIGHEST, nice - BOOST_STEPS);
  if (target >= nice) return { value: make(undefined), raisedFrom: undefined };
  try {
    os.setPriority(0, target);
  } catch (e) {
    refused(e as Error);
    return { value: make(undefined), raisedFrom: undefined };
  }
  try {
    return { value: make(nice), raisedFrom: nice };
  } finally {
    os.setPriority(0, nice);
  }
}

/** The calling thread back at `nice` (a raised thread's own step down; never needs privilege). */
export function lowerTo(nice: number | undefined, log: (msg: string) => void): void {
  if (nice === undefined) return;
  try {
    os.setPriority(0, nice);
  } catch (e) {
    log(`a replacement proxy worker could not lower its scheduling priority back to nice ${nice}: ${(e as Error).message}; it keeps running at the raised priority (report this: raising one's own nice value needs no privilege)`);
  }
}
