import test from 'ava';
import { spawn } from 'node:child_process';
import * as http from 'node:http';
import * as path from 'node:path';
import { KubeSource, type KubeSourceOptions } from '../src/k8s/kube-source.ts';
import { LeanKubeApi, type WatchClient } from '../src/k8s/kube-api.ts';
import { Reflector } from '../src/k8s/watch-reflector.ts';
import { refusedPort } from './helpers/ports.ts';
import type { Snapshot } from '../src/k8s/objects.ts';
import { Backoff, describeFailure, describeRefusal, RBAC_HINT } from '../src/k8s/watch-errors.ts';
import { SimApiServer } from '../src/sim/index.ts';
import { namespaceObject, podObject } from './helpers/kube-objects.ts';
import { waitFor } from './helpers/until.ts';
import { podReadHangs } from './helpers/pod-read-hangs.ts';

const NODE = 'node-a';

/** The client the agent uses (kube-api.ts), pointed at the stand-in server. */
const apiFor = (api: SimApiServer) => new LeanKubeApi({ server: api.url, insecure: true, token: 't' });

interface Harness {
  api: SimApiServer;
  src: KubeSource;
  snaps: Snapshot[];
  errors: Error[];
  /** Each error with when it came and the source's last event then (Date.now() ms, the source's clock). */
  errorsAt: Array<{ message: string; at: number; lastEventAt: number }>;
  /** Resolves with the first snapshot (taken after `after`) that satisfies pred. */
  until: (pred: (s: Snapshot) => boolean, what: string, after?: number) => Promise<Snapshot>;
  waitFor: (cond: () => boolean, what: string, ms?: number) => Promise<void>;
}

