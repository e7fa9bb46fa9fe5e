// Calico-style node networking built with iproute2, entirely inside namespaces we create:
// pods have a /32 on eth0 and a default route via the link-local 169.254.1.1, which the
// node answers by proxy ARP on the host veth; the node routes each pod /32 to its veth.
// So every pod-to-pod packet crosses the node namespace, as on a real Calico node.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { execFile, NETNS_DIR, netnsPath } from './run.ts';

const GATEWAY = '169.254.1.1';
const TOKEN = /^[A-Za-z0-9_.:/-]+$/;

function hintFor(stderr: string): string {
  return /operation not permitted|permission denied/i.test(stderr) ? '; run as root' : '';
}

/**
 * Runs `ip` (optionally with -n netns); throws "<what> failed: <stderr>[; run as root]".
 * With `gone`, a failure it recognises as "the thing is not there" resolves false instead:
 * a teardown or a sweep racing another one finds its work already done.
 */
async function ip(what: string, args: string[], netns?: string, gone?: (stderr: string) => boolean): Promise<boolean> {
  const argv = netns ? ['-n', netns, ...args] : args;
  const r = await execFile('ip', argv, { timeoutMs: 10_000 });
  if (r.code === 0) return true;
  if (gone?.(r.stderr)) return false;
  const msg = r.stderr.trim() || `exit code ${r.code}`;
  throw new Error(`${what} failed: ${msg.toLowerCase()}${hintFor(msg)} (ip ${argv.join(' ')})`);
}

/** Several `ip` commands in one process; every token is checked, so the batch needs no quoting. */
async function ipBatch(what: string, netns: string, commands: string[][]): Promise<void> {
  for (const c of commands) for (const t of c) if (!TOKEN.test(t)) throw new Error(`${what}: unsafe ip token ${JSON.stringify(t)}`);
  const r = await execFile('ip', ['-n', netns, '-batch', '-'], { timeoutMs: 10_000, input: commands.map((c) => c.join(' ')).join('\n') + '\n' });
  if (r.code !== 0) {
    const msg = r.stderr.trim() || `exit code ${r.code}`;
    throw new Error(`${what} failed: ${msg.toLowerCase()}${hintFor(msg)}`);
  }
}

