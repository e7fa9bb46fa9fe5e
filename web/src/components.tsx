// Reusable pieces of the pages: a sortable table, the topology graph, small charts.
import type { ComponentChildren } from 'preact';
import { useMemo, useState } from 'preact/hooks';
import { formatLatency, formatRps, formatSuccess } from '../../src/controller/format.ts';
import type { TopoEdge, TopoNode } from './lib/graph.ts';
import { DEFAULT_LAYOUT, layout } from './lib/layout.ts';
import { successClass } from './lib/health.ts';
import type { SeriesPoint } from '../../src/dashboard/views.ts';

export interface Column<T> {
  key: string;
  label: string;
  numeric?: boolean;
  value: (row: T) => string | number | null;
  render?: (row: T) => ComponentChildren;
  title?: (row: T) => string | undefined;
  cellClass?: (row: T) => string | undefined;
}

/** A table whose headers are buttons that sort it (aria-sort says how); empty values sort last. */
export function Table<T>(p: { caption: string; columns: Column<T>[]; rows: T[]; rowKey: (r: T) => string; initialSort?: string; testId?: string }) {
  const [sort, setSort] = useState<{ key: string; dir: 1 | -1 }>({ key: p.initialSort ?? p.columns[0]!.key, dir: 1 });
  const col = p.columns.find((c) => c.key === sort.key) ?? p.columns[0]!;
  const rows = useMemo(() => {
    const v = (r: T) => col.value(r);
    return [...p.rows].sort((a, b) => {
      const x = v(a);
      const y = v(b);
      if (x === null || y === null) return x === y ? 0 : x === null ? 1 : -1;
      return (x < y ? -1 : x > y ? 1 : 0) * sort.dir;
    });
  }, [p.rows, sort, col]);
  return (
    <table data-testid={p.testId}>
      <caption>{p.caption}</caption>
      <thead>
        <tr>
          {p.columns.map((c) => {
            const active = c.key === sort.key;
            return (
              <th key={c.key} scope="col" class={c.numeric ? 'num' : undefined} aria-sort={active ? (sort.dir === 1 ? 'ascending' : 'descending') : 'none'}>
                <button type="button" onClick={() => setSort({ key: c.key, dir: active ? (sort.dir === 1 ? -1 : 1) : c.numeric ? -1 : 1 })}>
                  {c.label}
                  <span aria-hidden="true" class="arrow">{active ? (sort.dir === 1 ? '▲' : '▼') : ''}</span>
                </button>
              </th>
            );
          })}
        </tr>
      </thead>
      <tbody>
        {rows.map((r) => (
          <tr key={p.rowKey(r)} data-row={p.rowKey(r)}>
            {p.columns.map((c) => (
              <td key={c.key} class={[c.numeric ? 'num' : '', c.cellClass?.(r) ?? ''].join(' ').trim() || undefined} title={c.title?.(r)} data-col={c.key}>
                {c.render ? c.render(r) : (c.value(r) ?? '-')}
              </td>
            ))}
          </tr>
        ))}
      </tbody>
    </table>
  );
}

interface Golden {
  requests: number;
  successes: number;
  successRate: number | null;
  rps: number | null;
  latencyMsP50: number | null;
  latencyMsP95: number | null;
  latencyMsP99: number | null;
}

/** The golden-metric columns every table shares; the success cell's title gives the counts behind it. */
export function goldenColumns<T extends Golden>(): Column<T>[] {
  return [
    {
      key: 'success', label: 'Success', numeric: true, value: (r) => r.successRate, render: (r) => formatSuccess(r.successRate),
      title: (r) => (r.requests ? `${r.successes} of ${r.requests} requests` : 'no requests in the window'), cellClass: (r) => `sr-${successClass(r.successRate)}`,
    },
    { key: 'rps', label: 'RPS', numeric: true, value: (r) => r.rps, render: (r) => formatRps(r.rps) },
    { key: 'p50', label: 'P50', numeric: true, value: (r) => r.latencyMsP50, render: (r) => formatLatency(r.latencyMsP50) },
    { key: 'p95', label: 'P95', numeric: true, value: (r) => r.latencyMsP95, render: (r) => formatLatency(r.latencyMsP95) },
    { key: 'p99', label: 'P99', numeric: true, value: (r) => r.latencyMsP99, render: (r) => formatLatency(r.latencyMsP99) },
  ];
}

