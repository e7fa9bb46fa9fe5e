// HTTP/1.1 forwarder: byte-level framing, verbatim forwarding, pooled keep-alive upstreams.
import type { ProtocolHandler } from '../context.ts';
import { Http1Connection } from './connection.ts';
import { UpstreamPool } from './pool.ts';
import { ScopedPools } from '../scoped-pools.ts';

export { UpstreamPool, type UpstreamPoolOptions } from './pool.ts';

export interface Http1HandlerOptions {
  /** Shared keep-alive pool; one private to this handler when omitted. */
  pool?: UpstreamPool;
}

export function createHttp1Handler(opts: Http1HandlerOptions = {}): ProtocolHandler {
  const pool = opts.pool ?? new UpstreamPool();
  // One pool per scope (ctx.poolScope, context.ts): an upstream carries its client's identity,
  // address or authorization and must not serve another client's requests.
  const scoped = new ScopedPools(() => new UpstreamPool());
  const poolFor = (scope: string | undefined): UpstreamPool => (scope ? scoped.get(scope) : pool);
  return (ctx, head, upstream, limits) => {
    new Http1Connection(ctx, upstream, limits, poolFor(ctx.poolScope)).start(head);
  };
}
