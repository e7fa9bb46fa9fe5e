// Endpoints served only to loopback peers: the controller's CLI endpoints and status
// (--cli-access, docs/controller.md "Who can reach it") and the identity service's status
// (--status-access, docs/identity.md). Their readers come through `kubectl port-forward`, which
// enters the pod's network namespace and dials localhost, gated by RBAC on pods/portforward; with
// `loopback` any other peer (a pod dialing the ClusterIP) is refused, as istiod keeps its debug
// endpoints on localhost.
import { isIPv4 } from 'node:net';
import { plainIp } from './ip.ts';

export type AccessMode = 'loopback' | 'any';

export function parseAccessMode(v: string, flag: string): AccessMode {
  if (v === 'loopback' || v === 'any') return v;
  throw new Error(`${flag} ${JSON.stringify(v)}: expected loopback (served only to loopback peers, i.e. through kubectl port-forward) or any`);
}

/** 127.0.0.0/8, ::1, and 127.x as an IPv4-mapped IPv6 address (a dual-stack listener's view). */
export function isLoopback(addr: string | undefined): boolean {
  if (!addr) return false;
  if (addr === '::1') return true;
  const v4 = plainIp(addr);
  return isIPv4(v4) && v4.startsWith('127.');
}

/** What a refusal names: the flag, the server, and how to reach it through port-forward. */
export interface LoopbackFix {
  flag: string;
  /** e.g. "the controller" */
  server: string;
  /** e.g. "kubectl -n NS port-forward svc/NAME PORT" */
  reach: string;
}

export class LoopbackAccess {
  readonly mode: AccessMode;
  private fix: LoopbackFix;
  private refused = 0;
  private lastRefusal: { peer: string; route: string; at: string } | null = null;

  constructor(mode: AccessMode, fix: LoopbackFix) {
    this.mode = mode;
    this.fix = fix;
  }

  /** The refusal's message when peer may not use a gated endpoint, else null. */
  refusal(peer: string | undefined, route: string): string | null {
    if (this.mode === 'any' || isLoopback(peer)) return null;
    this.refused++;
    this.lastRefusal = { peer: peer ?? 'unknown', route, at: new Date().toISOString() };
    const { flag, server, reach } = this.fix;
    return `${route} is served only to loopback peers (${flag} loopback), not to ${peer ?? 'an unknown peer'}: reach ${server} with ${reach}, or run ${server} with ${flag} any`;
  }

  state() {
    return { mode: this.mode, refused: this.refused, lastRefusal: this.lastRefusal };
  }
}
