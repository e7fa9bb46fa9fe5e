// Pure retry decisions shared by the HTTP/1 and HTTP/2 forwarders: is this response (or this
// failure) worth another attempt, and how long to wait before it.
import { DEFAULT_BACKOFF_MS, DEFAULT_MAX_BACKOFF_MS, type RetryPolicy } from './route-model.ts';

/** A request body up to this size is kept for replay; a larger one is never retried (as Linkerd). */
export const MAX_REPLAY_BYTES = 64 * 1024;

/** Does the policy retry a response with this HTTP status and (gRPC) grpc-status? */
export function retryableResponse(p: RetryPolicy, status: number, grpcStatus: number | undefined): boolean {
  const codes = p.grpcCodes;
  if (codes !== undefined && grpcStatus !== undefined && codes.includes(grpcStatus)) return true;
  const ranges = p.httpStatuses;
  if (ranges !== undefined) {
    for (let i = 0; i < ranges.length; i++) {
      const r = ranges[i]!;
      if (status >= r[0] && status <= r[1]) return true;
    }
  }
  return false;
}

/**
 * The wait before retry number `n` (1 for the first retry): the policy's backoff (25 ms by
 * default) doubling per retry up to 250 ms (or the backoff, when that is longer), and a random
 * part up to as much again within that cap, so clients that failed together do not retry
 * together. Never below the configured backoff (GEP-1731).
 */
export function backoffMs(p: RetryPolicy, n: number, random: () => number): number {
  const min = p.backoffMs ?? DEFAULT_BACKOFF_MS;
  const cap = Math.max(DEFAULT_MAX_BACKOFF_MS, min);
  const base = Math.min(cap, min * 2 ** Math.max(0, n - 1));
  return base + random() * (Math.min(cap, base * 2) - base);
}
