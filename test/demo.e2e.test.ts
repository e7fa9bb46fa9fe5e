// `mesh-agent demo`: the emojivoto-like app on a simulated 3-node cluster, meshed by the real
// agents and reporting to the controller. What `mesh-agent stat` says matches the bot's mix (the
// mix is a fixed sequence, so the failures in N requests are known to within one, plus what the
// agents' report boundaries, which differ by node, can cut), every replica behind a Service takes
// requests, the server-first mailer works through the proxy, the printed commands work, and
// nothing is left afterwards. Every wait is for a count or a line, never for a run length.
import test from 'ava';
import { execFile } from 'node:child_process';
import { cleanupLeftovers } from '../src/sim/index.ts';
import { failureRange, ROUND_OUTCOMES } from '../src/demo/traffic-mix.ts';
import { STEP_LINE } from '../src/demo/progress.ts';
import { START_STEPS } from '../src/demo/stack.ts';
import { DEMO_TEST_TIMEOUT_MS, DemoRun, leftovers, processesOf, type Proc } from './helpers/demo-run.ts';
import { until } from './helpers/until.ts';

/** Runs a printed command without blocking this process: the demo's output pipe keeps draining meanwhile. */
function runCmd(cmd: string, args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => execFile(cmd, args, { encoding: 'utf8', timeout: 60_000 }, (err, stdout, stderr) =>
    resolve({ status: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr: stderr || (err?.message ?? '') })));
}

/** Web requests the stat must have counted before its rates are held against the mix. */
const MIN_WEB_REQUESTS = 100;
/** Mails the demo must show delivered through the mesh. */
const MIN_MAILS = 20;
const SERVICES = ['web', 'voting', 'emoji'] as const;
/** The bot's rate. */
const RPS = 20;

interface StatJsonRow { name: string; meshed: string; requests: number; success: number | null; rps: number | null }

let run: DemoRun | undefined;
test.after.always(async () => {
  if (run && run.child.exitCode === null) {
    run.child.kill('SIGTERM');
    await run.exited;
  }
  await cleanupLeftovers();
});

/** The last match of `re` in the demo's output, once `ok` holds for it (each refresh prints the lines anew). */
async function lastLine(re: RegExp, ok: (m: RegExpMatchArray) => boolean, what: string): Promise<RegExpMatchArray> {
  return until(() => [...run!.output.matchAll(new RegExp(re.source, 'gm'))].at(-1), (m) => m !== undefined && ok(m), what,
    { ms: 90_000, intervalMs: 200, context: () => `demo output:\n${run!.output.slice(-4000)}` }) as Promise<RegExpMatchArray>;
}

