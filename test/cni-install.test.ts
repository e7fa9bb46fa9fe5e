// The CNI plugin's install on a node (src/cni/install.ts, `mesh-agent cni-install`): the entry
// chained after the network plugin (a single plugin's .conf becomes a .conflist), put back when
// the network plugin rewrites the file, taken out on uninstall; the installed files run as a CNI
// plugin on their own (Node.js and the plugin's modules copied beside the script).
import test from 'ava';
import { execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cniInstalled, installCni, uninstallCni } from '../src/cni/install.ts';
import { copyPluginFiles, installOnce, PLUGIN_ENTRY, pluginModules, isUninstall, keepChained, pluginKubeconfigFor, uninstall, wrapperScript, writePluginKubeconfig, type PluginKubeconfig } from '../src/cli/cni-install.ts';
import { parseKubeconfig } from '../src/cni/kubeconfig.ts';
import { SimApiServer } from '../src/sim/apiserver.ts';
import { until } from './helpers/until.ts';
import { parseConfList, pickConfFile } from '../src/cni/conflist.ts';
import { meshBin } from '../src/sim/dist-bin.ts';
import { testTempDir } from './helpers/temp-dir.ts';
import { moduleClosure } from '../src/util/module-closure.ts';

function dirs(t: any) {
  const root = testTempDir(t);
  const p = { confDir: path.join(root, 'net.d'), binDir: path.join(root, 'bin'), agentSocket: path.join(root, 'cni.sock'), stateFile: path.join(root, 'state', 'cni-state.json') };
  fs.mkdirSync(p.confDir);
  return p;
}

const calico = { cniVersion: '0.3.1', name: 'k8s-pod-network', type: 'calico', ipam: { type: 'calico-ipam' } };
const BIN = meshBin();

/** Resolves once `file` chains our entry, checked on each inotify event of its directory (and now); rejects after `ms`. */
function entryBack(file: string, ms: number): Promise<number> {
  const started = performance.now();
  const has = () => {
    try {
      return parseConfList(fs.readFileSync(file, 'utf8'), file).plugins.some((x) => x.type === 'mesh-agent-cni');
    } catch {
      return false; // not there yet, or half written
    }
  };
  return new Promise((resolve, reject) => {
    const done = (err: Error | null) => {
      w.close();
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(performance.now() - started);
    };
    const w = fs.watch(path.dirname(file), () => has() && done(null));
    const timer = setTimeout(() => done(new Error(`${file} did not chain mesh-agent-cni again within ${ms} ms: ${fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : 'no file'}`)), ms);
    if (has()) done(null);
  });
}

/** Runs the installed plugin as the runtime does: its command in the environment, the configuration on stdin. */
function runPlugin(exe: string, env: Record<string, string>, stdin: string): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve) => {
    // No PATH to a Node.js of the host: the script brings its own.
    const c = execFile(exe, [], { env: { PATH: '/usr/bin:/bin', ...env } }, (err, stdout) => resolve({ code: err ? Number((err as any).code) : 0, stdout }));
    c.stdin!.end(stdin);
  });
}