/** Writes net sysctls as seen from inside netns (/proc/sys/net is per network namespace). */
async function sysctl(what: string, netns: string, settings: Record<string, string>): Promise<void> {
  const args = Object.entries(settings).map(([k, v]) => `${k}=${v}`);
  const r = await execFile('nsenter', [`--net=${netnsPath(netns)}`, '--', 'sysctl', '-q', '-w', ...args], { timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`${what} failed: ${r.stderr.trim()}${hintFor(r.stderr)}`);
}

export async function addNetns(name: string): Promise<void> {
  await ip('creating network namespace', ['netns', 'add', name]);
}

/** A node's link to its cluster's fabric: eth0 in the node, `port` on the fabric's bridge. */
export interface Uplink {
  fabricNs: string;
  /** The bridge port's name in the fabric namespace. */
  port: string;
  /** The node network's prefix length (the node IP goes on eth0 with it). */
  prefix: number;
  /** Static routes: other nodes' pod CIDRs via their node IPs, the service CIDR out of eth0. */
  routes: { cidr: string; via?: string }[];
}

export const FABRIC_BRIDGE = 'br0';

/** The fabric: a namespace whose bridge joins the cluster's nodes, as a switch joins machines. */
export async function createFabric(fabricNs: string): Promise<void> {
  await addNetns(fabricNs);
  await ipBatch('creating the fabric bridge', fabricNs, [
    ['link', 'set', 'lo', 'up'],
    // Bridged frames would otherwise also cross the fabric namespace's netfilter hooks (br_netfilter).
    ['link', 'add', FABRIC_BRIDGE, 'type', 'bridge', 'nf_call_iptables', '0', 'nf_call_ip6tables', '0', 'nf_call_arptables', '0'],
    ['link', 'set', FABRIC_BRIDGE, 'up'],
  ]);
}

/** Without an uplink the node IP sits on lo (a standalone node); with one, on eth0 like a real node's. */
export async function createNodeNetwork(nodeNs: string, nodeIp: string, uplink?: Uplink): Promise<void> {
  await addNetns(nodeNs);
  await ipBatch('configuring the node namespace', nodeNs, [
    ['link', 'set', 'lo', 'up'],
    ...(uplink ? [] : [['addr', 'add', `${nodeIp}/32`, 'dev', 'lo']]),
    // Proxy ARP only answers for an address the node can route out of another interface;
    // on a real node the uplink's default route covers 169.254.1.1. We have no default
    // route, so this /32 stands in for it without routing anything else anywhere.
    ['route', 'add', `${GATEWAY}/32`, 'dev', 'lo'],
  ]);
  if (uplink) {
    await ipBatch('linking the node to the fabric', uplink.fabricNs, [
      ['link', 'add', uplink.port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', nodeNs],
      ['link', 'set', uplink.port, 'master', FABRIC_BRIDGE],
      ['link', 'set', uplink.port, 'up'],
    ]);
    await ipBatch('configuring the node uplink', nodeNs, [
      ['addr', 'add', `${nodeIp}/${uplink.prefix}`, 'dev', 'eth0'],
      ['link', 'set', 'eth0', 'up'],
      ...uplink.routes.map((r) => (r.via ? ['route', 'add', r.cidr, 'via', r.via, 'dev', 'eth0'] : ['route', 'add', r.cidr, 'dev', 'eth0'])),
    ]);
  }
  await sysctl('enabling forwarding in the node namespace', nodeNs, { 'net.ipv4.ip_forward': '1' });
}

export async function createPodNetwork(nodeNs: string, podNs: string, hostVeth: string, podIp: string): Promise<void> {
  await addNetns(podNs);
  // Both ends are created directly in their namespaces: nothing ever touches the root netns.
  await ipBatch('creating the pod veth', nodeNs, [
    ['link', 'add', hostVeth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', podNs],
    ['link', 'set', hostVeth, 'up'],
    ['route', 'add', `${podIp}/32`, 'dev', hostVeth],
  ]);
  await sysctl('enabling proxy ARP on the host veth', nodeNs, {
    [`net.ipv4.conf.${hostVeth}.proxy_arp`]: '1',
    // Otherwise the kernel delays proxy ARP replies to broadcasts by up to 0.8 s.
    [`net.ipv4.neigh.${hostVeth}.proxy_delay`]: '0',
  });
  await ipBatch('configuring the pod namespace', podNs, [
    ['link', 'set', 'lo', 'up'],
    ['addr', 'add', `${podIp}/32`, 'dev', 'eth0'],
    ['link', 'set', 'eth0', 'up'],
    ['route', 'add', GATEWAY, 'dev', 'eth0', 'scope', 'link'],
    ['route', 'add', 'default', 'via', GATEWAY, 'dev', 'eth0'],
  ]);
}

/** Removes a pod's veth and netns; pieces already gone are done (idempotent), other failures throw. */
export async function deletePodNetwork(nodeNs: string, podNs: string, hostVeth: string): Promise<void> {
  if (fs.existsSync(netnsPath(nodeNs))) {
    // Gone: the veth (deleting the pod's netns takes the pair with it) or the whole node netns.
    // "Cannot find device" when it was gone before the name lookup, "No such device" (ENODEV from
    // the kernel) when a concurrent delete took it between the lookup and the delete.
    await ip('deleting the pod veth', ['link', 'del', hostVeth], nodeNs, (err) => /cannot find device|no such device/i.test(err) || !fs.existsSync(netnsPath(nodeNs)));
  }
  await deleteNetns(podNs);
}

/** Deletes a netns; true if this call removed it, false if it was already gone (another sweep got there first). */
export async function deleteNetns(name: string): Promise<boolean> {
  if (!fs.existsSync(netnsPath(name))) return false;
  return ip('deleting network namespace', ['netns', 'del', name], undefined, () => !fs.existsSync(netnsPath(name)));
}

/** Synchronous best-effort netns removal for exit handlers. */
export function deleteNetnsSync(name: string): void {
  if (!fs.existsSync(netnsPath(name))) return;
  try {
    execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore', timeout: 5000 });
  } catch {
    // best effort: cleanupLeftovers() catches what this misses
  }
}

export function listNetns(): string[] {
  try {
    return fs.readdirSync(NETNS_DIR);
  } catch {
    return [];
  }
}