test('the demo\'s stat matches the bot\'s mix, the SMTP service works through the proxy, and it cleans up', async (t) => {
  // The demo's waits fail on its silence (DemoRun.waitFor); the test as a whole gets the time a loaded machine needs.
  t.timeout(DEMO_TEST_TIMEOUT_MS);
  if (process.getuid?.() !== 0) throw new Error('the demo test needs root and BPF; run the suite as root: sudo ./dev test');
  const spawnedAt = Date.now();
  run = new DemoRun(['--interval', '2', '--rps', String(RPS)]);
  // "running" comes after the bot's first answer through the mesh. The commands to type follow it
  // in a write of their own, which the pipe may deliver later: wait for that block's last line.
  await run.waitFor(/==> running\./, 60_000);
  const runningSeenAt = Date.now();
  await run.waitFor(/Ctrl-C stops the demo and removes everything it made\./, 60_000);
  const ids = run.ids();
  const procs: Proc[] = processesOf(ids);
  t.true(procs.length >= 13, `3 agents, the controller and 9 service replicas in the cluster's cgroups, found ${procs.length}`);
  t.regex(run.output, /==> vote-bot: first answer from web through the mesh/);
  // The start said each of its steps as it completed, numbered in order, the last with the whole start's time.
  const steps = [...run.output.matchAll(new RegExp(STEP_LINE.source, 'gm'))];
  t.deepEqual(steps.map((m) => `${m[1]}/${m[2]}`), Array.from({ length: START_STEPS }, (_, i) => `${i + 1}/${START_STEPS}`), run.output);
  t.truthy(steps.at(-1)?.[4], 'the last step says how long the start took');

  // The commands the demo tells the user to type in another terminal work as printed.
  const statusCmd = run.output.match(/^ {4}(\S.* status)$/m)?.[1];
  const statCmd = run.output.match(/^ {4}(\S.* stat deploy -n emojivoto)$/m)?.[1];
  t.truthy(statusCmd, run.output);
  t.truthy(statCmd, 'this build has the controller: the demo prints the stat command');
  const [cmd, ...args] = statusCmd!.split(' ');
  const status = await runCmd(cmd!, args);
  t.is(status.status, 0, `${statusCmd}: ${status.stderr}`);
  t.regex(status.stdout, /emojivoto\s+web-\S+\s+10\.244\.\d+\.\d+\s+yes/);
  const [scmd, ...sargs] = statCmd!.split(' ');
  // The controller has traffic once the agent's first report with the bot's requests is in.
  const table = await until(() => runCmd(scmd!, sargs), (r) => r.status === 0 && /^web\s/m.test(r.stdout), `${statCmd} to show the web`,
    { ms: 60_000, intervalMs: 500 });
  t.regex(table.stdout, /^NAME\s+MESHED\s+SUCCESS\s+RPS\s+LATENCY_P50\s+LATENCY_P95\s+LATENCY_P99\s+TCP_CONN$/m);

  // The controller's numbers, once enough requests are counted. -t 10m: the whole run, so the
  // rates divide by the time the reports cover, which the test brackets below.
  let queryStart = 0;
  let queryEnd = 0;
  // Each node's agent reports on its own clock, so the counts are cut at different moments per
  // node; the controller's status, read around the query, says how far apart. A report that lands
  // during the query is read again (so the two reads describe the same reports) a few times; when
  // reports keep landing (a loaded machine makes the query slow), the skew is bounded by each
  // node's cut before and after the query instead: it is somewhere between the two.
  const controllerStatus = async () => {
    const [c, ...a] = [...prefix, 'curl', '-sf', '--http2-prior-knowledge', 'http://127.0.0.1:8086/v1/status'];
    const r = await runCmd(c!, a);
    if (r.status !== 0) throw new Error(`controller status: exit ${r.status}: ${r.stderr}`);
    const at = Date.now();
    const s = JSON.parse(r.stdout) as { nodes: Array<{ node: string; agentId: string; received: number; lastSeenMsAgo: number }> };
    // When each agent's last report came in, on this clock (the status was answered just before `at`).
    return { received: s.nodes.map((x) => `${x.node}/${x.agentId}:${x.received}`).sort().join(','), cuts: new Map(s.nodes.map((x) => [`${x.node}/${x.agentId}`, at - x.lastSeenMsAgo])) };
  };
  const prefix = statCmd!.includes('nsenter') ? statCmd!.split(' ').slice(0, statCmd!.split(' ').findIndex((w) => w.startsWith('--net=')) + 1) : [];
  let skewMs = 0;
  let tries = 0;
  const rows = await until(async () => {
    const before = await controllerStatus();
    queryStart = Date.now();
    const r = await runCmd(scmd!, [...sargs, '-t', '10m', '-o', 'json']);
    queryEnd = Date.now();
    if (r.status !== 0) throw new Error(`${statCmd} -o json: exit ${r.status}: ${r.stderr}`);
    const after = await controllerStatus();
    const same = before.received === after.received;
    if (!same && ++tries < 5) return null; // a report arrived meanwhile: read again
    const early = Math.min(...[...before.cuts.values()]);
    const late = Math.max(...[...after.cuts.values()]);
    skewMs = same ? Math.max(...after.cuts.values()) - Math.min(...after.cuts.values()) : late - early;
    return JSON.parse(r.stdout) as StatJsonRow[];
  }, (rs) => rs !== null && (rs.find((r) => r.name === 'web')?.requests ?? 0) >= MIN_WEB_REQUESTS, `the controller to count ${MIN_WEB_REQUESTS} web requests`, { ms: 90_000, intervalMs: 1000 }) as StatJsonRow[];
  // Requests of a deployment the bot's rate can put between the first and the last node's cut (and one in flight).
  const perRound = (d: string) => ROUND_OUTCOMES[d]!.length;
  const skewRequests = (d: string) => Math.ceil(((RPS * skewMs) / 1000) * (perRound(d) / perRound('web'))) + 1;
  for (const dep of SERVICES) {
    const row = rows.find((r) => r.name === dep);
    if (!row) {
      t.fail(`no ${dep} row in ${JSON.stringify(rows)}`);
      continue;
    }
    t.is(row.meshed, '2/2', dep);
    // The failures the controller counted must be what the mix puts in that many requests.
    const failures = row.requests - Math.round(row.success! * row.requests);
    const [lo, hi] = failureRange(dep, row.requests);
    const slack = dep === 'web' ? 0 : skewRequests(dep); // web is counted by the bot's node alone
    t.true(failures >= lo - slack && failures <= hi + slack, `${dep}: ${failures} failures in ${row.requests} requests; the mix makes it ${lo}${hi > lo ? `-${hi}` : ''}, ±${slack} for reports ${skewMs} ms apart`);
    // rps = requests / the time the reports cover. That time began after this test spawned the
    // demo and before it saw "running" (the bot's first request was already answered and
    // reported), and ended while the query ran.
    const lowest = row.requests / ((queryEnd - spawnedAt) / 1000);
    const highest = row.requests / ((queryStart - runningSeenAt) / 1000);
    t.true(row.rps! >= lowest && row.rps! <= highest, `${dep}: ${row.rps} rps for ${row.requests} requests; the covered time brackets it to ${lowest.toFixed(2)}-${highest.toFixed(2)}`);
  }
  // Every web request fans out in a fixed way: per round 5 to web, 4 to voting, 5 to emoji.
  // The counts are cut at a report boundary, where at most one bot request is in flight.
  const n = Object.fromEntries(rows.map((r) => [r.name, r.requests]));
  for (const dep of ['voting', 'emoji']) {
    const expected = (n.web! * perRound(dep)) / perRound('web');
    t.true(Math.abs(n[dep]! - expected) <= 2 + skewRequests(dep), `${dep}: ${n[dep]} requests for ${n.web} to web (expected ${expected.toFixed(1)}, ±${2 + skewRequests(dep)} for reports ${skewMs} ms apart)`);
  }

  // The demo's own refreshes print the same controller view, and the mailer's and agent's counts.
  const mailLine = await lastLine(/^mailer \(SMTP[^)]*\): (\d+) mails accepted/, (m) => Number(m[1]) >= MIN_MAILS, `${MIN_MAILS} mails`);
  const mails = Number(mailLine[1]);
  // The refresh reads the services' counts before the agent's, so its agent lines (printed above
  // the mailer's in the same refresh) have seen at least these mails.
  const refresh = run.output.slice(run.output.lastIndexOf('── ', mailLine.index), mailLine.index);
  const agent = /agents on 3 nodes: (\d+)\/(\d+) pods meshed; proxies (\d+) connections accepted \(([^)]*)\), \d+ open, (\d+) refused without record/.exec(refresh);
  t.truthy(agent, refresh);
  t.is(agent![1], '9');
  t.is(agent![5], '0', 'every connection the proxy accepted came through the datapath');
  const byProto = Object.fromEntries(agent![4]!.split(' ').map((kv) => kv.split('=')).map(([k, v]) => [k, Number(v)]));
  t.true(byProto.http1 >= 1 && byProto.http2 >= 2, JSON.stringify(byProto));
  t.true(byProto.opaque >= mails, `every mail went through the proxy as opaque: ${JSON.stringify(byProto)} vs ${mails}`);
  const serverFirst = Number(/proxies decided by: .*server-first=(\d+)/.exec(refresh)?.[1] ?? 0);
  t.true(serverFirst >= mails, `the proxy saw the mailer speak first on every connection: ${serverFirst} vs ${mails} mails`);
  // mTLS on its 3 nodes, said on screen: every workload's certificate ready, calls between nodes tunnelled, nothing refused.
  const mtls = /^mTLS between nodes: on \(3\/3 agents\); (\d+)\/(\d+) workload certificates .*?, (\d+) connections tunnelled .*?, (\d+) handshakes refused/m.exec(refresh);
  t.truthy(mtls, refresh);
  t.true(Number(mtls![2]) >= 5 && mtls![1] === mtls![2], `every ServiceAccount of every node has its certificate: ${mtls![0]}`);
  t.true(Number(mtls![3]) > 0, 'calls between nodes went through tunnels');
  t.is(mtls![4], '0');
  const printed = [...refresh.matchAll(/^(web|voting|emoji)\s+2\/2\s+([\d.]+)%\s+([\d.]+)rps/gm)];
  t.deepEqual(printed.map((m) => m[1]).sort(), ['emoji', 'voting', 'web'], `the refresh shows the stat table:\n${refresh}`);
  // The spread: every replica of web, voting and emoji served requests through its Service.
  // A success rate (not "-") is a replica that took requests. Its RPS may print 0.0: a replica
  // whose first request was slow on a loaded machine (peak-EWMA) gets few in the first seconds,
  // and one request in the 1m window is 0.02rps.
  const perPod = [...refresh.matchAll(/^((web|voting|emoji)-\S+)\s+1\/1\s+[\d.]+%\s+([\d.]+)rps/gm)];
  t.is(perPod.length, 6, `every replica took requests (each has a success rate in stat pod):\n${refresh}`);

  // The tap excerpt: a request, its response and its end, live through the controller.
  await run.waitFor(/^end id=\S+ .*duration=/m, 60_000);
  t.regex(run.output, /^req id=\S+ proxy=out src=10\.244\.\S+ dst=10\.244\.\S+ .*:path=\//m);
  t.regex(run.output, /^rsp id=\S+ .*:status=\d{3} latency=/m);

  // The bot's own view: every request answered, and exactly the mix's failures (it counts from its first request).
  const bot = await lastLine(/vote-bot saw (\d+) requests: (\d+) ok, (\d+) answered 5xx, (\d+) without answer/, (m) => Number(m[1]) >= MIN_WEB_REQUESTS, `the bot to report ${MIN_WEB_REQUESTS} requests`);
  const [sent, ok, failed, errors] = bot.slice(1, 5).map(Number) as [number, number, number, number];
  t.is(errors, 0, 'every bot request was answered');
  t.is(ok + failed, sent);
  t.true(failed >= failureRange('web', sent)[0] && failed <= failureRange('web', sent)[1], `bot: ${failed} of ${sent} answered 5xx`);

  run.child.kill('SIGTERM');
  const { code } = await run.exited;
  t.is(code, 143, run.output.slice(-3000));
  t.regex(run.output, /clean: nothing of the demo is left/);
  t.deepEqual(leftovers(ids, run.child.pid!, procs), []);
});
