// Prometheus label sets for the proxy's events, spelled as linkerd2-proxy spells them so
// Linkerd users' queries and dashboards work unchanged. Pure: no I/O, no metric objects.
//
// One node proxy sees a connection from both ends. Linkerd counts a request twice, in the
// client's sidecar (direction="outbound", labelled with the client workload and dst_*) and
// in the server's (direction="inbound", labelled with the server workload); its
// per-workload views (`linkerd viz stat deploy`) read the inbound side. So an outbound event
// whose destination is a pod we know yields both views, and queries select one with
// `direction`, exactly as on Linkerd.
import type { ConnCloseEvent, Direction, Endpoints, RequestEvent, TlsIds } from './events.ts';
import type { Workload } from './workload.ts';

/** Owner kinds that become a label of their own (deployment="web", dst_deployment="web"). */
export const WORKLOAD_KINDS = ['deployment', 'statefulset', 'daemonset', 'replicaset', 'job', 'cronjob', 'replicationcontroller'] as const;

export type Labels = Record<string, string>;

export interface LabelOptions {
  /** Per-pod labels (pod, dst_pod). Off on big nodes: workload labels stay. */
  podLabels: boolean;
}

/** One side's view of a connection: whose proxy it would be on Linkerd, and its peer. */
export interface View {
  direction: Direction;
  /** Inbound, without a tunnel: the client's identity when known (client_id), else null (tls="no_identity"). */
  clientId?: string | null;
  /** The workload whose traffic this is: the client (outbound) or the server (inbound). */
  self: Workload | null;
  /** The destination workload, outbound only (Linkerd has no client labels on inbound without mTLS). */
  dst: Workload | null;
  /** The Service the client dialled (outbound only): dst_service, as Linkerd labels it. */
  service: { namespace: string; name: string } | null;
  targetAddr: string;
  /** Both identities when the connection went through an mTLS tunnel: tls="true", and client_id (inbound) or server_id (outbound). */
  tls: TlsIds | null;
}

/**
 * `tcp`: the views of a connection (not a request). A connection this agent tunnels to another
 * node is counted inbound by the destination's agent, which terminates it (docs/metrics.md), so
 * its inbound TCP view is not made here; its requests' inbound view is, as only this agent parses
 * them. `dstLocal`: whether the destination is a pod of this node. With inbound capture on every
 * node, a connection to a pod of another node that is not tunnelled is captured and counted
 * inbound by that node's agent (docs/policy.md), so no inbound side is made here for it.
 */
export function viewsOf(ep: Endpoints, src: Workload | null, dst: Workload | null, tls: TlsIds | null = null, tcp = false, dstLocal = true): View[] {
  const targetAddr = `${ep.destIp}:${ep.destPort}`;
  const clientId = ep.clientId ?? null;
  if (ep.direction === 'inbound') return [{ direction: 'inbound', clientId, self: dst, dst: null, service: null, targetAddr, tls }];
  const views: View[] = [{ direction: 'outbound', self: src, dst, service: ep.dstService ?? null, targetAddr, tls }];
  if (dst && !(tcp && tls !== null) && (dstLocal || tls !== null)) views.push({ direction: 'inbound', clientId, self: dst, dst: null, service: null, targetAddr, tls });
  return views;
}

/**
 * The server side's client labels without a tunnel: a meshed pod of this node has client_id (its
 * ServiceAccount, from the node's own pod list; no tls="true": the connection never left the
 * node); anyone else is tls="no_identity" with no_tls_reason="no_tls_from_remote", as Linkerd
 * labels a plaintext client (docs/policy.md).
 */
export function clientLabels(clientId: string | null | undefined): Labels {
  return clientId ? { client_id: clientId } : { tls: 'no_identity', no_tls_reason: 'no_tls_from_remote' };
}

/** The server side's TLS labels of an event: through a tunnel tls="true" and its verified client_id, else clientLabels(). */
export function serverTlsLabels(ep: Pick<Endpoints, 'tls' | 'clientId'>): Labels {
  return ep.tls !== undefined ? { tls: 'true', client_id: ep.tls.clientId } : clientLabels(ep.clientId);
}

const isKind = (k: string): boolean => (WORKLOAD_KINDS as readonly string[]).includes(k);

/**
 * namespace, <kind>=name and pod, with a prefix for the destination. A pod without an owner
 * is its own workload, so it keeps its pod label even with pod labels off.
 */
export function workloadLabels(prefix: '' | 'dst_', w: Workload | null, opts: LabelOptions): Labels {
  if (!w) return {};
  const l: Labels = { [`${prefix}namespace`]: w.namespace };
  if (isKind(w.kind)) l[`${prefix}${w.kind}`] = w.name;
  if (opts.podLabels || w.kind === 'pod') l[`${prefix}pod`] = w.pod;
  return l;
}

export const MAX_AUTHORITY = 260;

