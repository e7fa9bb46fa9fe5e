// Certificate rotation under load (issue 14): workload certificates living 2 minutes (renewed
// at half life, so every ~75 s) on a simulated 2-node cluster, while a meshed pod calls a meshed
// pod of the other node for 5 minutes, at a steady rate, over one keep-alive connection and over
// a new connection per request. Zero failed requests, and both nodes' certificates rotated
// several times, the first ones expiring during the run. Runs about 6 minutes, in its own file.
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import { createCluster, SERVICE_TOOLS_PATH, type SimCluster, type SimPod } from '../src/sim/index.ts';
import { startMesh, type ClusterMesh } from '../src/sim/mesh.ts';
import { JsonLines } from './helpers/procs.ts';
import { until } from './helpers/until.ts';

const NS = 'shop';
const LIFETIME = '2m';
const RUN_MS = 5 * 60_000;
const RPS = 25;
let cluster: SimCluster | undefined;
let mesh: ClusterMesh | undefined;
let web: SimPod;
let db: SimPod;
const children: ChildProcess[] = [];

test.before(async () => {
  if (process.getuid?.() !== 0) return;
  cluster = await createCluster({ nodes: 2 });
  cluster.addNamespace(NS, { 'mesh-agent.io/inject': 'enabled' });
  web = await cluster.addPod(0, { name: 'web', namespace: NS, serviceAccountName: 'web' });
  db = await cluster.addPod(1, { name: 'db', namespace: NS, serviceAccountName: 'db' });
  const b = db.spawn(process.execPath, [SERVICE_TOOLS_PATH, 'backend', '--name', 'db', '--http', '8080'], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(b);
  await new JsonLines(b).waitFor((o) => o.listening, 30_000, 'db listening');
  await cluster.settled();
  mesh = await startMesh(cluster, { identity: { certificateLifetime: LIFETIME } });
  await mesh.waitAgents((s) => s.discovery.pods >= 2 && s.identity?.certificates?.length > 0 && s.identity.certificates.every((c: any) => c.state === 'ready'), 'certificates');
});

test.after.always(async () => {
  for (const c of children) c.kill('SIGKILL');
  await mesh?.stop();
  await cluster?.destroy();
});

/** A paced load in the web pod until stopped; its ticks say what finished. */
function load(args: string[]) {
  const proc = web.spawn(process.execPath, [SERVICE_TOOLS_PATH, 'load', '--http', `${db.ip}:8080`, '--rps', String(RPS), ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(proc);
  const io = new JsonLines(proc);
  return {
    async stop() {
      proc.stdin!.end();
      await io.waitFor((o) => o.stopped, 30_000, 'the load to stop');
      let ok = 0;
      let failures = 0;
      const errors: Record<string, number> = {};
      for (const o of io.lines) if (o.tick) {
        ok += Object.values<number>(o.tick.byName).reduce((a, b) => a + b, 0);
        failures += o.tick.failures;
        for (const [k, v] of Object.entries<number>(o.tick.errors)) errors[k] = (errors[k] ?? 0) + v;
      }
      return { ok, failures, errors };
    },
  };
}

test('5 minutes of calls across nodes while 2-minute certificates rotate: no request fails', async (t) => {
  if (!cluster || !mesh) throw new Error('no cluster: this test builds network namespaces, cgroups, nftables rules and loads BPF; run it as root (sudo ./dev test)');
  t.timeout(RUN_MS + 3 * 60_000);
  const c = cluster;
  const m = mesh;
  const serials = new Map<string, Set<string>>();
  const expiries = new Map<string, number>();
  const sample = async () => {
    for (const node of c.nodes) {
      const s = await m.agentStatus(node);
      for (const cert of s.identity.certificates) {
        if (!serials.has(cert.identity)) serials.set(cert.identity, new Set());
        if (cert.serial) serials.get(cert.identity)!.add(cert.serial);
        if (!expiries.has(cert.identity) && cert.notAfter) expiries.set(cert.identity, Date.parse(cert.notAfter));
      }
    }
  };
  await sample();
  const keepAlive = load([]);
  const fresh = load(['--new-connections']);
  const start = Date.now();
  // Sampled every 5 s, well inside a certificate's 75 s between renewals, so no serial is missed.
  while (Date.now() - start < RUN_MS) {
    await new Promise((r) => setTimeout(r, 5000));
    await sample();
  }
  const [a, b] = await Promise.all([keepAlive.stop(), fresh.stop()]);
  t.log(`keep-alive: ${a.ok} ok; new connection per request: ${b.ok} ok; serials per identity: ${[...serials].map(([id, s]) => `${id.split('/').pop()}=${s.size}`).join(', ')}`);
  t.is(a.failures, 0, JSON.stringify(a.errors));
  t.is(b.failures, 0, JSON.stringify(b.errors));
  // The loads ran all along (an open loop at RPS: most of the requests the run had room for).
  for (const r of [a, b]) t.true(r.ok >= RPS * (RUN_MS / 1000) * 0.8, `${r.ok} requests answered`);
  for (const id of ['spiffe://cluster.local/ns/shop/sa/web', 'spiffe://cluster.local/ns/shop/sa/db']) {
    t.true((serials.get(id)?.size ?? 0) >= 4, `${id} rotated: ${serials.get(id)?.size} serials seen`);
    t.true(expiries.get(id)! < Date.now(), `${id}'s first certificate expired during the run`);
  }
  const st = await m.agentStatus(c.nodes[0]!);
  t.true(st.identity.tunnels.client.connectionsOpened > 1, 'renewed certificates opened new tunnel connections');
  await until(() => m.agentStatus(c.nodes[1]!), (s) => Object.keys(s.identity.tunnels.server.refusedClients).length === 0, 'no handshake refused', { ms: 1000 });
});
