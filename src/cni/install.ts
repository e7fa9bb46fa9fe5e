// Installs the chained plugin on a node as istio-cni's and linkerd-cni's installers do: the
// executable into the CNI bin directory, our entry appended to the plugins of the configuration
// the runtime uses; uninstall takes both away. The install container runs it on every node
// (`mesh-agent cni-install`), the simulated cluster's mesh likewise.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { chainPlugin, conflistName, hasPlugin, parseConfList, pickConfFile, renderConfList, unchainPlugin } from './conflist.ts';
import { PLUGIN_TYPE, SUPPORTED_VERSIONS } from './spec.ts';

export interface CniInstall {
  confDir: string;
  binDir: string;
  /** Our entry's settings (agentSocket, stateFile, ...). */
  entry: Record<string, unknown>;
  /** The executable's content (a script naming the runtime and the plugin's entry). */
  executable: string;
}

/**
 * Writes `text` with `mode` (tmp and rename, so a reader never sees half a file) unless the file
 * holds exactly that already: containerd and CRI-O reload their CNI configuration on every event
 * in its directory, and an install repeated over the same files (each agent restart, each --watch
 * check) should change nothing on the host. A mode that differs (a hand edit left a token
 * readable by others) is put right. Returns whether it wrote.
 */
export function writeAtomic(file: string, text: string, mode = 0o644): boolean {
  try {
    if ((fs.statSync(file).mode & 0o777) === mode && fs.readFileSync(file, 'utf8') === text) return false;
  } catch {
    // not there yet: written below
  }
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  fs.writeFileSync(tmp, text, { mode });
  fs.chmodSync(tmp, mode); // whatever the umask
  fs.renameSync(tmp, file);
  return true;
}

/**
 * The network plugin's file's permissions, which its rewrite with our entry keeps: a hardened
 * node has its CNI configuration 0600 (CIS Kubernetes Benchmark), and writing it 0644 would open
 * it to every user of the node.
 */
function modeOf(file: string): number {
  return fs.statSync(file).mode & 0o777;
}

function confFile(confDir: string): string {
  const name = pickConfFile(fs.existsSync(confDir) ? fs.readdirSync(confDir) : []);
  if (!name) throw new Error(`no CNI configuration in ${confDir} yet: the network plugin (Calico, Cilium, ...) writes it when it starts; mesh-agent chains after it, so it waits for it`);
  return path.join(confDir, name);
}

/** Executable first, entry second: the runtime never finds our entry without the program. Returns the configuration file written. */
export function installCni(o: CniInstall): string {
  fs.mkdirSync(o.binDir, { recursive: true });
  writeAtomic(path.join(o.binDir, PLUGIN_TYPE), o.executable, 0o755);
  const file = confFile(o.confDir);
  const found = parseConfList(fs.readFileSync(file, 'utf8'), file);
  // A chained entry is run with the list's version, which our plugin refuses below 0.3.0 (no
  // prevResult to hand back): chained there, every pod's ADD would fail and no pod would start.
  if (!(SUPPORTED_VERSIONS as readonly string[]).includes(found.cniVersion)) {
    throw new Error(`${file} is cniVersion ${found.cniVersion}; ${PLUGIN_TYPE} chains only into ${SUPPORTED_VERSIONS.join(', ')} (it hands back the previous plugin's result), so it is not added: a pod's ADD would fail on every pod of the node. Update the network plugin (its configuration at cniVersion 0.3.1 or later), or install with --cni=false`);
  }
  const list = chainPlugin(found, o.entry);
  const out = conflistName(file);
  writeAtomic(out, renderConfList(list), modeOf(file));
  if (out !== file) fs.rmSync(file, { force: true });
  return out;
}

/** Whether the runtime's configuration has our entry (the installer re-adds it when the network plugin rewrote the file). */
export function cniInstalled(confDir: string): boolean {
  try {
    const file = confFile(confDir);
    return hasPlugin(parseConfList(fs.readFileSync(file, 'utf8'), file));
  } catch {
    return false;
  }
}

/** Entry first, executable second. Returns what was removed. */
export function uninstallCni(o: { confDir: string; binDir: string }): string[] {
  const removed: string[] = [];
  for (const name of fs.existsSync(o.confDir) ? fs.readdirSync(o.confDir) : []) {
    const file = path.join(o.confDir, name);
    if (!/\.(conflist|conf|json)$/.test(name)) continue;
    let list;
    try {
      list = parseConfList(fs.readFileSync(file, 'utf8'), file);
    } catch {
      continue; // not ours to judge
    }
    if (!hasPlugin(list)) continue;
    writeAtomic(file, renderConfList(unchainPlugin(list)), modeOf(file));
    removed.push(`${PLUGIN_TYPE} entry of ${file}`);
  }
  const exe = path.join(o.binDir, PLUGIN_TYPE);
  if (fs.existsSync(exe)) {
    fs.rmSync(exe, { force: true });
    removed.push(exe);
  }
  return removed;
}
