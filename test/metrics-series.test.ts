// The sink's own accumulators and its resolution cache, on their own: the exposition they
// render must be what prom-client's own metrics render for the same observations.
import test from 'ava';
import { Counter, Histogram, Registry } from 'prom-client';
import { BoundedCache } from '../src/telemetry/bounded-cache.ts';
import { CounterSeries, EXPOSITION_SLICE, HistogramSeries, SeriesFamily } from '../src/telemetry/series.ts';
import { ExpositionRegistry } from '../src/telemetry/prom.ts';
import { PodSync, type PodDatapath } from '../src/agent/pod-sync.ts';
import type { PodInfo } from '../src/k8s/objects.ts';

const BUCKETS = [1, 2.5, 10, 100];

test('a histogram family renders exactly what a prom-client Histogram renders for the same observations', async (t) => {
  const ours = new ExpositionRegistry(); // the family's own lines (promString), as the agent serves them
  const theirs = new Registry();
  const fam = new SeriesFamily<HistogramSeries>({
    name: 'lat_ms', help: 'latency "quoted" \\ help', type: 'histogram', labelNames: ['a', 'b'], keep: [], cap: 100, buckets: BUCKETS, overflowCount: () => null,
  }).register(ours);
  const ref = new Histogram({ name: 'lat_ms', help: 'latency "quoted" \\ help', labelNames: ['a', 'b'], buckets: BUCKETS, registers: [theirs] });
  const samples: Array<[Record<string, string>, number]> = [
    [{ a: 'x', b: 'we"ird\\\nvalue' }, 0.5], [{ a: 'x', b: 'we"ird\\\nvalue' }, 2.5], [{ a: 'y' }, 1000], [{ a: 'y' }, 3], [{ a: 'x', b: 'we"ird\\\nvalue' }, 7.25],
  ];
  for (const [l, v] of samples) {
    fam.resolve(l).observe(v);
    ref.observe(l, v);
  }
  t.is(await ours.metrics(), await theirs.metrics());
  // prom-client's JSON carries exemplar fields (unused here, always empty).
  const noExemplars = (ms: Array<{ values: Array<Record<string, unknown>> }>) => ms.map((m) => ({ ...m, values: m.values.map(({ exemplar: _, ...v }) => v) }));
  t.deepEqual(await ours.getMetricsAsJSON(), noExemplars(await theirs.getMetricsAsJSON() as never));
});

test('a counter family renders exactly what a prom-client Counter renders; label order and absent labels as given', async (t) => {
  const ours = new ExpositionRegistry();
  const theirs = new Registry();
  const fam = new SeriesFamily<CounterSeries>({ name: 'c_total', help: 'h', type: 'counter', labelNames: ['a', 'b'], keep: [], cap: 100, overflowCount: () => null }).register(ours);
  const ref = new Counter({ name: 'c_total', help: 'h', labelNames: ['a', 'b'], registers: [theirs] });
  for (const [l, v] of [[{ b: '2', a: '1' }, 3], [{ a: '1' }, 1], [{ b: '2', a: '1' }, 0.5], [{}, 2]] as const) {
    fam.resolve(l).value += v;
    ref.inc(l, v);
  }
  t.is(await ours.metrics(), await theirs.metrics());
});

test('past a slice of lines the families give the event loop back, and still write what prom-client writes, byte for byte', async (t) => {
  const ours = new ExpositionRegistry();
  const theirs = new Registry();
  const hist = new SeriesFamily<HistogramSeries>({ name: 'lat_ms', help: 'h', type: 'histogram', labelNames: ['a', 'b'], keep: ['b'], cap: 150, buckets: BUCKETS, overflowCount: () => null }).register(ours);
  const ctr = new SeriesFamily<CounterSeries>({ name: 'c_total', help: 'h', type: 'counter', labelNames: ['a', 'b'], keep: [], cap: 5000, overflowCount: () => null }).register(ours);
  new SeriesFamily<CounterSeries>({ name: 'empty_total', help: 'none yet', type: 'counter', labelNames: ['a'], keep: [], cap: 10, overflowCount: () => null }).register(ours);
  // prom-client's own metrics, given each observation with the labels of the series it landed in (overflow ones too).
  const refHist = new Histogram({ name: 'lat_ms', help: 'h', labelNames: ['a', 'b', 'overflow'], buckets: BUCKETS, registers: [theirs] });
  const refCtr = new Counter({ name: 'c_total', help: 'h', labelNames: ['a', 'b', 'overflow'], registers: [theirs] });
  new Counter({ name: 'empty_total', help: 'none yet', labelNames: ['a'], registers: [theirs] });
  for (let i = 0; i < 3 * EXPOSITION_SLICE; i++) {
    const l = { a: `pod-${i}`, b: i % 7 === 0 ? 'we"ird\\\nvalue' : String(i % 3) };
    if (i < 400) { // past its cap of 150: overflow series too
      const s = hist.resolve(l);
      s.observe(i % 120);
      refHist.observe(s.labels, i % 120);
    }
    const c = ctr.resolve(l);
    c.value += i;
    refCtr.inc(c.labels, i);
  }
  let turned = false;
  setImmediate(() => (turned = true));
  const text = await ours.metrics();
  t.true(turned, 'an event-loop turn ran while the exposition was written');
  t.true(text.split('\n').length > 2 * EXPOSITION_SLICE);
  t.is(text, await theirs.metrics());
  // The fast path is the one taken: a family's own lines, not the Registry's formatting.
  let calls = 0;
  const own = hist.promString.bind(hist);
  hist.promString = () => (calls++, own());
  await ours.metrics();
  t.is(calls, 1);
});

