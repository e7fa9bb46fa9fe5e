// Small helpers for driving processes that speak JSON lines (the sim's tools, the fixtures).
import type { ChildProcess } from 'node:child_process';
import * as readline from 'node:readline';

/** Collects a child's JSON stdout lines and waits for one that matches. */
export class JsonLines {
  readonly lines: any[] = [];
  /** When each line arrived (Date.now()), by index. */
  readonly arrivals: number[] = [];
  private waiters: Array<{ pred: (o: any) => boolean; resolve: (o: any) => void }> = [];
  stderr = '';
  readonly child: ChildProcess;

  constructor(child: ChildProcess) {
    this.child = child;
    readline.createInterface({ input: child.stdout! }).on('line', (l) => {
      let o: any;
      try {
        o = JSON.parse(l);
      } catch {
        o = { text: l };
      }
      this.lines.push(o);
      this.arrivals.push(Date.now());
      this.waiters = this.waiters.filter((w) => (w.pred(o) ? (w.resolve(o), false) : true));
    });
    child.stderr?.on('data', (d) => (this.stderr += d));
  }

  waitFor(pred: (o: any) => boolean, timeoutMs = 10_000, what = 'line'): Promise<any> {
    const hit = this.lines.find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}; stderr: ${this.stderr.slice(-2000)}; stdout: ${JSON.stringify(this.lines.slice(-5))}`)), timeoutMs);
      const onExit = (code: number | null) => reject(new Error(`process exited (${code}) before ${what}; stderr: ${this.stderr.slice(-2000)}`));
      this.child.once('exit', onExit);
      this.waiters.push({
        pred,
        resolve: (o) => {
          clearTimeout(timer);
          this.child.off('exit', onExit);
          resolve(o);
        },
      });
    });
  }
}

/** Sends {id, cmd, args} lines and resolves with the reply's result. */
export class JsonRpc {
  private seq = 0;
  readonly io: JsonLines;
  constructor(child: ChildProcess) {
    this.io = new JsonLines(child);
  }
  async call(cmd: string, args?: unknown): Promise<any> {
    const id = ++this.seq;
    this.io.child.stdin!.write(JSON.stringify({ id, cmd, args }, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)) + '\n');
    const r = await this.io.waitFor((o) => o.id === id, 10_000, `reply to ${cmd}`);
    if (r.error) throw new Error(`${cmd}: ${r.error}`);
    return r.result;
  }
}

export function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((r) => child.once('exit', (code) => r(code)));
}
