// A load that failed its error bound (too many failed requests or connections): the one failure
// the runner reports as a failed path and carries on from, after running the path once more.
// Anything else (no root, a missing tool, the node not building, a run that took the wrong
// path) is a broken harness and still ends the run. Pure: no I/O.
import type { PathFailure } from './report.ts';

export class LoadFailure extends Error {
  /** The tool's counts, for the report's JSON: { succeeded, failed } or { connections, errors }. */
  readonly counts: Record<string, number>;
  /** The tail of the tool's output; kept in the JSON, not in the markdown. */
  readonly output: string;

  /** `summary` is one line: what failed and by how much. */
  constructor(summary: string, counts: Record<string, number>, output = '') {
    super(summary);
    this.name = 'LoadFailure';
    this.counts = counts;
    this.output = output;
  }
}

/**
 * Throws a LoadFailure when nothing completed or more than `bound` (a share of what completed)
 * failed. `tool` names the load and its rate if it has one, as the summary's start.
 */
export function checkErrors(tool: string, ok: { name: string; n: number }, failed: { name: string; n: number }, bound: number, output = ''): void {
  if (ok.n > 0 && failed.n <= ok.n * bound) return;
  const share = ok.n > 0 ? ` (${((failed.n / ok.n) * 100).toFixed(1)}%, over the ${bound * 100}% allowed)` : '';
  throw new LoadFailure(`${tool}: ${ok.n} ${ok.name}, ${failed.n} ${failed.name}${share}`, { [ok.name]: ok.n, [failed.name]: failed.n }, output);
}

export type Attempts<T> =
  | { ok: true; value: T; /** The first run's failure, when the retry passed. */ retried?: LoadFailure }
  | { ok: false; failures: [LoadFailure, LoadFailure] };

/**
 * Runs a path; if its load fails its error bound, runs it once more (one bad second of a
 * baseline, as nginx's grpc_pass answering 1.8% 5xx once, should not cost a 16-minute run).
 * Any other error is thrown as it is.
 */
export async function runTwice<T>(run: () => Promise<T>, onRetry: (first: LoadFailure) => void): Promise<Attempts<T>> {
  let first: LoadFailure | undefined;
  for (;;) {
    try {
      const value = await run();
      return first ? { ok: true, value, retried: first } : { ok: true, value };
    } catch (e) {
      if (!(e instanceof LoadFailure)) throw e;
      if (first) return { ok: false, failures: [first, e] };
      first = e;
      onRetry(e);
    }
  }
}

/** A LoadFailure as the report's JSON keeps it. */
export function asPathFailure(e: LoadFailure): PathFailure {
  return e.output ? { reason: e.message, counts: e.counts, output: e.output } : { reason: e.message, counts: e.counts };
}
