// Whether a proxy worker decides with the main thread's latest pod table (docs/policy.md, "Every
// proxy's table"). The main thread counts, in shared memory, each table it is about to send
// *before* it writes the change into the kernel (a pod's redirection in the BPF pod map); a
// worker records the count of the table it applied. A worker's accept and its message port
// are events of one loop in no fixed order, so it can meet a connection the kernel redirected
// for a table it has not applied yet: a same-node pod it does not know yet has no policy there,
// and its connection would be dialled straight to the pod, which the capture does not see
// (the agent's own dials never pass it). Such a connection first waits for that table.
import { Listeners } from '../util/listeners.ts';
import type { Authorizer } from '../policy/authorizer.ts';

export class TableSeq {
  /** The count of tables the main thread has sent or is about to (shared: Int32Array of one). */
  readonly #sent: Int32Array;
  #loaded: number;
  readonly #changes = new Listeners();

  constructor(sent: Int32Array, loaded: number) {
    this.#sent = sent;
    this.#loaded = loaded;
  }

  /** The worker applied the table of count `seq`. */
  loaded(seq: number): void {
    this.#loaded = seq;
    this.#changes.emit();
  }

  /** The main thread has a newer table on its way (or about to be) than the one applied. */
  get behind(): boolean {
    return Atomics.load(this.#sent, 0) > this.#loaded;
  }

  /** Resolves true once the worker has caught up, false at the deadline (performance.now() ms). */
  async caughtUp(deadline: number): Promise<boolean> {
    while (this.behind) if (!(await this.#changes.next(deadline))) return false;
    return true;
  }
}

/**
 * A worker's proxy's policyReady (proxy/listener.ts): before deciding a redirected connection, the
 * table the kernel already acts on, then the destination's pending policy (Authorizer.ready),
 * together within `timeoutMs`. null (no wait) in the usual case: caught up, nothing pending.
 */
export function workerPolicyReady(seq: TableSeq, authorizer: Pick<Authorizer, 'ready'>, timeoutMs: number): (ip: string) => Promise<unknown> | null {
  return (ip) => {
    if (!seq.behind) return authorizer.ready(ip, timeoutMs);
    const deadline = performance.now() + timeoutMs;
    return seq.caughtUp(deadline).then(() => authorizer.ready(ip, Math.max(1, deadline - performance.now())));
  };
}
