// `mesh-agent run --config`: the ConfigMap `install` writes, read back the way kubelet mounts it,
// and the precedence flag > config > environment > default.
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { stringify } from 'yaml';
import { installManifests } from '../src/k8s/manifests.ts';
import { parseAgentConfig, parseMs, readConfigSource, resolveRunSettings, type RunFlags } from '../src/cli/run-config.ts';
import { runCli } from './fixtures/manifests/run-cli.ts';
import { mountConfigMap as mountConfigMapAt } from './helpers/configmap-volume.ts';
import { ownedTempPrefix } from '../src/sim/layout.ts';

const tmp = fs.mkdtempSync(ownedTempPrefix('test'));
test.after.always(() => fs.rmSync(tmp, { recursive: true, force: true }));
let seq = 0;

const mountConfigMap = (data: Record<string, string>) => mountConfigMapAt(path.join(tmp, `mount-${++seq}`), data);

const configMapOf = (objs: any[]) => objs.find((o) => o.kind === 'ConfigMap');
const none = () => false;
const cli = (...flags: Array<keyof RunFlags>) => (f: keyof RunFlags) => flags.includes(f);

test('the ConfigMap install prints, mounted as kubelet does, gives the agent its settings', (t) => {
  const cm = configMapOf(installManifests({ namespace: 'mesh', proxyPort: 16001, adminPort: 5191, controllerPort: 9000, skipOutboundPorts: '3306,22', cgroupRoot: '/sys/fs/cgroup/kubepods' }) as any[]);
  const dir = mountConfigMap(cm.data);
  const raw = readConfigSource(dir);
  t.deepEqual(Object.keys(raw).sort(), Object.keys(cm.data).sort(), 'kubelet\'s ..data entries are not keys');
  const { config, warnings } = parseAgentConfig(raw, `--config ${dir}`);
  t.deepEqual(warnings, []);
  t.deepEqual(config, {
    proxyPort: 16001, adminPort: 5191, controllerUrl: 'http://mesh-agent-controller.mesh.svc:9000', skipOutboundPorts: '22,3306', cgroupRoot: '/sys/fs/cgroup/kubepods',
    inboundPort: 15006, defaultInboundPolicy: 'all-unauthenticated', clusterNetworks: '10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16', proxyWorkers: 'auto',
  });
  const s = resolveRunSettings({ admin: '0.0.0.0:4191', skipOutboundPorts: '' }, none, config, { NODE_IP: '10.0.0.7' });
  t.deepEqual(s, {
    proxy: { host: '10.0.0.7', port: 16001 },
    admin: { host: '0.0.0.0', port: 5191 },
    cgroupRoot: '/sys/fs/cgroup/kubepods',
    skipOutboundPorts: '22,3306',
    controllerUrl: 'http://mesh-agent-controller.mesh.svc:9000',
    inbound: { host: '10.0.0.7', port: 15006 },
    defaultInboundPolicy: 'all-unauthenticated',
    clusterNetworks: '10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16',
    proxyWorkers: 'auto',
  });
  const pinned = configMapOf(installManifests({ proxyWorkers: '3' }) as any[]).data;
  t.is(parseAgentConfig(readConfigSource(mountConfigMap(pinned)), 'c').config.proxyWorkers, 3, 'install --proxy-workers 3 reaches the agent');
});

test('a YAML file: a ConfigMap object or a plain map of keys; numbers are accepted', (t) => {
  const cmFile = path.join(tmp, 'cm.yaml');
  fs.writeFileSync(cmFile, stringify(configMapOf(installManifests() as any[])));
  t.is(readConfigSource(cmFile)['cgroup-root'], '/sys/fs/cgroup/kubepods.slice');
  const plain = path.join(tmp, 'plain.yaml');
  fs.writeFileSync(plain, 'proxy-port: 15002\nskip-outbound-ports: "22"\n');
  t.deepEqual(parseAgentConfig(readConfigSource(plain), 'x').config, { proxyPort: 15002, skipOutboundPorts: '22' });
  const empty = path.join(tmp, 'empty.yaml');
  fs.writeFileSync(empty, '');
  t.deepEqual(readConfigSource(empty), {});
});

