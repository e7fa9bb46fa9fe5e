// The controller's discovery hub with in-memory streams: snapshot then deltas, nothing for an
// unchanged record, relists as diffs, a snapshot read slowly while the world changes still ends
// in the right world, a slow live agent is closed at the bound (and only it), problems are
// logged once, snapshots are shared.
import test from 'ava';
import { PassThrough } from 'node:stream';
import { DiscoveryHub, prepare, RESET_LINE, SYNCED_LINE } from '../src/discovery/hub.ts';
import { DiscoveryStore } from '../src/discovery/store.ts';
import { parseMessage } from '../src/discovery/model.ts';
import { readLines } from '../src/controller/lines.ts';
import { waitFor } from './helpers/until.ts';

type Obj = Record<string, any>;

const svc = (name: string, ip: string, o: Obj = {}): Obj => ({ kind: 'Service', metadata: { name, namespace: 'shop', ...o.metadata }, spec: { clusterIP: ip, ports: [{ name: 'http', port: 80, targetPort: 8080 }] } });
const slice = (name: string, service: string, ips: string[]): Obj => ({
  kind: 'EndpointSlice', metadata: { name, namespace: 'shop', labels: { 'kubernetes.io/service-name': service } }, addressType: 'IPv4',
  ports: [{ name: 'http', port: 8080 }], endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true } })),
});
const pod = (name: string, ip: string, phase = 'Running'): Obj => ({ kind: 'Pod', metadata: { name, namespace: 'shop' }, spec: { nodeName: 'n1' }, status: { phase, podIP: ip } });

/** An agent's end: every line parsed and applied to a real DiscoveryStore. */
class Reader {
  readonly lines: string[] = [];
  readonly store = new DiscoveryStore();
  readonly out: PassThrough;
  closed: string | null = null;
  constructor(hwm = 16 * 1024, read = true) {
    this.out = new PassThrough({ highWaterMark: hwm });
    if (read) this.start();
  }
  start() {
    readLines(this.out, (l) => {
      this.lines.push(l);
      this.store.apply(parseMessage(l));
    }, () => {
      throw new Error('line too long');
    });
  }
  get types() {
    return this.lines.map((l) => JSON.parse(l).type + (JSON.parse(l).op ? `:${JSON.parse(l).op}` : ''));
  }
}

function hubWithLog() {
  const logs: string[] = [];
  const hub = new DiscoveryHub({ log: (_l, m) => logs.push(m), chunkBytes: 512 });
  return { hub, logs };
}

function subscribe(hub: DiscoveryHub, r: Reader, agentId = 'a1') {
  return hub.subscribe(r.out, { node: 'n1', agentId }, (why) => {
    r.closed = why;
    r.out.destroy();
  });
}

const turn = () => new Promise((r) => setImmediate(r));

test('an agent waits for the source to sync, then gets reset, the world and synced; then only what changed', async (t) => {
  const { hub } = hubWithLog();
  const r = new Reader();
  subscribe(hub, r);
  hub.upsert('service', svc('web', '10.96.0.10'));
  hub.upsert('slice', slice('web-a', 'web', ['10.1.0.5', '10.1.0.6']));
  hub.upsert('pod', pod('web-1', '10.1.0.5'));
  await turn();
  t.deepEqual(r.lines, [], 'nothing before the source has a whole world');
  hub.markSynced();
  await waitFor(() => r.store.synced);
  t.is(r.lines[0], RESET_LINE);
  t.is(r.lines.at(-1), SYNCED_LINE);
  t.deepEqual(r.store.byVip('10.96.0.10', 80)!.endpoints.map((e) => e.ip), ['10.1.0.5', '10.1.0.6']);
  t.is(r.store.podByIp('10.1.0.5')?.name, 'web-1');

  const n = r.lines.length;
  hub.upsert('pod', pod('web-1', '10.1.0.5')); // a status update that keeps the record: nothing
  hub.upsert('slice', slice('web-a', 'web', ['10.1.0.6']));
  hub.remove('pod', 'shop/web-1');
  hub.remove('pod', 'shop/never-was');
  await waitFor(() => r.lines.length === n + 2);
  t.deepEqual(r.types.slice(n), ['slice:set', 'pod:delete']);
  t.deepEqual(r.store.byVip('10.96.0.10', 80)!.endpoints.map((e) => e.ip), ['10.1.0.6']);
  t.is(r.store.podByIp('10.1.0.5'), undefined);
  t.like(hub.state(), { synced: true, services: 1, slices: 1, endpoints: 1, pods: 0, agents: 1, agentsLive: 1, unchanged: 1, deltas: 2 });
  // A pod that finishes is removed (its address may be reused).
  hub.upsert('pod', pod('job-1', '10.1.0.9'));
  hub.upsert('pod', pod('job-1', '10.1.0.9', 'Succeeded'));
  await waitFor(() => r.lines.length === n + 4);
  t.deepEqual(r.types.slice(n + 2), ['pod:set', 'pod:delete']);
});

