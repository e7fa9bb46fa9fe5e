// Polls until a condition holds, for end-to-end tests that wait on another process. The
// timeout error shows the last value (or error) and, through `context`, the logs that explain it.
export interface UntilOptions {
  ms?: number;
  intervalMs?: number;
  /** Appended to the timeout error, e.g. the agent's log tail. */
  context?: () => string;
}

export async function until<T>(f: () => T | Promise<T>, ok: (v: T) => boolean, what: string, opts: UntilOptions = {}): Promise<T> {
  const { ms = 20_000, intervalMs = 200, context } = opts;
  const end = Date.now() + ms;
  let v: T | undefined;
  let err: unknown;
  do {
    try {
      v = await f();
      if (ok(v)) return v;
    } catch (e) {
      err = e;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  } while (Date.now() < end);
  throw new Error(`timed out waiting for ${what}: last ${JSON.stringify(v)?.slice(0, 600)}${err ? ` ${err}` : ''}${context ? `; ${context()}` : ''}`);
}

/** Polls a synchronous condition every 10 ms, for in-process tests on loopback. */
export async function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`condition not met within ${ms} ms: ${cond.toString().slice(0, 200)}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** `p`, or a rejection naming `what` once `ms` have passed (its timer cleared when `p` settles first, so no stray timer outlives the test). */
export function within<T>(p: Promise<T>, ms: number, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(what())), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}
