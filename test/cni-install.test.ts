// The CNI plugin's install on a node (src/cni/install.ts, `mesh-agent cni-install`): the entry
// chained after the network plugin (a single plugin's .conf becomes a .conflist), put back when
// the network plugin rewrites the file, taken out on uninstall; the installed files run as a CNI
// plugin on their own (Node.js and the plugin's modules copied beside the script).
import test from 'ava';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { cniInstalled } from '../src/cni/install.ts';
import { installOnce, isUninstall, uninstall, wrapperScript } from '../src/cli/cni-install.ts';
import { parseConfList, pickConfFile } from '../src/cni/conflist.ts';

function dirs(t: any) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cni-install-'));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  const p = { confDir: path.join(root, 'net.d'), binDir: path.join(root, 'bin'), agentSocket: path.join(root, 'cni.sock'), stateFile: path.join(root, 'state', 'cni-state.json') };
  fs.mkdirSync(p.confDir);
  return p;
}

const calico = { cniVersion: '0.3.1', name: 'k8s-pod-network', type: 'calico', ipam: { type: 'calico-ipam' } };

test('install chains our entry after the network plugin (a .conf becomes a .conflist), once; a rewrite is noticed; uninstall takes everything out', (t) => {
  const p = dirs(t);
  t.throws(() => installOnce(p), { message: /no CNI configuration in .*net.d yet: the network plugin .* writes it when it starts/ });
  fs.writeFileSync(path.join(p.confDir, '10-calico.conf'), JSON.stringify(calico));
  fs.writeFileSync(path.join(p.confDir, '99-other.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'other', plugins: [{ type: 'bridge' }] }));
  const file = installOnce(p);
  t.is(path.basename(file), '10-calico.conflist');
  t.deepEqual(fs.readdirSync(p.confDir).sort(), ['10-calico.conflist', '99-other.conflist']);
  t.is(pickConfFile(fs.readdirSync(p.confDir)), '10-calico.conflist', 'the runtime still reads the network plugin\'s file first');
  const list = parseConfList(fs.readFileSync(file, 'utf8'), file);
  t.deepEqual(list.plugins, [{ type: 'calico', ipam: { type: 'calico-ipam' } }, { type: 'mesh-agent-cni', agentSocket: p.agentSocket, stateFile: p.stateFile }]);
  t.is(list.cniVersion, '0.3.1');
  installOnce(p);
  t.is(parseConfList(fs.readFileSync(file, 'utf8'), file).plugins.filter((x) => x.type === 'mesh-agent-cni').length, 1, 'installing again keeps one entry');
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

test('the installed files run as a CNI plugin on their own: Node.js and the plugin\'s modules beside the script', async (t) => {
  const p = dirs(t);
  fs.writeFileSync(path.join(p.confDir, '10-calico.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'k8s', plugins: [{ type: 'calico' }] }));
  installOnce(p);
  const exe = path.join(p.binDir, 'mesh-agent-cni');
  t.is(fs.readFileSync(exe, 'utf8'), wrapperScript());
  t.is(fs.statSync(exe).mode & 0o777, 0o755);
  const run = (env: Record<string, string>, stdin: string) => new Promise<{ code: number; stdout: string }>((resolve) => {
    // No PATH to a Node.js of the host: the script brings its own.
    const c = execFile(exe, [], { env: { PATH: '/usr/bin:/bin', ...env } }, (err, stdout) => resolve({ code: err ? Number((err as any).code) : 0, stdout }));
    c.stdin!.end(stdin);
  });
  const v = await run({ CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.0.0"}');
  t.is(v.code, 0);
  t.true(JSON.parse(v.stdout).supportedVersions.includes('1.0.0'));
  // ADD with no agent and no state file: the pod starts, its previous result handed back.
  const prev = { cniVersion: '1.0.0', ips: [{ address: '10.1.2.3/32' }] };
  const add = await run({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c', CNI_ARGS: 'K8S_POD_NAMESPACE=a;K8S_POD_NAME=b' }, JSON.stringify({ cniVersion: '1.0.0', name: 'k8s', type: 'mesh-agent-cni', agentSocket: p.agentSocket, stateFile: p.stateFile, prevResult: prev }));
  t.is(add.code, 0, add.stdout);
  t.deepEqual(JSON.parse(add.stdout), prev);
});

test('SIGTERM uninstalls only when the DaemonSet is gone or being deleted (a rolling update keeps the plugin)', (t) => {
  t.true(isUninstall(null));
  t.true(isUninstall({ metadata: { deletionTimestamp: '2026-12-01T05:00:00Z' } }));
  t.false(isUninstall({ metadata: {} }));
});
