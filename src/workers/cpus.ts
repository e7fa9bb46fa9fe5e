// How many proxies the agent runs by default: the CPUs it may use. A container's CPU limit is a
// CFS quota in its cgroup (cgroup v2 cpu.max, v1 cpu.cfs_quota_us), which neither the CPU count
// nor the affinity mask shows; the limit of the tightest cgroup on the way to the root wins. A
// memory limit caps it too: each proxy thread is a V8 heap of its own (docs/benchmarks.md).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** cgroup v2 cpu.max ("max 100000" or "150000 100000") as CPUs, or null when unlimited or unreadable. */
export function parseCpuMax(text: string): number | null {
  const [quota, period] = text.trim().split(/\s+/);
  if (quota === undefined || quota === 'max') return null;
  return cpusOf(Number(quota), Number(period ?? 100_000));
}

/** cgroup v1 cpu.cfs_quota_us and cpu.cfs_period_us as CPUs; -1 (unlimited) gives null. */
export function parseCfs(quotaText: string, periodText: string): number | null {
  return cpusOf(Number(quotaText.trim()), Number(periodText.trim()));
}

function cpusOf(quota: number, period: number): number | null {
  if (!(quota > 0) || !(period > 0)) return null;
  return quota / period;
}

/** cgroup v2 memory.max or v1 memory.limit_in_bytes as bytes, or null when unlimited (v1 writes a huge number). */
export function parseMemoryMax(text: string): number | null {
  const t = text.trim();
  if (t === 'max' || !/^\d+$/.test(t)) return null;
  const n = Number(t);
  return n >= 2 ** 60 ? null : n;
}

interface CgroupPaths { v2?: string; v1cpu?: string; v1memory?: string }

/** This process's cgroup paths from /proc/self/cgroup: the v2 path and the v1 cpu and memory controllers'. */
export function parseProcCgroup(text: string): CgroupPaths {
  const out: CgroupPaths = {};
  for (const line of text.split('\n')) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    const ctl = m[1]!.split(',');
    if (m[1] === '') out.v2 = m[2];
    else if (ctl.includes('cpu')) out.v1cpu = m[2];
    else if (ctl.includes('memory')) out.v1memory = m[2];
  }
  return out;
}

type CgroupKind = keyof CgroupPaths;
interface CgroupMount { kind: CgroupKind; point: string; root: string }

/** The cgroup v2 and v1 cpu and memory mounts of /proc/self/mountinfo: where each is, and which cgroup it shows at its top. */
function parseCgroupMounts(mountinfo: string): CgroupMount[] {
  const out: CgroupMount[] = [];
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  for (const line of mountinfo.split('\n')) {
    const f = line.split(' ');
    const sep = f.indexOf('-', 6);
    if (sep < 0) continue;
    const opts = (f[sep + 3] ?? '').split(',');
    const kind: CgroupKind | null = f[sep + 1] === 'cgroup2' ? 'v2'
      : f[sep + 1] !== 'cgroup' ? null : opts.includes('cpu') ? 'v1cpu' : opts.includes('memory') ? 'v1memory' : null;
    if (kind !== null) out.push({ kind, point: unescape(f[4]!), root: unescape(f[3]!) });
  }
  return out;
}

/**
 * The directory of this process's `kind` cgroup, from /proc/self/mountinfo and /proc/self/cgroup
 * texts; null when no mount shows it. A mount's root is the cgroup at its top: "/" for a whole
 * hierarchy (and in a cgroup namespace), the container's own cgroup for the bind mounts a v1
 * container without one gets, where /proc/self/cgroup still names the full path.
 */
export function cgroupDirOf(mountinfo: string, procCgroup: string, kind: CgroupKind): { dir: string; top: string } | null {
  const mine = parseProcCgroup(procCgroup)[kind];
  if (mine === undefined) return null;
  for (const m of parseCgroupMounts(mountinfo)) {
    if (m.kind !== kind) continue;
    const rel = m.root === '/' ? mine : mine === m.root ? '' : mine.startsWith(`${m.root}/`) ? mine.slice(m.root.length) : null;
    if (rel !== null) return { dir: path.join(m.point, rel), top: m.point };
  }
  return null;
}

/** The tightest CPU limit on the way from `dir` up to `root`, read with `read(dir)`; null when none limits. */
export function tightest(root: string, dir: string, read: (dir: string) => number | null): number | null {
  let best: number | null = null;
  for (let d = dir; ; d = path.dirname(d)) {
    const v = read(d);
    if (v !== null && (best === null || v < best)) best = v;
    if (d === root || path.dirname(d) === d || !d.startsWith(root)) break;
  }
  return best;
}

const readOr = (f: string): string | null => {
  try {
    return fs.readFileSync(f, 'utf8');
  } catch {
    return null;
  }
};

/** The tightest limit `read` finds from this process's `kind` cgroup up to the top of the mount that shows it. */
function ownCgroupLimit(kind: CgroupKind, read: (dir: string) => number | null): number | null {
  const at = cgroupDirOf(readOr('/proc/self/mountinfo') ?? '', readOr('/proc/self/cgroup') ?? '', kind);
  return at === null ? null : tightest(at.top, at.dir, read);
}

/** The CPU limit of this process's cgroups (v2, else v1), or null. */
export function cgroupCpuLimit(): number | null {
  return ownCgroupLimit('v2', (d) => {
    const t = readOr(path.join(d, 'cpu.max'));
    return t === null ? null : parseCpuMax(t);
  }) ?? ownCgroupLimit('v1cpu', (d) => {
    const q = readOr(path.join(d, 'cpu.cfs_quota_us'));
    const p = readOr(path.join(d, 'cpu.cfs_period_us'));
    return q === null || p === null ? null : parseCfs(q, p);
  });
}

/** The memory limit of this process's cgroups (v2, else v1), bytes, or null. */
export function cgroupMemoryLimit(): number | null {
  const read = (file: string) => (d: string) => {
    const t = readOr(path.join(d, file));
    return t === null ? null : parseMemoryMax(t);
  };
  return ownCgroupLimit('v2', read('memory.max')) ?? ownCgroupLimit('v1memory', read('memory.limit_in_bytes'));
}

/** What the agent needs besides its extra proxies: one proxy idle, and room for 10,000 connections at ~10 KB. */
export const BASE_MEMORY = 180 * 2 ** 20;
/** What each extra proxy thread costs idle, with margin (measured 12-15 MB once its start-up heap is given back, src/util/shrink-heap.ts; docs/benchmarks.md). */
export const PROXY_MEMORY = 24 * 2 ** 20;

/**
 * The default proxy count: the CPUs this process may run on, at most its cgroup CPU limit
 * (rounded up), and no more than its memory limit leaves room for; at least 1.
 */
export function defaultProxyWorkers(limit = cgroupCpuLimit(), cpus = os.availableParallelism(), memory = cgroupMemoryLimit()): number {
  let n = Math.min(cpus, limit === null ? cpus : Math.ceil(limit));
  if (memory !== null) n = Math.min(n, 1 + Math.floor((memory - BASE_MEMORY) / PROXY_MEMORY));
  return Math.max(1, n);
}

/** A number of proxies, or auto (or empty): one per CPU the agent may use. */
export function parseProxyWorkers(v: string, origin: string): number | 'auto' {
  if (v === '' || v === 'auto') return 'auto';
  if (!/^\d+$/.test(v) || !(Number(v) >= 1 && Number(v) <= 1024)) throw new Error(`${origin}: "${v}" is not a number of proxies; give a whole number from 1 to 1024, or auto (one per CPU the agent may use)`);
  return Number(v);
}