test('precedence: a flag given on the command line, then the config, then NODE_IP and the defaults', (t) => {
  const config = { proxyPort: 16001, adminPort: 5191, cgroupRoot: '/cg/from-config', skipOutboundPorts: '22', controllerUrl: 'http://ctl:1' };
  const flags: RunFlags = { proxyAddr: '10.1.1.1:17001', admin: '127.0.0.1:6000', cgroupRoot: '/cg/flag', skipOutboundPorts: '80', controller: 'other:2' };
  const all = resolveRunSettings(flags, cli('proxyAddr', 'admin', 'cgroupRoot', 'skipOutboundPorts', 'controller'), config, { NODE_IP: '10.0.0.7' });
  t.like(all, { proxy: { host: '10.1.1.1', port: 17001 }, admin: { host: '127.0.0.1', port: 6000 }, cgroupRoot: '/cg/flag', skipOutboundPorts: '80', controllerUrl: 'http://other:2', inbound: { host: '10.1.1.1', port: 15006 } });
  // A flag's built-in default (commander fills admin and skipOutboundPorts) does not hide the config.
  const cfg = resolveRunSettings({ admin: '0.0.0.0:4191', skipOutboundPorts: '' }, none, config, { NODE_IP: '10.0.0.7' });
  t.deepEqual([cfg.proxy.port, cfg.admin.port, cfg.cgroupRoot, cfg.skipOutboundPorts], [16001, 5191, '/cg/from-config', '22']);
  const defaults = resolveRunSettings({ admin: '0.0.0.0:4191', skipOutboundPorts: '' }, none, {}, { NODE_IP: '10.0.0.7' });
  t.deepEqual(defaults, {
    proxy: { host: '10.0.0.7', port: 15001 }, admin: { host: '0.0.0.0', port: 4191 }, cgroupRoot: undefined, skipOutboundPorts: '', controllerUrl: undefined,
    inbound: { host: '10.0.0.7', port: 15006 }, defaultInboundPolicy: 'all-unauthenticated', clusterNetworks: '10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16', proxyWorkers: 'auto',
  });
  // Proxies: flag over config over auto.
  t.is(resolveRunSettings({}, none, { proxyWorkers: 4 }, { NODE_IP: '10.0.0.7' }).proxyWorkers, 4);
  t.is(resolveRunSettings({ proxyWorkers: '2' }, cli('proxyWorkers'), { proxyWorkers: 4 }, { NODE_IP: '10.0.0.7' }).proxyWorkers, 2);
  t.is(resolveRunSettings({ proxyWorkers: 'auto' }, cli('proxyWorkers'), { proxyWorkers: 4 }, { NODE_IP: '10.0.0.7' }).proxyWorkers, 'auto');
  // The inbound settings: flag over config over default; off turns capture off.
  const inb = { inboundPort: 16006, defaultInboundPolicy: 'deny' as const, clusterNetworks: '10.244.0.0/16' };
  t.like(resolveRunSettings({}, none, inb, { NODE_IP: '10.0.0.7' }), { inbound: { host: '10.0.0.7', port: 16006 }, defaultInboundPolicy: 'deny', clusterNetworks: '10.244.0.0/16' });
  t.like(resolveRunSettings({ inboundAddr: '10.0.0.8:17006', defaultInboundPolicy: 'all-authenticated', clusterNetworks: '10.0.0.0/8' }, cli('inboundAddr', 'defaultInboundPolicy', 'clusterNetworks'), inb, { NODE_IP: '10.0.0.7' }),
    { inbound: { host: '10.0.0.8', port: 17006 }, defaultInboundPolicy: 'all-authenticated', clusterNetworks: '10.0.0.0/8' });
  t.is(resolveRunSettings({ inboundAddr: 'off' }, cli('inboundAddr'), {}, { NODE_IP: '10.0.0.7' }).inbound, null);
  t.is(resolveRunSettings({}, none, { inboundPort: 0 }, { NODE_IP: '10.0.0.7' }).inbound, null, 'inbound-port: off in the ConfigMap');
  t.throws(() => resolveRunSettings({ defaultInboundPolicy: 'open' }, cli('defaultInboundPolicy'), {}, { NODE_IP: '10.0.0.7' }), { message: /--default-inbound-policy: "open" is not a policy; use one of all-unauthenticated/ });
  t.throws(() => resolveRunSettings({}, none, config, {}), { message: /no proxy address: pass --proxy-addr IP:PORT or set NODE_IP/ });
});

