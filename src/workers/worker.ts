// A proxy worker thread (docs/proxy.md, "Workers"): its own Proxy listening on the agent's
// proxy address with SO_REUSEPORT, so the kernel spreads new connections over the threads. It
// looks records up in the maps the main thread loaded (MapView), balances Services with its own
// Router over a replica of the main thread's discovery store, knows this node's pods from the
// table the main thread sends, and records telemetry with the main thread's code, sending it
// over only when asked (collect) and tap matches in batches.
import { parentPort, workerData } from 'node:worker_threads';
import { MapView } from '../datapath/datapath.ts';
import { DiscoveryStore, storeWorkloads } from '../discovery/store.ts';
import { FirstSyncWait } from '../discovery/first-sync.ts';
import { NodePods } from './node-pods.ts';
import { TableSeq, workerPolicyReady } from './table-seq.ts';
import { Proxy } from '../proxy/index.ts';
import { PortSet } from '../proxy/ports.ts';
import { clientsOf, Router } from '../routing/router.ts';
import { TelemetryHub } from '../telemetry/hub.ts';
import { MetricsRecorder } from '../telemetry/recorder.ts';
import { ReportAggregator } from '../telemetry/report.ts';
import { TapRegistry, type TapRecord } from '../telemetry/tap.ts';
import { firstKnown } from '../telemetry/workload.ts';
import { defaultLimits } from '../proxy/context.ts';
import type { Endpoints, TlsIds } from '../telemetry/events.ts';
import type { NodeTunnels } from '../tunnel/node-tunnels.ts';
import type { TunnelPolicy } from '../tunnel/server.ts';
import { Authorizer } from '../policy/authorizer.ts';
import { useGcLock } from '../util/shrink-heap.ts';
import { warmHttp2 } from '../util/builtins.ts';
import { lowerTo } from './priority.ts';
import { clock, type FromWorker, type ToWorker, type WorkerInit, type WorkerStats } from './protocol.ts';

/** Tap matches wait this long for others before going to the main thread in one message. */
const TAP_BATCH_MS = 20;

if (parentPort === null) throw new Error('src/workers/worker.ts runs as a worker thread of the agent, not on its own');
const port = parentPort;
const init = workerData as WorkerInit;
useGcLock(init.gcLock);
const send = (m: FromWorker): void => port.postMessage(m);

const log = (level: 'info' | 'warn' | 'error', msg: string, fields?: object): void => send({ t: 'log', level, msg, fields });

const pods = new NodePods();
pods.set(init.pods);
// This node's pods' inbound policies, as the main thread computed them (docs/policy.md).
const authorizer = new Authorizer((msg) => log('warn', msg));
authorizer.load(init.pods.policies);
const store = new DiscoveryStore({ node: init.node, zone: init.zone });
for (const m of init.discovery) store.apply(m);
const workloads = firstKnown(pods, storeWorkloads(store));
const router = new Router(store, { log: (msg) => log('warn', msg), clients: clientsOf(workloads), budgetShare: init.budgetShare });
const hub = new TelemetryHub({ workloads, onError: (msg) => log('warn', msg) });
let tunnels: NodeTunnels | null = null;
// Bound once the proxy below exists (the tunnels are made first).
let tunnelPolicy: TunnelPolicy | null = null;
const tlsOf = (ep: Endpoints): TlsIds | null => (tunnels ? tunnels.tunnels.tlsOf(ep) : ep.tls ?? null);
const localPods = init.inbound ? (ip: string, port: number) => pods.byIp(ip) !== null && !authorizer.skipsInbound(ip, port) : undefined;
const recorder = new MetricsRecorder({ workloads, ...init.metrics, tls: tlsOf, localPods });
hub.add(recorder);
const pairs = new ReportAggregator(workloads, localPods, tlsOf);
hub.add(pairs);

let tapQueue: Array<[string, TapRecord]> = [];
let tapTimer: NodeJS.Timeout | null = null;
const flushTaps = (): void => {
  tapTimer = null;
  const records = tapQueue;
  tapQueue = [];
  if (records.length > 0) send({ t: 'tap', records });
};
// Each worker's own bucket keeps what it sends to the agent's rate; the main thread's decides.
const taps = new TapRegistry(hub, (id, rec) => {
  tapQueue.push([id, rec]);
  tapTimer ??= setTimeout(flushTaps, TAP_BATCH_MS);
});
taps.sync(init.taps);
taps.setTls(tlsOf);
taps.setSide((ev) => pairs.sideOf(ev));

