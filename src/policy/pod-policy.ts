// One meshed pod's current inbound policy as every open connection to it sees it (docs/policy.md,
// "When the policy changes"). The Authorizer replaces the policy in place when the pod's compiled
// policy changes; connections decide their next request against it (a reference compare per
// request), and connections allowed whole (opaque, TLS, a tunnel forwarded as bytes, a Service's
// direct upstream) watch it: a replacement re-decides them, and only them, of this pod alone.
import type { ServerPolicy } from './authorize.ts';

export class PodPolicy {
  #policy: ServerPolicy;
  /** Each watching connection's re-check; run on every replacement. */
  readonly #watchers = new Set<() => void>();

  constructor(policy: ServerPolicy) {
    this.#policy = policy;
  }

  get policy(): ServerPolicy {
    return this.#policy;
  }

  /** Connections watching (allowed whole and open). */
  get watching(): number {
    return this.#watchers.size;
  }

  /** A new compiled policy: every watcher re-decides against it (a watcher may remove itself). */
  replace(next: ServerPolicy): void {
    if (next === this.#policy) return;
    this.#policy = next;
    for (const check of [...this.#watchers]) {
      try {
        check();
      } catch {
        // one connection's trouble must not keep the others from being re-decided
      }
    }
  }

  /** Runs `check` on every replacement until the returned remover is called. */
  watch(check: () => void): () => void {
    this.#watchers.add(check);
    return () => void this.#watchers.delete(check);
  }
}
