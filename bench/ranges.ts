// Ranges over several full runs of one commit: what the README and docs/benchmarks.md state.
// One run on two shared cores is noise; a target is stated from the latest runs, every one
// of them, not from the best. Pure: run.ts reads the files and writes the docs.

import { docsRefusal, fmt, MODES, ratio, type Mode, type Report, type TargetResult } from './report.ts';

export interface MetricRange {
  scenario: string;
  title: string;
  metric: string;
  unit: string;
  /** min and max of each path's value over the runs that measured it. */
  values: Partial<Record<Mode, [number, number]>>;
  /** min and max of value/direct. */
  ratios: Partial<Record<Mode, [number, number]>>;
}

export interface TargetRange {
  id: string;
  target: string;
  /** One per run, in run order. */
  statuses: TargetResult['status'][];
  measured: string[];
}

export interface RangeSummary {
  commit: string;
  runs: { startedAt: string; load1: number }[];
  metrics: MetricRange[];
  targets: TargetRange[];
}

/** Why these reports may not be summarized as one commit's latest full runs, or null. */
export function rangesRefusal(reports: Report[], scenarioIds: readonly string[], min = 3): string | null {
  if (reports.length < min) return `${reports.length} report${reports.length === 1 ? '' : 's'} given; a range needs at least ${min} full runs of the same commit`;
  for (const r of reports) {
    const why = docsRefusal(r, scenarioIds);
    if (why) return `the run of ${r.startedAt} is not a full run: ${why}`;
  }
  const commits = [...new Set(reports.map((r) => r.commit))];
  if (commits.length > 1) return `the runs measured different commits (${commits.join(', ')}); a range is over runs of one commit`;
  if (commits[0]!.endsWith('+dirty')) return `the runs measured uncommitted changes (${commits[0]}); commit them and run again`;
  return null;
}

function widen(into: Partial<Record<Mode, [number, number]>>, mode: Mode, v: number | undefined): void {
  if (v === undefined || !Number.isFinite(v)) return;
  const cur = into[mode];
  into[mode] = cur ? [Math.min(cur[0], v), Math.max(cur[1], v)] : [v, v];
}

export function summarize(reports: Report[]): RangeSummary {
  const metrics = new Map<string, MetricRange>();
  for (const r of reports) {
    for (const s of r.scenarios) {
      for (const m of s.metrics) {
        const key = `${s.id}\0${m.name}`;
        let row = metrics.get(key);
        if (!row) metrics.set(key, (row = { scenario: s.id, title: s.title, metric: m.name, unit: m.unit, values: {}, ratios: {} }));
        for (const mode of MODES) {
          widen(row.values, mode, m.values[mode]);
          if (mode !== 'direct') widen(row.ratios, mode, ratio(m, mode));
        }
      }
    }
  }
  const targets = new Map<string, TargetRange>();
  reports.forEach((r, i) => {
    for (const t of r.targets) {
      let row = targets.get(t.id);
      if (!row) targets.set(t.id, (row = { id: t.id, target: t.target, statuses: Array(reports.length).fill('not run'), measured: Array(reports.length).fill('-') }));
      row.statuses[i] = t.status;
      row.measured[i] = t.measured;
    }
  });
  return {
    commit: reports[0]?.commit ?? '?',
    runs: reports.map((r) => ({ startedAt: r.startedAt, load1: r.machine.loadAvgAtStart[0] ?? NaN })),
    metrics: [...metrics.values()],
    targets: [...targets.values()],
  };
}

/** met only when every run met it; missed when every run missed it; otherwise both counts. */
export function verdict(statuses: TargetResult['status'][]): string {
  const judged = statuses.filter((s) => s === 'met' || s === 'missed');
  if (judged.length === 0) return statuses.includes('not judged') ? 'not judged' : 'not run';
  const met = judged.filter((s) => s === 'met').length;
  if (met === statuses.length) return 'met';
  if (met === 0 && judged.length === statuses.length) return '**missed**';
  return `**met in ${met} of ${statuses.length} runs**`;
}

const span = (r: [number, number] | undefined, f: (v: number) => string): string => (r === undefined ? '-' : r[0] === r[1] ? f(r[0]) : `${f(r[0])}-${f(r[1])}`);
const times = (r: [number, number] | undefined): string => (r === undefined ? '-' : `${span(r, (v) => v.toFixed(2))}×`);

export function renderRanges(s: RangeSummary): string {
  const lines: string[] = [];
  lines.push(`${s.runs.length} full runs of commit ${s.commit}: ${s.runs.map((r) => `${r.startedAt} (load ${r.load1.toFixed(2)})`).join(', ')}. Each cell is the lowest and highest of the runs.`);
  lines.push('');
  lines.push('| scenario | metric | direct | nginx | mesh | mtls | mesh/direct | nginx/direct |');
  lines.push('|---|---|---:|---:|---:|---:|---:|---:|');
  for (const m of s.metrics) {
    const v = (mode: Mode) => span(m.values[mode], fmt);
    lines.push(`| ${m.scenario} | ${m.metric} (${m.unit}) | ${v('direct')} | ${v('nginx')} | ${v('mesh')} | ${v('mtls')} | ${times(m.ratios.mesh)} | ${times(m.ratios.nginx)} |`);
  }
  lines.push('');
  lines.push('| target | over the runs | measured in each run |');
  lines.push('|---|---|---|');
  for (const t of s.targets) lines.push(`| ${t.target} | ${verdict(t.statuses)} | ${t.measured.join('; ')} |`);
  lines.push('');
  return lines.join('\n');
}
