/**
 * The proxy's per-connection lookup by the accepted socket's fd: its peer (getpeername) and its
 * datapath record in one native call that fills a typed array, where asking Node for
 * remoteAddress and the addon for lookup(ip, port) cost Node's peer object, an address string
 * parsed in C++ and a result object built through Node-API per connection (issue 16;
 * docs/benchmarks.md, "A new connection").
 */
import type { OrigDst } from '../proxy/context.ts';

/** An accepted connection's peer, and its datapath record (null: none, not redirected). */
export interface SocketOrig {
  sourceIp: string;
  sourcePort: number;
  rec: OrigDst | null;
}

/** 'gone': the peer is gone (getpeername failed); null: not an IPv4 peer, ask Node (never has a record). */
export type SocketOrigLookup = (fd: number) => SocketOrig | 'gone' | null;

/** Formats an IPv4 address held in network order in a little- or big-endian u32. */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
export function formatIp4(n: number): string {
  return LITTLE_ENDIAN
    ? `${n & 255}.${(n >>> 8) & 255}.${(n >>> 16) & 255}.${n >>> 24}`
    : `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

export function socketLookup(native: { lookupSocket?(fd: number, out: Uint32Array): number }): SocketOrigLookup {
  // An addon built before lookupSocket (a dev tree not rebuilt: ./dev setup): the listener asks
  // Node and lookup() as before, rather than refusing every connection.
  if (typeof native.lookupSocket !== 'function') return () => null;
  // [peer ip, peer port, dst ip, dst port, pod key low, high]: the pod key read as one u64.
  const buf = new ArrayBuffer(24);
  const out = new Uint32Array(buf);
  const podKey = new BigUint64Array(buf, 16, 1);
  return (fd) => {
    const r = native.lookupSocket!(fd, out);
    if (r === 2) return null;
    if (r < 0) return 'gone';
    const sourceIp = formatIp4(out[0]!);
    const sourcePort = out[1]!;
    if (r === 0) return { sourceIp, sourcePort, rec: null };
    return { sourceIp, sourcePort, rec: { ip: formatIp4(out[2]!), port: out[3]!, podKey: podKey[0]! } };
  };
}
