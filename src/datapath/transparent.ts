// The inbound proxy's upstream connections leave with the client's own address (docs/policy.md,
// "The pod sees the real client"): the socket is made by the addon with IP_TRANSPARENT and bound
// to that address before connect(), which Node cannot do itself, then handed to a net.Socket.
import * as net from 'node:net';
import { loadAddon } from './addon.ts';
import type { Dialer } from '../proxy/context.ts';

/** A dialer whose connections come from `sourceIp` (not an address of this host: IP_TRANSPARENT). */
export function dialerFrom(sourceIp: string): Dialer {
  const addon = loadAddon();
  return (ip, port) => {
    const fd = addon.transparentSocket(sourceIp);
    // manualStart: no read before connect(); on an unconnected socket it would fail (ENOTCONN)
    // and destroy it. connect() then reuses this handle, bound address included.
    const s = new net.Socket({ fd, allowHalfOpen: true, manualStart: true } as net.SocketConstructorOpts);
    s.connect({ host: ip, port });
    return s;
  };
}

/** The inbound listener's socket: IP_TRANSPARENT, so TPROXY may hand it connections for pods' addresses. */
export function listenTransparent(host: string, port: number, reusePort: boolean): number {
  return loadAddon().listenTransparent(host, port, reusePort);
}
