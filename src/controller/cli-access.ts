// Who may use the CLI's endpoints (stat, tap, diagnostics, status) on the controller's port
// (docs/controller.md "Who can reach it"). The CLI reaches the controller with `kubectl
// port-forward`, which enters the pod's network namespace and dials localhost, gated by RBAC on
// pods/portforward; with `loopback` any other peer (a pod dialing the ClusterIP) is refused, as
// istiod keeps its debug endpoints on localhost. The agents' endpoints are not the CLI's.
import { isIPv4 } from 'node:net';
import { plainIp } from '../util/ip.ts';

export type CliAccessMode = 'loopback' | 'any';

export function parseCliAccessMode(v: string, flag: string): CliAccessMode {
  if (v === 'loopback' || v === 'any') return v;
  throw new Error(`${flag} ${JSON.stringify(v)}: expected loopback (stat, tap, diagnostics and status only through kubectl port-forward) or any`);
}

/** 127.0.0.0/8, ::1, and 127.x as an IPv4-mapped IPv6 address (a dual-stack listener's view). */
export function isLoopback(addr: string | undefined): boolean {
  if (!addr) return false;
  if (addr === '::1') return true;
  const v4 = plainIp(addr);
  return isIPv4(v4) && v4.startsWith('127.');
}

export class CliAccess {
  readonly mode: CliAccessMode;
  private namespace: string;
  private refused = 0;
  private lastRefusal: { peer: string; route: string; at: string } | null = null;

  /** namespace: the controller's, for the port-forward the refusal names. */
  constructor(mode: CliAccessMode, namespace: string) {
    this.mode = mode;
    this.namespace = namespace;
  }

  /** The refusal's message when peer may not use a CLI endpoint, else null. */
  refusal(peer: string | undefined, route: string): string | null {
    if (this.mode === 'any' || isLoopback(peer)) return null;
    this.refused++;
    this.lastRefusal = { peer: peer ?? 'unknown', route, at: new Date().toISOString() };
    return `${route} is served only to loopback peers (--cli-access loopback), not to ${peer ?? 'an unknown peer'}: reach the controller with kubectl -n ${this.namespace} port-forward svc/mesh-agent-controller 8086 (stat and tap ask 127.0.0.1:8086 by default), or run the controller with --cli-access any`;
  }

  state() {
    return { mode: this.mode, refused: this.refused, lastRefusal: this.lastRefusal };
  }
}