/** Workloads as boxes, traffic as arrows labelled with success rate and RPS; failing edges in red and thicker. */
export function Topology(p: { nodes: TopoNode[]; edges: TopoEdge[] }) {
  const l = useMemo(() => layout(p.nodes.map((n) => n.id), p.edges), [p.nodes, p.edges]);
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const metric = new Map(p.edges.map((e) => [`${e.from}>${e.to}`, e]));
  const { nodeWidth: w, nodeHeight: h } = DEFAULT_LAYOUT;
  return (
    <svg class="topology" viewBox={`0 0 ${l.width} ${l.height}`} width={l.width} height={l.height} role="img" aria-label={`traffic between ${p.nodes.length} workloads: ${p.edges.map((e) => `${byId.get(e.from)?.label} to ${byId.get(e.to)?.label} ${formatSuccess(e.successRate)}`).join('; ')}`}>
      <defs>
        {(['good', 'warn', 'bad', 'none'] as const).map((c) => (
          <marker id={`arrow-${c}`} viewBox="0 0 10 10" refX="10" refY="5" markerUnits="userSpaceOnUse" markerWidth="10" markerHeight="10" orient="auto-start-reverse">
            <path d="M0,0 L10,5 L0,10 z" class={`edge-${c}`} />
          </marker>
        ))}
      </defs>
      {l.edges.map((e) => {
        const m = metric.get(`${e.from}>${e.to}`)!;
        const c = successClass(m.successRate);
        const dx = Math.max(40, Math.abs(e.x2 - e.x1) / 2) * (e.back ? -1 : 1);
        const d = `M${e.x1},${e.y1} C${e.x1 + dx},${e.y1} ${e.x2 - dx},${e.y2} ${e.x2},${e.y2}`;
        return (
          <g key={`${e.from}>${e.to}`} class={`edge edge-${c}`} data-edge={`${byId.get(e.from)?.label}>${byId.get(e.to)?.label}`}>
            <path d={d} fill="none" marker-end={`url(#arrow-${c})`} />
            <text x={(e.x1 + e.x2) / 2} y={(e.y1 + e.y2) / 2 - 6} text-anchor="middle">
              {m.successRate === null ? `${m.requests ? '' : 'tcp'}` : `${formatSuccess(m.successRate)} · ${formatRps(m.rps)}`}
            </text>
          </g>
        );
      })}
      {l.nodes.map((n) => {
        const node = byId.get(n.id)!;
        const box = (
          <g class={node.external ? 'node external' : 'node'}>
            <rect x={n.x} y={n.y} width={w} height={h} rx="6" />
            <text x={n.x + w / 2} y={n.y + h / 2 + 5} text-anchor="middle">{node.label}</text>
          </g>
        );
        return node.href ? <a key={n.id} href={node.href} aria-label={`open ${node.label}`}>{box}</a> : <g key={n.id}>{box}</g>;
      })}
    </svg>
  );
}

/** A line over the window's buckets; a bucket no report covers breaks the line. */
export function Sparkline(p: { label: string; points: SeriesPoint[]; value: (s: SeriesPoint) => number | null; max?: number; format: (v: number) => string }) {
  const W = 320;
  const H = 70;
  const vals = p.points.map(p.value);
  const present = vals.filter((v): v is number => v !== null);
  const max = p.max ?? Math.max(1e-9, ...present);
  const segs: string[][] = [[]];
  vals.forEach((v, i) => {
    if (v === null) return void (segs.at(-1)!.length && segs.push([]));
    segs.at(-1)!.push(`${((i + 0.5) * W) / vals.length},${H - 4 - ((H - 8) * v) / max}`);
  });
  const last = present.at(-1);
  const summary = present.length ? `${p.label}: latest ${p.format(last!)}, range ${p.format(Math.min(...present))} to ${p.format(Math.max(...present))}` : `${p.label}: no data in the window`;
  return (
    <figure class="chart">
      <figcaption>{p.label} <strong>{last === undefined ? '-' : p.format(last)}</strong></figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} width={W} height={H} role="img" aria-label={summary}>
        <line x1="0" y1={H - 4} x2={W} y2={H - 4} class="axis" />
        {segs.filter((s) => s.length).map((s, i) => (s.length === 1 ? <circle key={i} cx={s[0]!.split(',')[0]} cy={s[0]!.split(',')[1]} r="2" /> : <polyline key={i} points={s.join(' ')} />))}
      </svg>
    </figure>
  );
}

/** The latency histogram between its first and last non-empty bucket, with p50/p95/p99 in the caption. */
export function LatencyHistogram(p: { bounds: readonly number[]; counts: number[]; p50: number | null; p95: number | null; p99: number | null }) {
  const first = p.counts.findIndex((c) => c > 0);
  if (first < 0) return <p class="empty">No requests in the window, so no latency distribution.</p>;
  let lastIdx = p.counts.length - 1;
  while (p.counts[lastIdx] === 0) lastIdx--;
  const shown = p.counts.slice(first, lastIdx + 1);
  const max = Math.max(...shown);
  const W = 640;
  const H = 120;
  const bw = W / shown.length;
  const upper = (i: number) => (i < p.bounds.length ? formatLatency(p.bounds[i]!) : '+Inf');
  return (
    <figure class="chart wide">
      <figcaption>Latency to response headers: p50 {formatLatency(p.p50)}, p95 {formatLatency(p.p95)}, p99 {formatLatency(p.p99)}</figcaption>
      <svg viewBox={`0 0 ${W} ${H + 16}`} width={W} height={H + 16} role="img" aria-label={`latency distribution from ${upper(first - 1 < 0 ? 0 : first - 1)} to ${upper(lastIdx)}; p50 ${formatLatency(p.p50)}, p99 ${formatLatency(p.p99)}`}>
        {shown.map((c, i) => (
          <rect key={i} x={i * bw + 1} y={H - (H * c) / max} width={Math.max(1, bw - 2)} height={(H * c) / max}>
            <title>{`≤ ${upper(first + i)}: ${c} requests`}</title>
          </rect>
        ))}
        <text x="0" y={H + 14}>{first === 0 ? '0' : upper(first - 1)}</text>
        <text x={W} y={H + 14} text-anchor="end">{upper(lastIdx)}</text>
      </svg>
    </figure>
  );
}
