// Gives back the memory a thread's start-up left in its V8 heap (docs/benchmarks.md, "Memory as
// installed"). Loading a proxy's modules allocates fast enough that V8 grows the young generation
// to ~4 MB; an idle proxy needs a fraction of that, and V8's own memory reducer only shrinks it
// after 8-30 s without allocation. A last-resort collection (what V8 does on a low-memory
// notification) shrinks it now, once; under load the young generation grows again as it needs.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

type Gc = (options?: { type: 'major'; execution: 'sync'; flavor?: 'last-resort' }) => void;

/**
 * One lock for the process's --expose-gc flag, which v8Gc turns on and off: without it a thread
 * turning it off between another's two calls left that one with no gc() (two proxy workers start
 * together, and HeapSettle shrinks in any thread). The main thread makes it (gcLock()) and hands it
 * to each worker (WorkerInit.gcLock, useGcLock()).
 */
let lock: Int32Array | null = null;
/** [0]: held; [1]: how many times it was taken, so a waiter tells a queue that moves from a holder that is gone. */
const HELD = 0;
const TAKEN = 1;
/** One holder this long (a context's creation takes milliseconds) is taken to be gone. */
export const LOCK_TAKEOVER_MS = 2000;

export function gcLock(): SharedArrayBuffer {
  lock ??= new Int32Array(new SharedArrayBuffer(8));
  return lock.buffer as SharedArrayBuffer;
}

export function useGcLock(shared: SharedArrayBuffer): void {
  lock = new Int32Array(shared);
}

/**
 * V8's gc(), taken from a fresh context without exposing it to this thread's own (Node has no API
 * for it). The flag is the process's: with no lock shared (a thread that is not the agent's), a
 * thread starting at the same moment may turn it off between this one's two calls, so the context
 * may have no gc (an error saying so).
 */
export function v8Gc(): Gc {
  const own = (globalThis as { gc?: Gc }).gc;
  if (typeof own === 'function') return own;
  const l = lock;
  if (l !== null) {
    // Held for the moment of a context's creation, never across a collection. A thread terminated
    // while holding it (terminate() runs no finally) would hold it forever: when one holder has
    // kept it past the bound it is taken over, the old race at worst. Waiting behind others that
    // take it in turn is not that (under load that wait alone ran past 250 ms).
    let taken = Atomics.load(l, TAKEN);
    let since = performance.now();
    while (Atomics.compareExchange(l, HELD, 0, 1) !== 0) {
      Atomics.wait(l, HELD, 1, 5);
      const now = performance.now();
      const t = Atomics.load(l, TAKEN);
      if (t !== taken) {
        taken = t;
        since = now;
      } else if (now - since > LOCK_TAKEOVER_MS) {
        Atomics.store(l, HELD, 1);
        break;
      }
    }
    Atomics.add(l, TAKEN, 1);
  }
  setFlagsFromString('--expose-gc');
  try {
    const gc = runInNewContext('typeof gc === "function" ? gc : undefined') as Gc | undefined;
    if (gc === undefined) throw new Error('V8 exposed no gc() to a new context (another thread turned --expose-gc off meanwhile)');
    return gc;
  } finally {
    setFlagsFromString('--no-expose-gc');
    if (l !== null) {
      Atomics.store(l, HELD, 0);
      Atomics.notify(l, HELD, 1);
    }
  }
}

/**
 * A full collection that also shrinks the young generation and releases free pages: tens of ms on
 * a fresh thread. Best effort (memory, not correctness): the error when it could not run, else null.
 */
export function shrinkHeap(): Error | null {
  try {
    v8Gc()({ type: 'major', execution: 'sync', flavor: 'last-resort' });
    return null;
  } catch (e) {
    return e as Error;
  }
}
