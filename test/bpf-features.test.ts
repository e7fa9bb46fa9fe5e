// The BPF feature probe behind `mesh-agent status`: the addon's probes on this kernel, checked
// against bpftool's own probe, and the pure assessment (required, missing, fixes, health).
import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { assessFeatures, missingRequired, NEEDS, probeFeatures, type Feature } from '../src/datapath/features.ts';
import type { RawFeatureProbe } from '../src/datapath/addon.ts';
import { assessHealth } from '../src/agent/health.ts';
import { render } from '../src/cli/status.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const allOk: RawFeatureProbe[] = Object.keys(NEEDS).map((k) => {
  const [kind, name] = k.split(':') as [RawFeatureProbe['kind'], string];
  return { kind, name, result: 1 };
});
const env = { kernel: '6.1.0', btf: true, cgroup2: '/sys/fs/cgroup' };
const find = (fs: Feature[], kind: string, name: string) => fs.find((f) => f.kind === kind && f.name === name)!;

test('this kernel, probed by the addon, agrees with bpftool feature probe', (t) => {
  if (process.getuid?.() !== 0) return t.fail('needs root and BPF; run the suite as root: sudo ./dev test');
  const features = probeFeatures(os.release());
  const bt = JSON.parse(execFileSync('bpftool', ['-j', 'feature', 'probe', 'kernel'], { encoding: 'utf8' }));
  const expected: Record<string, boolean> = {
    'program:cgroup_sock_addr': bt.program_types.have_cgroup_sock_addr_prog_type,
    'program:sock_ops': bt.program_types.have_sock_ops_prog_type,
    'map:hash': bt.map_types.have_hash_map_type,
    'map:array': bt.map_types.have_array_map_type,
    'map:lru_hash': bt.map_types.have_lru_hash_map_type,
    'map:percpu_array': bt.map_types.have_percpu_array_map_type,
    'program:sk_skb': bt.program_types.have_sk_skb_prog_type,
    'map:sockhash': bt.map_types.have_sockhash_map_type,
    'helper:sk_redirect_hash': bt.helpers.sk_skb_available_helpers.includes('bpf_sk_redirect_hash'),
    'helper:get_current_ancestor_cgroup_id': bt.helpers.cgroup_sock_addr_available_helpers.includes('bpf_get_current_ancestor_cgroup_id'),
    'helper:get_socket_cookie': bt.helpers.cgroup_sock_addr_available_helpers.includes('bpf_get_socket_cookie'),
    'helper:sock_ops_cb_flags_set': bt.helpers.sock_ops_available_helpers.includes('bpf_sock_ops_cb_flags_set'),
  };
  for (const [key, want] of Object.entries(expected)) {
    const [kind, name] = key.split(':') as [string, string];
    t.is(find(features, kind, name).status, want ? 'ok' : 'missing', key);
  }
  // bpftool does not probe attach types; the datapath attaching in the e2e tests is the proof.
  for (const a of ['connect4', 'connect6', 'getpeername4', 'getpeername6']) t.is(find(features, 'attach', a).status, 'ok', a);
  t.is(find(features, 'fs', 'cgroup2').status, 'ok');
  t.deepEqual(missingRequired(features), []);
});

test('without the right to load programs, features are unknown (not missing) and say why', (t) => {
  if (process.getuid?.() !== 0) return t.fail('needs root to drop to an unprivileged user');
  const code = `import { probeFeatures } from ${JSON.stringify(path.join(root, 'src/datapath/features.ts'))};
process.stdout.write(JSON.stringify(probeFeatures('x')));`;
  const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', process.execPath, '--input-type=module', '-e', code], { encoding: 'utf8', cwd: root });
  t.is(r.status, 0, r.stderr);
  const features: Feature[] = JSON.parse(r.stdout);
  const bpf = features.filter((f) => ['program', 'attach', 'map', 'helper'].includes(f.kind));
  t.true(bpf.length >= 15);
  for (const f of bpf) {
    t.is(f.status, 'unknown', `${f.kind} ${f.name}`);
    t.is(f.note, 'could not probe: EPERM');
    t.regex(f.fix!, /as root or with CAP_BPF/);
  }
  t.deepEqual(missingRequired(features), [], 'unknown is not missing: status does not call the kernel broken');
});

test('a missing required feature names the kernel, the release that has it, and the fix', (t) => {
  const raw = allOk.map((r) => (r.name === 'getpeername4' ? { ...r, result: 0 } : r.name === 'sockhash' ? { ...r, result: 0 } : r));
  const fs = assessFeatures(raw, { ...env, kernel: '5.4.0-generic' });
  const gp = find(fs, 'attach', 'getpeername4');
  t.is(gp.status, 'missing');
  t.true(gp.required);
  t.is(gp.note, 'giving the app its original peer back; not in kernel 5.4.0-generic (Linux 5.8+)');
  t.regex(gp.fix!, /Linux 5\.8 or newer/);
  const sm = find(fs, 'map', 'sockhash');
  t.is(sm.status, 'missing');
  t.false(sm.required, 'only --kernel-splice needs it');
  t.deepEqual(missingRequired(fs), [`attach getpeername4 (${gp.note}): ${gp.fix}`], 'an optional feature is not required');
});

test('host facts: BTF is optional, the cgroup2 mount is required; a feature the addon did not probe is unknown', (t) => {
  const fs = assessFeatures(allOk.filter((r) => r.name !== 'sock_ops'), { ...env, btf: false, cgroup2: null });
  t.like(find(fs, 'btf', 'vmlinux'), { status: 'missing', required: false });
  t.like(find(fs, 'fs', 'cgroup2'), { status: 'missing', required: true });
  t.regex(find(fs, 'fs', 'cgroup2').fix!, /unified_cgroup_hierarchy/);
  t.like(find(fs, 'program', 'sock_ops'), { status: 'unknown', note: 'not probed by this addon build' });
  t.is(missingRequired(fs).length, 1);
  t.like(find(assessFeatures(allOk, env), 'fs', 'cgroup2'), { status: 'ok', note: 'mounted at /sys/fs/cgroup' });
});

