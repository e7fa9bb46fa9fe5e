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
import { cniInstalled, installCni, uninstallCni, writeAtomic } from '../cni/install.ts';
import { DEFAULT_AGENT_SOCKET, DEFAULT_STATE_FILE, PLUGIN_TYPE } from '../cni/spec.ts';
import { DEFAULT_PLUGIN_KUBECONFIG, inClusterServer, renderKubeconfig } from '../cni/kubeconfig.ts';
import { PLUGIN_SERVICE_ACCOUNT, PluginToken, requestToken } from '../cni/plugin-token.ts';
import { moduleClosure } from '../util/module-closure.ts';

/** The plugin's entry module, relative to the package root (no extension: .js compiled, .ts from the sources). */
export const PLUGIN_ENTRY = 'bin/mesh-agent-cni';
let pluginModuleList: string[] | undefined;
/** The plugin's modules, found from its entry's imports (util/module-closure.ts), entry first. */
export function pluginModules(): string[] {
  return (pluginModuleList ??= moduleClosure(ROOT, PLUGIN_ENTRY, EXT));
}
/** Where kubelet mounts the pod's ServiceAccount token and the cluster's CA. */
export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const EXT = path.extname(fileURLToPath(import.meta.url));
/** --watch checks on the configuration directory's inotify events; this slow poll is for a filesystem without them. */
const POLL_MS = 30_000;
/** A network plugin's rewrite comes as several events (create, write, rename): checked once they pause. */
const SETTLE_MS = 100;
/** How long the first install waits for the plugin's token (TokenRequest) before writing this container's. */
const FIRST_TOKEN_WAIT_MS = 5_000;

/** The script the runtime executes: Node.js and the plugin from the directory beside it, so the host needs no Node.js of its own. */
export function wrapperScript(): string {
  return `#!/bin/sh\n# mesh-agent's chained CNI plugin (installed by the mesh-agent DaemonSet)\nd="$(dirname "$0")/${PLUGIN_TYPE}.d"\nexec "$d/node" "$d/bin/mesh-agent-cni${EXT}" "$@"\n`;
}

/** What copyPluginFiles did, by path relative to BIN/mesh-agent-cni.d. */
export interface CopyReport {
  copied: string[];
  unchanged: string[];
}

/**
 * Whether `dst` already is `src` with `mode`: the same size, then the same bytes, compared in 1 MB
 * chunks (reading both writes nothing, where a copy writes the 120 MB Node.js binary to the host's
 * disk again). A short read counts as a difference: the file is copied, which is safe.
 */
function sameFile(src: string, dst: string, mode: number): boolean {
  let d: fs.Stats;
  try {
    d = fs.statSync(dst);
  } catch {
    return false;
  }
  const size = fs.statSync(src).size;
  if (!d.isFile() || d.size !== size || (d.mode & 0o7777) !== mode) return false;
  const a = Buffer.allocUnsafe(1 << 20);
  const b = Buffer.allocUnsafe(1 << 20);
  const fa = fs.openSync(src, 'r');
  try {
    const fb = fs.openSync(dst, 'r');
    try {
      for (let pos = 0; pos < size;) {
        const n = fs.readSync(fa, a, 0, a.length, pos);
        if (n === 0 || fs.readSync(fb, b, 0, n, pos) !== n || !a.subarray(0, n).equals(b.subarray(0, n))) return false;
        pos += n;
      }
      return true;
    } finally {
      fs.closeSync(fb);
    }
  } finally {
    fs.closeSync(fa);
  }
}

/**
 * Node.js and the plugin's modules into BIN/mesh-agent-cni.d: each file only when it differs (a
 * re-chain after a network plugin's rewrite finds them in place), and then replaced atomically (a
 * running plugin keeps its old files).
 */
export function copyPluginFiles(binDir: string, nodeBinary = process.execPath): CopyReport {
  const dir = path.join(binDir, `${PLUGIN_TYPE}.d`);
  const report: CopyReport = { copied: [], unchanged: [] };
  const put = (src: string, rel: string, mode: number) => {
    const dst = path.join(dir, rel);
    if (sameFile(src, dst, mode)) {
      report.unchanged.push(rel);
      return;
    }
    fs.mkdirSync(path.dirname(dst), { recursive: true });
    const tmp = `${dst}.${process.pid}.tmp`;
    fs.copyFileSync(src, tmp);
    fs.chmodSync(tmp, mode);
    fs.renameSync(tmp, dst);
    report.copied.push(rel);
  };
  put(nodeBinary, 'node', 0o755);
  for (const m of pluginModules()) put(path.join(ROOT, m + EXT), m + EXT, 0o644);
  // The modules are ES modules.
  const pkg = path.join(dir, 'package.json');
  const type = '{"type":"module"}\n';
  if (!fs.existsSync(pkg) || fs.readFileSync(pkg, 'utf8') !== type) fs.writeFileSync(pkg, type);
  return report;
}

