// `mesh-agent cni-install`: the DaemonSet's install-cni container (docs/install.md, "The CNI
// plugin"), as linkerd-cni's and istio-cni's installers: copies the plugin (Node.js and the
// plugin's few modules, behind a small script named after its type) into the host's CNI bin
// directory and chains its entry after the network plugin in the host's CNI configuration; with
// --watch it puts the entry back when the network plugin rewrites the file, and on SIGTERM takes
// it out only when the DaemonSet is being deleted (an uninstall): a rolling update keeps it, so
// pods created while the agent restarts still wait for it.
import type { Command } from 'commander';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cniInstalled, installCni, uninstallCni } from '../cni/install.ts';
import { DEFAULT_AGENT_SOCKET, DEFAULT_STATE_FILE, PLUGIN_TYPE } from '../cni/spec.ts';

/** The plugin's modules, relative to the package root (no extension: .js compiled, .ts from the sources); test/cni-install.test.ts checks the list is closed under their imports. */
export const PLUGIN_MODULES = ['bin/mesh-agent-cni', 'src/cni/plugin', 'src/cni/spec', 'src/cni/protocol', 'src/cni/decide', 'src/cni/state'];
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const EXT = path.extname(fileURLToPath(import.meta.url));
/** --watch checks on the configuration directory's inotify events; this slow poll is for a filesystem without them. */
const POLL_MS = 30_000;
/** A network plugin's rewrite comes as several events (create, write, rename): checked once they pause. */
const SETTLE_MS = 100;

/** The script the runtime executes: Node.js and the plugin from the directory beside it, so the host needs no Node.js of its own. */
export function wrapperScript(): string {
  return `#!/bin/sh\n# mesh-agent's chained CNI plugin (installed by the mesh-agent DaemonSet)\nd="$(dirname "$0")/${PLUGIN_TYPE}.d"\nexec "$d/node" "$d/bin/mesh-agent-cni${EXT}" "$@"\n`;
}

/** Node.js and the plugin's modules into BIN/mesh-agent-cni.d, each replaced atomically (a running plugin keeps its old files). */
export function copyPluginFiles(binDir: string, nodeBinary = process.execPath): void {
  const dir = path.join(binDir, `${PLUGIN_TYPE}.d`);
  const put = (src: string, rel: string, mode: number) => {
    const dst = path.join(dir, rel);
    fs.mkdirSync(path.dirname(dst), { recursive: true });
    const tmp = `${dst}.${process.pid}.tmp`;
    fs.copyFileSync(src, tmp);
    fs.chmodSync(tmp, mode);
    fs.renameSync(tmp, dst);
  };
  put(nodeBinary, 'node', 0o755);
  for (const m of PLUGIN_MODULES) put(path.join(ROOT, m + EXT), m + EXT, 0o644);
  // The modules are ES modules.
  fs.writeFileSync(path.join(dir, 'package.json'), '{"type":"module"}\n');
}

export interface InstallPaths {
  confDir: string;
  binDir: string;
  agentSocket: string;
  stateFile: string;
}

export function installOnce(p: InstallPaths): string {
  copyPluginFiles(p.binDir);
  return installCni({ confDir: p.confDir, binDir: p.binDir, entry: { agentSocket: p.agentSocket, stateFile: p.stateFile }, executable: wrapperScript() });
}

/** Whether SIGTERM means an uninstall: the DaemonSet is gone or being deleted (a rolling update keeps it). */
export function isUninstall(daemonSet: { metadata?: { deletionTimestamp?: string } } | null): boolean {
  return daemonSet === null || daemonSet.metadata?.deletionTimestamp !== undefined;
}

export function uninstall(p: InstallPaths): string[] {
  const removed = uninstallCni(p);
  fs.rmSync(path.join(p.binDir, `${PLUGIN_TYPE}.d`), { recursive: true, force: true });
  if (fs.existsSync(p.stateFile)) {
    fs.rmSync(p.stateFile, { force: true });
    removed.push(p.stateFile);
  }
  return removed;
}

const log = (level: string, msg: string, fields: object = {}) => process.stderr.write(JSON.stringify({ ts: new Date().toISOString(), level, msg, ...fields }) + '\n');

/**
 * --watch: installs now, or once the network plugin has written its configuration, and chains
 * the entry again whenever a rewrite drops it. As istio-cni, it watches the configuration
 * directory (inotify), so the entry is back within moments of the rewrite (a pod created in
 * between starts without the plugin); the slow poll covers a filesystem without inotify, or a
 * directory not there yet. Returns the stop.
 */
