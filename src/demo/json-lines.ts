// Reads a child's stdout as JSON lines and keeps the latest value of each top-level key.
import type { ChildProcess } from 'node:child_process';
import * as readline from 'node:readline';

export class JsonLineLog {
  readonly latest = new Map<string, any>();
  stderr = '';
  readonly #waiters: Array<{ key: string; resolve: (v: any) => void }> = [];

  constructor(child: ChildProcess) {
    if (child.stdout) {
      readline.createInterface({ input: child.stdout }).on('line', (line) => {
        let o: Record<string, unknown>;
        try {
          o = JSON.parse(line);
        } catch {
          return;
        }
        if (o === null || typeof o !== 'object') return; // `null` and `7` parse too
        for (const [k, v] of Object.entries(o)) this.latest.set(k, v);
        for (const w of this.#waiters.splice(0)) {
          if (this.latest.has(w.key)) w.resolve(this.latest.get(w.key));
          else this.#waiters.push(w);
        }
      });
    }
    // Keep only the tail: enough to explain a failure, bounded for a long run.
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (this.stderr = (this.stderr + d).slice(-4000)));
  }

  /** Resolves with the first value of `key`; rejects if the process exits or time runs out. */
  waitFor(key: string, child: ChildProcess, timeoutMs: number, what: string): Promise<any> {
    if (this.latest.has(key)) return Promise.resolve(this.latest.get(key));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${what}: not ready within ${timeoutMs} ms; its stderr: ${this.stderr.trim() || '(empty)'}`)), timeoutMs);
      const onExit = (code: number | null, sig: string | null) => {
        clearTimeout(timer);
        reject(new Error(`${what} exited (${sig ?? code}) before it was ready; its stderr: ${this.stderr.trim() || '(empty)'}`));
      };
      child.once('exit', onExit);
      this.#waiters.push({
        key,
        resolve: (v) => {
          clearTimeout(timer);
          child.off('exit', onExit);
          resolve(v);
        },
      });
    });
  }
}
