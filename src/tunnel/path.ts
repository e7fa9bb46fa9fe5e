// Which way a meshed pod's connection leaves this node (docs/identity.md), pure: to a meshed pod
// of another node, through an mTLS tunnel to that node's agent (HBONE on port 15008); anything
// else directly, as before: a pod of this node (the bytes never leave the node), an unmeshed
// pod, a skip-inbound port of a meshed one, an address discovery does not know (outside the
// cluster, a node).
import { isIPv4 } from 'node:net';
import type { DiscoPod } from '../discovery/model.ts';
import { serverNameOf, spiffeId, type WorkloadId } from '../identity/spiffe.ts';

export const TUNNEL_PORT = 15008;

export interface PathFacts {
  /** This agent's node. */
  node: string;
  trustDomain: string;
  /** A namespace's mesh-agent.io/inject annotation, as this agent's namespace watch knows it. */
  namespaceInject(namespace: string): string | undefined;
}

export type DirectReason = 'unknown-destination' | 'same-node' | 'not-meshed' | 'skip-inbound' | 'no-node-address';

export type Path =
  | { kind: 'direct'; why: DirectReason }
  | { kind: 'tunnel'; dst: WorkloadId; dstUri: string; serverName: string; nodeIp: string };

/** Meshed as the destination's own agent decides it: the pod's inject annotation, else its namespace's. */
export function isMeshed(pod: DiscoPod, facts: Pick<PathFacts, 'namespaceInject'>): boolean {
  return (pod.inject ?? facts.namespaceInject(pod.namespace)) === 'enabled';
}

/** The way to `port` of `dst`. A skip-inbound port of the pod bypasses its agent: plaintext, straight to the pod, as to an unmeshed one. */
export function pathTo(dst: DiscoPod | undefined, port: number, facts: PathFacts): Path {
  if (dst === undefined) return { kind: 'direct', why: 'unknown-destination' };
  if (dst.node === facts.node) return { kind: 'direct', why: 'same-node' };
  if (!isMeshed(dst, facts)) return { kind: 'direct', why: 'not-meshed' };
  if (dst.skipInbound?.some(([lo, hi]) => port >= lo && port <= hi)) return { kind: 'direct', why: 'skip-inbound' };
  if (dst.hostIp === undefined || dst.node === undefined) return { kind: 'direct', why: 'no-node-address' };
  const id = { trustDomain: facts.trustDomain, namespace: dst.namespace, serviceAccount: dst.serviceAccount };
  return { kind: 'tunnel', dst: id, dstUri: spiffeId(id), serverName: serverNameOf(id), nodeIp: dst.hostIp };
}

/** A CONNECT's :authority as the tunnel client writes it, in the one form parseAuthority takes. */
export function formatAuthority(ip: string, port: number): string {
  return `${ip}:${port}`;
}

/**
 * "10.1.0.5:8080" -> ip and port, or null: not an IPv4 address in dotted decimal and a port
 * 1-65535 in canonical decimal (no leading zero: "080" is refused, as "010.1.0.5" is, so one
 * target has one spelling).
 */
export function parseAuthority(a: string | undefined): { ip: string; port: number } | null {
  if (a === undefined) return null;
  const m = /^((?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}):([1-9]\d{0,4})$/.exec(a);
  if (m === null) return null;
  const port = Number(m[2]);
  return port >= 1 && port <= 65535 ? { ip: m[1]!, port } : null;
}

/** A CONNECT's `forwarded` header as the tunnel client writes it: the source pod's address. */
export function formatForwarded(sourceIp: string): string {
  return `for=${sourceIp}`;
}

/**
 * The source pod's address a CONNECT's `forwarded` header claims (RFC 7239 `for=`, the client
 * agent's word, never verified), or null: the header must be exactly `for=<IPv4>` or
 * `for="<IPv4>"`, as the client writes it. Anything else (another parameter, a list, a port, a
 * name, text after the address, duplicate headers Node joined) claims nothing rather than
 * something read from its start; the server then takes the client node's address.
 */
export function parseForwarded(v: string | string[] | undefined): string | null {
  if (typeof v !== 'string' || !v.startsWith('for=')) return null;
  let ip = v.slice(4);
  if (ip.length >= 2 && ip.startsWith('"') && ip.endsWith('"')) ip = ip.slice(1, -1);
  return isIPv4(ip) ? ip : null;
}
