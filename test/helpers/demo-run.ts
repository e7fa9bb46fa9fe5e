// Runs `mesh-agent demo` as a user would (a child process) and inspects what it leaves behind.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { findCgroup2Mount } from '../../src/sim/index.ts';
import { listNetns } from '../../src/sim/network.ts';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin/mesh-agent.ts');

/** A demo test's own bound (ava's default is 120 s without a result): two cluster builds on a loaded machine fit in it. */
export const DEMO_TEST_TIMEOUT_MS = 480_000;

export class DemoRun {
  readonly child: ChildProcess;
  output = '';
  readonly exited: Promise<{ code: number | null; signal: string | null }>;

  constructor(args: string[]) {
    this.child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', BIN, 'demo', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout!.setEncoding('utf8').on('data', (d: string) => (this.output += d));
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.output += d));
    this.exited = new Promise((r) => this.child.once('exit', (code, signal) => r({ code, signal })));
  }

  /**
   * Waits until the output matches; fails with the output so far if the demo exits, or prints
   * nothing new for `stallMs`. A bound on the demo's silence, not its total time: building the
   * cluster prints a line per stage, and on a loaded machine the stages are slower, not silent.
   */
  async waitFor(re: RegExp, stallMs: number): Promise<RegExpMatchArray> {
    let seen = this.output.length;
    let lastNews = Date.now();
    for (;;) {
      const m = this.output.match(re);
      if (m) return m;
      if (this.child.exitCode !== null || this.child.signalCode !== null) throw new Error(`demo exited before printing ${re}:\n${this.output}`);
      if (this.output.length !== seen) {
        seen = this.output.length;
        lastNews = Date.now();
      } else if (Date.now() - lastNews > stallMs) {
        throw new Error(`demo printed nothing for ${stallMs} ms and not yet ${re}:\n${this.output}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** The ids the demo's cluster made its namespaces and cgroups under: the cluster's, each node's, the control plane's. */
  ids(): string[] {
    const m = /==> cluster (ma\d+x\d+[a-z]{3}): (.*)/.exec(this.output);
    if (!m) throw new Error(`no cluster id in the demo's output:\n${this.output}`);
    return [m[1]!, ...(m[2]!.match(/ma\d+x\d+[a-z]{3}/g) ?? [])];
  }
}

export interface Proc { pid: number; cmdline: string }

/** Every process in the nodes' cgroups (their pods and node processes), with cmdlines to recognise them later. */
export function processesOf(ids: string[]): Proc[] {
  const cg2 = findCgroup2Mount();
  const pids: Proc[] = [];
  const walk = (dir: string) => {
    if (!fs.existsSync(dir)) return;
    for (const p of fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
      const cmdline = cmdlineOf(Number(p));
      if (cmdline !== null) pids.push({ pid: Number(p), cmdline });
    }
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) walk(path.join(dir, e.name));
  };
  for (const id of ids) {
    walk(path.join(cg2, `mesh-sim-${id}`));
    walk(path.join(cg2, `mesh-sim-${id}-node`));
  }
  return pids;
}

function cmdlineOf(pid: number): string | null {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return null;
  }
}

/** What is left of a run: its namespaces, cgroups, temp dir, and which of its processes still live. */
export function leftovers(ids: string[], demoPid: number, procs: Proc[]): string[] {
  const cg2 = findCgroup2Mount();
  const left: string[] = [];
  const ours = (name: string, prefix: string) => ids.some((id) => name.startsWith(`${prefix}${id}-`) || name === `${prefix}${id}`);
  left.push(...listNetns().filter((n) => ours(n, '')).map((n) => `netns ${n}`));
  left.push(...fs.readdirSync(cg2).filter((n) => ours(n, 'mesh-sim-')).map((n) => `cgroup ${n}`));
  left.push(...fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith(`mesh-demo-${demoPid}-`)).map((n) => `dir ${n}`));
  // Same pid and same cmdline: the process itself, not a recycled pid.
  left.push(...procs.filter((p) => cmdlineOf(p.pid) === p.cmdline).map((p) => `process ${p.pid} ${p.cmdline.replaceAll('\0', ' ').slice(0, 120)}`));
  return left;
}
