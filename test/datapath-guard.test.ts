// The datapath's guards: no attaching to the machine's root cgroup, clear errors without privileges.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkAttachTarget, findCgroup2Mount } from '../src/datapath/cgroup2.ts';
import { requireRoot } from './helpers/root.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

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
