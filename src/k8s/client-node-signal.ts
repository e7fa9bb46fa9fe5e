// An AbortSignal for a call of @kubernetes/client-node's generated APIs. Their calls take no
// signal, but a per-call ConfigurationOptions may add a middleware, and the request context it
// sees has setSignal(), which the library's fetch honours (client-node 2, gen/http/http.ts and
// isomorphic-fetch.ts). Appended, so the library's own middleware (its user agent) stays.
import { Observable, type ConfigurationOptions, type RequestContext, type ResponseContext } from '@kubernetes/client-node';

/** Options that abort the call when `signal` does (none: undefined, the call as it was). */
export function abortable(signal: AbortSignal | undefined): ConfigurationOptions | undefined {
  if (!signal) return undefined;
  return {
    middleware: [{
      pre: (ctx: RequestContext) => {
        ctx.setSignal(signal);
        return new Observable(Promise.resolve(ctx));
      },
      post: (res: ResponseContext) => new Observable(Promise.resolve(res)),
    }],
    middlewareMergeStrategy: 'append',
  };
}
