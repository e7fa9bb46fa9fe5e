// The container runtime's part in pod networking, as containerd's CRI plugin does it through
// libcni: at a sandbox's creation the node's CNI configuration (the first file of its conf dir)
// is run plugin by plugin, each given the previous one's result; a failed ADD is undone with DEL
// and retried by the caller. The simulated node's own networking (the netns, the veth and the
// /32 that node.ts makes) is the chain's first plugin, `mesh-sim-ptp`, done in-process; every
// other plugin is executed from the node's CNI bin directory as the runtime would
// (docs/simulated-node.md).
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseConfList, pickConfFile, renderConfList, type ConfList } from '../cni/conflist.ts';

/** The sim's own networking's type in the conflist. */
export const SIM_NETWORK_PLUGIN = 'mesh-sim-ptp';
/** How long one plugin may run (containerd gives a sandbox's whole setup minutes). */
const PLUGIN_TIMEOUT_MS = 60_000;

export interface CniDirs {
  confDir: string;
  binDir: string;
}

export interface SandboxRef {
  containerId: string;
  netns: string;
  namespace: string;
  name: string;
  uid: string;
  ip: string;
}

export interface PluginError {
  plugin: string;
  code: number | null;
  msg: string;
}

/** Writes the node's first configuration: the sim's own networking only. */
export function writeBaseConfig(dirs: CniDirs): void {
  fs.mkdirSync(dirs.confDir, { recursive: true });
  fs.mkdirSync(dirs.binDir, { recursive: true });
  const list: ConfList = { cniVersion: '1.0.0', name: 'mesh-sim', plugins: [{ type: SIM_NETWORK_PLUGIN }] };
  fs.writeFileSync(path.join(dirs.confDir, '10-mesh-sim.conflist'), renderConfList(list));
}

/** The configuration the runtime would use now. */
export function readChain(confDir: string): ConfList {
  const file = pickConfFile(fs.readdirSync(confDir));
  if (!file) throw new Error(`no CNI configuration in ${confDir}: the node's network is not ready`);
  return parseConfList(fs.readFileSync(path.join(confDir, file), 'utf8'), path.join(confDir, file));
}

/** Whether anything beyond the sim's own networking runs at a sandbox's creation. */
export function chainsPlugins(list: ConfList): boolean {
  return list.plugins.some((p) => p.type !== SIM_NETWORK_PLUGIN);
}

function simResult(cniVersion: string, sb: SandboxRef): Record<string, unknown> {
  return { cniVersion, interfaces: [{ name: 'eth0', sandbox: `/var/run/netns/${sb.netns}` }], ips: [{ address: `${sb.ip}/32`, interface: 0 }], routes: [{ dst: '0.0.0.0/0', gw: '169.254.1.1' }], dns: {} };
}

function execPlugin(dirs: CniDirs, list: ConfList, plugin: Record<string, unknown>, command: 'ADD' | 'DEL', sb: SandboxRef, prevResult: unknown): Promise<{ ok: true; stdout: string } | { ok: false; error: PluginError }> {
  const type = String(plugin.type);
  const exe = path.join(dirs.binDir, type);
  const stdin = JSON.stringify({ ...plugin, cniVersion: list.cniVersion, name: list.name, ...(prevResult !== undefined ? { prevResult } : {}) });
  const env = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    CNI_COMMAND: command,
    CNI_CONTAINERID: sb.containerId,
    CNI_NETNS: `/var/run/netns/${sb.netns}`,
    CNI_IFNAME: 'eth0',
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${sb.namespace};K8S_POD_NAME=${sb.name};K8S_POD_INFRA_CONTAINER_ID=${sb.containerId};K8S_POD_UID=${sb.uid}`,
    CNI_PATH: dirs.binDir,
  };
  return new Promise((resolve) => {
    const child = execFile(exe, [], { env, timeout: PLUGIN_TIMEOUT_MS, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (!err) return resolve({ ok: true, stdout });
      let parsed: any = null;
      try {
        parsed = JSON.parse(stdout);
      } catch {
        // not the spec's error object: say what the process said
      }
      const code = typeof parsed?.code === 'number' ? parsed.code : null;
      const msg = typeof parsed?.msg === 'string' ? parsed.msg : `${exe}: ${(err as Error).message}${stderr ? `: ${stderr.trim().slice(-500)}` : ''}`;
      resolve({ ok: false, error: { plugin: type, code, msg } });
    });
    child.stdin?.end(stdin);
  });
}

/** ADD through the chain; on a plugin's failure the chain is undone (DEL) and the error returned. */
export async function addSandbox(dirs: CniDirs, list: ConfList, sb: SandboxRef): Promise<{ ok: true } | { ok: false; error: PluginError }> {
  let prev: unknown = undefined;
  for (const plugin of list.plugins) {
    if (plugin.type === SIM_NETWORK_PLUGIN) {
      prev = simResult(list.cniVersion, sb);
      continue;
    }
    const r = await execPlugin(dirs, list, plugin, 'ADD', sb, prev);
    if (!r.ok) {
      await delSandbox(dirs, list, sb);
      return r;
    }
    try {
      prev = JSON.parse(r.stdout);
    } catch {
      await delSandbox(dirs, list, sb);
      return { ok: false, error: { plugin: String(plugin.type), code: null, msg: `its result is not JSON: ${JSON.stringify(r.stdout.slice(0, 200))}` } };
    }
  }
  return { ok: true };
}

/** DEL through the chain in reverse, every plugin tried (the runtime ignores what DEL says but keeps calling until it passes; the sim calls once). */
export async function delSandbox(dirs: CniDirs, list: ConfList, sb: SandboxRef): Promise<void> {
  for (const plugin of [...list.plugins].reverse()) {
    if (plugin.type === SIM_NETWORK_PLUGIN) continue;
    await execPlugin(dirs, list, plugin, 'DEL', sb, undefined);
  }
}

/** Takes the chained plugins out of the node's configuration (as install --cni=false leaves it) until restore(). */
export function withoutCniPlugin(node: { cni: CniDirs }): { restore(): void } {
  const file = path.join(node.cni.confDir, pickConfFile(fs.readdirSync(node.cni.confDir))!);
  const saved = fs.readFileSync(file, 'utf8');
  const list = parseConfList(saved, file);
  fs.writeFileSync(file, renderConfList({ ...list, plugins: list.plugins.filter((p) => p.type === SIM_NETWORK_PLUGIN) }));
  return { restore: () => fs.writeFileSync(file, saved) };
}
