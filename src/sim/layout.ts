// Pure naming and layout rules of the simulated node: kubelet cgroup paths, owner-tagged
// names that cleanupLeftovers() can attribute to a pid, and pod addressing.
import { createHash } from 'node:crypto';
import * as os from 'node:os';
import * as path from 'node:path';

export type CgroupDriver = 'systemd' | 'cgroupfs';
export type QosClass = 'Guaranteed' | 'Burstable' | 'BestEffort';

/** Node ids look like ma12345x1kqz: creator pid, per-process sequence, random letters
 *  (the letters keep a recycled pid from colliding with a crashed run's leftovers). */
const NODE_ID = /^ma(\d+)x(\d+)[a-z]{3}$/;
const NETNS_NAME = /^(ma\d+x\d+[a-z]{3})-(node|p\d+|fabric)$/;
const CGROUP_NAME = /^mesh-sim-(ma\d+x\d+[a-z]{3})(-node)?$/;

export function makeNodeId(pid: number, seq: number, letters: string): string {
  if (!/^[a-z]{3}$/.test(letters)) throw new Error(`node id letters must be 3 of a-z, got ${letters}`);
  return `ma${pid}x${seq}${letters}`;
}

export function nodeNetnsName(id: string): string {
  return `${id}-node`;
}

/** A cluster's fabric namespace (the bridge joining its nodes); the cluster id has the node id's form. */
export function fabricNetnsName(clusterId: string): string {
  return `${clusterId}-fabric`;
}

export function podNetnsName(id: string, index: number): string {
  return `${id}-p${index}`;
}

/** The private pods cgroup root directory name (BPF attaches here). */
export function podsCgroupName(id: string): string {
  return `mesh-sim-${id}`;
}

/** Sibling of the pods root for node processes (the agent), outside every pod cgroup. */
export function nodeCgroupName(id: string): string {
  return `mesh-sim-${id}-node`;
}

function pidOfId(id: string): number | undefined {
  const m = NODE_ID.exec(id);
  return m ? Number(m[1]) : undefined;
}

/** Creator pid of a netns name this module made, or undefined for anyone else's. */
export function ownerPidOfNetns(name: string): number | undefined {
  const m = NETNS_NAME.exec(name);
  return m ? pidOfId(m[1]) : undefined;
}

/** A cluster's CNI configuration and plugin directories (its nodes' /etc/cni/net.d and /opt/cni/bin), under the temp dir. */
export function cniDirName(clusterId: string): string {
  return `${clusterId}-cni`;
}

/** Where cniDirName() is: directly under the temp dir, where cleanupLeftovers() looks for it. */
export function cniDir(clusterId: string): string {
  return path.join(os.tmpdir(), cniDirName(clusterId));
}

/** Creator pid of a cluster's CNI directory name, or undefined. */
export function ownerPidOfCniDir(name: string): number | undefined {
  const m = /^(ma\d+x\d+[a-z]{3})-cni$/.exec(name);
  return m ? pidOfId(m[1]) : undefined;
}

/** Who makes a temp directory: the simulator's clusters, the demo, a bench run, a test (or test helper). */
const TEMP_DIR_KINDS = ['cluster', 'demo', 'bench', 'test'] as const;
export type TempDirKind = (typeof TEMP_DIR_KINDS)[number];
const TEMP_DIR_NAME = new RegExp(`^mesh-(?:${TEMP_DIR_KINDS.join('|')})-(\\d+)-[A-Za-z0-9]{6}$`);

/**
 * A temp directory of this process's (`mesh-KIND-PID-XXXXXX`, for fs.mkdtempSync), named so that
 * cleanupLeftovers() removes it once this process is gone, also after a SIGKILL. Every temp
 * directory under os.tmpdir() that the sim, the demo, bench and the tests make is made with
 * this (test/temp-dirs.test.ts holds them to it): a dir named otherwise outlives a SIGKILL.
 */
export function ownedTempPrefix(kind: TempDirKind): string {
  return path.join(os.tmpdir(), `mesh-${kind}-${process.pid}-`);
}

/** Creator pid of a temp directory name ownedTempPrefix() made, or undefined. */
export function ownerPidOfTempDir(name: string): number | undefined {
  const m = TEMP_DIR_NAME.exec(name);
  return m ? Number(m[1]) : undefined;
}

/** Creator pid of a top-level cgroup directory name this module made, or undefined. */
export function ownerPidOfCgroup(name: string): number | undefined {
  const m = CGROUP_NAME.exec(name);
  return m ? pidOfId(m[1]) : undefined;
}

/** Host-side veth name: Calico style, "cali" + 11 hex = 15 chars (IFNAMSIZ-1), unique per node and pod. */
export function hostVethName(nodeId: string, podIndex: number): string {
  return 'cali' + createHash('sha1').update(`${nodeId}/${podIndex}`).digest('hex').slice(0, 11);
}

/** Node n (1-based, per process) uses subnet n: a standalone node's addresses only have to differ
 *  from other nodes of the same process; a cluster numbers its own nodes 1..N (see subnetOf). */
export function subnetOf(seq: number): number {
  return ((seq - 1) % 254) + 1;
}

/** Subnet s gets 10.244.0.s as its node IP and 10.244.s.0/24 for pods. */
export function nodeIpFor(subnet: number): string {
  return `10.244.0.${subnet}`;
}

export function podCidrFor(subnet: number): string {
  return `10.244.${subnet}.0/24`;
}

export function podIpFor(subnet: number, podIndex: number): string {
  const host = podIndex + 2;
  if (podIndex < 0 || host > 254) throw new Error(`pod index ${podIndex} out of range: a simulated node holds at most 253 pods`);
  return `10.244.${subnet}.${host}`;
}

/** QoS-level cgroups kubelet creates at startup, relative to the pods root. */
export function qosCgroupDirs(driver: CgroupDriver): string[] {
  return driver === 'systemd'
    ? ['kubepods.slice', 'kubepods.slice/kubepods-burstable.slice', 'kubepods.slice/kubepods-besteffort.slice']
    : ['kubepods', 'kubepods/burstable', 'kubepods/besteffort'];
}

/** Pod-level cgroup relative to the pods root, exactly as kubelet names it. */
export function podCgroupPath(driver: CgroupDriver, qos: QosClass, uid: string): string {
  if (driver === 'systemd') {
    // systemd slice names use '-' as the hierarchy separator, so kubelet escapes the uid's dashes.
    const u = uid.replaceAll('-', '_');
    if (qos === 'Guaranteed') return `kubepods.slice/kubepods-pod${u}.slice`;
    const q = qos.toLowerCase();
    return `kubepods.slice/kubepods-${q}.slice/kubepods-${q}-pod${u}.slice`;
  }
  if (qos === 'Guaranteed') return `kubepods/pod${uid}`;
  return `kubepods/${qos.toLowerCase()}/pod${uid}`;
}

/** Container cgroup leaf name as containerd's CRI plugin makes it. */
export function containerCgroupName(driver: CgroupDriver, containerId: string): string {
  if (!/^[0-9a-f]{64}$/.test(containerId)) throw new Error(`container id must be 64 hex digits, got ${containerId}`);
  return driver === 'systemd' ? `cri-containerd-${containerId}.scope` : containerId;
}