/** The plugin's kubeconfig: from this container's ServiceAccount, for the plugin on the host. */
export interface PluginKubeconfig {
  /** The path the conflist entry names (as the host sees it). */
  hostPath: string;
  /** The same file as this container sees it. */
  herePath: string;
  serviceAccountDir: string;
  /** The API server's address (default: from KUBERNETES_SERVICE_HOST and _PORT). */
  server: string;
  /** The token to write (the plugin's own, src/cni/plugin-token.ts); default the ServiceAccount directory's. */
  token?: () => string;
  /** Renews the token when due; --watch calls it every poll and rewrites the file when it resolves true. */
  refresh?: () => Promise<boolean>;
}

export interface InstallPaths {
  confDir: string;
  binDir: string;
  agentSocket: string;
  stateFile: string;
  /** None: the plugin decides by the namespace alone when no agent answers. */
  kubeconfig?: PluginKubeconfig;
}

/** The kubeconfig for the ServiceAccount's current token, for the same path: the API server's in-cluster address. */
export function pluginKubeconfigFor(serviceAccountDir: string, env: Record<string, string | undefined>, hostPath = DEFAULT_PLUGIN_KUBECONFIG): Omit<PluginKubeconfig, 'herePath'> {
  const server = inClusterServer(env);
  if (server === null) throw new Error('KUBERNETES_SERVICE_HOST or KUBERNETES_SERVICE_PORT is not set: kubelet sets them in a pod\'s containers; run cni-install in the DaemonSet');
  return { hostPath, serviceAccountDir, server };
}

/** Writes the kubeconfig (mode 0600: it holds the token) when its content changed (the token rotated); returns whether it did. */
export function writePluginKubeconfig(k: PluginKubeconfig): boolean {
  const read = (f: string) => fs.readFileSync(path.join(k.serviceAccountDir, f), 'utf8');
  const ca = fs.existsSync(path.join(k.serviceAccountDir, 'ca.crt')) ? read('ca.crt') : undefined;
  const text = renderKubeconfig({ server: k.server, token: k.token ? k.token() : read('token').trim(), ...(ca ? { caPem: ca } : {}) });
  fs.mkdirSync(path.dirname(k.herePath), { recursive: true });
  // Unchanged and private: nothing written; readable by others (a hand edit, a restore): put right.
  return writeAtomic(k.herePath, text, 0o600);
}

/** The kubeconfig before the entry that names it: the plugin never finds the entry without its file. Returns the configuration file written and the plugin's files copied. */
export function installOnce(p: InstallPaths): { conf: string; files: CopyReport } {
  const files = copyPluginFiles(p.binDir);
  if (p.kubeconfig) writePluginKubeconfig(p.kubeconfig);
  const entry = { agentSocket: p.agentSocket, stateFile: p.stateFile, ...(p.kubeconfig ? { kubeconfig: p.kubeconfig.hostPath } : {}) };
  return { conf: installCni({ confDir: p.confDir, binDir: p.binDir, entry, executable: wrapperScript() }), files };
}

/** The log's fields for an install: the files copied by name, the unchanged ones counted. */
function installFields(r: { conf: string; files: CopyReport }, binDir: string): object {
  return { conf: r.conf, bin: path.join(binDir, PLUGIN_TYPE), copied: r.files.copied, unchanged: r.files.unchanged.length };
}

/** Whether SIGTERM means an uninstall: the DaemonSet is gone or being deleted (a rolling update keeps it). */
export function isUninstall(daemonSet: { metadata?: { deletionTimestamp?: string } } | null): boolean {
  return daemonSet === null || daemonSet.metadata?.deletionTimestamp !== undefined;
}

