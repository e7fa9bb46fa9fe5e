// The discovery-scale bench's parts: the generated cluster is what it says (every object read,
// none refused), and one small run of the real controller with simulated agents measures what
// it claims: each change reaches every agent as exactly one EndpointSlice line.
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ENDPOINTS_PER_SERVICE, generateWorld, runScale, writeChange } from '../bench/discovery-scale.ts';
import { DiscoveryHub, prepare } from '../src/discovery/hub.ts';
import { ResourceFiles } from '../src/discovery/resource-files.ts';
import { parseDocuments } from '../src/k8s/documents.ts';
import { testTempDir } from './helpers/temp-dir.ts';

test('the generated cluster: Services with one slice of ready pods each, every pod known, nothing refused', (t) => {
  const dir = testTempDir(t);
  const w = generateWorld(dir, 205);
  t.deepEqual(w, { services: Math.ceil(205 / ENDPOINTS_PER_SERVICE), pods: 205 });
  const hub = new DiscoveryHub({ log: () => {} });
  const files = new ResourceFiles(dir, hub, (e) => t.fail(e.message));
  files.start();
  t.teardown(() => files.stop());
  // Plus the measured target: one Service and its slice of ten.
  t.like(hub.counts(), { services: w.services + 1, slices: w.services + 1, endpoints: 205 + 10, pods: 205 });
  t.is(hub.state().objectsWithProblems, 0);
});

test('a small run: every agent syncs, and each change costs each agent exactly one EndpointSlice line', async (t) => {
  const logs: string[] = [];
  const r = await runScale({ label: 'test', agents: 6, endpoints: 100 }, 3, (s) => logs.push(s));
  // What the controller sends for change k: the target slice's line; the unchanged Service sends nothing.
  const dir = testTempDir(t);
  const lineBytes = [1, 2, 3].map((k) => {
    writeChange(dir, k);
    const slice = parseDocuments(fs.readFileSync(path.join(dir, 'zz-change.json'), 'utf8')).find((o) => o.kind === 'EndpointSlice')!;
    return Buffer.byteLength(prepare('slice', slice).line!) + 1;
  });
  t.is(r.bytesPerAgent, lineBytes.reduce((a, b) => a + b) / 3);
  t.like(r, { agents: 6, endpoints: 100, services: 10, pods: 100, changes: 3 });
  t.true(r.changeP50Ms > 0 && r.changeP50Ms <= r.changeP99Ms, `${r.changeP50Ms} <= ${r.changeP99Ms}`);
  t.true(r.snapshotMB > 0 && r.rssIdleMB > 0 && r.peakMB >= r.rssAgentsMB);
  t.true(r.agentSyncMs > 0 && Number.isFinite(r.agentStoreHeapMB), 'the real agent reported');
  t.true(logs.some((l) => /all synced in/.test(l)), logs.join('\n'));
});
