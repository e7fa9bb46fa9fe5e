// The metric families of the request and connection metrics, as plain accumulators the hot
// path bumps directly (a number addition per observation), shown to a prom-client Registry
// as ordinary metrics whose values are read at scrape time.
//
// Why not prom-client's own Counter/Histogram: their children re-hash the label object on
// every inc()/observe() (validateLabel, hashObject, setValue), which under HTTP load cost
// about a third of the agent's CPU. Here a label set is hashed once, when its series is
// created, and the caller keeps the series object. The families write their own lines of the
// text exposition (promString), byte for byte what prom-client's Registry writes for them.
import type { Registry } from './prom.ts';
import { overflowLabels, seriesKey, type Labels } from './labels.ts';

export class CounterSeries {
  readonly labels: Labels;
  /** The exposition's `name="value",...` of the labels, made at the first scrape. */
  labelText: string | null = null;
  value = 0;
  /** Observations (additions) so far: what a merged worker delta counts as overflow. */
  n = 0;
  /**
   * Set on overflow series only: mesh_agent_metrics_overflow_total{metric} of this family,
   * which counts every observation that lands here.
   */
  readonly overflowCount: CounterSeries | null;
  constructor(labels: Labels, overflowCount: CounterSeries | null = null) {
    this.labels = labels;
    this.overflowCount = overflowCount;
  }
}

/** A gauge is a counter that may go down. */
export type GaugeSeries = CounterSeries;

export class HistogramSeries {
  readonly labels: Labels;
  /** The exposition's `name="value",...` of the labels, made at the first scrape. */
  labelText: string | null = null;
  readonly overflowCount: CounterSeries | null;
  private readonly bounds: readonly number[];
  /** Observations per bucket, not cumulative (the exposition sums them up). */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  constructor(labels: Labels, bounds: readonly number[], overflowCount: CounterSeries | null = null) {
    this.labels = labels;
    this.bounds = bounds;
    this.counts = new Float64Array(bounds.length);
    this.overflowCount = overflowCount;
  }

  observe(v: number): void {
    // A NaN or infinite sample would poison the sum for the life of the process.
    if (!Number.isFinite(v)) return;
    // Every family here measures a duration; a negative one (a span measured on the wall clock
    // across a step back) would take _sum down, which Prometheus reads as a counter reset.
    if (v < 0) v = 0;
    this.sum += v;
    this.count++;
    const b = this.bounds;
    for (let i = 0; i < b.length; i++) {
      if (v <= b[i]!) {
        this.counts[i]!++;
        return;
      }
    }
  }

  /** Another histogram's observations (a proxy worker's delta), bucket by bucket. */
  add(counts: readonly number[], sum: number, count: number): void {
    const n = Math.min(counts.length, this.counts.length);
    for (let i = 0; i < n; i++) this.counts[i]! += counts[i]!;
    this.sum += sum;
    this.count += count;
  }
}

export type Series = CounterSeries | HistogramSeries;

/** An observation: the value, and one more on the overflow counter if it landed in an overflow series. */
export function add(s: CounterSeries, v: number): void {
  s.value += v;
  s.n++;
  if (s.overflowCount !== null) s.overflowCount.value++;
}

export function observe(s: HistogramSeries, v: number): void {
  s.observe(v);
  if (s.overflowCount !== null) s.overflowCount.value++;
}

