// How much API server work a caller of the controller or the identity service can cause
// (docs/controller.md "Who can reach it"): both review the bearer token of whoever reaches their
// port, one TokenReview per token not seen before. The gate bounds the reviews in flight per
// peer address (the TCP peer, which no header changes: an agent comes from its node's address, a
// pod from its own) and overall; a review over either bound is not made: ReviewBusyError, which
// the caller answers at once with 503 and retry-after and never caches. In flight, not per
// second: the API server's slowness is what holds a slot, so the bound eases off as it slows.
//
// So that a flood from other addresses filling the overall bound does not lock agents out, a
// peer that presented an agent's valid token (trust()) is held to its own bound only: agents
// come from a few stable node addresses, and an address gets there only with a valid token.

import { plainIp } from '../util/ip.ts';

export const REVIEWS_PER_PEER = 4;
export const REVIEWS_OVERALL = 64;
/** Peers remembered as agents' (least recently trusted out first): more than any cluster's nodes. */
export const TRUSTED_PEERS = 4096;
export const RETRY_AFTER_S = 1;

export class ReviewBusyError extends Error {
  readonly retryAfterS = RETRY_AFTER_S;

  /** The 503's message, for the caller to send; `who` is the one busy ("the controller", "the identity service"). */
  answer(who: 'the controller' | 'the identity service'): string {
    return `${who} is reviewing too many tokens now (${this.message}); not reviewed, retry after ${this.retryAfterS} s (the agent retries after its backoff)`;
  }
}

export interface ReviewGateOptions {
  perPeer?: number;
  overall?: number;
  trustedPeers?: number;
}

/** "::ffff:10.0.0.5" (a dual-stack listener's view) and "10.0.0.5" are one peer. */
function peerKey(addr: string | undefined): string {
  return addr ? plainIp(addr) : 'unknown';
}

export class ReviewGate {
  readonly perPeer: number;
  readonly overall: number;
  private readonly maxTrusted: number;
  private readonly byPeer = new Map<string, number>();
  private inFlight = 0;
  /** Insertion order is recency: trust() moves a peer to the end. */
  private readonly trusted = new Set<string>();
  private readonly busy = { peer: 0, overall: 0 };

  constructor(o: ReviewGateOptions = {}) {
    this.perPeer = o.perPeer ?? REVIEWS_PER_PEER;
    this.overall = o.overall ?? REVIEWS_OVERALL;
    this.maxTrusted = o.trustedPeers ?? TRUSTED_PEERS;
  }

  /** Runs `review` (the API server calls for one request) when peer is within the bounds; else throws ReviewBusyError without calling it. */
  async run<T>(peer: string | undefined, review: () => Promise<T>): Promise<T> {
    const p = peerKey(peer);
    const mine = this.byPeer.get(p) ?? 0;
    if (mine >= this.perPeer) {
      this.busy.peer++;
      throw new ReviewBusyError(`${mine} token reviews for ${p} are under way, at most ${this.perPeer} per peer address`);
    }
    if (this.inFlight >= this.overall && !this.trusted.has(p)) {
      this.busy.overall++;
      throw new ReviewBusyError(`${this.inFlight} token reviews are under way, at most ${this.overall} for callers not yet seen with an agent's token`);
    }
    this.byPeer.set(p, mine + 1);
    this.inFlight++;
    try {
      return await review();
    } finally {
      this.inFlight--;
      const left = this.byPeer.get(p)! - 1;
      if (left === 0) this.byPeer.delete(p);
      else this.byPeer.set(p, left);
    }
  }

  /** The peer presented an agent's valid token: the overall bound no longer applies to it. */
  trust(peer: string | undefined): void {
    const p = peerKey(peer);
    this.trusted.delete(p);
    this.trusted.add(p);
    if (this.trusted.size > this.maxTrusted) this.trusted.delete(this.trusted.values().next().value!);
  }

  state() {
    return { perPeer: this.perPeer, overall: this.overall, inFlight: this.inFlight, peersInFlight: this.byPeer.size, trustedPeers: this.trusted.size, busy: { ...this.busy } };
  }
}