export function uninstall(p: InstallPaths): string[] {
  const removed = uninstallCni(p);
  if (p.kubeconfig && fs.existsSync(p.kubeconfig.herePath)) {
    fs.rmSync(p.kubeconfig.herePath, { force: true });
    removed.push(p.kubeconfig.herePath);
  }
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
 * between starts without the plugin); while the directory is not there yet, it watches the
 * nearest existing directory on the way to it for its creation. The slow poll covers a filesystem
 * without inotify, renews the plugin's token when due and rewrites its kubeconfig when the token
 * changed (the plugin's own renewed at half its 24 h, or this container's as kubelet rotates it:
 * the poll is soon enough).
 * Returns the stop.
 */
export function keepChained(p: InstallPaths, pollMs = POLL_MS, watchDir: (dir: string, onEvent: () => void) => fs.FSWatcher = fs.watch): () => void {
  let installed = false;
  let watcher: fs.FSWatcher | null = null;
  let settle: NodeJS.Timeout | undefined;
  const check = () => {
    if (installed && p.kubeconfig) {
      try {
        if (writePluginKubeconfig(p.kubeconfig)) log('info', 'the plugin\'s token changed: its kubeconfig rewritten', { kubeconfig: p.kubeconfig.hostPath });
      } catch (e) {
        log('warn', `cannot rewrite the plugin's kubeconfig ${p.kubeconfig.herePath} (${(e as Error).message}): with no agent answering, the plugin's read of a pod may fail and fall back to its namespace`);
      }
    }
    // The first install copies the files even when the entry is there: they may be an older version's.
    if (installed && cniInstalled(p.confDir)) return;
    try {
      const r = installOnce(p);
      log('info', installed ? 'CNI configuration rewritten without our entry: chained again' : 'CNI plugin installed', installFields(r, p.binDir));
      installed = true;
    } catch (e) {
      log('warn', (e as Error).message);
    }
  };
  /** The directory to watch: the configuration's, or while it is missing the nearest existing directory on the way to it. */
  const target = () => {
    let dir = p.confDir;
    while (!fs.existsSync(dir) && path.dirname(dir) !== dir) dir = path.dirname(dir);
    return dir;
  };
  /**
   * A directory's identity: a directory removed and created again (a reinstall of the network
   * plugin) is a new one that the old watch does not see, though its path, and often its inode
   * (tmpfs, ext4 reuse them), are the old one's; its birth time is not.
   */
  const identity = (dir: string) => {
    try {
      const s = fs.statSync(dir, { bigint: true });
      return `${s.dev}:${s.ino}:${s.birthtimeNs}`;
    } catch {
      return null;
    }
  };
  let watched: string | null = null;
  let watchedId: string | null = null;
  /** Whether the watch is not on the directory to watch (created, removed, or replaced since). */
  const stale = () => {
    const dir = target();
    return dir !== watched || identity(dir) !== watchedId;
  };
  const watch = () => {
    watcher?.close();
    watcher = null;
    watched = null;
    const dir = target();
    // Taken before the watch: a directory replaced in between is seen as stale at the next event.
    const id = identity(dir);
    const fallback = (e: Error) => log('warn', `cannot watch ${dir === p.confDir ? 'the CNI configuration directory' : `${dir} for the CNI configuration directory ${p.confDir}`} (${e.message}): checking it every ${pollMs / 1000} s instead`);
    try {
      const w = watchDir(dir, () => {
        // The configuration directory (or a directory on the way) created, or it removed: watch the right one.
        if (stale()) watch();
        if (watched !== p.confDir) return;
        clearTimeout(settle);
        settle = setTimeout(check, SETTLE_MS);
      });
      w.on('error', (e) => {
        w.close();
        if (watcher !== w) return;
        watcher = null;
        watched = null;
        fallback(e);
      });
      watcher = w;
      watched = dir;
      watchedId = id;
    } catch (e) {
      // Removed between the look and the watch: look again, a directory on the way is there ('/' at least).
      if ((e as NodeJS.ErrnoException).code === 'ENOENT' && target() !== dir) return watch();
      fallback(e as Error);
      return;
    }
    if (dir === p.confDir) return;
    log('info', `the CNI configuration directory ${p.confDir} is not there yet: watching ${dir} for its creation`);
    // Created between the look and the watch: no event will say so.
    if (target() !== dir) watch();
  };
  // Watching first: a rewrite between the check and the watch is not missed.
  watch();
  check();
  const timer = setInterval(() => {
    if (stale()) watch();
    check();
    // A refresh answered after stop() installs nothing: SIGTERM's uninstall may have run since.
    void p.kubeconfig?.refresh?.().then((changed) => changed && !stopped && check());
  }, pollMs);
  let stopped = false;
  return () => {
    stopped = true;
    clearInterval(timer);
    clearTimeout(settle);
    watcher?.close();
  };
}

