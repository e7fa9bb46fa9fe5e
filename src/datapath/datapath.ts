// The datapath as the agent uses it: load, attach under the pods' cgroup root, keep pod
// entries in step. Links are owned by this process, so if it dies the kernel detaches the
// programs and pods connect directly (fail-open).
import { loadAddon, type DatapathCounters, type DatapathDescription, type MapFds, type NativeDatapath, type NativeMapView, type OrigRecord, type PortRange } from './addon.ts';
import type { KernelSplicer } from '../proxy/kernel-splice.ts';
import { checkAttachTarget, cgroupId } from './cgroup2.ts';
import { socketLookup, type SocketOrigLookup } from './socket-lookup.ts';

export type { DatapathCounters, DatapathDescription, MapFds, OrigRecord, PortRange };

export interface DatapathOptions {
  cgroupRoot: string;
  proxyIp: string;
  proxyPort: number;
  /** Global skip-outbound ports, for every pod. */
  skipOutbound?: PortRange[];
  allowRootCgroup?: boolean;
  /** Load the sockhash and sk_skb verdict of kernel splice (--kernel-splice). */
  kernelSplice?: boolean;
}

export interface PodEntry {
  /** Pod-level cgroup directory (kubelet's pod<uid> cgroup). */
  cgroupPath: string;
  ip?: string | null;
  skipOutbound?: PortRange[];
}

export class Datapath {
  private native: NativeDatapath;
  readonly cgroupRoot: string;
  private attached = false;

  private constructor(native: NativeDatapath, cgroupRoot: string) {
    this.native = native;
    this.cgroupRoot = cgroupRoot;
  }

  /** Loads the programs, writes the global config, then attaches: no window where programs run unconfigured. */
  static open(opts: DatapathOptions): Datapath {
    const root = checkAttachTarget(opts.cgroupRoot, { allowRootCgroup: opts.allowRootCgroup });
    const { Datapath: Native } = loadAddon();
    const native = new Native();
    native.load({ kernelSplice: opts.kernelSplice ?? false });
    const dp = new Datapath(native, root);
    try {
      native.setGlobal({ proxyIp: opts.proxyIp, proxyPort: opts.proxyPort, skipOutbound: opts.skipOutbound ?? [] });
      native.attach(root);
      dp.attached = true;
    } catch (e) {
      native.close();
      throw e;
    }
    return dp;
  }

  setGlobal(proxyIp: string, proxyPort: number, skipOutbound: PortRange[] = []): void {
    this.native.setGlobal({ proxyIp, proxyPort, skipOutbound });
  }

  /** Adds or updates a pod; returns its datapath key (the pod cgroup id). */
  setPod(p: PodEntry): bigint {
    const key = cgroupId(p.cgroupPath);
    this.native.setPod(key, { ip: p.ip ?? null, skipOutbound: p.skipOutbound ?? [] });
    return key;
  }

  removePod(key: bigint): boolean {
    return this.native.removePod(key);
  }

  setSkipInbound(podIp: string, ranges: PortRange[]): void {
    if (ranges.length === 0) this.native.removeSkipInbound(podIp);
    else this.native.setSkipInbound(podIp, ranges);
  }

  lookup(remoteIp: string, remotePort: number): OrigRecord | null {
    return this.native.lookup(remoteIp, remotePort);
  }

  /** The record of an accepted socket, by its fd (socket-lookup.ts); one per thread: it reuses its result. */
  socketLookup(): SocketOrigLookup {
    return socketLookup(this.native);
  }

  /** The map fds a MapView on a proxy worker thread uses; valid until close(). */
  mapFds(): MapFds {
    return this.native.mapFds();
  }

  counters(): DatapathCounters {
    return this.native.counters();
  }

  /** The kernel-splice calls for the proxy; only when opened with kernelSplice. */
  splicer(): KernelSplicer {
    return splicerOf(this.native);
  }

  describe(): DatapathDescription {
    return this.native.describe();
  }

  get isAttached(): boolean {
    return this.attached;
  }

  /** Detaches the programs but keeps the maps: connections already redirected can still be looked up. */
  detach(): void {
    this.native.detach();
    this.attached = false;
  }

  /** Detaches and unloads; pods connect directly from now on. */
  close(): void {
    this.native.detach();
    this.native.close();
    this.attached = false;
  }
}

function splicerOf(n: NativeDatapath | NativeMapView): KernelSplicer {
  return {
    splice: (a, b) => n.splice(a, b),
    unsplice: (a, b) => n.unsplice(a, b),
    splicedBytes: (c) => n.splicedBytes(c),
    sentBytes: (fd) => n.sentBytes(fd),
  };
}

/**
 * A proxy worker thread's view of the datapath the main thread opened: the original-destination
 * lookup and the kernel splice, on the same maps (docs/proxy.md, "Workers").
 */
export class MapView {
  private native: NativeMapView;

  constructor(fds: MapFds) {
    const { MapView: Native } = loadAddon();
    this.native = new Native(fds);
  }

  lookup(remoteIp: string, remotePort: number): OrigRecord | null {
    return this.native.lookup(remoteIp, remotePort);
  }

  socketLookup(): SocketOrigLookup {
    return socketLookup(this.native);
  }

  splicer(): KernelSplicer {
    return splicerOf(this.native);
  }
}
