import type { ExecutionContext } from 'ava';

/** Datapath tests need root and BPF: without them they fail loudly, never skip. */
export function requireRoot(t: ExecutionContext): void {
  if (process.getuid?.() !== 0) {
    t.fail('this test needs root (BPF, network namespaces, cgroups); run the suite as root: sudo ./dev test');
    throw new Error('not root');
  }
}