test('status: a missing required feature is degraded with reason and fix; the table lists every feature', (t) => {
  const status = {
    version: '0.1.0', node: 'n1', uptimeSeconds: 5, kernel: '5.4.0',
    features: assessFeatures(allOk.map((r) => (r.name === 'get_current_ancestor_cgroup_id' ? { ...r, result: 0 } : r)), { ...env, kernel: '5.4.0' }),
    datapath: { cgroup: '/sys/fs/cgroup/kubepods.slice', programs: [{ section: 'cgroup/connect4', id: 7, attachedTo: '/sys/fs/cgroup/kubepods.slice' }], maps: [], counters: {} },
    proxy: { listen: '10.0.0.1:15001', open: 0, accepted: 0, refusedNoRecord: 0, refusedOverCap: 0, byProtocol: {} },
    pods: [],
    recentErrors: [],
  };
  const h = assessHealth(status);
  t.false(h.healthy);
  t.deepEqual(h.reasons, ['BPF feature missing: helper get_current_ancestor_cgroup_id (finding the pod of a socket under any kubelet cgroup layout; not in kernel 5.4.0 (Linux 5.7+)); fix: run a kernel of Linux 5.8 or newer built with CONFIG_BPF_SYSCALL and CONFIG_CGROUP_BPF']);
  const out = render(status, h);
  t.regex(out, /STATUS: degraded\n {2}- BPF feature missing: helper get_current_ancestor_cgroup_id/);
  t.regex(out, /BPF FEATURES\nKIND +NAME +STATUS +REQUIRED +NOTE\n/);
  t.regex(out, /helper +get_current_ancestor_cgroup_id +missing +yes +finding the pod .*; fix: run a kernel/);
  t.regex(out, /attach +getpeername4 +ok +yes +giving the app its original peer back/);
  t.regex(out, /map +sockhash +ok +no +--kernel-splice: /);
  t.regex(out, /program +sk_skb +ok +no +--kernel-splice: the stream verdict/);
  t.true(assessHealth({ ...status, features: assessFeatures(allOk, env) }).healthy);
});

test('--kernel-splice needs the sk_skb stream verdict, the sockhash and its redirect helper: required only with it, degraded when missing', (t) => {
  const splice = ['program:sk_skb', 'map:sockhash', 'helper:sk_redirect_hash'];
  t.deepEqual(Object.entries(NEEDS).filter(([, n]) => n.required === 'kernel-splice').map(([k]) => k).sort(), [...splice].sort());
  t.false(Object.values(NEEDS).some((n) => /not used yet/.test(n.for)), 'nothing is described as unused');
  const status = (features: Feature[]) => ({ features, datapath: { programs: [{ section: 'cgroup/connect4', attachedTo: '/cg' }], maps: [], counters: {} }, pods: [] });
  const noSkSkb = allOk.map((r) => (r.kind === 'program' && r.name === 'sk_skb' ? { ...r, result: 0 } : r));

  // Without --kernel-splice nothing loads them: not required, and a kernel without them is healthy.
  const off = assessFeatures(noSkSkb, { ...env, kernel: '4.13.0' });
  for (const k of splice) t.false(find(off, ...(k.split(':') as [string, string])).required, k);
  t.like(find(off, 'program', 'sk_skb'), { status: 'missing', fix: 'none needed without --kernel-splice' });
  t.true(assessHealth(status(off)).healthy);
  t.deepEqual(missingRequired(off), []);

  // With it, all three are required; sk_skb missing is degraded, naming the flag in the fix.
  const on = assessFeatures(noSkSkb, { ...env, kernel: '4.13.0' }, { kernelSplice: true });
  for (const k of splice) t.true(find(on, ...(k.split(':') as [string, string])).required, k);
  const sk = find(on, 'program', 'sk_skb');
  t.is(sk.note, '--kernel-splice: the stream verdict that moves spliced sockets\' bytes in the kernel; not in kernel 4.13.0 (Linux 4.14+)');
  t.is(sk.fix, 'run without --kernel-splice (the proxy then copies the bytes), or a kernel of Linux 4.14 or newer built with CONFIG_BPF_STREAM_PARSER');
  const h = assessHealth(status(on));
  t.false(h.healthy);
  t.deepEqual(h.reasons, [`BPF feature missing: program sk_skb (${sk.note}); fix: ${sk.fix}`]);
  t.true(assessHealth(status(assessFeatures(allOk, env, { kernelSplice: true }))).healthy);
  // An addon build that does not probe them: unknown, and still required with the flag.
  const old = assessFeatures(allOk.filter((r) => r.name !== 'sk_skb'), env, { kernelSplice: true });
  t.like(find(old, 'program', 'sk_skb'), { status: 'unknown', required: true, fix: 'rebuild the addon: ./dev setup' });
});

test('this kernel has what --kernel-splice needs, as the addon probes it, and the agent asks for it only with the flag', (t) => {
  if (process.getuid?.() !== 0) return t.fail('needs root and BPF; run the suite as root: sudo ./dev test');
  const on = probeFeatures(os.release(), { kernelSplice: true });
  for (const [kind, name] of [['program', 'sk_skb'], ['map', 'sockhash'], ['helper', 'sk_redirect_hash']] as const) {
    t.like(find(on, kind, name), { status: 'ok', required: true }, `${kind} ${name}`);
    t.false(find(probeFeatures(os.release()), kind, name).required, `${kind} ${name} without the flag`);
  }
});