const limits = { ...defaultLimits, ...init.limits };
if (init.identity) {
  const id = init.identity;
  const { NodeTunnels } = await import('../tunnel/node-tunnels.ts');
  tunnels = new NodeTunnels({
    node: id.node,
    trustDomain: id.trustDomain,
    anchorsPem: id.anchorsPem,
    listen: { host: init.listen.host, port: id.tunnelPort, reusePort: true },
    podByIp: (ip) => store.podByIp(ip),
    firstSync: id.firstSyncWaitMs !== null ? new FirstSyncWait(store, id.firstSyncWaitMs, (msg) => log('warn', msg)) : null,
    // A tunnel to a pod not in the table (a new pod, or before the main thread's first list) waits for a table that has it.
    local: { byIp: (ip) => pods.local(ip), namespaceInject: (ns) => pods.namespaceInject(ns), onChange: (fn) => pods.changes.add(fn) },
    inbound: recorder,
    // The proxy below serves what a pod's policy does not allow whole (tunnel/server.ts).
    policy: () => tunnelPolicy,
    limits,
    log,
    initial: id.credentials,
  });
}

const view = new MapView(init.mapFds);
const tableSeq = new TableSeq(new Int32Array(init.tablesSent ?? new SharedArrayBuffer(4)), init.pods.seq ?? 0);
const proxy = new Proxy({
  listen: { ...init.listen, reusePort: true },
  lookup: (ip, p) => view.lookup(ip, p),
  lookupSocket: view.socketLookup(),
  router,
  telemetry: hub,
  opaquePorts: PortSet.parse(init.opaquePorts),
  opaquePortsOf: (ip) => pods.opaquePortsOf(ip),
  detectTimeoutMs: init.detectTimeoutMs,
  maxConnections: init.maxConnections,
  limits: init.limits,
  tunnels: tunnels?.tunnels,
  openSlots: { counts: new Int32Array(init.openSlots), slot: init.index },
  splicer: init.kernelSplice ? view.splicer() : null,
  nativeIo: init.nativeIo ?? false,
  authorize: authorizer.authorize,
  // A connection the kernel redirected for a table this worker has not applied yet waits for it.
  policyReady: workerPolicyReady(tableSeq, authorizer, limits.upstreamConnectTimeoutMs),
  decisions: recorder,
  log,
});
tunnelPolicy = { authorize: (c, uri) => authorizer.authorizeVerified(c, uri), ready: (ip) => authorizer.ready(ip, limits.upstreamConnectTimeoutMs), serve: (ctx) => proxy.serveTunnelled(ctx) };

// A meshed pod on the node sends its connections, gRPC among them, through this proxy, and with
// identity on its tunnels too: node:http2 is then loaded when the thread is idle, once it listens
// (not on the start path, not in the first such connection's accept). A node without one loads
// none (docs/benchmarks.md, "node:http2 on first use").
let listening = false;
const expectHttp2 = (): void => {
  if (listening && pods.hasMeshed()) warmHttp2((msg) => log('warn', msg));
};

function stats(): WorkerStats {
  const cpu = process.threadCpuUsage();
  return { proxy: proxy.stats(), ...(tunnels ? { tunnels: tunnels.stats() } : {}), balancers: router.balancerCounts(), cpuUserUs: cpu.user, cpuSystemUs: cpu.system };
}

port.on('message', (m: ToWorker) => {
  switch (m.t) {
    case 'pods':
      pods.set(m.table);
      authorizer.load(m.table.policies);
      tableSeq.loaded(m.table.seq ?? 0);
      send({ t: 'policy-loaded', generation: authorizer.generation });
      expectHttp2();
      return;
    case 'discovery':
      for (const d of m.msgs) {
        if (d === 'drop-staged') store.dropStaged();
        else store.apply(d);
      }
      return;
    case 'taps':
      taps.sync(m.filters);
      return;
    case 'zone':
      store.setZone(m.zone ?? undefined);
      return;
    case 'creds':
      tunnels?.apply(m.updates);
      return;
    case 'collect':
      send({ t: 'collected', seq: m.seq, batch: { series: recorder.drain(), pairs: pairs.drain() }, stats: stats() });
      return;
    case 'ping':
      send({ t: 'pong', seq: m.seq, lagMs: Math.max(0, clock() - m.at), stats: stats() });
      return;
    case 'describe':
      try {
        send({ t: 'described', seq: m.seq, result: router.describe(m.namespace, m.name) });
      } catch (e) {
        send({ t: 'described', seq: m.seq, result: null, error: (e as Error).message });
      }
      return;
    case 'cut':
      proxy.cutDrain();
      tunnels?.cutDrain();
      return;
    case 'close':
      void Promise.all([proxy.close(m.drainMs), tunnels?.close(m.drainMs)]).then(() => {
        flushTaps();
        router.close();
        send({ t: 'closed' });
        port.close();
      });
      return;
  }
});

Promise.all([proxy.listen(), tunnels?.listen()]).then(
  () => {
    // A replacement started raised (workers/priority.ts): listening, it is a proxy like the others.
    lowerTo(init.restoreNice, (msg) => log('warn', msg));
    // Start-up grew the young generation ~4 MB that an idle proxy does not use: given back once
    // the proxy is first idle, not before listening (docs/benchmarks.md, "A worker's start").
    proxy.settleStartUp();
    send({ t: 'ready' });
    listening = true;
    expectHttp2();
  },
  (e) => {
    lowerTo(init.restoreNice, (msg) => log('warn', msg));
    send({ t: 'failed', error: (e as Error).message });
    port.close();
  },
);