// The text exposition's escaping and numbers, as prom-client's Registry writes them.
const escapeText = (v: string): string => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
const escapeLabel = (v: string): string => escapeText(v).replace(/"/g, '\\"');
const valueText = (v: number): string => (Number.isNaN(v) ? 'Nan' : v === Infinity ? '+Inf' : v === -Infinity ? '-Inf' : `${v}`);

/** Exposition lines written between two turns of the event loop (a few ms of the thread). */
export const EXPOSITION_SLICE = 2000;

function labelTextOf(s: Series): string {
  if (s.labelText === null) {
    let t = '';
    for (const [k, v] of Object.entries(s.labels)) t += `${t === '' ? '' : ','}${k}="${escapeLabel(v)}"`;
    s.labelText = t;
  }
  return s.labelText;
}

/** As prom-client's own metrics give them: le is a number except +Inf. */
interface Sample { labels: Record<string, string | number>; value: number; metricName?: string }

/**
 * One metric's series by label set, at most `cap` of them; past that, new label sets share
 * overflow series that keep only the outcome labels (bounded) and whose observations are
 * counted in mesh_agent_metrics_overflow_total{metric}. Registered in prom.ts's
 * ExpositionRegistry, which asks for promString() at a scrape (and get() for its JSON).
 */
export class SeriesFamily<S extends Series> {
  readonly name: string;
  readonly help: string;
  readonly type: 'counter' | 'gauge' | 'histogram';
  readonly aggregator = 'sum';
  private readonly labelNames: readonly string[];
  private readonly keep: readonly string[];
  private readonly cap: number;
  private readonly make: (labels: Labels, overflowCount: CounterSeries | null) => S;
  private readonly overflowCount: () => CounterSeries | null;
  private readonly bounds: readonly number[];
  private children = new Map<string, S>();
  private overflow = new Map<string, S>();

  constructor(o: {
    name: string; help: string; type: 'counter' | 'gauge' | 'histogram'; labelNames: readonly string[];
    keep: readonly string[]; cap: number; buckets?: readonly number[];
    /** The overflow counter series of this family, created on first overflow (null: uncapped, cannot overflow). */
    overflowCount: () => CounterSeries | null;
  }) {
    this.name = o.name;
    this.help = o.help;
    this.type = o.type;
    this.labelNames = o.labelNames;
    this.keep = o.keep;
    this.cap = o.cap;
    this.overflowCount = o.overflowCount;
    const bounds = o.buckets ?? [];
    this.bounds = bounds;
    this.make = (o.type === 'histogram'
      ? (l: Labels, of: CounterSeries | null) => new HistogramSeries(l, bounds, of)
      : (l: Labels, of: CounterSeries | null) => new CounterSeries(l, of)) as (l: Labels, of: CounterSeries | null) => S;
  }

  get series(): number {
    return this.children.size + this.overflow.size;
  }

  /**
   * The series of this label set, created if there is room, else its overflow series. The
   * slow path: callers keep the result instead of resolving per observation.
   */
  resolve(l: Labels): S {
    const k = seriesKey(this.labelNames, l);
    let s = this.children.get(k);
    if (s !== undefined) return s;
    if (this.children.size < this.cap) {
      s = this.make(l, null);
      this.children.set(k, s);
      return s;
    }
    const o = overflowLabels(l, this.keep);
    const ok = seriesKey(this.labelNames, o);
    s = this.overflow.get(ok);
    if (s === undefined) {
      s = this.make(o, this.overflowCount());
      this.overflow.set(ok, s);
    }
    return s;
  }

  *all(): Iterable<S> {
    yield* this.children.values();
    yield* this.overflow.values();
  }

  /**
   * The family's lines of the text exposition, the same bytes prom-client writes for its own
   * metrics (prom.ts's ExpositionRegistry asks for these), without an object
   * and a label formatting per line, and giving the event loop back every EXPOSITION_SLICE lines:
   * a node's thousands of series, ~70 lines a histogram, held the main thread, which is also
   * proxy 0, for a quarter of a second per scrape. Each series is read whole, within one slice.
   */
  async promString(): Promise<string> {
    const name = escapeText(this.name);
    const les = this.bounds.map((b) => `le="${b}"`);
    // Joined a slice at a time: one join of a whole family's lines was itself a long stall.
    const slices: string[] = [];
    let out = [`# HELP ${name} ${escapeText(this.help)}`, `# TYPE ${name} ${this.type}`];
    for (const s of [...this.all()]) {
      if (out.length >= EXPOSITION_SLICE) {
        slices.push(out.join('\n'));
        out = [];
        await new Promise<void>((r) => setImmediate(r));
      }
      const l = labelTextOf(s);
      const braces = l === '' ? '' : `{${l}}`;
      if (s instanceof HistogramSeries) {
        const rest = l === '' ? '}' : `,${l}}`;
        let acc = 0;
        for (let i = 0; i < les.length; i++) {
          acc += s.counts[i]!;
          out.push(`${name}_bucket{${les[i]}${rest} ${valueText(acc)}`);
        }
        out.push(`${name}_bucket{le="+Inf"${rest} ${valueText(s.count)}`, `${name}_sum${braces} ${valueText(s.sum)}`, `${name}_count${braces} ${valueText(s.count)}`);
      } else out.push(`${name}${braces} ${valueText(s.value)}`);
    }
    if (out.length > 0) slices.push(out.join('\n'));
    return slices.join('\n');
  }

  /** For the Registry's getMetricsAsJSON(): each sample with its labels, as prom-client's own metrics give them. */
  async get() {
    const values: Sample[] = [];
    if (this.type === 'histogram') {
      const bucket = `${this.name}_bucket`;
      for (const s of this.all() as Iterable<HistogramSeries>) {
        let acc = 0;
        for (let i = 0; i < this.bounds.length; i++) {
          acc += s.counts[i]!;
          values.push({ labels: { ...s.labels, le: this.bounds[i]! }, value: acc, metricName: bucket });
        }
        values.push({ labels: { ...s.labels, le: '+Inf' }, value: s.count, metricName: bucket });
        values.push({ labels: { ...s.labels }, value: s.sum, metricName: `${this.name}_sum` });
        values.push({ labels: { ...s.labels }, value: s.count, metricName: `${this.name}_count` });
      }
    } else {
      for (const s of this.all() as Iterable<CounterSeries>) values.push({ labels: { ...s.labels }, value: s.value });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  /** Registry.resetMetrics(): zero every series (they stay, so callers' handles stay valid). */
  reset(): void {
    for (const s of this.all()) {
      if (s instanceof HistogramSeries) {
        s.counts.fill(0);
        s.sum = 0;
        s.count = 0;
      } else {
        s.value = 0;
        s.n = 0;
      }
    }
  }

  register(registry: Registry): this {
    registry.registerMetric(this as unknown as Parameters<Registry['registerMetric']>[0]);
    return this;
  }
}