async function harness(t: { teardown: (f: () => Promise<void> | void) => void }, opts: Partial<KubeSourceOptions> = {}, seed?: (api: SimApiServer) => void): Promise<Harness> {
  const api = await new SimApiServer().start();
  seed?.(api);
  const snaps: Snapshot[] = [];
  const errors: Error[] = [];
  const errorsAt: Harness['errorsAt'] = [];
  const src: KubeSource = new KubeSource({
    nodeName: NODE,
    api: apiFor(api),
    onSnapshot: (s) => snaps.push(s),
    onError: (e) => {
      errors.push(e);
      errorsAt.push({ message: e.message, at: Date.now(), lastEventAt: src.state().lastEventAt });
    },
    backoff: { initialMs: 20, maxMs: 200 },
    ...opts,
  });
  t.teardown(async () => {
    src.stop();
    await api.close();
  });
  const waitFor = async (cond: () => boolean, what: string, ms = 5000) => {
    const deadline = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; errors: ${errors.map((e) => e.message).join(' | ')}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  const until = async (pred: (s: Snapshot) => boolean, what: string, after = 0) => {
    let found: Snapshot | undefined;
    await waitFor(() => (found = snaps.slice(after).find(pred)) !== undefined, what);
    return found!;
  };
  return { api, src, snaps, errors, errorsAt, until, waitFor };
}

const names = (s: Snapshot) => s.pods.map((p) => `${p.namespace}/${p.name}`).sort();
const watchesOf = (api: SimApiServer, r: 'pods' | 'namespaces') => api.requests.filter((q) => q.resource === r && q.watch);
const listsOf = (api: SimApiServer, r: 'pods' | 'namespaces') => api.requests.filter((q) => q.resource === r && !q.watch);

function seedBasic(api: SimApiServer) {
  api.create(namespaceObject('default'));
  api.create(namespaceObject('shop', { 'mesh-agent.io/inject': 'enabled' }));
  api.create(podObject({ name: 'web', namespace: 'shop', nodeName: NODE, ip: '10.0.0.2', annotations: { a: '1' } }));
  api.create(podObject({ name: 'db', namespace: 'default', nodeName: NODE, ip: '10.0.0.3' }));
  api.create(podObject({ name: 'elsewhere', namespace: 'shop', nodeName: 'node-b', ip: '10.0.1.2' }));
}

test('initial list: the node pods only, all namespaces, and the protocol parameters', async (t) => {
  const h = await harness(t, {}, seedBasic);
  const first = await h.src.start();
  t.deepEqual(names(first), ['default/db', 'shop/web']);
  t.deepEqual([...first.namespaces.keys()].sort(), ['default', 'shop']);
  t.is(first.namespaces.get('shop')!.annotations['mesh-agent.io/inject'], 'enabled');
  const web = first.pods.find((p) => p.name === 'web')!;
  t.is(web.ip, '10.0.0.2');
  t.is(web.nodeName, NODE);
  t.deepEqual(web.annotations, { a: '1' });
  t.is(h.snaps.length, 1, 'the initial lists are a snapshot too');
  await h.waitFor(() => h.src.state().connected, 'both watches open');
  const [podList] = listsOf(h.api, 'pods');
  t.is(podList.query.fieldSelector, `spec.nodeName=${NODE}`);
  const [podWatch] = watchesOf(h.api, 'pods');
  t.is(podWatch.query.fieldSelector, `spec.nodeName=${NODE}`);
  t.is(podWatch.query.allowWatchBookmarks, 'true');
  t.is(podWatch.query.resourceVersion, h.api.resourceVersion, 'watch starts at the list resourceVersion');
  const [nsWatch] = watchesOf(h.api, 'namespaces');
  t.false('fieldSelector' in nsWatch.query, 'namespaces are not node-filtered');
  t.is(h.src.state().resourceVersion, h.api.resourceVersion);
});

test('added, modified and deleted pods and namespace annotation changes arrive in snapshots', async (t) => {
  const h = await harness(t, {}, seedBasic);
  await h.src.start();
  await h.waitFor(() => h.src.state().connected, 'watches open');
  let mark = h.snaps.length;
  h.api.create(podObject({ name: 'new', namespace: 'shop', nodeName: NODE, ip: '10.0.0.9' }));
  h.api.create(podObject({ name: 'other-node', namespace: 'shop', nodeName: 'node-b' }));
  let s = await h.until((s) => names(s).includes('shop/new'), 'added pod', mark);
  t.false(names(s).includes('shop/other-node'));

  mark = h.snaps.length;
  h.api.patch('Pod', 'shop', 'web', (o) => (o.metadata.annotations!['mesh-agent.io/inject'] = 'disabled'));
  s = await h.until((s) => s.pods.find((p) => p.name === 'web')?.annotations['mesh-agent.io/inject'] === 'disabled', 'modified pod', mark);
  t.is(s.pods.length, 3);

  mark = h.snaps.length;
  h.api.delete('Pod', 'default', 'db');
  s = await h.until((s) => !names(s).includes('default/db'), 'deleted pod', mark);
  t.deepEqual(names(s), ['shop/new', 'shop/web']);

  mark = h.snaps.length;
  h.api.patch('Namespace', undefined, 'default', (o) => (o.metadata.annotations = { 'mesh-agent.io/inject': 'enabled' }));
  s = await h.until((s) => s.namespaces.get('default')?.annotations['mesh-agent.io/inject'] === 'enabled', 'namespace annotation', mark);
  t.is(h.errors.length, 0, h.errors.map((e) => e.message).join('\n'));
});

test('a burst of changes is coalesced into few snapshots', async (t) => {
  const h = await harness(t, { coalesceMs: 100 }, seedBasic);
  await h.src.start();
  await h.waitFor(() => h.src.state().connected, 'watches open');
  const mark = h.snaps.length;
  for (let i = 0; i < 20; i++) h.api.create(podObject({ name: `burst-${i}`, nodeName: NODE }));
  const s = await h.until((s) => s.pods.length === 22, 'all burst pods', mark);
  t.is(s.pods.length, 22);
  t.true(h.snaps.length - mark <= 2, `${h.snaps.length - mark} snapshots for 20 events`);
});

test('a dropped watch resumes from the last resourceVersion without a relist and misses nothing', async (t) => {
  const h = await harness(t, {}, seedBasic);
  await h.src.start();
  await h.waitFor(() => h.src.state().connected, 'watches open');
  h.api.create(podObject({ name: 'before-drop', nodeName: NODE }));
  await h.until((s) => names(s).includes('default/before-drop'), 'pod before drop');
  const rvAtDrop = h.src.state().resourceVersion;
  t.is(rvAtDrop, h.api.resourceVersion);
  const watchesBefore = watchesOf(h.api, 'pods').length;

  h.api.dropWatches();
  // Changes while no watch is open: the resumed watch must replay them.
  h.api.create(podObject({ name: 'during-drop', nodeName: NODE }));
  h.api.delete('Pod', 'shop', 'web');
  h.api.patch('Pod', 'default', 'db', (o) => (o.metadata.annotations = { changed: 'yes' }));
  const mark = h.snaps.length;
  const s = await h.until((s) => names(s).includes('default/during-drop') && !names(s).includes('shop/web') && s.pods.find((p) => p.name === 'db')?.annotations.changed === 'yes', 'replayed changes', 0);
  t.true(h.snaps.indexOf(s) >= mark - 1);
  const resumed = watchesOf(h.api, 'pods').slice(watchesBefore);
  t.true(resumed.length >= 1);
  t.is(resumed[0].query.resourceVersion, rvAtDrop, 'resumed from where it stopped');
  t.is(listsOf(h.api, 'pods').length, 1, 'no relist');
  t.is(listsOf(h.api, 'namespaces').length, 1, 'no relist');
  t.true(h.errors.some((e) => /watch pods: connection to the API server at .* lost/.test(e.message) && e.message.includes(`resuming from resourceVersion ${rvAtDrop}`)), h.errors.map((e) => e.message).join('\n'));
  t.true(h.src.state().restarts >= 2);
});

test('410 Gone on re-watch triggers a relist and the state converges', async (t) => {
  const h = await harness(t, {}, seedBasic);
  await h.src.start();
  await h.waitFor(() => h.src.state().connected, 'watches open');
  h.api.dropWatches();
  h.api.create(podObject({ name: 'lost-in-compaction', nodeName: NODE }));
  h.api.delete('Pod', 'default', 'db');
  h.api.compact(); // the events above are no longer in the history: only a relist can find them
  const s = await h.until((s) => names(s).includes('default/lost-in-compaction') && !names(s).includes('default/db'), 'converged after relist');
  t.deepEqual(names(s), ['default/lost-in-compaction', 'shop/web']);
  t.is(listsOf(h.api, 'pods').length, 2, 'one relist of pods');
  t.true(h.api.requests.some((q) => q.watch && q.resource === 'pods' && Number(q.query.resourceVersion) < Number(h.api.resourceVersion)), 'an old watch was tried first');
  t.true(h.errors.some((e) => /watch pods from resourceVersion \d+: expired \(410 Gone\); relisting/.test(e.message)));
  await h.waitFor(() => h.src.state().connected && h.src.state().resourceVersion === h.api.resourceVersion, 'watching again from the relist');
  // and it keeps following changes
  const mark = h.snaps.length;
  h.api.create(podObject({ name: 'after', nodeName: NODE }));
  await h.until((s) => names(s).includes('default/after'), 'change after relist', mark);
});

test('a bookmark advances the resourceVersion, so a later resume needs no relist', async (t) => {
  const h = await harness(t, {}, seedBasic);
  await h.src.start();
  await h.waitFor(() => h.src.state().connected, 'watches open');
  // Changes elsewhere in the cluster move the global resourceVersion past the pod watch's.
  h.api.create(podObject({ name: 'x1', nodeName: 'node-b' }));
  h.api.create(podObject({ name: 'x2', nodeName: 'node-b' }));
  const before = h.src.state().resourceVersion;
  t.not(before, h.api.resourceVersion);
  h.api.bookmark();
  await h.waitFor(() => h.src.state().resourceVersion === h.api.resourceVersion, 'bookmark applied');
  t.true(Number(h.src.state().resourceVersion) > Number(before));
  // History before the bookmark is gone; resuming from the bookmark is still valid.
  h.api.compact();
  const watchesBefore = watchesOf(h.api, 'pods').length;
  h.api.dropWatches();
  await h.waitFor(() => watchesOf(h.api, 'pods').length > watchesBefore && h.src.state().connected, 'resumed');
  t.is(watchesOf(h.api, 'pods')[watchesBefore].query.resourceVersion, h.api.resourceVersion);
  t.is(listsOf(h.api, 'pods').length, 1, 'no relist thanks to the bookmark');
});

test('a silent watch is restarted by the watchdog from the last resourceVersion', async (t) => {
  const h = await harness(t, { watchdogMs: 300 }, seedBasic);
  await h.src.start();
  await h.waitFor(() => watchesOf(h.api, 'pods').length >= 3, 'two watchdog restarts');
  const w = watchesOf(h.api, 'pods');
  t.is(w[1].query.resourceVersion, w[0].query.resourceVersion);
  t.true(w[1].at - w[0].at >= 250, `not before the watchdog interval: ${w.map((q) => q.at - w[0].at)}; ${h.errors.map((e) => e.message).join(' | ')}`);
  t.true(h.errors.some((e) => /watch pods silent for 300 ms/.test(e.message)));
  t.is(listsOf(h.api, 'pods').length, 1, 'no relist');
  t.true(h.src.state().restarts >= 2);
  // Events keep a watch alive: a bookmark every 100 ms for three watchdog intervals. The
  // watchdog may restart a watch only after 300 ms without an event as the source saw it
  // (a stalled machine can hold a bookmark back that long); a watchdog that bookmarks do not
  // re-arm restarts the watch 300 ms after its last arm, with events 100 ms old.
  await h.waitFor(() => h.src.state().connected, 'watching again');
  const mark = h.errorsAt.length;
  const phaseStart = Date.now();
  while (Date.now() - phaseStart < 3 * 300) {
    h.api.bookmark();
    await new Promise((r) => setTimeout(r, 100));
  }
  const silent = h.errorsAt.slice(mark).filter((e) => /watch pods silent/.test(e.message));
  // 2 ms for Date.now() against the timer's clock.
  for (const e of silent) t.true(e.at - e.lastEventAt >= 298, `restarted ${e.at - e.lastEventAt} ms after the last event, under the 300 ms watchdog`);
  t.log(`${silent.length} restart(s) while bookmarks flowed, after ${silent.map((e) => e.at - e.lastEventAt).join(', ') || '-'} ms of silence`);
});

test('403 on list: onError names the ServiceAccount fix once and retries with backoff, then recovers', async (t) => {
  const h = await harness(t, { backoff: { initialMs: 100, maxMs: 2000 } }, seedBasic);
  h.api.setFailure(403, 'list');
  const started = h.src.start();
  started.catch(() => {}); // awaited below; a failed assertion must not leave it unhandled
  await h.waitFor(() => listsOf(h.api, 'pods').length >= 5, 'five list attempts');
  const forbidden = h.errors.filter((e) => /list pods/.test(e.message));
  t.is(forbidden.length, 1, 'said when the refusal began, not at every retry');
  t.true(forbidden[0].message.includes(RBAC_HINT), forbidden[0].message);
  t.true(forbidden[0].message.includes('403'));
  const at = listsOf(h.api, 'pods').map((q) => q.at);
  const gaps = at.slice(1).map((x, i) => x - at[i]);
  // Jittered steps [50,100], [100,200], [200,400], [400,800] ms: each gap is at least its
  // step's floor (a slow machine only adds), and the fourth floor is above the first ceiling.
  [50, 100, 200, 400].forEach((floor, i) => t.true(gaps[i]! >= floor - 2, `retry ${i + 1} after at least ${floor} ms, gaps ${gaps}`));
  h.api.setFailure(null);
  const first = await started;
  t.deepEqual(names(first), ['default/db', 'shop/web']);
});

test('403 on watch: the hint, backoff, and a resume from the last resourceVersion once healed', async (t) => {
  const h = await harness(t, {}, seedBasic);
  await h.src.start();
  await h.waitFor(() => h.src.state().connected, 'watches open');
  const rv = h.src.state().resourceVersion;
  h.api.setFailure(403, 'watch');
  h.api.dropWatches();
  await h.waitFor(() => watchesOf(h.api, 'pods').filter((q) => q.status === 403).length >= 2, 'two forbidden watches');
  t.is(h.errors.filter((e) => /^watch pods: HTTP 403/.test(e.message)).length, 1);
  t.true(h.errors.find((e) => /^watch pods: HTTP 403/.test(e.message))!.message.includes(RBAC_HINT));
  h.api.create(podObject({ name: 'while-forbidden', nodeName: NODE }));
  h.api.setFailure(null);
  await h.until((s) => names(s).includes('default/while-forbidden'), 'pod added while forbidden');
  t.is(listsOf(h.api, 'pods').length, 1, 'no relist');
  t.true(watchesOf(h.api, 'pods').slice(1).every((q) => q.query.resourceVersion === rv));
});

test('a 403 is said once per change of state, with the rule to grant, and the state shows it: refused, accepted, refused again, accepted again', async (t) => {
  const lines: string[] = [];
  const h = await harness(t, { log: (m) => lines.push(m) }, seedBasic);
  const refusedPods = (verb: 'list' | 'watch') => h.api.requests.filter((q) => q.resource === 'pods' && q.watch === (verb === 'watch') && q.status === 403).length;
  const said = () => h.errors.filter((e) => /pods/.test(e.message) && /403/.test(e.message)).map((e) => e.message);
  const accepted = () => lines.filter((m) => /^pods: the API server accepts the list\/watch again \(refused with HTTP 403 for \d+ s, since /.test(m));
  h.api.setFailure(403, 'list', 'pods');
  const started = h.src.start();
  started.catch(() => {}); // awaited below
  await h.waitFor(() => refusedPods('list') >= 4, 'four refused lists');
  t.is(said().length, 1, said().join('\n'));
  t.regex(said()[0]!, /^list pods: HTTP 403: the agent's ServiceAccount lacks list\/watch on pods; apply the ClusterRole from mesh-agent install; it needs list and watch on pods \(core group\) \(the API server: pods is forbidden: User "system:serviceaccount:mesh:mesh-agent" cannot list resource "pods" in API group "" at the cluster scope\)/);
  const r = h.src.state().refused.pods;
  t.like(r, { status: 403, verb: 'list', grant: 'list and watch on pods (core group)' });
  t.regex(r?.message ?? '', /cannot list resource "pods"/);
  t.false(Number.isNaN(Date.parse(r?.since ?? '')));
  t.is(accepted().length, 0);
  h.api.setFailure(null);
  await started;
  t.is(accepted().length, 1, lines.join('\n'));
  t.deepEqual(h.src.state().refused, {});
  // Taken back (a ClusterRole rolled back): the resumed watch is refused; said once.
  await h.waitFor(() => h.src.state().connected, 'watches open');
  h.api.setFailure(403, 'watch', 'pods');
  h.api.dropWatches();
  await h.waitFor(() => refusedPods('watch') >= 4, 'four refused watches');
  t.is(said().length, 2, said().join('\n'));
  t.regex(said()[1]!, /^watch pods: HTTP 403: .*it needs list and watch on pods \(core group\) \(the API server: /);
  t.is(h.src.state().refused.pods?.verb, 'watch');
  h.api.setFailure(null);
  await h.waitFor(() => accepted().length === 2 && h.src.state().connected, 'the watch accepted again');
  t.deepEqual(h.src.state().refused, {});
  t.is(said().length, 2, said().join('\n'));
});

test('a 403 on namespaces names namespaces in the hint, not pods', async (t) => {
  const h = await harness(t, {}, seedBasic);
  h.api.setFailure(403, 'list', 'namespaces');
  const started = h.src.start();
  started.catch(() => {}); // awaited below
  await h.waitFor(() => listsOf(h.api, 'namespaces').filter((q) => q.status === 403).length >= 2, 'two refused namespace lists');
  const said = h.errors.filter((e) => /^list namespaces: HTTP 403/.test(e.message)).map((e) => e.message);
  t.is(said.length, 1, said.join('\n'));
  t.regex(said[0]!, /^list namespaces: HTTP 403: the agent's ServiceAccount lacks list\/watch on namespaces; apply the ClusterRole from mesh-agent install; it needs list and watch on namespaces \(core group\)/);
  t.false(said[0]!.includes('on pods'), said[0]);
  h.api.setFailure(null);
  await started;
});

test('a 401 (the token expired or revoked) is a refused state too: said once, naming the token and not RBAC, until a rotated token is accepted', async (t) => {
  const lines: string[] = [];
  const h = await harness(t, { log: (m) => lines.push(m) }, seedBasic);
  const refused = (verb: 'list' | 'watch') => h.api.requests.filter((q) => q.resource === 'pods' && q.watch === (verb === 'watch') && q.status === 401).length;
  const said = () => h.errors.filter((e) => /pods/.test(e.message) && /401/.test(e.message)).map((e) => e.message);
  await h.src.start();
  await h.waitFor(() => h.src.state().connected, 'watches open');
  h.api.setFailure(401, 'any', 'pods');
  h.api.dropWatches();
  await h.waitFor(() => refused('watch') >= 4, 'four refused watches');
  t.is(said().length, 1, said().join('\n'));
  t.regex(said()[0]!, /^watch pods: HTTP 401: the ServiceAccount token was refused: /);
  t.false(said()[0]!.includes(RBAC_HINT), 'a token problem is not an RBAC one');
  t.regex(said()[0]!, /\(the API server: Unauthorized\)/);
  t.like(h.src.state().refused.pods, { status: 401, verb: 'watch' });
  h.api.setFailure(null);
  await h.waitFor(() => lines.some((m) => /^pods: the API server accepts the list\/watch again \(refused with HTTP 401 for \d+ s/.test(m)) && h.src.state().connected, 'the watch accepted again');
  t.deepEqual(h.src.state().refused, {});
  t.is(said().length, 1);
});

test('an unreachable API server is reported with the address and retried', async (t) => {
  const url = `http://127.0.0.1:${await refusedPort(t)}`; // nothing listens there, nor will while the test runs
  const client = new LeanKubeApi({ server: url, insecure: true, token: 't' });
  const errors: Error[] = [];
  const src = new KubeSource({ nodeName: NODE, api: client, onSnapshot: () => {}, onError: (e) => errors.push(e), backoff: { initialMs: 20, maxMs: 50 } });
  const started = src.start();
  const deadline = Date.now() + 5000;
  while (errors.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  src.stop();
  await t.throwsAsync(started, { message: /stopped before the first list/ });
  t.true(errors.length >= 2);
  t.regex(errors[0].message, new RegExp(`cannot reach the API server at ${url.replace(/\./g, '\\.')}`));
});

test('stop() leaves nothing open: the process exits by itself', async (t) => {
  const here = path.dirname(new URL(import.meta.url).pathname);
  const script = `
    import { LeanKubeApi } from ${JSON.stringify(path.join(here, '../src/k8s/kube-api.ts'))};
    import { KubeSource } from ${JSON.stringify(path.join(here, '../src/k8s/kube-source.ts'))};
    import { SimApiServer } from ${JSON.stringify(path.join(here, '../src/sim/apiserver.ts'))};
    import { namespaceObject, podObject } from ${JSON.stringify(path.join(here, 'helpers/kube-objects.ts'))};
    const api = await new SimApiServer().start();
    api.create(namespaceObject('default'));
    api.create(podObject({ name: 'p', nodeName: 'n' }));
    const src = new KubeSource({ nodeName: 'n', api: new LeanKubeApi({ server: api.url, insecure: true, token: 't' }), onSnapshot: () => {}, onError: (e) => console.error(e.message) });
    const s = await src.start();
    while (!src.state().connected) await new Promise((r) => setTimeout(r, 10));
    api.create(podObject({ name: 'q', nodeName: 'n' })); // a pending coalesce timer at stop()
    await new Promise((r) => setTimeout(r, 5));
    src.stop();
    // The server only stops listening; connections the client left open would keep the process alive.
    api.unlisten();
    console.log('pods', s.pods.length);
  `;
  const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', '--input-type=module', '-e', script], { cwd: path.join(here, '..'), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const code = await new Promise<number | string>((resolve) => {
    // A hang detector: the process exits as soon as nothing is left open.
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve('did not exit within 60 s');
    }, 60_000);
    child.on('exit', (c) => {
      clearTimeout(timer);
      resolve(c ?? -1);
    });
  });
  t.is(code, 0, out);
  t.regex(out, /pods 1/);
});

test('backoff grows with jitter up to the cap and resets', (t) => {
  const lo = new Backoff({ initialMs: 100, maxMs: 1000 }, () => 0);
  const hi = new Backoff({ initialMs: 100, maxMs: 1000 }, () => 1);
  t.deepEqual([1, 2, 3, 4, 5].map(() => lo.next()), [50, 100, 200, 400, 500]);
  t.deepEqual([1, 2, 3, 4, 5].map(() => hi.next()), [100, 200, 400, 800, 1000]);
  hi.reset();
  t.is(hi.next(), 100);
});

test('failure messages name the fix', (t) => {
  t.true(describeFailure('list pods', 'https://k', { code: 403 }, RBAC_HINT).includes(RBAC_HINT));
  t.regex(describeFailure('list pods', 'https://k', { code: 401 }, RBAC_HINT), /^list pods: HTTP 401: the ServiceAccount token was refused: /);
  t.regex(describeFailure('watch pods', 'https://k:6443', new TypeError('fetch failed', { cause: { code: 'ECONNREFUSED' } }), RBAC_HINT), /cannot reach the API server at https:\/\/k:6443 \(ECONNREFUSED\)/);
  t.regex(describeFailure('watch pods', 'https://k', new TypeError('terminated', { cause: { code: 'UND_ERR_SOCKET' } }), RBAC_HINT), /connection to the API server at https:\/\/k lost \(UND_ERR_SOCKET\)/);
  t.regex(describeFailure('list pods', 'https://k', Object.assign(new Error('boom'), { code: 500 }), RBAC_HINT), /HTTP 500: boom/);
  t.regex(describeRefusal('list namespaces', '/api/v1/namespaces', 403, 'forbidden'), /lacks list\/watch on namespaces; .* it needs list and watch on namespaces \(core group\)/);
});

/** The pod the stand-in's answered watches add. */
const ADDED_POD = JSON.stringify({ type: 'ADDED', object: { ...podObject({ name: 'web', uid: 'u1', nodeName: NODE }), metadata: { name: 'web', namespace: 'default', uid: 'u1', resourceVersion: '2' } } }) + '\n';

/**
 * An API server stand-in that lists nothing, keeps the namespace watch open and quiet, and lets
 * `firstPodWatch` answer the first pod watch its way (the next ones add a pod); a KubeSource
 * reading it with a short backoff and a 60 s watchdog, so only the backoff retries in time.
 */
async function podWatchStandIn(t: any, firstPodWatch: (res: http.ServerResponse) => void, requestTimeoutMs?: number) {
  let podWatches = 0;
  const server = http.createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    if (u.searchParams.get('watch') === 'true' && u.pathname === '/api/v1/pods' && ++podWatches === 1) return firstPodWatch(res);
    res.writeHead(200, { 'content-type': 'application/json' });
    if (u.searchParams.get('watch') !== 'true') return res.end(JSON.stringify({ items: [], metadata: { resourceVersion: '1' } }));
    if (u.pathname !== '/api/v1/pods') return res.flushHeaders();
    res.write(ADDED_POD);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  const errors: string[] = [];
  const url = `http://127.0.0.1:${(server.address() as import('node:net').AddressInfo).port}`;
  const src = new KubeSource({
    nodeName: NODE, api: new LeanKubeApi({ server: url, insecure: false }, requestTimeoutMs !== undefined ? { requestTimeoutMs } : {}),
    onSnapshot: () => {}, onError: (e) => errors.push(e.message), backoff: { initialMs: 20, maxMs: 200 }, watchdogMs: 60_000,
  });
  t.teardown(() => src.stop());
  await src.start();
  await waitFor(() => src.snapshot().pods.length === 1, 5000);
  return { errors, podWatches: () => podWatches };
}

test('a watch line that is JSON but not an event (null) restarts the watch, and does not bring the agent down', async (t) => {
  const s = await podWatchStandIn(t, (res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.write('null\n');
  });
  t.is(s.podWatches(), 2);
  t.true(s.errors.some((m) => /watch \/api\/v1\/pods: a line that is not a watch event: null/.test(m)), s.errors.join('\n'));
});

test('a watch refused with an error answer cut short (the API server going away mid-reply) is retried after the backoff, not after the watchdog', async (t) => {
  const s = await podWatchStandIn(t, (res) => {
    // A 503 whose body never arrives whole: the connection drops after its first bytes.
    res.writeHead(503, { 'content-type': 'application/json', 'content-length': '1000' });
    res.write('{"kind":"Status"');
    setTimeout(() => res.socket?.destroy(), 20);
  });
  t.is(s.podWatches(), 2);
  t.true(s.errors.some((m) => /watch pods: .*503/.test(m)), s.errors.join('\n'));
});

test('a watch the API server never answers (no headers) is given up after the request timeout and retried, not left open until the watchdog', async (t) => {
  const held: http.ServerResponse[] = [];
  const s = await podWatchStandIn(t, (res) => void held.push(res), 300); // a hung API server: the request is never answered
  t.is(s.podWatches(), 2);
  t.true(s.errors.some((m) => /watch pods: the API server at .* did not answer in time/.test(m)), s.errors.join('\n'));
  await waitFor(() => held[0]!.socket === null || held[0]!.socket.destroyed, 2000);
  t.pass('the unanswered request was closed, not leaked');
});

/** A reflector over a scripted watch client: `serve` plays each watch, then the stream ends. */
function scripted(t: { teardown: (f: () => void) => void }, serve: (onEvent: (type: string, obj: any) => void) => void) {
  const watches: number[] = [];
  const lists: number[] = [];
  let rv = 10;
  const watch: WatchClient = {
    async watch(_p, _q, onEvent, onDone) {
      watches.push(Date.now());
      setImmediate(() => {
        serve(onEvent);
        onDone(null);
      });
      return { abort() {} };
    },
  };
  const r = new Reflector({
    name: 'pods', path: '/api/v1/pods', server: 'http://test', watch, watchdogMs: 60_000,
    backoff: { initialMs: 40, maxMs: 10_000 },
    list: async () => {
      lists.push(Date.now());
      return { items: [], resourceVersion: String(rv++) };
    },
    onChange: () => {}, onSynced: () => {}, onError: () => {},
  });
  void r.run();
  t.teardown(() => r.stop());
  return { watches, lists };
}

// With equal jitter each wait is at least half its step: 20 + 40 + 80 + 160 ms before the fifth try.
const BACKED_OFF_4 = 300;

test('a server that ends every watch at once, even one that delivered an event, is not hammered: re-watches back off (client-go\'s "very short watch")', async (t) => {
  let n = 0;
  const { watches } = scripted(t, (onEvent) => onEvent('MODIFIED', { ...podObject({ name: 'p', nodeName: NODE }), metadata: { name: 'p', namespace: 'default', resourceVersion: String(100 + n++) } }));
  await waitFor(() => watches.length >= 5, 10_000);
  t.true(watches[4]! - watches[0]! >= BACKED_OFF_4, `five watches within ${watches[4]! - watches[0]!} ms`);
});

test('a server that answers every watch 410 Gone is not relisted in a hot loop: relists back off', async (t) => {
  const { lists } = scripted(t, (onEvent) => onEvent('ERROR', { kind: 'Status', code: 410, reason: 'Expired' }));
  await waitFor(() => lists.length >= 5, 10_000);
  t.true(lists[4]! - lists[0]! >= BACKED_OFF_4, `five lists within ${lists[4]! - lists[0]!} ms`);
});

/** A raw API server that answers lists with `list` (null: never) and never answers a watch; counts requests and their closes. */
async function hangingServer(t: { teardown: (f: () => Promise<void> | void) => void }, list: string | null) {
  const seen = { lists: 0, watches: 0, closed: 0 };
  const server = http.createServer((req, res) => {
    const watch = /[?&]watch=true/.test(req.url ?? '');
    if (watch) seen.watches++;
    else seen.lists++;
    if (!watch && list !== null) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(list);
      return;
    }
    req.socket.on('close', () => seen.closed++);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => {
    server.closeAllConnections();
    server.close(() => r());
  }));
  const { port } = server.address() as { port: number };
  return { seen, api: new LeanKubeApi({ server: `http://127.0.0.1:${port}`, insecure: true, token: 't' }) };
}

test('stop() aborts the lists in flight at once (not after their 60 s timeout): a stopping agent is not kept alive by them', async (t) => {
  const { seen, api } = await hangingServer(t, null);
  const src = new KubeSource({ nodeName: NODE, api, onSnapshot: () => {}, onError: () => {} });
  const started = src.start();
  await waitFor(() => seen.lists === 2, 5000);
  src.stop();
  await t.throwsAsync(started, { message: /stopped before the first list/ });
  await waitFor(() => seen.closed === 2, 5000);
  t.is(seen.closed, 2);
});

test('stop() aborts watches the API server has not answered yet at once', async (t) => {
  const { seen, api } = await hangingServer(t, JSON.stringify({ items: [], metadata: { resourceVersion: '5' } }));
  const src = new KubeSource({ nodeName: NODE, api, onSnapshot: () => {}, onError: () => {} });
  await src.start();
  await waitFor(() => seen.watches === 2, 5000);
  src.stop();
  await waitFor(() => seen.closed === 2, 5000);
  t.is(seen.closed, 2);
});

test('stop() abandons a pod read (getPod, a CNI ADD ahead of the watch) at once: a stopping agent does not wait for the API server\'s answer', async (t) => {
  const { seen, url } = await podReadHangs(t);
  const src = new KubeSource({ nodeName: NODE, api: new LeanKubeApi({ server: url, insecure: true, token: 't' }), onSnapshot: () => {}, onError: () => {} });
  t.teardown(() => src.stop());
  await src.start();
  const read = src.getPod('default', 'web');
  read.catch(() => {}); // awaited below
  await waitFor(() => seen.reads === 1, 5000);
  const at = Date.now();
  src.stop();
  await t.throwsAsync(read, { message: 'reading pod default/web: the pod source is stopping' });
  t.true(Date.now() - at < 1000, `rejected ${Date.now() - at} ms after stop()`);
  await waitFor(() => seen.closed === 1, 5000);
  // A read asked for after stop() is refused at once.
  await t.throwsAsync(src.getPod('default', 'web'), { message: /the pod source is stopping/ });
});

test('getPod: the caller\'s signal abandons the read', async (t) => {
  const { seen, url } = await podReadHangs(t);
  const src = new KubeSource({ nodeName: NODE, api: new LeanKubeApi({ server: url, insecure: true, token: 't' }), onSnapshot: () => {}, onError: () => {} });
  t.teardown(() => src.stop());
  await src.start();
  const ac = new AbortController();
  const read = src.getPod('default', 'web', ac.signal);
  read.catch(() => {}); // awaited below
  await waitFor(() => seen.reads === 1, 5000);
  ac.abort();
  await t.throwsAsync(read, { name: 'AbortError' });
  await waitFor(() => seen.closed === 1, 5000);
  t.is(seen.closed, 1);
});
