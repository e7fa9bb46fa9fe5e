// What the floor benches (conn-floor.ts, h1-floor.ts) share: the processes and the directory a
// run made, ended and removed once however the run ends (done, failed, Ctrl-C), and their CPU
// and port helpers.
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { parseCpuTicks } from './parse.ts';

export class FloorRun {
  /** What main() started: stop() ends them, waiting for each to exit before the directory goes. */
  readonly children = new Set<ChildProcess>();
  /** What main() made ('' until then). */
  tmp = '';
  readonly #name: string;
  #stopping: Promise<never> | null = null;

  constructor(name: string) {
    this.#name = name;
  }

  /** Once: Ctrl-C also fails the client run in flight, which would stop again with another code. */
  stop(code: number): Promise<never> {
    return (this.#stopping ??= (async () => {
      await Promise.all([...this.children].map((c) => new Promise((r) => {
        c.once('exit', r);
        c.kill('SIGTERM');
      })));
      if (this.tmp) fs.rmSync(this.tmp, { recursive: true, force: true });
      process.exit(code);
    })());
  }

  /** Runs main, then exits: 0; 1 saying why; 130 on SIGINT/SIGTERM (the failure that causes is not said). */
  run(main: () => Promise<void>): Promise<never> {
    for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => void this.stop(130));
    return main().then(() => this.stop(0), (e: Error) => {
      if (!this.#stopping) process.stderr.write(`${this.#name}: ${e.message}\n`);
      return this.stop(1);
    });
  }
}

/** utime and stime of processes, in clock ticks (all their threads). */
export function ticks(pids: number[]): { user: number; sys: number } {
  let user = 0;
  let sys = 0;
  for (const pid of pids) {
    const t = parseCpuTicks(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
    user += t.user;
    sys += t.sys;
  }
  return { user, sys };
}

/** A port free on `host` now (nginx binds it a moment later; loopback only, so a race is unlikely). */
export async function freePort(host: string): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, host, r));
  const { port } = s.address() as net.AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}