test('replaceAll (a relist) sends the difference only', async (t) => {
  const { hub } = hubWithLog();
  hub.replaceAll('service', [svc('a', '10.96.0.1'), svc('b', '10.96.0.2')].map((o) => prepare('service', o)));
  hub.markSynced();
  const r = new Reader();
  subscribe(hub, r);
  await waitFor(() => r.store.synced);
  const n = r.lines.length;
  hub.replaceAll('service', [svc('b', '10.96.0.2'), svc('c', '10.96.0.3')].map((o) => prepare('service', o)));
  await waitFor(() => r.lines.length === n + 2);
  t.deepEqual(r.lines.slice(n).map((l) => JSON.parse(l)).map((m) => `${m.op}:${m.key ?? m.service.name}`).sort(), ['delete:shop/a', 'set:c']);
  t.deepEqual(r.store.services().map((s) => s.name).sort(), ['b', 'c']);
});

test('a snapshot read slowly while the world changes ends in the world as it is, and later changes follow', async (t) => {
  const { hub } = hubWithLog();
  for (let i = 0; i < 200; i++) hub.upsert('pod', pod(`p${i}`, `10.1.${i >> 8}.${i & 255}`));
  hub.upsert('service', svc('web', '10.96.0.10'));
  hub.markSynced();
  const r = new Reader(256, false); // reads nothing yet: the hub must wait on it
  subscribe(hub, r);
  await turn();
  t.true(r.out.writableLength > 0, 'the hub handed it a chunk');
  t.true(r.out.writableLength < 4096, 'and no more than a chunk or so');
  // Changes while the agent has read nothing of its snapshot: some of what it will read is stale.
  hub.remove('pod', 'shop/p0');
  hub.upsert('pod', pod('p1', '10.2.0.1'));
  hub.upsert('pod', pod('new', '10.3.0.1'));
  hub.remove('service', 'shop/web');
  hub.upsert('service', svc('api', '10.96.0.20'));
  await turn();
  r.start();
  await waitFor(() => r.store.synced);
  t.is(r.store.podByIp('10.1.0.0'), undefined, 'deleted during the snapshot');
  t.is(r.store.podByIp('10.2.0.1')?.name, 'p1', 'moved during the snapshot');
  t.is(r.store.podByIp('10.1.0.1'), undefined);
  t.is(r.store.podByIp('10.3.0.1')?.name, 'new');
  t.is(r.store.byVip('10.96.0.10', 80), null);
  t.truthy(r.store.byVip('10.96.0.20', 80));
  t.deepEqual(r.store.counts(), { services: 1, slices: 0, endpoints: 0, pods: 200, routes: 0, failedClosed: 0, access: 0 });
  hub.upsert('pod', pod('later', '10.4.0.1'));
  await waitFor(() => r.store.podByIp('10.4.0.1') !== undefined);
  t.is(hub.state().agentsLive, 1);
});

test('a live agent that stops reading is closed once its queued deltas pass the bound; the others keep theirs', async (t) => {
  const logs: string[] = [];
  const hub = new DiscoveryHub({ log: (_l, m) => logs.push(m), maxQueuedBytes: 20_000, chunkBytes: 512 });
  hub.upsert('service', svc('web', '10.96.0.10'));
  hub.markSynced();
  const slow = new Reader(1024);
  const fast = new Reader();
  subscribe(hub, slow, 'slow');
  subscribe(hub, fast, 'fast');
  await waitFor(() => slow.store.synced && fast.store.synced);
  slow.out.pause(); // stops reading
  let i = 0;
  while (slow.closed === null) {
    hub.upsert('slice', slice('web-a', 'web', [`10.1.0.${(i++ % 250) + 1}`, '10.1.1.1', '10.1.1.2', '10.1.1.3']));
    await turn();
    if (i > 2000) break;
  }
  t.regex(String(slow.closed), /agent on node n1 did not read \d+ bytes of discovery updates; closed its stream \(it reconnects and resyncs\)/);
  t.true(logs.some((l) => l.startsWith('agent on node n1 did not read')));
  t.like(hub.state(), { closedSlow: 1, agents: 1 });
  const want = `10.1.0.${((i - 1) % 250) + 1}`;
  await waitFor(() => fast.store.byVip('10.96.0.10', 80)?.endpoints.some((e) => e.ip === want) === true);
  t.pass('the reading agent has the last change');
});

