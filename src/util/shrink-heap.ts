// Gives back the memory a thread's start-up left in its V8 heap (docs/benchmarks.md, "Memory as
// installed"). Loading a proxy's modules allocates fast enough that V8 grows the young generation
// to ~4 MB; an idle proxy needs a fraction of that, and V8's own memory reducer only shrinks it
// after 8-30 s without allocation. A last-resort collection (what V8 does on a low-memory
// notification) shrinks it now, once; under load the young generation grows again as it needs.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

type Gc = (options: { type: 'major'; execution: 'sync'; flavor: 'last-resort' }) => void;

/** V8's gc(), taken from a fresh context without exposing it to this thread's own (Node has no API for it). */
function v8Gc(): Gc {
  const own = (globalThis as { gc?: Gc }).gc;
  if (typeof own === 'function') return own;
  setFlagsFromString('--expose-gc');
  try {
    return runInNewContext('gc') as Gc;
  } finally {
    setFlagsFromString('--no-expose-gc');
  }
}

/** A full collection that also shrinks the young generation and releases free pages: tens of ms on a fresh thread. */
export function shrinkHeap(): void {
  v8Gc()({ type: 'major', execution: 'sync', flavor: 'last-resort' });
}
