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

  constructor(source: SyncSource, maxMs: number, onGiveUp: (msg: string) => void = () => {}) {
    this.source = source;
    this.maxMs = maxMs;
    this.onGiveUp = onGiveUp;
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
        this.onGiveUp(`discovery did not sync within ${this.maxMs} ms of a meshed pod's connection: meshed pods' connections go directly until it does, to other nodes in plaintext rather than through mTLS tunnels; check the controller link (mesh-agent status, DISCOVERY)`);
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