/**
 * Host names are case-insensitive, so case must not split series; control characters and
 * overlong values (a client controls this header) are cut.
 */
export function normalizeAuthority(a: string): string {
  // eslint-disable-next-line no-control-regex
  const clean = a.trim().toLowerCase().replace(/[\u0000-\u001f\u007f]/g, '');
  return clean.length > MAX_AUTHORITY ? clean.slice(0, MAX_AUTHORITY) : clean;
}

export function baseLabels(v: View, opts: LabelOptions): Labels {
  const l: Labels = {
    direction: v.direction,
    target_addr: v.targetAddr,
    ...workloadLabels('', v.self, opts),
    ...workloadLabels('dst_', v.dst, opts),
  };
  if (v.service !== null) {
    l.dst_service = v.service.name;
    l.dst_namespace ??= v.service.namespace; // a connection to the ClusterIP has no pod yet
  }
  if (v.tls !== null) {
    l.tls = 'true';
    if (v.direction === 'inbound') l.client_id = v.tls.clientId;
    else l.server_id = v.tls.serverId;
  } else if (v.direction === 'inbound') Object.assign(l, clientLabels(v.clientId));
  return l;
}

export function requestLabels(v: View, ev: RequestEvent, opts: LabelOptions): Labels {
  return { ...baseLabels(v, opts), authority: normalizeAuthority(ev.authority) };
}

/** The proxy's forwarders already classify (gRPC by grpc-status, HTTP 5xx and broken exchanges as failure). */
export function classification(success: boolean): 'success' | 'failure' {
  return success ? 'success' : 'failure';
}

export function responseLabels(v: View, ev: RequestEvent, opts: LabelOptions): Labels {
  const l = requestLabels(v, ev, opts);
  l.classification = classification(ev.success);
  if (ev.status > 0) l.status_code = String(ev.status);
  if (ev.grpcStatus !== undefined) l.grpc_status = String(ev.grpcStatus);
  return l;
}

export function latencyLabels(v: View, ev: RequestEvent, opts: LabelOptions): Labels {
  const l = requestLabels(v, ev, opts);
  if (ev.status > 0) l.status_code = String(ev.status);
  return l;
}

/** Linkerd's peer: "src" for the connection a server's proxy accepts, "dst" for the one a client's proxy opens. */
export function tcpLabels(v: View, opts: LabelOptions): Labels {
  return { ...baseLabels(v, opts), peer: v.direction === 'outbound' ? 'dst' : 'src' };
}

/**
 * The errno-like cause of a failed connection, from the proxy's error text
 * ("client: ECONNRESET", "upstream connect: timeout", "idle timeout"). Bounded: an errno
 * name, "timeout" or "other", never free text.
 */
export function errnoLabel(error: string | undefined): string {
  if (error === undefined || error === '') return '';
  const code = /\bE[A-Z0-9]{2,15}\b/.exec(error);
  if (code) return code[0];
  if (/timeout|timed out/i.test(error)) return 'timeout';
  return 'other';
}

export function tcpCloseLabels(base: Labels, ev: ConnCloseEvent): Labels {
  return { ...base, protocol: ev.protocol, classification: classification(ev.error === undefined), errno: errnoLabel(ev.error) };
}

/**
 * Bytes as that proxy would count them: the outbound side's connection is to the server (it
 * reads the response bytes), the inbound side's is from the client (it reads the request).
 * bytesIn flows client -> upstream, bytesOut upstream -> client.
 */
export function readWriteBytes(v: View, ev: { bytesIn: number; bytesOut: number }): { read: number; write: number } {
  return v.direction === 'outbound' ? { read: ev.bytesOut, write: ev.bytesIn } : { read: ev.bytesIn, write: ev.bytesOut };
}

/**
 * Past the series cap a new label set is folded into one overflow series per outcome: the
 * identity labels (authority, target_addr, workloads, pods) are dropped, the labels that
 * say what happened (kept) stay, so totals and success rates stay right.
 */
export function overflowLabels(l: Labels, keep: readonly string[]): Labels {
  const o: Labels = { overflow: 'true' };
  for (const k of keep) if (l[k] !== undefined) o[k] = l[k];
  return o;
}

/** Every label name a family may carry (prom-client needs them declared up front). */
export function allLabelNames(extra: readonly string[]): string[] {
  const own = ['namespace', ...WORKLOAD_KINDS, 'pod'];
  return ['direction', 'target_addr', ...own, ...own.map((k) => `dst_${k}`), 'dst_service', 'tls', 'client_id', 'server_id', 'no_tls_reason', ...extra, 'overflow'];
}

/** A key that is equal for equal label sets (absent and empty are the same series in Prometheus). */
export function seriesKey(names: readonly string[], l: Labels): string {
  let k = '';
  for (const n of names) k += (l[n] ?? '') + '\u0001';
  return k;
}
