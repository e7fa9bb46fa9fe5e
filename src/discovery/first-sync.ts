// A bounded wait for discovery's first full world. Before it, an agent with identity on cannot
// tell a meshed pod of another node from any other address, and would connect to it directly,
// in plaintext (docs/identity.md). Connections of meshed pods wait for it instead, for at most
// maxMs once: if the controller is away at start, the agent gives up waiting and connects
// directly, as without identity (fail-open), rather than holding every connection.

/** Long enough for a live controller's snapshot at agent start; short enough that an absent one stalls connections briefly. */
export const DEFAULT_FIRST_SYNC_WAIT_MS = 5_000;

export interface SyncSource {
  readonly synced: boolean;
  onChange(fn: () => void): () => void;
}

export class FirstSyncWait {
  private pending: Promise<void> | null = null;
  private gaveUp = false;
  /** Connections waiting now, and all that ever waited (status). */
  waiting = 0;
  waited = 0;

  private readonly source: SyncSource;
  private readonly maxMs: number;
  private readonly onGiveUp: (msg: string) => void;
  private readonly giveUpMsg: string;

  /** `giveUpMsg`: what onGiveUp says when the wait runs out (default: discovery's first sync's). */
  constructor(source: SyncSource, maxMs: number, onGiveUp: (msg: string) => void = () => {}, giveUpMsg?: string) {
    this.source = source;
    this.maxMs = maxMs;
    this.onGiveUp = onGiveUp;
    this.giveUpMsg = giveUpMsg ?? `discovery did not sync within ${maxMs} ms of a meshed pod's connection: meshed pods' connections go directly until it does, to other nodes in plaintext rather than through mTLS tunnels; check the controller link (mesh-agent status, DISCOVERY)`;
  }

  /** Null when a connection may go ahead now; else a promise settled at the first sync or when the wait gives up. */
  wait(): Promise<void> | null {
    if (this.source.synced || this.gaveUp) return null;
    this.waiting++;
    this.waited++;
    this.pending ??= new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        off();
        this.pending = null;
        this.waiting = 0;
        resolve();
      };
      const off = this.source.onChange(() => {
        if (this.source.synced) done();
      });
      const timer = setTimeout(() => {
        this.gaveUp = true;
        this.onGiveUp(this.giveUpMsg);
        done();
      }, this.maxMs);
    });
    return this.pending;
  }

  /** The wait ran out before the first sync (until then, connections go directly). */
  get expired(): boolean {
    return this.gaveUp && !this.source.synced;
  }
}

/** A SyncSource that is set once (this node's pod list known: the agent's, a worker's table). */
export class SyncFlag implements SyncSource {
  synced = false;
  private readonly fns = new Set<() => void>();

  set(): void {
    if (this.synced) return;
    this.synced = true;
    for (const fn of [...this.fns]) fn();
  }

  onChange(fn: () => void): () => void {
    this.fns.add(fn);
    return () => this.fns.delete(fn);
  }
}

/** A tunnel's CONNECT to a pod this node does not know yet waits for the node's pod list (tunnel/server.ts), at most maxMs once. */
export function podListWait(listed: SyncSource, maxMs: number, onGiveUp: (msg: string) => void): FirstSyncWait {
  return new FirstSyncWait(listed, maxMs, onGiveUp, `this node's pod list did not arrive within ${maxMs} ms of a tunnelled connection: tunnels to pods it does not know are refused until it does; check the pod source (mesh-agent status, podSource)`);
}
