import type * as net from 'node:net';
import type { Endpoints, TelemetrySink } from '../telemetry/events.ts';

/** Original destination of a redirected connection, as the datapath recorded it. */
export interface OrigDst {
  ip: string;
  port: number;
  /** The source pod's datapath key (its pod cgroup id). */
  podKey: bigint;
}

/** Looks up the datapath record of an accepted connection by its remote (pod IP, pod port). */
export type OrigDstLookup = (remoteIp: string, remotePort: number) => OrigDst | null;

/** Opens a connection to the original destination (the proxy's own cgroup is never redirected). */
export type Dialer = (ip: string, port: number) => net.Socket;

/** Everything a protocol handler needs to forward one accepted client connection. */
export interface ConnContext {
  connId: number;
  client: net.Socket;
  endpoints: Endpoints;
  telemetry: TelemetrySink;
  dial: Dialer;
  openedAt: number;
}
