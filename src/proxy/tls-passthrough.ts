/**
 * TLS passthrough: the ClientHello is not terminated, only read. The connection is forwarded
 * as opaque bytes, reported with protocol 'tls' and the SNI as its authority (ALPN too), so
 * metrics and tap can name the service the client asked for.
 */
import type * as net from 'node:net';
import type { ConnContext, ProxyLimits } from './context.ts';
import { forwardOpaque } from './opaque.ts';
import type { OpaqueOptions } from './opaque.ts';

export interface TlsPassthroughOptions extends Omit<OpaqueOptions, 'protocol' | 'detectedBy' | 'authority' | 'alpn'> {
  sni: string | null;
  alpn: string[];
}

export function forwardTls(ctx: ConnContext, upstream: net.Socket, limits: ProxyLimits, opts: TlsPassthroughOptions): void {
  const { sni, alpn, ...rest } = opts;
  forwardOpaque(ctx, upstream, limits, { ...rest, protocol: 'tls', detectedBy: 'tls', authority: sni, alpn });
}
