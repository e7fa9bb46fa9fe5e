/**
 * The node proxy: listener + detection dispatch + forwarders. This module wires the real
 * HTTP/1 and HTTP/2 handlers as defaults; listener.ts stays free of them so the core can be
 * tested with stub handlers.
 */
import { Proxy as CoreProxy } from './listener.ts';
import type { ProxyOptions } from './listener.ts';
import { createHttp1Handler } from './http1/index.ts';
import { createHttp2Handler } from './http2/index.ts';

export class Proxy extends CoreProxy {
  constructor(opts: ProxyOptions) {
    super({
      ...opts,
      handlers: {
        http1: opts.handlers?.http1 ?? createHttp1Handler(),
        http2: opts.handlers?.http2 ?? createHttp2Handler(),
      },
    });
  }
}

export type { ProxyOptions, ProxyStats, LogFn } from './listener.ts';
export {
  DEFAULT_DETECT_TIMEOUT_MS,
  DEFAULT_DRAIN_MS,
  DEFAULT_MAX_CONNECTIONS,
  defaultDialer,
  plainIp,
} from './listener.ts';
export { PortSet, DEFAULT_OPAQUE_PORTS } from './ports.ts';
export { forwardOpaque, abortSocket, DEFAULT_BYTES_REPORT_MS } from './opaque.ts';
export type { OpaqueOptions, OpaqueCloseEvent } from './opaque.ts';
export { forwardTls } from './tls-passthrough.ts';
export { dispatch } from './dispatch.ts';
export type { DispatchConfig } from './dispatch.ts';
export type { ConnContext, Dialer, OrigDst, OrigDstLookup, ProtocolHandler, ProxyLimits } from './context.ts';
export { defaultLimits } from './context.ts';
