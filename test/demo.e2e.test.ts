// `mesh-agent demo --duration`: the emojivoto-like app on a simulated node, meshed by the
// real agent. It prints what the mesh measured (the web's success rate is fixed by the bot's
// mix), the server-first mailer works through the proxy, and nothing is left afterwards.
import test from 'ava';
import { execFile } from 'node:child_process';

/** Runs a printed command without blocking this process: the demo's output pipe keeps draining meanwhile. */
function runCmd(cmd: string, args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => execFile(cmd, args, { encoding: 'utf8', timeout: 60_000 }, (err, stdout, stderr) =>
    resolve({ status: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr: stderr || (err?.message ?? '') })));
}
import { cleanupLeftovers } from '../src/sim/index.ts';
import { EXPECTED_SUCCESS, expectedRps } from '../src/demo/traffic-mix.ts';
import { DemoRun, leftovers, processesOfNode, type Proc } from './helpers/demo-run.ts';

let run: DemoRun | undefined;
test.after.always(async () => {
  if (run && run.child.exitCode === null) {
    run.child.kill('SIGTERM');
    await run.exited;
  }
  await cleanupLeftovers();
});

test('the demo shows the web\'s success rate, the SMTP service works, and it cleans up after --duration', async (t) => {
  if (process.getuid?.() !== 0) throw new Error('the demo test needs root and BPF; run the suite as root: sudo ./dev test');
  run = new DemoRun(['--duration', '16', '--interval', '4', '--rps', '20']);
  await run.waitFor(/==> running\./, 60_000);
  const id = run.nodeId();
  const procs: Proc[] = processesOfNode(id);
  // The command the demo tells the user to type in another terminal works as printed.
  const statusCmd = run.output.match(/^ {4}(\S.* status)$/m)?.[1];
  t.truthy(statusCmd, run.output);
  const [cmd, ...args] = statusCmd!.split(' ');
  const status = await runCmd(cmd, args);
  t.is(status.status, 0, `${statusCmd}: ${status.stderr}`);
  t.regex(status.stdout, /emojivoto\s+web-\S+\s+10\.244\.\d+\.\d+\s+yes/);
  // And so does the printed stat command, when the build has one.
  const statCmd = run.output.match(/^ {4}(\S.* stat deploy -n emojivoto)$/m)?.[1];
  if (statCmd) {
    const [scmd, ...sargs] = statCmd.split(' ');
    const stat = await runCmd(scmd, sargs);
    t.is(stat.status, 0, `${statCmd}: ${stat.stderr}`);
    t.regex(stat.stdout + stat.stderr, /NAME\s+MESHED\s+SUCCESS|No traffic found/);
  }
  t.true(procs.length >= 6, `agent and five services in the node's cgroups, found ${procs.length}`);
  const { code } = await run.exited;
  const out = run.output;
  t.is(code, 0, out);

  // The agent's view, last refresh: every pod meshed, HTTP/1 from the bot, gRPC (HTTP/2) from the web, and opaque SMTP.
  const agent = [...out.matchAll(/agent: (\d+)\/(\d+) pods meshed; proxy (\d+) connections accepted \(([^)]*)\)/g)].at(-1);
  t.truthy(agent, out);
  t.is(agent![1], '5');
  const byProto = Object.fromEntries(agent![4].split(' ').map((kv) => kv.split('=')).map(([k, v]) => [k, Number(v)]));
  t.true(byProto.http1 >= 1 && byProto.http2 >= 2, JSON.stringify(byProto));

  // The server-first mailer: one SMTP connection per successful vote, each through the proxy.
  const mails = Number([...out.matchAll(/mailer \(SMTP[^)]*\): (\d+) mails accepted/g)].at(-1)?.[1] ?? 0);
  t.true(mails >= 20, `mails delivered: ${mails}\n${out}`);
  t.true(byProto.opaque >= mails, `every mail went through the proxy as opaque: ${JSON.stringify(byProto)} vs ${mails}`);
  const decided = [...out.matchAll(/proxy decided by: (.*)/g)].at(-1)![1];
  const serverFirst = Number(/server-first=(\d+)/.exec(decided)?.[1] ?? 0);
  t.true(serverFirst >= mails, `the proxy saw the mailer speak first on every connection: ${decided} vs ${mails} mails`);

  // What the mesh measured at the last refresh matches the bot's mix: `mesh-agent stat deploy`
  // (the controller's aggregate of the agent's reports) when this build has a controller,
  // else the table from the agent's own /metrics.
  const withController = /^\$ mesh-agent stat deploy/m.test(out);
  const rowRe = withController
    ? /^(web|voting|emoji)\s+(?:\d+\/\d+)\s+([\d.]+)%\s+([\d.]+)rps/gm
    : /^(web|voting|emoji)\s+(\d+)\s+([\d.]+)%/gm;
  const rows = [...out.matchAll(rowRe)];
  const rps = expectedRps(20);
  for (const dep of ['web', 'voting', 'emoji']) {
    const row = rows.filter((r) => r[1] === dep).at(-1);
    t.truthy(row, `no ${dep} row in:\n${out}`);
    const success = Number(withController ? row![2] : row![3]);
    t.true(Math.abs(success / 100 - EXPECTED_SUCCESS[dep]) < 0.03, `${dep} success ${success}% vs expected ${EXPECTED_SUCCESS[dep]}`);
    if (withController) t.true(Math.abs(Number(row![3]) - rps[dep]) < 0.35 * rps[dep], `${dep} ${row![3]} rps vs about ${rps[dep]}`);
    else t.true(Number(row![2]) >= 50, `${dep}: ${row![2]} requests`);
  }

  if (withController) {
    // The tap excerpt: a request, its response and its end, live through the controller.
    t.regex(out, /^req id=\S+ proxy=out src=10\.244\.\S+ dst=10\.244\.\S+ .*:path=\//m);
    t.regex(out, /^rsp id=\S+ .*:status=\d{3} latency=/m);
    t.regex(out, /^end id=\S+ .*duration=/m);
  }

  // The bot's view of the web agrees with the mix.
  const bot = [...out.matchAll(/vote-bot saw (\d+) requests: (\d+) ok, (\d+) answered 5xx, (\d+) without answer/g)].at(-1)!;
  const [sent, ok] = [Number(bot[1]), Number(bot[2])];
  t.true(sent >= 100, out);
  t.true(Math.abs(ok / sent - EXPECTED_SUCCESS.web) < 0.03, `bot success ${ok}/${sent}`);
  t.is(bot[4], '0');

  t.deepEqual(leftovers(id, run.child.pid!, procs), []);
});
