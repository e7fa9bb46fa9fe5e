// One proxy's tunnel machinery (docs/identity.md), the same on the agent's main thread and in
// each proxy worker: a replica of the node's credentials, the pool of tunnels to other agents,
// the decisions the proxy asks for, and the 15008 listener (each proxy listens, SO_REUSEPORT).
import { CredentialStore, type CredentialUpdate } from '../identity/credentials.ts';
import type { DiscoPod } from '../discovery/model.ts';
import type { ProxyLimits } from '../proxy/context.ts';
import { HbonePool, type HboneStats, type LogFn } from './hbone-pool.ts';
import { TunnelServer, type LocalPod, type TunnelPolicy, type TunnelServerStats, type TunnelTelemetry } from './server.ts';
import { Tunnels } from './tunnels.ts';
import type { FirstSyncWait } from '../discovery/first-sync.ts';
import { sharedSweeper, type Sweeper } from '../proxy/sweep.ts';
import type { KeepaliveOptions } from './keepalive.ts';

export interface NodeTunnelsOptions {
  node: string;
  trustDomain: string;
  anchorsPem: string;
  /** Where the listener listens (the node IP) and its port (15008). */
  listen: { host: string; port: number; reusePort: boolean };
  podByIp(ip: string): DiscoPod | undefined;
  local: { byIp(ip: string): LocalPod | null; namespaceInject(ns: string): string | undefined; onChange?(fn: () => void): () => void };
  /** Inbound (tunnelled) connections' events: the metrics only (the client's agent reports the pair). */
  inbound: TunnelTelemetry;
  /** The destination pods' inbound policies (docs/policy.md), asked per CONNECT; late bound (the proxy comes after). */
  policy?: () => TunnelPolicy | null;
  limits: ProxyLimits;
  log: LogFn;
  initial?: CredentialUpdate[];
  /** Discovery's first sync (the agent has a controller): meshed pods' connections wait for it, bounded. */
  firstSync?: FirstSyncWait | null;
  /** The listener's clock and timers, also the clock of both sides' refusal lines (tests move it by hand); default the shared ones. */
  sweeper?: Sweeper;
  /** The connections' PINGs, both ends (keepalive.ts); default DEFAULT_KEEPALIVE. */
  keepalive?: KeepaliveOptions;
}

export interface TunnelStats {
  /** With the waits for discovery's first sync (first-sync.ts): connections waiting now, and all that waited. */
  client: HboneStats & { waitingForDiscovery: number; waitedForDiscovery: number };
  server: TunnelServerStats;
}

export class NodeTunnels {
  readonly creds: CredentialStore;
  readonly pool: HbonePool;
  readonly tunnels: Tunnels;
  readonly server: TunnelServer;
  private readonly firstSync: FirstSyncWait | null;

  constructor(o: NodeTunnelsOptions) {
    this.firstSync = o.firstSync ?? null;
    this.creds = new CredentialStore(o.anchorsPem);
    for (const u of o.initial ?? []) this.creds.apply(u);
    const sweeper = o.sweeper ?? sharedSweeper;
    this.pool = new HbonePool({ creds: this.creds, trustDomain: o.trustDomain, port: o.listen.port, log: o.log, connectTimeoutMs: o.limits.upstreamConnectTimeoutMs, now: () => sweeper.now(), keepalive: o.keepalive });
    this.tunnels = new Tunnels({ node: o.node, trustDomain: o.trustDomain, podByIp: o.podByIp, local: o.local, creds: this.creds, pool: this.pool, waitMs: o.limits.upstreamConnectTimeoutMs, firstSync: o.firstSync ?? null });
    this.server = new TunnelServer({ listen: o.listen, trustDomain: o.trustDomain, creds: this.creds, pods: o.local, telemetry: o.inbound, limits: o.limits, log: o.log, policy: o.policy, sweeper: o.sweeper, keepalive: o.keepalive });
  }

  apply(updates: readonly CredentialUpdate[]): void {
    for (const u of updates) this.creds.apply(u);
  }

  listen(): Promise<{ host: string; port: number }> {
    return this.server.listen();
  }

  stats(): TunnelStats {
    const sync = { waitingForDiscovery: this.firstSync?.waiting ?? 0, waitedForDiscovery: this.firstSync?.waited ?? 0 };
    return { client: { ...this.pool.stats, refusedServers: { ...this.pool.stats.refusedServers }, ...sync }, server: { ...this.server.stats, refusedClients: { ...this.server.stats.refusedClients }, refusedStreams: { ...this.server.stats.refusedStreams } } };
  }

  /** Ends the drain at once (Proxy.cutDrain()). */
  cutDrain(): void {
    this.server.cutDrain();
  }

  async close(drainMs: number): Promise<void> {
    this.pool.close();
    await this.server.close(drainMs);
  }
}

/** Sums the proxies' tunnel counters (status). */
export function sumTunnelStats(all: TunnelStats[]): TunnelStats {
  const add = (a: Record<string, number>, b: Record<string, number>) => {
    for (const [k, v] of Object.entries(b)) a[k] = (a[k] ?? 0) + v;
    return a;
  };
  const out: TunnelStats = {
    client: { connectionsOpened: 0, connectionsOpen: 0, streams: 0, refusedServers: {}, noCredential: 0, waitingForDiscovery: 0, waitedForDiscovery: 0 },
    server: { accepted: 0, open: 0, refusedClients: {}, streams: 0, refusedStreams: {}, inspected: 0, waitingHandshakes: 0, waitingForPods: 0, waitedForPods: 0 },
  };
  for (const s of all) {
    out.client.connectionsOpened += s.client.connectionsOpened;
    out.client.connectionsOpen += s.client.connectionsOpen;
    out.client.streams += s.client.streams;
    out.client.noCredential += s.client.noCredential;
    out.client.waitingForDiscovery += s.client.waitingForDiscovery ?? 0;
    out.client.waitedForDiscovery += s.client.waitedForDiscovery ?? 0;
    add(out.client.refusedServers, s.client.refusedServers);
    out.server.accepted += s.server.accepted;
    out.server.open += s.server.open;
    out.server.streams += s.server.streams;
    out.server.inspected += s.server.inspected ?? 0;
    out.server.waitingHandshakes += s.server.waitingHandshakes ?? 0;
    out.server.waitingForPods += s.server.waitingForPods ?? 0;
    out.server.waitedForPods += s.server.waitedForPods ?? 0;
    add(out.server.refusedClients, s.server.refusedClients);
    add(out.server.refusedStreams, s.server.refusedStreams);
  }
  return out;
}