test('an object\'s problems are logged once, again when they change, and counted', (t) => {
  const { hub, logs } = hubWithLog();
  const bad = (port: number, rv: string) => ({ ...slice('web-a', 'web', ['10.1.0.5', 'not-an-ip']), metadata: { name: 'web-a', namespace: 'shop', resourceVersion: rv, labels: { 'kubernetes.io/service-name': 'web' } }, ports: [{ name: 'http', port }] });
  hub.upsert('slice', bad(8080, '1'));
  hub.upsert('slice', bad(8080, '2'));
  t.deepEqual(logs, ['discovery: EndpointSlice shop/web-a: endpoint #1: address "not-an-ip" is not an IPv4 address; ignored; the rest of the object is used']);
  t.is(hub.counts().endpoints, 1, 'the good address is kept');
  hub.upsert('slice', bad(0, '3'));
  t.is(logs.length, 2);
  t.regex(logs[1]!, /port "http": port 0 is out of range 1-65535; port ignored/);
  t.is(hub.state().objectsWithProblems, 1);
  t.is(hub.state().recentProblems.length, 2);
  hub.upsert('slice', slice('web-a', 'web', ['10.1.0.5']));
  t.is(hub.state().objectsWithProblems, 0, 'fixed');
  hub.upsert('slice', bad(0, '4'));
  t.is(logs.length, 3, 'broken again: said again');
  hub.remove('slice', 'shop/web-a');
  t.is(hub.state().objectsWithProblems, 0, 'deleted: nothing is wrong with it any more');
  hub.upsert('pod', { kind: 'Pod', metadata: { name: 'p', namespace: 'shop' }, status: { podIP: 'ten' } });
  t.is(hub.state().objectsWithProblems, 1, 'an object left out whole still counts');
});

test('agents connecting together share one snapshot; a later one after changes gets a new one; a newer stream of the same agent replaces the old', async (t) => {
  let now = 1_000_000;
  const hub = new DiscoveryHub({ log: () => {}, snapshotReuseMs: 10_000, now: () => now });
  hub.upsert('service', svc('web', '10.96.0.10'));
  hub.markSynced();
  const a = new Reader();
  const b = new Reader();
  subscribe(hub, a, 'a');
  subscribe(hub, b, 'b');
  await waitFor(() => a.store.synced && b.store.synced);
  t.is(hub.state().snapshotsBuilt, 1);
  hub.upsert('service', svc('api', '10.96.0.20'));
  const c = new Reader();
  subscribe(hub, c, 'c');
  await waitFor(() => c.store.synced);
  t.is(hub.state().snapshotsBuilt, 1, 'within the reuse window: the change is sent after the shared snapshot');
  t.truthy(c.store.byVip('10.96.0.20', 80));
  now += 10_000;
  hub.upsert('service', svc('db', '10.96.0.30'));
  const d = new Reader();
  subscribe(hub, d, 'd');
  await waitFor(() => d.store.synced);
  t.is(hub.state().snapshotsBuilt, 2);
  t.deepEqual(d.store.services().map((s) => s.name).sort(), ['api', 'db', 'web']);
  await waitFor(() => a.store.service('shop/db') !== undefined, 2000);

  const a2 = new Reader();
  subscribe(hub, a2, 'a');
  t.regex(String(a.closed), /agent a on node n1 opened a newer discovery stream/);
  await waitFor(() => a2.store.synced);
  t.is(hub.state().agents, 4);
  hub.closeAll('stopping');
  t.is(b.closed, 'stopping');
  t.is(hub.state().agents, 0);
});