export function keepChained(p: InstallPaths): () => void {
  let installed = false;
  let watcher: fs.FSWatcher | null = null;
  let settle: NodeJS.Timeout | undefined;
  const check = () => {
    // The first install copies the files even when the entry is there: they may be an older version's.
    if (installed && cniInstalled(p.confDir)) return;
    try {
      const conf = installOnce(p);
      log('info', installed ? 'CNI configuration rewritten without our entry: chained again' : 'CNI plugin installed', { conf, bin: path.join(p.binDir, PLUGIN_TYPE) });
      installed = true;
    } catch (e) {
      log('warn', (e as Error).message);
    }
  };
  const watch = () => {
    const fallback = (e: Error) => log('warn', `cannot watch the CNI configuration directory ${p.confDir} (${e.message}): checking it every ${POLL_MS / 1000} s instead`);
    try {
      watcher = fs.watch(p.confDir, () => {
        clearTimeout(settle);
        settle = setTimeout(check, SETTLE_MS);
      });
      watcher.on('error', (e) => {
        watcher?.close();
        watcher = null;
        fallback(e);
      });
    } catch (e) {
      fallback(e as Error);
    }
  };
  // Watching first: a rewrite between the check and the watch is not missed.
  watch();
  check();
  const timer = setInterval(() => {
    if (!watcher) watch();
    check();
  }, POLL_MS);
  return () => {
    clearInterval(timer);
    clearTimeout(settle);
    watcher?.close();
  };
}

export function registerCniInstall(program: Command) {
  program
    .command('cni-install')
    .description('install the chained CNI plugin on this node (the DaemonSet\'s install-cni container): its files into the CNI bin directory, its entry into the CNI configuration')
    .option('--conf-dir <dir>', 'the host\'s CNI configuration directory, as mounted', '/host/etc/cni/net.d')
    .option('--bin-dir <dir>', 'the host\'s CNI plugin directory, as mounted', '/host/opt/cni/bin')
    .option('--agent-socket <path>', 'the agent\'s CNI socket, as the host sees it', DEFAULT_AGENT_SOCKET)
    .option('--state-file <path>', 'the agent\'s state file, as the host sees it (removed on uninstall: give the path as this container sees it with --state-file-here)', DEFAULT_STATE_FILE)
    .option('--state-file-here <path>', 'the state file as this container sees it (default: --state-file)')
    .option('--watch', 'keep running: put the entry back when the network plugin rewrites the configuration; on SIGTERM uninstall if the DaemonSet is being deleted')
    .option('--namespace <ns>', 'with --watch: the DaemonSet\'s namespace', 'mesh-agent')
    .option('--daemonset <name>', 'with --watch: the DaemonSet whose deletion means uninstall', 'mesh-agent-agent')
    .option('--uninstall', 'take the plugin out now and exit')
    .action(async (o) => {
      const p: InstallPaths = { confDir: o.confDir, binDir: o.binDir, agentSocket: o.agentSocket, stateFile: o.stateFile };
      const here = { ...p, stateFile: o.stateFileHere ?? o.stateFile };
      if (o.uninstall) {
        log('info', 'CNI plugin uninstalled', { removed: uninstall(here) });
        return;
      }
      if (!o.watch) {
        log('info', 'CNI plugin installed', { conf: installOnce(p), bin: path.join(p.binDir, PLUGIN_TYPE) });
        return;
      }
      // The network plugin writes its configuration when it starts: wait for it rather than fail.
      const stop = keepChained(p);
      await new Promise<void>((resolve) => process.once('SIGTERM', () => resolve()));
      stop();
      let ds: { metadata?: { deletionTimestamp?: string } } | null;
      try {
        const { kubeConfigOf, LeanKubeApi } = await import('../k8s/kube-api.ts');
        const c = kubeConfigOf(undefined);
        if (!('config' in c)) throw new Error(c.unsupported);
        const l = await new LeanKubeApi(c.config).list(`/apis/apps/v1/namespaces/${o.namespace}/daemonsets`, { fieldSelector: `metadata.name=${o.daemonset}` });
        ds = (l.items[0] as { metadata?: { deletionTimestamp?: string } } | undefined) ?? null;
      } catch (e) {
        log('warn', `SIGTERM: could not read DaemonSet ${o.namespace}/${o.daemonset} (${(e as Error).message}); keeping the CNI plugin (a rolling update must not let pods start unmeshed); after an uninstall run \`mesh-agent cni-install --uninstall\` on the node`);
        return;
      }
      if (isUninstall(ds)) log('info', 'DaemonSet deleted: CNI plugin uninstalled', { removed: uninstall(here) });
      else log('info', 'SIGTERM during a rolling update: the CNI plugin stays, pods of meshed namespaces wait for the next agent');
    });
}
