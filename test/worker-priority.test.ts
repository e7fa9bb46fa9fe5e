// A replacement proxy worker starts at a raised scheduling priority and drops it once it listens
// (src/workers/priority.ts; docs/benchmarks.md, "A worker's start"): the thread is raised from its
// first instruction, back at the main thread's nice value when it listens or fails to, and the
// main thread (every thread that was there before) is never left raised, a Worker constructor that
// throws included. Without CAP_SYS_NICE the replacement starts as before and the log says why,
// once. The pool runs in a process of its own (test/fixtures/priority-pool.ts) with the real worker
// on loopback; nice values come from the threads themselves and from /proc/PID/task/TID/stat.
import test from 'ava';
import { execFile } from 'node:child_process';
import * as os from 'node:os';
import { BOOST_LIMIT_MS, BOOST_STEPS, lowerThreads, raisedForThread } from '../src/workers/priority.ts';

const POOL = new URL('./fixtures/priority-pool.ts', import.meta.url).pathname;
const PRIORITY = new URL('../src/workers/priority.ts', import.meta.url).pathname;

interface Run { lines: string[]; mainBefore: number; mainAfter: number; threads: Record<string, number> }

function run(args: string[], withoutSysNice = false): Promise<Run> {
  const node = [process.execPath, '--disable-warning=ExperimentalWarning', POOL, ...args];
  const [cmd, ...argv] = withoutSysNice ? ['setpriv', '--bounding-set=-sys_nice', '--inh-caps=-sys_nice', '--', ...node] : node;
  return new Promise((resolve, reject) => execFile(cmd!, argv, { timeout: 90_000 }, (err, stdout, stderr) => {
    if (err) reject(new Error(`${args.join(' ')}: ${err.message}\n${stderr}`));
    else resolve(JSON.parse(stdout) as Run);
  }));
}

/** The nice values the worker threads reported, in order: 'at start N', 'at ready N', 'at failed N'. */
const reported = (r: Run) => r.lines.flatMap((l) => /proxy worker 1: nice (at \w+) (-?\d+)/.exec(l)?.slice(1, 3).join(' ') ?? []);
const NO_BOOST = /^info a replacement proxy worker starts at normal scheduling priority.*refused \(.*EACCES.*\); grant the agent CAP_SYS_NICE/;

test.before(() => {
  if (process.getuid?.() !== 0) throw new Error('the worker priority tests raise a thread\'s priority, which needs CAP_SYS_NICE: run them as root (sudo ./dev test)');
});

test('raisedForThread returns what make made with the nice value it raised from (the pool starts its cap on that), and the calling thread is back at it', (t) => {
  const n = os.getPriority(0);
  const refusals: Error[] = [];
  const r = raisedForThread((restoreNice) => ({ restoreNice, niceInMake: os.getPriority(0) }), (e) => refusals.push(e));
  t.deepEqual(r, { value: { restoreNice: n, niceInMake: n - BOOST_STEPS }, raisedFrom: n });
  t.deepEqual(refusals, []);
  t.is(os.getPriority(0), n);
});

test('lowerThreads passes over a thread that does not exist (one that exited meanwhile)', (t) => {
  // 2^22 is past the kernel's PID_MAX_LIMIT, so no thread has it: setpriority gives ESRCH.
  t.deepEqual(lowerThreads([2 ** 22], os.getPriority(0)), []);
});

test('lowerThreads reports a thread it may not change, with the reason', async (t) => {
  // As root every change is allowed, so a process without CAP_SYS_NICE asks for its own main
  // thread one step above its nice value: the kernel refuses with EACCES.
  const script = `import * as os from 'node:os'; import { lowerThreads } from ${JSON.stringify(PRIORITY)};
    process.stdout.write(JSON.stringify({ pid: process.pid, failed: lowerThreads([process.pid], os.getPriority(0) - 1) }));`;
  const out = await new Promise<string>((resolve, reject) => execFile('setpriv', ['--bounding-set=-sys_nice', '--inh-caps=-sys_nice', '--', process.execPath, '--disable-warning=ExperimentalWarning', '--input-type=module', '-e', script], { timeout: 30_000 }, (err, stdout, stderr) => {
    if (err) reject(new Error(`${err.message}\n${stderr}`));
    else resolve(stdout);
  }));
  const { pid, failed } = JSON.parse(out) as { pid: number; failed: string[] };
  t.is(failed.length, 1, out);
  t.regex(failed[0]!, new RegExp(`^thread ${pid}: .*EACCES`));
});