test('a change made while the end of a snapshot is being read still reaches the agent', async (t) => {
  const { hub } = hubWithLog(); // 512-byte chunks
  for (let i = 0; i < 100; i++) hub.upsert('pod', pod(`p${i}`, `10.1.0.${i}`));
  hub.markSynced();
  const r = new Reader(256, false); // one chunk at a time: each write waits for the reader
  subscribe(hub, r);
  // Changed after the snapshot was built: sent after it, by key (several chunks of them).
  for (let i = 0; i < 60; i++) hub.upsert('pod', pod(`p${i}`, `10.9.0.${i}`));
  await turn();
  let injected = false;
  let sentBefore = 0;
  readLines(r.out, (l) => {
    r.lines.push(l);
    r.store.apply(parseMessage(l));
    if (!injected && l.includes('"10.9.0.')) {
      // The first of those lines: the rest of them are still to be read, and the agent
      // pauses (as a busy one would) until the hub has sent this turn's changes.
      injected = true;
      r.out.pause();
      sentBefore = hub.state().deltas;
      hub.upsert('pod', pod('late', '10.7.0.1'));
    }
  }, () => {
    throw new Error('line too long');
  });
  await waitFor(() => injected && hub.state().deltas > sentBefore);
  r.out.resume();
  await waitFor(() => r.store.synced);
  t.true(injected);
  t.is(r.store.podByIp('10.9.0.59')?.name, 'p59');
  // Deltas arrive in order: once a later change is in, the earlier one must be too.
  hub.upsert('pod', pod('marker', '10.7.0.2'));
  await waitFor(() => r.store.podByIp('10.7.0.2') !== undefined);
  t.is(r.store.podByIp('10.7.0.1')?.name, 'late', 'the change made while the snapshot ended');
});

test('one turn of changes larger than the bound (a relist, a namespace edit re-sending its pods) reaches agents that read; none is closed as slow', async (t) => {
  const logs: string[] = [];
  const hub = new DiscoveryHub({ log: (_l, m) => logs.push(m), maxQueuedBytes: 8_000, chunkBytes: 512 });
  hub.upsert('service', svc('web', '10.96.0.10'));
  hub.markSynced();
  const readers = [new Reader(), new Reader()];
  readers.forEach((r, i) => subscribe(hub, r, `a${i}`));
  await waitFor(() => readers.every((r) => r.store.synced));
  // 200 pods in one turn: ~20 KB of lines in one flush, over the 8 KB bound, to agents that keep reading.
  for (let i = 0; i < 200; i++) hub.upsert('pod', pod(`web-${i}`, `10.1.${i >> 8}.${(i & 255) + 1}`));
  await waitFor(() => readers.every((r) => r.closed !== null || r.store.counts().pods === 200));
  t.deepEqual(readers.map((r) => r.closed), [null, null]);
  t.like(hub.state(), { closedSlow: 0, agentsLive: 2 });
  t.false(logs.some((l) => l.includes('did not read')), logs.join('\n'));
});

test('an agent that stops reading during its snapshot is closed once it has not read for the stall bound, and lets go of the snapshot; one that reads slowly is not', async (t) => {
  const logs: string[] = [];
  const hub = new DiscoveryHub({ log: (_l, m) => logs.push(m), chunkBytes: 512, snapshotStallMs: 300 });
  for (let i = 0; i < 200; i++) hub.upsert('pod', pod(`p-${i}`, `10.2.0.${i}`));
  hub.markSynced();
  const stuck = new Reader(1024, false); // never reads: its stream fills and stays full
  const slow = new Reader(1024, false);
  subscribe(hub, stuck, 'stuck');
  subscribe(hub, slow, 'slow');
  // Reads a little every 50 ms: it makes progress well within the bound, however long the whole takes.
  const lines: string[] = [];
  const reading = setInterval(() => {
    let c: Buffer | null;
    for (let n = 0; n < 2 && (c = slow.out.read() as Buffer | null) !== null; n++) lines.push(String(c));
  }, 50);
  t.teardown(() => clearInterval(reading));
  await waitFor(() => stuck.closed !== null, 3000);
  t.regex(String(stuck.closed), /agent stuck on node n1 read nothing of its discovery snapshot for 300 ms; closed its stream \(it reconnects and resyncs\)/);
  t.true(logs.some((l) => l.startsWith('agent stuck on node n1 read nothing')));
  t.like(hub.state(), { closedSlow: 1, agents: 1 });
  await waitFor(() => lines.join('').includes(SYNCED_LINE), 10_000);
  t.is(slow.closed, null, 'an agent that keeps reading is never closed for a slow snapshot');
  t.like(hub.state(), { closedSlow: 1, agents: 1, agentsLive: 1 });
});