test('install chains our entry after the network plugin (a .conf becomes a .conflist), once; a rewrite is noticed; uninstall takes everything out', (t) => {
  const p = dirs(t);
  t.throws(() => installOnce(p), { message: /no CNI configuration in .*net.d yet: the network plugin .* writes it when it starts/ });
  fs.writeFileSync(path.join(p.confDir, '10-calico.conf'), JSON.stringify(calico));
  fs.writeFileSync(path.join(p.confDir, '99-other.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'other', plugins: [{ type: 'bridge' }] }));
  const file = installOnce(p).conf;
  t.is(path.basename(file), '10-calico.conflist');
  t.deepEqual(fs.readdirSync(p.confDir).sort(), ['10-calico.conflist', '99-other.conflist']);
  t.is(pickConfFile(fs.readdirSync(p.confDir)), '10-calico.conflist', 'the runtime still reads the network plugin\'s file first');
  const list = parseConfList(fs.readFileSync(file, 'utf8'), file);
  t.deepEqual(list.plugins, [{ type: 'calico', ipam: { type: 'calico-ipam' } }, { type: 'mesh-agent-cni', agentSocket: p.agentSocket, stateFile: p.stateFile }]);
  t.is(list.cniVersion, '0.3.1');
  const script = path.join(p.binDir, 'mesh-agent-cni');
  const stamp = (f: string) => `${fs.statSync(f).ino}/${fs.statSync(f).mtimeMs}`;
  const [fileBefore, scriptBefore] = [stamp(file), stamp(script)];
  installOnce(p);
  t.is(parseConfList(fs.readFileSync(file, 'utf8'), file).plugins.filter((x) => x.type === 'mesh-agent-cni').length, 1, 'installing again keeps one entry');
  t.is(stamp(file), fileBefore, 'installing again rewrites no configuration (the runtime reloads on each write)');
  t.is(stamp(script), scriptBefore, 'nor the script');
  // A script changed or made writable on the host is put right.
  fs.writeFileSync(script, '#!/bin/sh\nexit 1\n');
  fs.chmodSync(script, 0o777);
  installOnce(p);
  t.is(fs.readFileSync(script, 'utf8'), wrapperScript());
  t.is(fs.statSync(script).mode & 0o777, 0o755);
  t.true(cniInstalled(p.confDir));
  // The network plugin rewrites its configuration (an upgrade): our entry is gone until put back.
  fs.writeFileSync(file, JSON.stringify({ cniVersion: '0.3.1', name: 'k8s-pod-network', plugins: [{ type: 'calico' }] }));
  t.false(cniInstalled(p.confDir));
  installOnce(p);
  t.true(cniInstalled(p.confDir));

  fs.mkdirSync(path.dirname(p.stateFile), { recursive: true });
  fs.writeFileSync(p.stateFile, '{}');
  const removed = uninstall(p);
  t.true(removed.some((r) => r.startsWith('mesh-agent-cni entry of')));
  t.deepEqual(parseConfList(fs.readFileSync(file, 'utf8'), file).plugins, [{ type: 'calico' }]);
  t.deepEqual(fs.readdirSync(p.binDir), [], 'the script and its directory are gone');
  t.false(fs.existsSync(p.stateFile));
  t.false(cniInstalled(p.confDir));
});

test('install and uninstall keep the mode of the network plugin\'s file: a hardened node\'s 0600 conflist is not made world-readable', (t) => {
  const p = dirs(t);
  const file = path.join(p.confDir, '10-calico.conflist');
  fs.writeFileSync(file, JSON.stringify({ cniVersion: '0.3.1', name: 'k8s-pod-network', plugins: [calico] }), { mode: 0o600 });
  fs.chmodSync(file, 0o600);
  const o = { confDir: p.confDir, binDir: p.binDir, entry: { agentSocket: p.agentSocket }, executable: wrapperScript() };
  t.is(installCni(o), file);
  t.true(cniInstalled(p.confDir));
  t.is((fs.statSync(file).mode & 0o777).toString(8), '600', 'install');
  const stamp = fs.statSync(file).mtimeMs;
  installCni(o);
  t.is(fs.statSync(file).mtimeMs, stamp, 'installing again writes nothing');
  uninstallCni(p);
  t.false(cniInstalled(p.confDir));
  t.is((fs.statSync(file).mode & 0o777).toString(8), '600', 'uninstall');
  // A single plugin's .conf made into a .conflist keeps its mode too.
  fs.rmSync(file);
  const conf = path.join(p.confDir, '10-calico.conf');
  fs.writeFileSync(conf, JSON.stringify(calico), { mode: 0o640 });
  fs.chmodSync(conf, 0o640);
  t.is((fs.statSync(installCni(o)).mode & 0o777).toString(8), '640');
});

test('a configuration older than the plugin chains (cniVersion 0.2.0) is left alone with the reason: chained there, every pod\'s ADD would fail', async (t) => {
  const p = dirs(t);
  const file = path.join(p.confDir, '10-flannel.conflist');
  const text = JSON.stringify({ cniVersion: '0.2.0', name: 'cbr0', plugins: [{ type: 'flannel' }] });
  fs.writeFileSync(file, text);
  t.throws(() => installOnce(p), { message: /10-flannel.conflist is cniVersion 0.2.0; mesh-agent-cni chains only into 0.3.0, 0.3.1, .* Update the network plugin .* or install with --cni=false/ });
  t.is(fs.readFileSync(file, 'utf8'), text, 'the network plugin\'s file is untouched');
  t.false(cniInstalled(p.confDir));
  // Why: the plugin, run as the runtime would with that list's version, refuses every ADD.
  const run = await runPlugin(path.join(p.binDir, 'mesh-agent-cni'), { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', CNI_NETNS: '/proc/1/ns/net', CNI_IFNAME: 'eth0', CNI_ARGS: 'K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1', CNI_PATH: p.binDir }, JSON.stringify({ cniVersion: '0.2.0', name: 'cbr0', type: 'mesh-agent-cni' }));
  t.not(run.code, 0);
  t.regex(run.stdout, /cniVersion 0.2.0 is not supported/);
});

test('the plugin\'s modules are found from its imports, the same from the sources and from the compiled package: the annotation rule (a dynamic import) and what it imports are among them, the agent\'s modules are not', (t) => {
  // The plugin runs from its own copy on the host; a hand-kept list missed a new import twice
  // (ERR_MODULE_NOT_FOUND in the installed plugin while every in-tree test passed).
  const root = path.resolve(import.meta.dirname, '..');
  const mods = pluginModules();
  t.is(mods[0], PLUGIN_ENTRY);
  for (const m of ['src/cni/plugin', 'src/cni/pod-read', 'src/k8s/annotations', 'src/util/record-reader', 'src/policy/model']) t.true(mods.includes(m), m);
  for (const m of mods) t.true(fs.existsSync(path.join(root, `${m}.ts`)), m);
  t.false(mods.some((m) => m.startsWith('src/proxy/') && m !== 'src/proxy/ports'), 'no proxy module but the port rule');
  t.false(mods.includes('src/agent/agent'));
  t.deepEqual(moduleClosure(path.join(root, 'dist'), PLUGIN_ENTRY, '.js'), mods, 'tsc\'s output imports the same modules');
});

test('the installed files run as a CNI plugin on their own: Node.js and the plugin\'s modules beside the script', async (t) => {
  const p = dirs(t);
  fs.writeFileSync(path.join(p.confDir, '10-calico.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'k8s', plugins: [{ type: 'calico' }] }));
  installOnce(p);
  const exe = path.join(p.binDir, 'mesh-agent-cni');
  t.is(fs.readFileSync(exe, 'utf8'), wrapperScript());
  t.is(fs.statSync(exe).mode & 0o777, 0o755);
  const run = (env: Record<string, string>, stdin: string) => runPlugin(exe, env, stdin);
  const v = await run({ CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.0.0"}');
  t.is(v.code, 0);
  t.true(JSON.parse(v.stdout).supportedVersions.includes('1.0.0'));
  // ADD with no agent and no state file: the pod starts, its previous result handed back.
  const prev = { cniVersion: '1.0.0', ips: [{ address: '10.1.2.3/32' }] };
  const add = await run({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c', CNI_ARGS: 'K8S_POD_NAMESPACE=a;K8S_POD_NAME=b' }, JSON.stringify({ cniVersion: '1.0.0', name: 'k8s', type: 'mesh-agent-cni', agentSocket: p.agentSocket, stateFile: p.stateFile, prevResult: prev }));
  t.is(add.code, 0, add.stdout);
  t.deepEqual(JSON.parse(add.stdout), prev);
});

test('the plugin\'s files are copied only when they differ: an install over identical files rewrites none, a changed source or a changed copy is copied again', (t) => {
  const p = dirs(t);
  const dir = path.join(p.binDir, 'mesh-agent-cni.d');
  // A stand-in for the Node.js binary (120 MB): its copy is judged as any other file's.
  const node = path.join(path.dirname(p.confDir), 'node');
  fs.writeFileSync(node, 'node-1');
  const first = copyPluginFiles(p.binDir, node);
  t.is(first.copied.length, pluginModules().length + 1, 'Node.js and every plugin module');
  t.deepEqual(first.unchanged, []);
  /** Each copied file's inode and mtime: a rewrite (tmp and rename) changes the inode. */
  const stamps = () => new Map(first.copied.map((rel) => {
    const s = fs.statSync(path.join(dir, rel));
    return [rel, `${s.ino}/${s.mtimeMs}`];
  }));
  const before = stamps();
  const again = copyPluginFiles(p.binDir, node);
  t.deepEqual(stamps(), before, 'no file rewritten');
  t.deepEqual(again, { copied: [], unchanged: first.copied });
  // A new image's Node.js of the same size: compared by content, copied.
  fs.writeFileSync(node, 'node-2');
  t.deepEqual(copyPluginFiles(p.binDir, node).copied, ['node']);
  t.is(fs.readFileSync(path.join(dir, 'node'), 'utf8'), 'node-2');
  t.is(fs.statSync(path.join(dir, 'node')).mode & 0o777, 0o755);
  // A copy changed on the host (its bytes, its length, its mode) is put right.
  const mod = first.copied[1]!;
  const copy = path.join(dir, mod);
  const text = fs.readFileSync(copy, 'utf8');
  fs.writeFileSync(copy, text.replace(/.$/s, (c) => (c === ' ' ? '\t' : ' ')));
  t.deepEqual(copyPluginFiles(p.binDir, node).copied, [mod], 'same size, other bytes');
  fs.appendFileSync(copy, '\n');
  t.deepEqual(copyPluginFiles(p.binDir, node).copied, [mod], 'longer');
  fs.chmodSync(copy, 0o666);
  t.deepEqual(copyPluginFiles(p.binDir, node).copied, [mod], 'writable by others');
  t.is(fs.readFileSync(copy, 'utf8'), text);
  t.is(fs.statSync(copy).mode & 0o777, 0o644);
  t.deepEqual(fs.readdirSync(dir).filter((f) => f.endsWith('.tmp')), [], 'no temporary file left');
});

test('--watch chains the entry within moments of the network plugin writing its configuration, and again after each rewrite (it watches the directory, no 5 s poll)', async (t) => {
  const p = dirs(t);
  const proc = spawn(process.execPath, [BIN, 'cni-install', '--watch', '--conf-dir', p.confDir, '--bin-dir', p.binDir, '--agent-socket', p.agentSocket, '--state-file', p.stateFile, '--no-kubeconfig'], { stdio: ['ignore', 'ignore', 'pipe'] });
  t.teardown(() => proc.kill('SIGKILL'));
  let log = '';
  proc.stderr!.on('data', (d) => (log += d));
  /** Once the installer's log has said `re` `n` times. */
  const logged = (re: RegExp, n = 1) => new Promise<void>((resolve, reject) => {
    const check = () => {
      if ((log.match(new RegExp(re, 'g'))?.length ?? 0) < n) return;
      proc.stderr!.off('data', check);
      proc.off('exit', exited);
      resolve();
    };
    const exited = (code: number | null) => reject(new Error(`cni-install exited (${code}) before logging ${re} ${n} times: ${log}`));
    proc.stderr!.on('data', check);
    proc.once('exit', exited);
    check();
  });
  await logged(/no CNI configuration in .* yet/);
  // Each wait is bounded well below the old poll's 5 s (the re-chain compares the copied Node.js,
  // 120 MB, with the image's first), and the rewrites follow each other at once, so a poll would miss the bound.
  const BOUND_MS = 4_000;
  const file = path.join(p.confDir, '10-calico.conflist');
  // The network plugin starts and writes its configuration: not atomically, as a plain write.
  fs.writeFileSync(file, JSON.stringify({ cniVersion: '0.3.1', name: 'k8s-pod-network', plugins: [calico] }));
  const took = [await entryBack(file, BOUND_MS)];
  for (let i = 0; i < 3; i++) {
    // An upgrade of the network plugin rewrites the file without our entry.
    fs.writeFileSync(file, JSON.stringify({ cniVersion: '0.3.1', name: 'k8s-pod-network', plugins: [{ type: 'calico', rev: i }] }));
    took.push(await entryBack(file, BOUND_MS));
  }
  t.log(`entry chained ${took.map((ms) => `${Math.round(ms)} ms`).join(', ')} after the network plugin's write and its 3 rewrites`);
  const list = parseConfList(fs.readFileSync(file, 'utf8'), file);
  t.deepEqual(list.plugins, [{ type: 'calico', rev: 2 }, { type: 'mesh-agent-cni', agentSocket: p.agentSocket, stateFile: p.stateFile }], 'the network plugin\'s new entry kept, ours once after it');
  // Its log says each, once (its own writes to the directory are events too: they chain nothing).
  await logged(/chained again/, 3);
  t.is(log.match(/CNI plugin installed/g)?.length, 1, log);
  // The re-chains found the plugin's files in place (copied at the first try, before the configuration was there).
  const lines = log.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
  t.deepEqual(lines.filter((l) => /chained again/.test(l.msg)).map((l) => [l.copied, l.unchanged]), [[[], pluginModules().length + 1], [[], pluginModules().length + 1], [[], pluginModules().length + 1]]);
});

test('keepChained re-chains on the directory\'s events alone: with its poll an hour away, each rewrite gets the entry back', async (t) => {
  // The test above bounds each wait below the old 5 s poll, which a poll still met about 40% of
  // the time (four waits, each under 4 s with chance 0.8); here no poll falls within the test, so
  // a re-chain that is not driven by the directory's events never comes.
  const p = dirs(t);
  const file = path.join(p.confDir, '10-calico.conflist');
  fs.writeFileSync(file, JSON.stringify({ cniVersion: '0.3.1', name: 'k8s-pod-network', plugins: [calico] }));
  const stop = keepChained(p, 3_600_000);
  t.teardown(stop);
  t.true(cniInstalled(p.confDir), 'the first install is immediate');
  for (let i = 0; i < 3; i++) {
    fs.writeFileSync(file, JSON.stringify({ cniVersion: '0.3.1', name: 'k8s-pod-network', plugins: [{ type: 'calico', rev: i }] }));
    await entryBack(file, 30_000);
  }
  t.deepEqual(parseConfList(fs.readFileSync(file, 'utf8'), file).plugins.map((x) => x.type), ['calico', 'mesh-agent-cni']);
});

test('keepChained with the configuration directory not there yet: its creation is an event (the nearest existing directory is watched), the entry follows the network plugin\'s write', async (t) => {
  // The poll is an hour away: only the watch of a directory on the way can see net.d appear.
  const p = dirs(t);
  const root = path.dirname(p.confDir);
  fs.rmSync(p.confDir, { recursive: true });
  const confDir = path.join(root, 'host', 'etc', 'cni', 'net.d');
  const stop = keepChained({ ...p, confDir }, 3_600_000);
  t.teardown(stop);
  t.false(cniInstalled(confDir));
  // The network plugin starts: it creates the directories (one at a time), then writes its configuration.
  for (const d of ['host', 'host/etc', 'host/etc/cni', 'host/etc/cni/net.d']) fs.mkdirSync(path.join(root, d));
  const file = path.join(confDir, '10-calico.conflist');
  fs.writeFileSync(file, JSON.stringify({ cniVersion: '0.3.1', name: 'k8s-pod-network', plugins: [calico] }));
  t.log(`entry chained ${Math.round(await entryBack(file, 30_000))} ms after the network plugin's write`);
  // Removed and created again (a reinstall of the network plugin): watched again, chained again.
  fs.rmSync(path.join(root, 'host', 'etc', 'cni'), { recursive: true });
  fs.mkdirSync(confDir, { recursive: true });
  fs.writeFileSync(file, JSON.stringify({ cniVersion: '0.3.1', name: 'k8s-pod-network', plugins: [{ type: 'calico', rev: 1 }] }));
  await entryBack(file, 30_000);
  t.deepEqual(parseConfList(fs.readFileSync(file, 'utf8'), file).plugins.map((x) => x.type), ['calico', 'mesh-agent-cni']);
  // The new directory is the one watched: its next rewrite is seen (a watch left on the removed directory sees nothing).
  fs.writeFileSync(file, JSON.stringify({ cniVersion: '0.3.1', name: 'k8s-pod-network', plugins: [{ type: 'calico', rev: 2 }] }));
  await entryBack(file, 30_000);
});

test('keepChained with the configuration directory removed between its look and its watch: it looks again at once and watches the directory above, not the hour-long poll', async (t) => {
  // The race placed by hand: the first watch is asked for net.d just after net.d was removed.
  const p = dirs(t);
  let calls = 0;
  const watchDir = (dir: string, onEvent: () => void) => {
    if (calls++ === 0) {
      t.is(dir, p.confDir);
      fs.rmSync(dir, { recursive: true });
    }
    return fs.watch(dir, onEvent);
  };
  const stop = keepChained(p, 3_600_000, watchDir);
  t.teardown(stop);
  t.true(calls >= 2, 'watched again at once');
  fs.mkdirSync(p.confDir);
  const file = path.join(p.confDir, '10-calico.conflist');
  fs.writeFileSync(file, JSON.stringify({ cniVersion: '0.3.1', name: 'k8s-pod-network', plugins: [calico] }));
  await entryBack(file, 30_000);
  t.deepEqual(parseConfList(fs.readFileSync(file, 'utf8'), file).plugins.map((x) => x.type), ['calico', 'mesh-agent-cni']);
});

/** A ServiceAccount's mounted files, as kubelet projects them into the install container. */
function serviceAccount(t: any, root: string, token: string): string {
  const dir = path.join(root, 'serviceaccount');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'token'), token);
  fs.writeFileSync(path.join(dir, 'ca.crt'), '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');
  return dir;
}

test('keepChained stopped while the plugin\'s token is being renewed: the answer, come after, installs nothing (SIGTERM\'s uninstall stays done)', async (t) => {
  const p = dirs(t);
  fs.writeFileSync(path.join(p.confDir, '10-calico.conflist'), JSON.stringify({ cniVersion: '0.3.1', name: 'k8s-pod-network', plugins: [calico] }));
  let asked!: () => void;
  const inFlight = new Promise<void>((r) => (asked = r));
  let answer!: (changed: boolean) => void;
  const renewed = new Promise<boolean>((r) => (answer = r));
  const sa = serviceAccount(t, path.dirname(p.confDir), 'agent-token');
  const k: PluginKubeconfig = { hostPath: '/etc/cni/net.d/kc', herePath: path.join(p.confDir, 'kc'), serviceAccountDir: sa, server: 'https://10.96.0.1:443', refresh: () => (asked(), renewed) };
  const stop = keepChained({ ...p, kubeconfig: k }, 50);
  t.true(cniInstalled(p.confDir));
  await inFlight; // a poll asked for the token; the API server has not answered
  // SIGTERM with the DaemonSet deleted: stop, then uninstall.
  stop();
  uninstall({ ...p, kubeconfig: k });
  answer(true);
  await renewed;
  await new Promise((r) => setImmediate(r)); // the answer's continuation has run (it is synchronous)
  t.false(cniInstalled(p.confDir), 'chained again after the uninstall');
  t.false(fs.existsSync(k.herePath), 'the kubeconfig written again after the uninstall');
});

test('the plugin\'s kubeconfig: written from the ServiceAccount before the entry that names it, mode 0600, rewritten by --watch when the token rotates, removed on uninstall', async (t) => {
  const p = dirs(t);
  fs.writeFileSync(path.join(p.confDir, '10-calico.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'k8s', plugins: [{ type: 'calico' }] }));
  t.throws(() => pluginKubeconfigFor('/nowhere', {}), { message: /KUBERNETES_SERVICE_HOST or KUBERNETES_SERVICE_PORT is not set/ });
  const sa = serviceAccount(t, path.dirname(p.confDir), 'token-1');
  const hostPath = '/etc/cni/net.d/mesh-agent-cni-kubeconfig';
  const k: PluginKubeconfig = { ...pluginKubeconfigFor(sa, { KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '443' }, hostPath), herePath: path.join(p.confDir, 'mesh-agent-cni-kubeconfig') };
  t.is(k.server, 'https://[fd00::1]:443');
  const file = installOnce({ ...p, kubeconfig: k }).conf;
  t.deepEqual(parseConfList(fs.readFileSync(file, 'utf8'), file).plugins.at(-1), { type: 'mesh-agent-cni', agentSocket: p.agentSocket, stateFile: p.stateFile, kubeconfig: hostPath });
  t.is(fs.statSync(k.herePath).mode & 0o777, 0o600, 'it holds the token');
  t.is(pickConfFile(fs.readdirSync(p.confDir)), '10-calico.conflist', 'the runtime does not take it for a configuration');
  const read = () => parseKubeconfig(fs.readFileSync(k.herePath, 'utf8'), k.herePath);
  t.like(read(), { server: 'https://[fd00::1]:443', token: 'token-1', caPem: fs.readFileSync(path.join(sa, 'ca.crt'), 'utf8') });
  // kubelet rotates the projected token: the watch loop's next check rewrites the kubeconfig.
  const stop = keepChained({ ...p, kubeconfig: k }, 100);
  t.teardown(stop);
  fs.writeFileSync(path.join(sa, 'token'), 'token-2\n');
  await until(() => read().token, (tok) => tok === 'token-2', 'the rotated token in the plugin\'s kubeconfig');
  t.is(fs.statSync(k.herePath).mode & 0o777, 0o600);
  stop();
  // The same content left readable by others (a restore, a hand edit) is written again, private.
  fs.chmodSync(k.herePath, 0o644);
  t.true(writePluginKubeconfig(k), 'rewritten for its mode alone');
  t.is(fs.statSync(k.herePath).mode & 0o777, 0o600);
  t.false(writePluginKubeconfig(k), 'then left alone');
  t.true(uninstall({ ...p, kubeconfig: k }).includes(k.herePath));
  t.false(fs.existsSync(k.herePath));
});

test('the installed plugin, with no agent, reads its pod with its kubeconfig (the agent\'s annotation rule is among the copied modules)', async (t) => {
  const p = dirs(t);
  fs.writeFileSync(path.join(p.confDir, '10-calico.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'k8s', plugins: [{ type: 'calico' }] }));
  installOnce(p);
  const api = await new SimApiServer().start();
  t.teardown(() => api.close());
  api.create({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'b', namespace: 'a', annotations: { 'mesh-agent.io/inject': 'enabled' } }, spec: { containers: [{ name: 'c', image: 'i' }] } });
  const kubeconfig = path.join(p.confDir, 'kc');
  fs.writeFileSync(kubeconfig, JSON.stringify({ 'current-context': 'c', contexts: [{ name: 'c', context: { cluster: 'c', user: 'u' } }], clusters: [{ name: 'c', cluster: { server: api.url, 'insecure-skip-tls-verify': true } }], users: [{ name: 'u', user: { token: 't' } }] }));
  const exe = path.join(p.binDir, 'mesh-agent-cni');
  const add = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    const c = execFile(exe, [], { env: { PATH: '/usr/bin:/bin', CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c', CNI_ARGS: 'K8S_POD_NAMESPACE=a;K8S_POD_NAME=b' } }, (err, stdout, stderr) => resolve({ code: err ? Number((err as any).code) : 0, stdout, stderr }));
    c.stdin!.end(JSON.stringify({ cniVersion: '1.0.0', name: 'k8s', type: 'mesh-agent-cni', agentSocket: p.agentSocket, stateFile: p.stateFile, kubeconfig, prevResult: { cniVersion: '1.0.0' } }));
  });
  t.is(add.code, 1, `${add.stdout}\n${add.stderr}`); // stderr: the plugin's decision and why
  t.regex(JSON.parse(add.stdout).msg, /pod a\/b is meshed by its own annotation mesh-agent.io\/inject/);
});

test('SIGTERM uninstalls only when the DaemonSet is gone or being deleted (a rolling update keeps the plugin)', (t) => {
  t.true(isUninstall(null));
  t.true(isUninstall({ metadata: { deletionTimestamp: '2026-12-01T05:00:00Z' } }));
  t.false(isUninstall({ metadata: {} }));
});