test('bad values: the error names the source, the key and the value', (t) => {
  const bad: Array<[Record<string, string>, RegExp]> = [
    [{ 'proxy-port': 'abc' }, /^--config \/etc\/x: key proxy-port: "abc" is not a port \(1-65535\)$/],
    [{ 'admin-port': '70000' }, /key admin-port: "70000" is not a port/],
    [{ 'skip-outbound-ports': '1-2-3' }, /key skip-outbound-ports: "1-2-3": .*invalid port list/],
    [{ 'cgroup-root': 'kubepods.slice' }, /key cgroup-root: "kubepods.slice" is not an absolute path/],
    [{ 'controller-addr': 'ctl:99999' }, /key controller-addr ctl:99999: the port must be 1-65535/],
    [{ 'controller-addr': 'ftp://ctl:21' }, /key controller-addr ftp:\/\/ctl:21: only http:\/\/ .*; pass HOST:PORT or http:\/\/HOST:PORT/],
    [{ 'default-inbound-policy': 'allow-all' }, /--config \/etc\/x: key default-inbound-policy: "allow-all" is not a policy; use one of all-unauthenticated/],
    [{ 'cluster-networks': '10.0.0.0/40' }, /key cluster-networks: "10.0.0.0\/40" is not an IPv4 network/],
    [{ 'inbound-port': '0' }, /key inbound-port: "0" is not a port/],
    [{ 'proxy-workers': '0' }, /^--config \/etc\/x: key proxy-workers: "0" is not a number of proxies; give a whole number from 1 to 1024, or auto/],
    [{ 'proxy-workers': 'two' }, /key proxy-workers: "two" is not a number of proxies/],
  ];
  for (const [raw, re] of bad) t.throws(() => parseAgentConfig(raw, '--config /etc/x'), { message: re }, JSON.stringify(raw));
  t.deepEqual(parseAgentConfig({ 'proxy-prot': '1' }, 'c').warnings, ['c: unknown key proxy-prot ignored; known keys: proxy-port, admin-port, controller-addr, skip-outbound-ports, cgroup-root, identity-addr, inbound-port, default-inbound-policy, cluster-networks, proxy-workers']);
  t.deepEqual(parseAgentConfig({ 'controller-addr': ' http://ctl.example:9000/ \n', 'cgroup-root': '' }, 'c').config, { controllerUrl: 'http://ctl.example:9000' });
  t.throws(() => readConfigSource(path.join(tmp, 'missing')), { message: /--config .*missing: no such file or directory; pass the directory the mesh-agent-config ConfigMap is mounted at/ });
  const notMap = path.join(tmp, 'list.yaml');
  fs.writeFileSync(notMap, '- a\n- b\n');
  t.throws(() => readConfigSource(notMap), { message: /expected a map of keys/ });
});

test('skip-outbound-ports holds at most the datapath\'s 16 ranges, from the config and from the flag, refused at start naming the source', (t) => {
  const many = '1,3,5,7,9,11,13,15,17,19,21,23,25,27,29,31,33';
  t.throws(() => parseAgentConfig({ 'skip-outbound-ports': many }, '--config /etc/x'), { message: /^--config \/etc\/x: key skip-outbound-ports: .*17 separate ranges, the datapath holds 16/ });
  t.throws(() => resolveRunSettings({ skipOutboundPorts: many }, (f) => f === 'skipOutboundPorts', {}, { NODE_IP: '10.0.0.7' }), { message: /--skip-outbound-ports: 17 separate ranges, the datapath holds 16/ });
  t.is(resolveRunSettings({ skipOutboundPorts: '1-16,20' }, (f) => f === 'skipOutboundPorts', {}, { NODE_IP: '10.0.0.7' }).skipOutboundPorts, '1-16,20');
});

test('https:// is refused for the controller (it serves cleartext only), from the flag and from the config, saying what to pass', (t) => {
  const fix = /the controller serves cleartext HTTP\/2 only, not TLS; pass HOST:PORT or http:\/\/HOST:PORT, e.g. mesh-agent-controller.mesh-agent.svc:8086$/;
  t.throws(() => resolveRunSettings({ proxyAddr: '10.0.0.7:15001', controller: 'https://ctl:8086' }, cli('proxyAddr', 'controller'), {}, {}), { message: new RegExp(`^--controller https://ctl:8086: ${fix.source}`) });
  t.throws(() => parseAgentConfig({ 'controller-addr': 'https://ctl.example:443/x' }, '--config /etc/x'), { message: new RegExp(`^--config /etc/x: key controller-addr https://ctl.example:443/x: ${fix.source}`) });
  t.throws(() => parseAgentConfig({ 'controller-addr': 'HTTPS://ctl:1' }, 'c'), { message: fix });
  // What the message tells the user to pass is accepted.
  t.is(resolveRunSettings({ proxyAddr: '10.0.0.7:15001', controller: 'http://ctl:8086' }, cli('proxyAddr', 'controller'), {}, {}).controllerUrl, 'http://ctl:8086');
  t.is(parseAgentConfig({ 'controller-addr': 'ctl:8086' }, 'c').config.controllerUrl, 'http://ctl:8086');
});

