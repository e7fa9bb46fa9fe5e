// Reports as an agent would send them, for tests of the controller's views without a datapath.
import { LATENCY_SCHEME, observe, type Histogram } from '../../src/telemetry/histogram.ts';
import { REPORT_VERSION, type AgentSummary, type PairReport, type Peer, type PodInventory, type Report } from '../../src/telemetry/report.ts';

export const pod = (namespace: string, owner: string, ip: string, o: Partial<PodInventory> = {}): PodInventory => ({ namespace, name: `${owner}-1`, ip, kind: 'deployment', owner, meshed: true, ...o });

/** A pair with `requests` requests of which `successes` succeeded, each taking latencyMs. */
export function pair(src: Peer, dst: Peer, requests: number, successes: number, latencyMs = 5, o: Partial<PairReport> = {}): PairReport {
  const latency: Histogram = [];
  for (let i = 0; i < requests; i++) observe(latency, latencyMs);
  return { src, dst, requests, successes, latency, requestBytes: 0, responseBytes: 0, tcpOpened: 0, tcpClosed: 0, tcpOpen: 1, tcpBytesIn: 0, tcpBytesOut: 0, ...o };
}

export const peerOf = (p: PodInventory): Peer => ({ ip: p.ip!, namespace: p.namespace, kind: p.kind, name: p.owner, pod: p.name });

export function report(o: { node?: string; agentId?: string; seq: number; start: number; end: number; pairs?: PairReport[]; pods?: PodInventory[]; agent?: AgentSummary }): Report {
  return { version: REPORT_VERSION, latencyScheme: LATENCY_SCHEME, node: o.node ?? 'node-a', agentId: o.agentId ?? 'agent-a', seq: o.seq, start: o.start, end: o.end, pairs: o.pairs ?? [], pods: o.pods ?? [], dropped: 0, ...(o.agent ? { agent: o.agent } : {}) };
}

export const summary = (o: Partial<AgentSummary> = {}): AgentSummary => ({
  version: '0.1.0', startedAt: 1_000, kernel: '6.1.0', programs: [{ section: 'cgroup/connect4', attached: true }, { section: 'sockops', attached: true }],
  healthy: true, reasons: [], proxy: { open: 1, accepted: 10 }, link: { backlog: 0, backlogLimit: 120, dropped: 0, reconnects: 0 }, ...o,
});