test('a replacement worker starts raised and is back at the main thread\'s nice value once it listens; the first start is not raised; no thread is left raised', async (t) => {
  const r = await run(['kill', '2']);
  const n = r.mainBefore;
  t.deepEqual(reported(r), [`at start ${n}`, `at ready ${n}`, `at start ${n - BOOST_STEPS}`, `at ready ${n}`, `at start ${n - BOOST_STEPS}`, `at ready ${n}`], r.lines.join('\n'));
  t.is(r.mainAfter, n, 'the main thread is back at its nice value');
  t.deepEqual(Object.entries(r.threads).filter(([, nice]) => nice !== n), [], 'every thread, the replacements\' and those they may have started, at the process\'s nice value');
  t.false(r.lines.some((l) => NO_BOOST.test(l)));
});

test('a replacement that fails to listen steps back before it reports the failure; the one after starts raised', async (t) => {
  const r = await run(['taken']);
  const n = r.mainBefore;
  t.deepEqual(reported(r), [`at start ${n}`, `at ready ${n}`, `at start ${n - BOOST_STEPS}`, `at failed ${n}`, `at start ${n - BOOST_STEPS}`, `at ready ${n}`], r.lines.join('\n'));
  t.true(r.lines.some((l) => /^warn proxy worker 1 exited \(listen EADDRINUSE/.test(l)), r.lines.join('\n'));
  t.is(r.mainAfter, n);
  t.deepEqual(Object.entries(r.threads).filter(([, nice]) => nice !== n), []);
});

test('a Worker constructor that throws leaves the main thread at its nice value', async (t) => {
  const r = await run(['unclonable']);
  const n = r.mainBefore;
  t.true(r.lines.some((l) => /^warn proxy worker 1 exited \(could not start: .*could not be cloned/.test(l)), r.lines.join('\n'));
  t.deepEqual(reported(r), [`at start ${n}`, `at ready ${n}`, `at start ${n - BOOST_STEPS}`, `at ready ${n}`], r.lines.join('\n'));
  t.is(r.mainAfter, n);
  t.deepEqual(Object.entries(r.threads).filter(([, nice]) => nice !== n), []);
});

test('without CAP_SYS_NICE a replacement starts at normal priority, and the log says why and what to grant, once', async (t) => {
  const r = await run(['kill', '2'], true);
  const n = r.mainBefore;
  t.deepEqual(reported(r), [`at start ${n}`, `at ready ${n}`, `at start ${n}`, `at ready ${n}`, `at start ${n}`, `at ready ${n}`], r.lines.join('\n'));
  t.is(r.lines.filter((l) => NO_BOOST.test(l)).length, 1, r.lines.join('\n'));
  t.is(r.lines.filter((l) => /proxy worker 1 replaced/.test(l)).length, 2, 'replaced all the same');
  t.is(r.mainAfter, n);
});

test('a replacement stuck before it listens is lowered by the pool after BOOST_LIMIT_MS, and the log says so', async (t) => {
  const r = await run(['stuck']);
  const n = r.mainBefore;
  t.deepEqual(reported(r), [`at start ${n}`, `at ready ${n}`, `at start ${n - BOOST_STEPS}`], r.lines.join('\n'));
  t.true(r.lines.some((l) => new RegExp(`^warn proxy worker 1 has not listened ${BOOST_LIMIT_MS} ms after it started: its thread is back at normal priority`).test(l)), r.lines.join('\n'));
  t.false(r.lines.some((l) => /not lowered/.test(l)), r.lines.join('\n'));
  t.is(r.mainAfter, n);
  t.deepEqual(Object.entries(r.threads).filter(([, nice]) => nice !== n), [], 'the stuck thread, still spinning, and every other at the process\'s nice value');
});