test('--drain (and the other duration flags) take whole milliseconds or a duration with units; anything else is refused naming the flag and an example', (t) => {
  t.is(parseMs('0', '--drain', '10s'), 0, 'no drain at all is a valid choice');
  t.is(parseMs('10000', '--drain', '10s'), 10_000, 'a bare number is milliseconds, as before');
  t.is(parseMs('2147483647', '--drain', '10s'), 2 ** 31 - 1);
  // As kubectl and linkerd take durations; "10s" was refused here while `status --timeout` took it.
  t.is(parseMs('10s', '--drain', '10s'), 10_000);
  t.is(parseMs('1m30s', '--drain', '10s'), 90_000);
  t.is(parseMs('250ms', '--detect-timeout', '1s', 1), 250);
  t.is(parseMs('0s', '--drain', '10s'), 0);
  // Each of these went through Number() before: NaN, negative, past the timer limit or an odd spelling, all a drain of ~1 ms.
  for (const bad of ['', 'abc', '10x', '-5', '1.5', '1e3', ' 100', '0x10', '2147483648', '25d', '10 s', 's']) {
    t.throws(() => parseMs(bad, '--drain', '10s'), { message: `--drain must be a duration from 0 to 24d (milliseconds, or 500ms, 10s, 1m), not ${JSON.stringify(bad)}; e.g. --drain 10s` }, bad);
  }
  t.throws(() => parseMs('0', '--detect-timeout', '1s', 1), { message: /^--detect-timeout must be a duration from 1ms to 24d/ });
  t.throws(() => parseMs('0s', '--report-interval', '5s', 1), { message: /^--report-interval must be a duration from 1ms to 24d/ });
});

test('CLI: run refuses a bad --drain at start, before touching the datapath', (t) => {
  const r = runCli(['run', '--proxy-addr', '127.0.0.1:15001', '--pods', '/nonexistent', '--drain', '10 s']);
  t.is(r.status, 1, r.stderr);
  t.is(r.stderr, 'mesh-agent: --drain must be a duration from 0 to 24d (milliseconds, or 500ms, 10s, 1m), not "10 s"; e.g. --drain 10s\n');
});

test('CLI: run refuses a --report-interval past what a timer holds (it would report every millisecond), before touching the datapath', (t) => {
  const r = runCli(['run', '--proxy-addr', '127.0.0.1:15001', '--pods', '/nonexistent', '--report-interval', '3000000000']);
  t.is(r.status, 1, r.stderr);
  t.is(r.stderr, 'mesh-agent: --report-interval must be a duration from 1ms to 24d (milliseconds, or 500ms, 10s, 1m), not "3000000000"; e.g. --report-interval 5s\n');
});

test('CLI: run refuses a --proxy-workers that is neither a positive whole number nor auto, before touching the datapath', (t) => {
  for (const bad of ['0', '-1', '1.5', 'two', '2000']) {
    const r = runCli(['run', '--proxy-addr', '127.0.0.1:15001', '--pods', '/nonexistent', '--proxy-workers', bad]);
    t.is(r.status, 1, r.stderr);
    t.is(r.stderr, `mesh-agent: --proxy-workers: ${JSON.stringify(bad)} is not a number of proxies; give a whole number from 1 to 1024, or auto (one per CPU the agent may use)\n`, bad);
  }
});

test('CLI: run refuses a bad config before touching the datapath, naming key and value', (t) => {
  const dir = mountConfigMap({ 'proxy-port': '99999' });
  const r = runCli(['run', '--config', dir, '--pods', '/nonexistent']);
  t.is(r.status, 1);
  t.regex(r.stderr, /key proxy-port: "99999" is not a port \(1-65535\)/);
});
