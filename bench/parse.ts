// Pure parsers for the load tools' output: wrk, h2load (summary and --log-file), iperf3 -J.
// Each throws an error naming the tool and the missing field, so a changed tool version fails
// the bench loudly instead of reporting zeros.
import { procStatInt } from '../src/util/proc-stat.ts';

export interface WrkResult {
  requestsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  requests: number;
  /** connect/read/write/timeout socket errors plus non-2xx/3xx responses */
  errors: number;
}

const UNIT_MS: Record<string, number> = { us: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** "642.00us", "0.87ms", "1.2s" -> milliseconds. */
export function durationMs(text: string): number {
  const m = /^([\d.]+)(us|ms|s|m|h)$/.exec(text.trim());
  if (!m) throw new Error(`unrecognised duration ${JSON.stringify(text)}`);
  return Number(m[1]) * UNIT_MS[m[2]];
}

function need(m: RegExpExecArray | null, tool: string, what: string, out: string): RegExpExecArray {
  if (!m) throw new Error(`${tool} output has no ${what}; is it the expected version? output: ${out.slice(-600)}`);
  return m;
}

/** Parses `wrk --latency` output. */
export function parseWrk(out: string): WrkResult {
  const rps = need(/^Requests\/sec:\s+([\d.]+)/m.exec(out), 'wrk', 'Requests/sec line', out);
  const p50 = need(/^\s+50%\s+(\S+)/m.exec(out), 'wrk', '50% latency (run with --latency)', out);
  const p99 = need(/^\s+99%\s+(\S+)/m.exec(out), 'wrk', '99% latency (run with --latency)', out);
  const reqs = need(/^\s+(\d+) requests in /m.exec(out), 'wrk', 'request count', out);
  let errors = 0;
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  if (sock) errors += sock.slice(1).reduce((a, b) => a + Number(b), 0);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  if (non2xx) errors += Number(non2xx[1]);
  return { requestsPerSec: Number(rps[1]), p50Ms: durationMs(p50[1]), p99Ms: durationMs(p99[1]), requests: Number(reqs[1]), errors };
}

export interface H2loadResult {
  requestsPerSec: number;
  succeeded: number;
  failed: number;
  meanMs: number;
}

/** Parses h2load's summary (the "finished in", "requests:" and "time for request:" lines). */
export function parseH2load(out: string): H2loadResult {
  const fin = need(/^finished in [\d.]+m?s, ([\d.]+) req\/s/m.exec(out), 'h2load', '"finished in" line', out);
  const req = need(/^requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed/m.exec(out), 'h2load', '"requests:" line', out);
  const t = need(/^time for request:\s+(\S+)\s+(\S+)\s+(\S+)/m.exec(out), 'h2load', '"time for request" line', out);
  return { requestsPerSec: Number(fin[1]), succeeded: Number(req[1]), failed: Number(req[2]), meanMs: durationMs(t[3]) };
}

export interface LatencySummary {
  count: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

/** Nearest-rank percentile of sorted values. */
export function percentile(sorted: Float64Array | number[], p: number): number {
  if (sorted.length === 0) throw new Error('percentile of no samples');
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

/** How the memory scenario reads the agent's RSS, idle and loaded alike: V8 grows and shrinks its heap in steps. */
export const RSS_SAMPLING = { count: 5, gapMs: 1000 } as const;

/** The median of `count` readings taken `gapMs` apart (the wait is passed in, so this stays testable). */
export async function sampleMedian(read: () => number, wait: (ms: number) => Promise<unknown>, { count, gapMs }: { count: number; gapMs: number } = RSS_SAMPLING): Promise<number> {
  if (!Number.isInteger(count) || count < 1) throw new Error(`sampleMedian needs at least one sample, got ${count}`);
  const samples: number[] = [];
  for (let i = 0; i < count; i++) {
    if (i > 0) await wait(gapMs);
    samples.push(read());
  }
  samples.sort((a, b) => a - b);
  return samples[(count - 1) >> 1]!;
}

/** h2load --log-file rows are "start-us<TAB>status<TAB>duration-us"; only 2xx rows count. */
export function latencyFromH2loadLog(text: string): LatencySummary & { non2xx: number } {
  const samples: number[] = [];
  let non2xx = 0;
  for (const line of text.split('\n')) {
    if (!line) continue;
    const [, status, us] = line.split('\t');
    if (!/^2\d\d$/.test(status)) {
      non2xx++;
      continue;
    }
    samples.push(Number(us) / 1000);
  }
  if (samples.length === 0) throw new Error('h2load --log-file has no successful requests');
  const sorted = Float64Array.from(samples).sort();
  return { count: sorted.length, p50Ms: percentile(sorted, 50), p99Ms: percentile(sorted, 99), maxMs: sorted[sorted.length - 1], non2xx };
}

/** iperf3 -J: the receiver's average bit rate. */
export function parseIperf3(json: string): { gbitPerSec: number; retransmits: number; bytes: number } {
  let d: any;
  try {
    d = JSON.parse(json);
  } catch {
    throw new Error(`iperf3 -J printed no JSON: ${json.slice(0, 300)}`);
  }
  if (d.error) throw new Error(`iperf3: ${d.error}`);
  const bps = d?.end?.sum_received?.bits_per_second;
  if (typeof bps !== 'number') throw new Error('iperf3 -J output has no end.sum_received.bits_per_second');
  const bytes = d.end.sum_received.bytes;
  if (typeof bytes !== 'number') throw new Error('iperf3 -J output has no end.sum_received.bytes');
  return { gbitPerSec: bps / 1e9, retransmits: d.end.sum_sent?.retransmits ?? 0, bytes };
}

/** Read and write system calls so far, from /proc/<pid>/io (syscr, syscw; every thread of the process). */
export function parseProcIo(text: string): { reads: number; writes: number } {
  const r = /^syscr:\s+(\d+)$/m.exec(text);
  const w = /^syscw:\s+(\d+)$/m.exec(text);
  if (!r || !w) throw new Error('no syscr/syscw lines in /proc/<pid>/io (is the process gone, or the kernel built without task I/O accounting?)');
  return { reads: Number(r[1]), writes: Number(w[1]) };
}

/** utime and stime from /proc/<pid>/stat (every thread of the process), in clock ticks; throws when they are not there. */
export function parseCpuTicks(stat: string): { user: number; sys: number } {
  return { user: procStatInt(stat, 'utime'), sys: procStatInt(stat, 'stime') };
}

/** Times a process gave up its CPU to wait (voluntary_ctxt_switches in /proc/<pid>/status): for a server, its sleeps. */
export function parseVoluntarySwitches(status: string): number {
  const m = /^voluntary_ctxt_switches:\s+(\d+)$/m.exec(status);
  if (!m) throw new Error('no voluntary_ctxt_switches line in /proc/<pid>/status');
  return Number(m[1]);
}

/** VmRSS from /proc/<pid>/status, in bytes. */
export function parseVmRss(status: string): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(status);
  if (!m) throw new Error('no VmRSS line in /proc/<pid>/status (is the process a zombie?)');
  return Number(m[1]) * 1024;
}

/**
 * How close the latency clients' send phases came: each client's send time (its 11th
 * request) modulo its period, then the smallest circular gap between two clients (ms).
 * Measured, because the process starts, not the 1 ms stagger, decide where phases land.
 */
export function closestPhaseGapMs(logs: string[], periodUs: number): number {
  const phases: number[] = [];
  for (const text of logs) {
    // A request from a little way in: past the connect, on the client's timer.
    const lines = text.split('\n').filter(Boolean);
    if (lines.length > 0) phases.push(Number(lines[Math.min(10, lines.length - 1)]!.split('\t')[0]) % periodUs);
  }
  if (phases.length < 2) return periodUs / 1000;
  phases.sort((a, b) => a - b);
  let gap = phases[0]! + periodUs - phases[phases.length - 1]!;
  for (let i = 1; i < phases.length; i++) gap = Math.min(gap, phases[i]! - phases[i - 1]!);
  return gap / 1000;
}
