// What the agent's main thread and its proxy worker threads say to each other (docs/proxy.md,
// "Workers"). Both ends are this release's code in one process, so messages are typed, not
// validated; they carry state and batches, never a message per connection or request.
import type { MapFds } from '../datapath/addon.ts';
import type { BalancerCount } from '../routing/router.ts';
import type { DiscoMessage } from '../discovery/model.ts';
import type { ProxyLimits } from '../proxy/context.ts';
import type { ProxyStats } from '../proxy/listener.ts';
import type { SeriesDelta } from '../telemetry/recorder.ts';
import type { RawPair } from '../telemetry/report.ts';
import type { TapFilter, TapRecord } from '../telemetry/tap.ts';
import type { Workload } from '../telemetry/workload.ts';
import type { CredentialUpdate } from '../identity/credentials.ts';
import type { TunnelStats } from '../tunnel/node-tunnels.ts';
import type { PolicyTable } from '../policy/authorizer.ts';

/** What a worker needs to know of this node's pods: who each IP is, its declared opaque ports, the meshed ones' inbound policies. */
export interface PodsTable {
  /** PodSync's generation: moves whenever the workload answers may have changed. */
  generation: number;
  /** The main thread's count of tables sent when this one was (WorkerInit.tablesSent; workers/table-seq.ts). */
  seq?: number;
  pods: Array<{ ip: string; workload: Workload; opaquePorts: string | null; serviceAccount?: string; meshed?: boolean }>;
  /** Namespaces' mesh-agent.io/inject annotation (whether another node's pod is meshed, for the tunnels). */
  namespaces?: Record<string, string>;
  policies: PolicyTable;
}

/** Everything a worker starts from (workerData). */
export interface WorkerInit {
  /** 1..N-1: the main thread's proxy is 0. */
  index: number;
  listen: { host: string; port: number };
  /** The datapath's maps, opened by the main thread (MapView). */
  mapFds: MapFds;
  kernelSplice: boolean;
  /** --native-io: HTTP/1 connections' sockets driven from C++ (native-socket.ts). */
  nativeIo?: boolean;
  opaquePorts: string;
  detectTimeoutMs?: number;
  maxConnections?: number;
  limits?: Partial<ProxyLimits>;
  /** The connection cap's per-proxy counts (Int32Array over it), slot `index` is this worker's. */
  openSlots: SharedArrayBuffer;
  /** The process's lock around --expose-gc (util/shrink-heap.ts gcLock). */
  gcLock: SharedArrayBuffer;
  /** Int32Array of one: the count of pod tables the main thread has sent or is about to (workers/table-seq.ts). */
  tablesSent?: SharedArrayBuffer;
  metrics: { podLabels?: boolean; maxSeries?: number };
  /** Every node captures inbound (docs/policy.md): an outbound event's inbound side only for this node's pods. */
  inbound?: boolean;
  pods: PodsTable;
  /** The main thread's DiscoveryStore.replay(). */
  discovery: DiscoMessage[];
  /** The agent's node (its DiscoveryStore's): Services with internalTrafficPolicy Local resolve to endpoints on it. */
  node?: string;
  /** The node's zone once the agent read it (its DiscoveryStore's): zone hints apply then (discovery/topology.ts). */
  zone?: string;
  taps: TapFilter[];
  /** This proxy's share of each retry budget's per-second minimum (1 / proxies). */
  budgetShare: number;
  /** A replacement starts at a raised priority (workers/priority.ts): the nice value it returns to once it listens (or fails). */
  restoreNice?: number;
  /** mTLS between nodes (docs/identity.md): the worker's tunnels start from the node's credentials now. */
  identity?: { node: string; trustDomain: string; anchorsPem: string; tunnelPort: number; credentials: CredentialUpdate[]; firstSyncWaitMs: number | null };
}

/** A worker's state for status: its proxy's counters, the CPU its thread used. */
export interface WorkerStats {
  proxy: ProxyStats;
  /** Its tunnels' counters (identity on). */
  tunnels?: TunnelStats;
  /** Its balancers' endpoints by state. */
  balancers?: BalancerCount[];
  /** CPU time of the worker's thread since it started, µs (process.threadCpuUsage). */
  cpuUserUs: number;
  cpuSystemUs: number;
}

/** What a worker's proxy recorded since the last collect. */
export interface TelemetryBatch {
  series: SeriesDelta[];
  pairs: RawPair[];
}

export type ToWorker =
  | { t: 'pods'; table: PodsTable }
  | { t: 'discovery'; msgs: Array<DiscoMessage | 'drop-staged'> }
  | { t: 'taps'; filters: TapFilter[] }
  /** The node's zone, read after the workers started (null: unknown). */
  | { t: 'zone'; zone: string | null }
  /** The node's certificates as the identity manager publishes them. */
  | { t: 'creds'; updates: CredentialUpdate[] }
  | { t: 'collect'; seq: number }
  /** `at`: the main thread's clock (timeOrigin + now) when sent; the worker's delay in answering is its event-loop lag. */
  | { t: 'ping'; seq: number; at: number }
  | { t: 'describe'; seq: number; namespace: string; name: string }
  | { t: 'close'; drainMs: number }
  /** End the drain now (a second signal), whether or not 'close' came yet. */
  | { t: 'cut' };

export type FromWorker =
  | { t: 'ready' }
  /** The worker could not start (its proxy could not listen, ...): it exits after this. */
  | { t: 'failed'; error: string }
  | { t: 'log'; level: 'info' | 'warn' | 'error'; msg: string; fields?: object }
  | { t: 'collected'; seq: number; batch: TelemetryBatch; stats: WorkerStats }
  | { t: 'pong'; seq: number; lagMs: number; stats: WorkerStats }
  | { t: 'described'; seq: number; result: unknown; error?: string }
  /** A pods message is applied: its inbound policy table (PolicyTable.generation) decides this proxy's next connections. */
  | { t: 'policy-loaded'; generation: number }
  | { t: 'tap'; records: Array<[string, TapRecord]> }
  | { t: 'closed' };

/** The absolute clock both threads share (each thread's performance.now() has its own origin). */
export function clock(): number {
  return performance.timeOrigin + performance.now();
}
