// Typed access to the Node-API addon (native/addon). No policy here: src/datapath/datapath.ts decides.
import { createRequire } from 'node:module';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export type PortRange = [number, number];

export interface OrigRecord {
  ip: string;
  port: number;
  podKey: bigint;
}

export interface DatapathCounters {
  redirected: bigint;
  skippedPort: bigint;
  skippedInbound: bigint;
  unmeshed: bigint;
  passedLocal: bigint;
  notTcp: bigint;
  established: bigint;
  establishedMiss: bigint;
  closed: bigint;
  getpeername: bigint;
  mapFull: bigint;
  lookups: bigint;
  lookupMisses: bigint;
}

export interface ProgramInfo {
  name: string;
  section: string;
  id?: number;
  attachedTo: string | null;
}

export interface MapInfo {
  name: string;
  type: string;
  maxEntries: number;
  used: number;
}

export interface DatapathDescription {
  loaded: boolean;
  cgroup: string | null;
  programs: ProgramInfo[];
  maps: MapInfo[];
}

/** The addon's class, as native/addon/datapath.cc defines it. */
export interface NativeDatapath {
  load(opts?: { kernelSplice?: boolean }): void;
  attach(cgroupPath: string): void;
  detach(): void;
  close(): void;
  setGlobal(g: { proxyIp: string; proxyPort: number; skipOutbound?: PortRange[] }): void;
  setPod(podKey: bigint, p: { ip?: string | null; skipOutbound?: PortRange[] }): void;
  removePod(podKey: bigint): boolean;
  setSkipInbound(podIp: string, ranges: PortRange[]): void;
  removeSkipInbound(podIp: string): boolean;
  lookup(remoteIp: string, remotePort: number): OrigRecord | null;
  /** An accepted socket's peer and record into `out` (datapath/socket-lookup.ts): 1 record, 0 none, 2 peer not IPv4, -errno. */
  lookupSocket(fd: number, out: Uint32Array): number;
  counters(): DatapathCounters;
  describe(): DatapathDescription;
  /** Kernel splice (load({ kernelSplice: true }) only); see src/proxy/kernel-splice.ts. */
  splice(fdA: number, fdB: number): [bigint, bigint];
  unsplice(a: bigint, b: bigint): void;
  splicedBytes(cookie: bigint): { bytes: number; drops: number } | null;
  sentBytes(fd: number): number;
  /** The maps another thread's MapView works on; -1 for maps not created (no --kernel-splice). */
  mapFds(): MapFds;
}

export interface MapFds {
  tuple: number;
  /** mesh_orig_pending: the take's arbiter against the client's close (native/bpf/mesh.bpf.c). */
  pending: number;
  splice: number;
  spliceLinks: number;
}

/** Another thread's handle on a Datapath's maps (the proxy workers): lookups and splices only. */
export interface NativeMapView {
  lookup(remoteIp: string, remotePort: number): OrigRecord | null;
  lookupSocket(fd: number, out: Uint32Array): number;
  splice(fdA: number, fdB: number): [bigint, bigint];
  unsplice(a: bigint, b: bigint): void;
  splicedBytes(cookie: bigint): { bytes: number; drops: number } | null;
  sentBytes(fd: number): number;
}

/** One kernel probe: 1 supported, 0 not, -errno when the probe could not run (e.g. -1, EPERM). */
export interface RawFeatureProbe {
  kind: 'program' | 'attach' | 'map' | 'helper';
  name: string;
  result: number;
}

/** An error from the addon: the message names the problem and the fix. */
export interface DatapathError extends Error {
  errno?: number;
  code?: string;
}

// The package root: two levels up from src/datapath, three from the compiled dist/src/datapath.
const root = (() => {
  let d = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(d, 'package.json')) && path.dirname(d) !== d) d = path.dirname(d);
  return d;
})();

export interface Addon {
  Datapath: new () => NativeDatapath;
  MapView: new (fds: MapFds) => NativeMapView;
  probeFeatures(): RawFeatureProbe[];
  /** shutdown(fd, SHUT_WR): 0, or -errno. */
  shutdownWrite(fd: number): number;
  /** setsockopt TCP_CORK: 0, or -errno. */
  setCork(fd: number, on: boolean): number;
  /** A listening IPv4 TCP socket with IP_TRANSPARENT (inbound capture); throws naming the step that failed. */
  listenTransparent(ip: string, port: number, reusePort: boolean): number;
  /** An unconnected TCP socket with IP_TRANSPARENT bound to sourceIp (port chosen at connect). */
  transparentSocket(sourceIp: string): number;
  /** Sockets driven from C++ (--native-io): native/addon/socket-io.cc, src/proxy/native-socket.ts. */
  ioInit(buffer: ArrayBuffer, onEvent: (id: number, kind: number, value: number) => void): void;
  ioAdopt(fd: number): number;
  ioRead(id: number, on: boolean): void;
  ioWrite(id: number, bytes: Uint8Array): number;
  ioEnd(id: number): number;
  ioCork(id: number, on: boolean): number;
  ioNoDelay(id: number, on: boolean): number;
  ioClose(id: number, reset: boolean): void;
  ioCount(): number;
}

export function loadAddon(): Addon {
  const require = createRequire(import.meta.url);
  const file = path.join(root, 'build/Release/mesh_bpf.node');
  try {
    return require(file);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'MODULE_NOT_FOUND' || err.code === 'ERR_DLOPEN_FAILED') {
      throw new Error(`loading the datapath addon ${file} failed: ${err.message.split('\n')[0]}; build it with ./dev setup (needs libbpf1 at run time)`);
    }
    throw err;
  }
}
