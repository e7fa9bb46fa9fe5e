// The controller's memory: every node's reports over the retention period and its latest pod
// inventory. Keyed by node, so a restarted agent (new agentId, same node) takes over its
// node's inventory and connection gauge at its first report, while the reports its previous
// run sent stay in the window (that traffic happened). Pure: time comes in as `now`.
import type { AgentSummary, PairReport, PodInventory, Report } from '../telemetry/report.ts';

export interface StoredReport {
  agentId: string;
  seq: number;
  start: number;
  end: number;
  pairs: PairReport[];
}

export interface NodeState {
  node: string;
  /** The agent whose report is the newest: its inventory and gauges are the node's. */
  agentId: string;
  /** Controller clock, ms: when the node last reported. */
  lastSeen: number;
  /** Interval of the newest report, ms: how often this node reports. */
  intervalMs: number;
  pods: PodInventory[];
  /** The newest report's agent summary (absent from agents of earlier releases). */
  agent?: AgentSummary;
  /** The newest report's pairs (their tcpOpen is the node's open connection gauge). */
  latest: StoredReport;
  /** Sorted by end. */
  reports: StoredReport[];
  dropped: number;
  received: number;
  duplicates: number;
}

export interface StoreOptions {
  /** Reports older than this are forgotten; the longest stat window. Default one hour. */
  retentionMs?: number;
}

export const DEFAULT_RETENTION_MS = 60 * 60_000;

export class WindowStore {
  readonly retentionMs: number;
  private nodes = new Map<string, NodeState>();

  constructor(opts: StoreOptions = {}) {
    this.retentionMs = opts.retentionMs ?? DEFAULT_RETENTION_MS;
  }

  /** Adds a validated report; 'duplicate' when (agentId, seq) is already stored (a resend after a lost ack). */
  add(r: Report, now: number): 'added' | 'duplicate' {
    const stored: StoredReport = { agentId: r.agentId, seq: r.seq, start: r.start, end: r.end, pairs: r.pairs };
    let n = this.nodes.get(r.node);
    if (!n) {
      n = { node: r.node, agentId: r.agentId, lastSeen: now, intervalMs: r.end - r.start, pods: r.pods, agent: r.agent, latest: stored, reports: [], dropped: r.dropped, received: 0, duplicates: 0 };
      this.nodes.set(r.node, n);
    }
    n.lastSeen = now;
    if (n.reports.some((x) => x.agentId === r.agentId && x.seq === r.seq)) {
      n.duplicates++;
      return 'duplicate';
    }
    n.received++;
    // Backlogged reports arrive oldest first, possibly after newer ones of a restarted agent:
    // only the newest interval speaks for the node's present.
    if (r.end >= n.latest.end) {
      n.latest = stored;
      n.agentId = r.agentId;
      n.pods = r.pods;
      n.agent = r.agent;
      n.intervalMs = r.end - r.start;
      n.dropped = r.dropped;
    }
    let i = n.reports.length;
    while (i > 0 && n.reports[i - 1]!.end > r.end) i--;
    n.reports.splice(i, 0, stored);
    this.prune(now);
    return 'added';
  }

  prune(now: number): void {
    const horizon = now - this.retentionMs;
    for (const [name, n] of this.nodes) {
      let k = 0;
      while (k < n.reports.length && n.reports[k]!.end < horizon) k++;
      if (k) n.reports.splice(0, k);
      if (n.reports.length === 0 && n.lastSeen < horizon) this.nodes.delete(name);
    }
  }

  all(): NodeState[] {
    return [...this.nodes.values()];
  }

  get(node: string): NodeState | undefined {
    return this.nodes.get(node);
  }
}

/** A node is live while it reports: within three of its intervals, and never less than 15s. */
export function isLive(n: NodeState, now: number): boolean {
  return now - n.lastSeen <= Math.max(15_000, 3 * n.intervalMs);
}
