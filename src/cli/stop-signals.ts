// What `run` does with SIGTERM and SIGINT (docs/proxy.md): the first drains for --drain and
// exits 0; a second cuts the drain short (the connections still open are closed as at its
// deadline), the agent unloads as after any drain and exits 128+signal; a third exits at once.
// A signal that comes while the agent is still starting waits for the start: stopped beside it,
// the start went on after the stop had looked and could leave the capture's nftables table.
import * as os from 'node:os';

export interface StoppableAgent {
  stop(drainMs: number): Promise<void>;
  cutDrain(): void;
}

export interface StopSignalsOptions {
  agent: StoppableAgent;
  drainMs: number;
  /** The agent's start: resolves when done, rejects when it failed (run then stops and exits itself). */
  started: Promise<unknown>;
  log: { info(msg: string): void; warn(msg: string): void };
  exit: (code: number) => void;
}

export class StopSignals {
  private readonly o: StopSignalsOptions;
  private signals = 0;
  private starting = true;
  private cutShort: NodeJS.Signals | null = null;

  constructor(o: StopSignalsOptions) {
    this.o = o;
    o.started.then(() => (this.starting = false), () => (this.starting = false));
  }

  async signal(sig: NodeJS.Signals): Promise<void> {
    const { agent, drainMs, log } = this.o;
    this.signals++;
    if (this.signals === 2) {
      log.warn(`${sig} again: closing the connections still open now instead of draining for --drain ${drainMs} ms; send it once more to exit without cleaning up`);
      this.cutShort = sig;
      agent.cutDrain();
      return;
    }
    if (this.signals > 2) {
      log.warn(`${sig} a third time: exiting now; what the agent left in the kernel, if anything, is removed by the next agent or mesh-agent cleanup`);
      this.o.exit(exitCodeFor(sig));
      return;
    }
    if (this.starting) {
      log.info(`${sig} while starting: stopping once the start is done`);
      // A start that fails stops the agent and exits on its own (run.ts).
      if (!(await this.o.started.then(() => true, () => false))) return;
    }
    log.info(`${sig}: draining and detaching`);
    // Cut while the start was still going on, the cut found no proxy to end the drain of yet.
    await agent.stop(this.cutShort === null ? drainMs : 0);
    log.info('stopped');
    this.o.exit(this.cutShort === null ? 0 : exitCodeFor(this.cutShort));
  }
}

/** The shell's code for a process ended by a signal: 128 + its number (130 for SIGINT, 143 for SIGTERM). */
export function exitCodeFor(sig: NodeJS.Signals): number {
  return 128 + os.constants.signals[sig];
}
