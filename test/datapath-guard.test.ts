// The datapath's guards: no attaching to the machine's root cgroup, clear errors without privileges.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkAttachTarget, findCgroup2Mount, parseCgroup2Mount } from '../src/datapath/cgroup2.ts';
import { requireRoot } from './helpers/root.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

test('cgroup2 mount comes from mountinfo, on hybrid and pure v2 hosts', (t) => {
  const hybrid = [
    '30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755',
    '31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate',
    '32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory',
  ].join('\n');
  t.is(parseCgroup2Mount(hybrid), '/sys/fs/cgroup/unified');
  t.is(parseCgroup2Mount('35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw'), '/sys/fs/cgroup');
  t.is(parseCgroup2Mount('32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory'), undefined);
});

test('attaching to the machine root cgroup is refused unless explicitly allowed', (t) => {
  const mount = findCgroup2Mount();
  const err = t.throws(() => checkAttachTarget(mount, { mount }));
  t.regex(err!.message, /refusing to attach to the machine's root cgroup.*--allow-root-cgroup/);
  t.is(checkAttachTarget(mount, { mount, allowRootCgroup: true }), mount);
  t.regex(t.throws(() => checkAttachTarget('/tmp', { mount }))!.message, /not inside the cgroup2 mount/);
  t.regex(t.throws(() => checkAttachTarget(path.join(mount, 'no-such-pods-root'), { mount }))!.message, /does not exist/);
});

test('loading BPF without privileges fails with an error naming the fix', (t) => {
  requireRoot(t); // we need root to drop to nobody
  const script = `
    import { loadAddon } from ${JSON.stringify(path.join(root, 'src/datapath/addon.ts'))};
    const { Datapath } = loadAddon();
    try { new Datapath().load(); console.log(JSON.stringify({ ok: true })); }
    catch (e) { console.log(JSON.stringify({ message: e.message, code: e.code, errno: e.errno })); }`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { uid: 65534, gid: 65534, encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim());
  t.is(out.code, 'EPERM');
  t.is(out.message.split('\n')[0], 'loading BPF failed: operation not permitted; run as root or grant CAP_BPF and CAP_NET_ADMIN (and CAP_SYS_RESOURCE on kernels before 5.11)');
});