test('histogram: buckets are cumulative in the exposition, values above the last bound only in +Inf, NaN ignored', async (t) => {
  const s = new HistogramSeries({}, BUCKETS);
  for (const v of [1, 1.0001, 100, 100.5, NaN, Infinity]) s.observe(v); // 100.5 > 100: +Inf only
  t.deepEqual([...s.counts], [1, 1, 0, 1]);
  t.is(s.count, 4);
  t.is(s.sum, 1 + 1.0001 + 100 + 100.5);
});

test('past the cap, new label sets land in overflow series that keep only the outcome labels and carry the overflow counter', (t) => {
  const overflow = new CounterSeries({ metric: 'c_total' });
  const fam = new SeriesFamily<CounterSeries>({ name: 'c_total', help: 'h', type: 'counter', labelNames: ['who', 'code', 'overflow'], keep: ['code'], cap: 2, overflowCount: () => overflow });
  const a = fam.resolve({ who: 'a', code: '200' });
  t.is(a.overflowCount, null);
  t.is(fam.resolve({ who: 'a', code: '200' }), a, 'the same label set is the same series');
  fam.resolve({ who: 'b', code: '200' });
  const c = fam.resolve({ who: 'c', code: '500' });
  const d = fam.resolve({ who: 'd', code: '500' });
  t.is(c, d);
  t.deepEqual(c.labels, { overflow: 'true', code: '500' });
  t.is(c.overflowCount, overflow);
  t.is(fam.series, 3);
  t.is(fam.resolve({ who: 'a', code: '200' }), a, 'existing series are never dropped');
});

test('the bounded cache forgets everything when full or when its generation moves', (t) => {
  let gen = 1;
  const c = new BoundedCache<number>(3, () => gen);
  c.set('a', 1);
  c.set('b', 2);
  t.is(c.get('a'), 1);
  gen = 2;
  t.is(c.get('a'), undefined, 'a new generation starts over');
  t.is(c.size, 0);
  for (const [k, v] of [['a', 1], ['b', 2], ['c', 3]] as const) c.set(k, v);
  t.is(c.size, 3);
  c.set('d', 4);
  t.is(c.size, 1, 'full: starts over rather than growing');
  t.is(c.get('d'), 4);
  t.throws(() => new BoundedCache(0), { message: /positive integer/ });
});

test('pod sync moves its generation on every snapshot and on clear, never repeating one of another instance', (t) => {
  const dp: PodDatapath = { setPod: () => 1n, removePod: () => true, setSkipInbound: () => {} };
  const pod: PodInfo = { uid: 'u1', name: 'web-1', namespace: 'shop', hostNetwork: false, ip: '10.244.1.2', labels: {}, annotations: {} };
  const a = new PodSync({ datapath: dp, cgroupRoot: '/nonexistent-cgroup-root' });
  const seen = new Set([a.generation]);
  a.apply({ pods: [pod], namespaces: new Map() });
  t.is(a.podByIp('10.244.1.2')?.name, 'web-1');
  t.false(seen.has(a.generation));
  seen.add(a.generation);
  a.apply({ pods: [], namespaces: new Map() });
  t.is(a.podByIp('10.244.1.2'), undefined);
  t.false(seen.has(a.generation));
  seen.add(a.generation);
  a.clear();
  t.false(seen.has(a.generation));
  seen.add(a.generation);
  const b = new PodSync({ datapath: dp, cgroupRoot: '/nonexistent-cgroup-root' });
  t.false(seen.has(b.generation), 'an agent restarted in-process must not reuse a generation');
});