/** The plugin's own token, asked for with this container's in-cluster credentials. */
async function pluginToken(namespace: string, serviceAccount: string): Promise<PluginToken> {
  const { kubeConfigOf, LeanKubeApi } = await import('../k8s/kube-api.ts');
  const c = kubeConfigOf(undefined);
  const api = 'config' in c ? new LeanKubeApi(c.config) : new Error(`the in-cluster configuration needs ${c.unsupported}`);
  return new PluginToken({
    request: () => (api instanceof Error ? Promise.reject(api) : requestToken(api, namespace, serviceAccount)),
    fallback: () => fs.readFileSync(path.join(SERVICE_ACCOUNT_DIR, 'token'), 'utf8').trim(),
    serviceAccount,
    namespace,
    log,
  });
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
    .option('--namespace <ns>', 'the DaemonSet\'s namespace (with --watch), and the plugin\'s ServiceAccount\'s', 'mesh-agent')
    .option('--daemonset <name>', 'with --watch: the DaemonSet whose deletion means uninstall', 'mesh-agent-agent')
    .option('--kubeconfig-path <path>', 'where the plugin finds its kubeconfig (written by this container: see --plugin-service-account), as the host sees it; in the CNI configuration directory or the plugin\'s', DEFAULT_PLUGIN_KUBECONFIG)
    .option('--kubeconfig-path-here <path>', 'the same file as this container sees it (default: the file of that name in --conf-dir)')
    .option('--plugin-service-account <name>', 'the plugin\'s own ServiceAccount in --namespace, whose token (TokenRequest, with this container\'s credentials) the kubeconfig holds; if the request fails, this container\'s own token', PLUGIN_SERVICE_ACCOUNT)
    .option('--no-kubeconfig', 'write no kubeconfig: with no agent answering, the plugin decides by the namespace alone')
    .option('--uninstall', 'take the plugin out now and exit')
    .action(async (o) => {
      // Listened for from the start: a SIGTERM before the listener (the token's wait, the first
      // install) would kill the process by default, and an uninstall would be missed. One that
      // comes early is acted on once the install is done.
      const terminated = o.watch && !o.uninstall ? new Promise<void>((resolve) => process.once('SIGTERM', () => resolve())) : null;
      const p: InstallPaths = { confDir: o.confDir, binDir: o.binDir, agentSocket: o.agentSocket, stateFile: o.stateFile };
      if (o.kubeconfig !== false) {
        const herePath = o.kubeconfigPathHere ?? path.join(o.confDir, path.basename(o.kubeconfigPath));
        if (o.uninstall) p.kubeconfig = { hostPath: o.kubeconfigPath, herePath, serviceAccountDir: SERVICE_ACCOUNT_DIR, server: '' };
        else if (!fs.existsSync(path.join(SERVICE_ACCOUNT_DIR, 'token'))) log('warn', `no ServiceAccount token in ${SERVICE_ACCOUNT_DIR}: the plugin gets no kubeconfig, and with no agent answering decides by the namespace alone; run cni-install in the DaemonSet (its ServiceAccount's token is mounted there)`);
        else {
          p.kubeconfig = { ...pluginKubeconfigFor(SERVICE_ACCOUNT_DIR, process.env, o.kubeconfigPath), herePath };
          const token = await pluginToken(o.namespace, o.pluginServiceAccount);
          // The install does not wait on a slow API server for long (pods created meanwhile would
          // start without the plugin): past this, this container's token is written, and the next
          // poll writes the plugin's once it has come.
          await Promise.race([token.refresh(), new Promise((r) => setTimeout(r, FIRST_TOKEN_WAIT_MS).unref())]);
          Object.assign(p.kubeconfig, { token: () => token.current(), refresh: () => token.refresh() });
        }
      }
      const here = { ...p, stateFile: o.stateFileHere ?? o.stateFile };
      if (o.uninstall) {
        log('info', 'CNI plugin uninstalled', { removed: uninstall(here) });
        return;
      }
      if (!o.watch) {
        log('info', 'CNI plugin installed', installFields(installOnce(p), p.binDir));
        return;
      }
      // The network plugin writes its configuration when it starts: wait for it rather than fail.
      const stop = keepChained(p);
      await terminated;
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
