// An AbortSignal for a call of @kubernetes/client-node's generated APIs. Their calls take no
// signal, but a per-call ConfigurationOptions may add a middleware, and the request context it
// sees has setSignal(), which the library's fetch honours (client-node 2, gen/http/http.ts and
// isomorphic-fetch.ts). Appended, so the library's own middleware (its user agent) stays.
import { Observable, Watch, type ConfigurationOptions, type KubeConfig, type RequestContext, type ResponseContext } from '@kubernetes/client-node';
import type { WatchClient } from './kube-api.ts';

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

/** What the Watch reads of its KubeConfig (client-node 2: the server, and the request's credentials and dispatcher). */
type WatchConfig = Pick<KubeConfig, 'getCurrentCluster' | 'applySecurityAuthentication'>;

/**
 * client-node's Watch, whose watches a signal aborts also before the API server answers. Its
 * `watch()` takes no signal and hands back its AbortController only once the answer came, so a
 * watch the server took and holds ran on after stop() until the library's request timeout
 * (watchdogMs + 1 s). Each watch's credentials come from applySecurityAuthentication, which gives
 * the request a dispatcher made for it (an undici Agent, whenever the config has a CA, a client
 * certificate, insecure-skip-tls-verify or a proxy-url: in-cluster configs do); destroying that
 * dispatcher when `signal` aborts ends the request at once. A config with none of those uses the
 * process's shared dispatcher, which is not ours to destroy: its unanswered watch still runs to
 * the timeout.
 */
export function abortableWatch(kc: KubeConfig, requestTimeoutMs: number): WatchClient {
  const open = (config: WatchConfig) => {
    const w = new Watch(config as KubeConfig);
    // The library aborts a watch silent for 30 s by itself; silence is the reflector's watchdog's call.
    (w as unknown as { requestTimeoutMs: number }).requestTimeoutMs = requestTimeoutMs;
    return w;
  };
  const plain = open(kc);
  return {
    watch(path, query, onEvent, onDone, signal) {
      if (!signal) return plain.watch(path, query, onEvent, onDone);
      let dispatcher: { destroy(err: Error): Promise<void> } | undefined;
      const cut = () => void dispatcher?.destroy(new Error('the watch was stopped')).catch(() => {});
      const config: WatchConfig = {
        getCurrentCluster: () => kc.getCurrentCluster(),
        applySecurityAuthentication: async (ctx: RequestContext) => {
          await kc.applySecurityAuthentication(ctx);
          dispatcher = ctx.getDispatcher() as typeof dispatcher;
          if (signal.aborted) cut();
        },
      };
      signal.addEventListener('abort', cut, { once: true });
      // The signal outlives the watch (a reflector's, for all its watches): its listener goes with the watch.
      return open(config).watch(path, query, onEvent, (err) => {
        signal.removeEventListener('abort', cut);
        onDone(err);
      });
    },
  };
}
