// What the proxy asks about tunnels (docs/identity.md), one object per proxy: who a source pod is
// (its SPIFFE ID), which way a destination goes (path.ts), a connection for a request or a
// connection (direct, or a stream in the pooled tunnel), whether a connection must wait for its
// pod's first certificate, and for telemetry the identities of a tunnelled connection.
import * as net from 'node:net';
import type { DiscoPod } from '../discovery/model.ts';
import type { CredentialStore } from '../identity/credentials.ts';
import { spiffeId } from '../identity/spiffe.ts';
import type { Endpoints, TlsIds } from '../telemetry/events.ts';
import type { HbonePool } from './hbone-pool.ts';
import { pathTo, type Path, type PathFacts } from './path.ts';
import type { LocalPod } from './server.ts';
import { failedUpstream } from './upstream.ts';
import type { FirstSyncWait } from '../discovery/first-sync.ts';

export interface TunnelsOptions {
  node: string;
  trustDomain: string;
  /** Every pod of the cluster (the discovery store). */
  podByIp(ip: string): DiscoPod | undefined;
  /** This node's pods, and the namespaces' inject annotations (the agent's own watches). */
  local: { byIp(ip: string): LocalPod | null; namespaceInject(ns: string): string | undefined };
  creds: CredentialStore;
  pool: HbonePool;
  /** How long a connection waits for its pod's first certificate. */
  waitMs: number;
  /** Discovery's first sync, when the agent has a controller: until then every path looks direct. */
  firstSync?: FirstSyncWait | null;
}

export class Tunnels {
  private readonly o: TunnelsOptions;
  private readonly facts: PathFacts;

  constructor(o: TunnelsOptions) {
    this.o = o;
    this.facts = { node: o.node, trustDomain: o.trustDomain, namespaceInject: (ns) => o.local.namespaceInject(ns) };
  }

  /** The SPIFFE ID of a meshed pod of this node (null: not one this agent knows). */
  identityOf(ip: string): string | null {
    const p = this.o.local.byIp(ip);
    if (p === null || !p.meshed) return null;
    return spiffeId({ trustDomain: this.o.trustDomain, namespace: p.namespace, serviceAccount: p.serviceAccount });
  }

  pathTo(ip: string, port: number): Path {
    return pathTo(this.o.podByIp(ip), port, this.facts);
  }

  /**
   * Null when a connection from this identity can go ahead now; else a promise that settles when
   * its first certificate came (or will not) and discovery first synced (or the agent stopped
   * waiting for it): the connection waits, paused, rather than failing or leaving in plaintext.
   */
  waitFor(srcUri: string | null): Promise<unknown> | null {
    if (srcUri === null) return null;
    const sync = this.o.firstSync?.wait() ?? null;
    const cert = this.certWait(srcUri);
    return sync === null ? cert : cert === null ? sync : Promise.all([sync, cert]);
  }

  private certWait(srcUri: string): Promise<unknown> | null {
    if (this.o.creds.get(srcUri) !== null) return null;
    const r = this.o.creds.reason(srcUri);
    if (!r.startsWith('its first certificate') && !r.startsWith('it is not an identity')) return null; // unavailable: fail at once
    return this.o.creds.wait(srcUri, this.o.waitMs).catch(() => undefined);
  }

  /** A connection to ip:port for a pod of this node (source), tunnelled when the path says so. */
  dial(srcUri: string | null, sourceIp: string, ip: string, port: number): net.Socket {
    const p = this.pathTo(ip, port);
    if (p.kind === 'direct') return net.connect({ host: ip, port, allowHalfOpen: true, noDelay: true });
    if (srcUri === null) return failedUpstream(`no tunnel to ${ip}:${port}: the source ${sourceIp} is not a meshed pod this agent knows yet`, 'EACCES');
    return this.o.pool.open(srcUri, p, ip, port, sourceIp);
  }

  /** Both identities of a connection this agent tunnels (outbound), or that arrived through a tunnel (inbound, set on the event). */
  tlsOf(ep: Endpoints): TlsIds | null {
    if (ep.tls !== undefined) return ep.tls;
    if (ep.direction !== 'outbound') return null;
    const p = this.pathTo(ep.destIp, ep.destPort);
    if (p.kind !== 'tunnel') return null;
    const src = this.identityOf(ep.sourceIp);
    return src === null ? null : { clientId: src, serverId: p.dstUri };
  }
}
