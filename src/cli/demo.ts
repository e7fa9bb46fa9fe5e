// `mesh-agent demo`: an emojivoto-like application on a simulated node (network namespaces
// and kubelet-style cgroups on this machine), meshed by the real agent, with live stats.
import type { Command } from 'commander';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { NAMESPACE } from '../demo/app.ts';
import { ADMIN, BIN, CONTROLLER, DASHBOARD, DemoStack, forwardPort, ROOT } from '../demo/stack.ts';
import { successByDeployment } from '../demo/metrics-summary.ts';
import { agentLines, botLine, expectationLine, header, mailerLine, successTable } from '../demo/view.ts';

const bold = (s: string) => (process.stderr.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const step = (msg: string) => process.stderr.write(`${bold('==>')} ${msg}\n`);

interface DemoOptions {
  duration?: number;
  rps: number;
  interval: number;
  controller: boolean;
}

function positive(v: string, flag: string, max: number): number {
  const n = Number(v);
  if (!(Number.isFinite(n) && n > 0 && n <= max)) throw new Error(`${flag} ${v}: expected a number greater than 0 and at most ${max}`);
  return n;
}

export function registerDemo(program: Command) {
  // The controller ships in the same binary; the check keeps the demo honest about what it can show.
  const hasController = () => program.commands.some((c) => c.name() === 'controller');
  program
    .command('demo')
    .description('run an emojivoto-like app on a simulated node (as root), meshed by the agent, and show its live stats')
    .option('--duration <seconds>', 'run this long, then clean up and exit 0 (default: until Ctrl-C)')
    .option('--rps <n>', 'requests per second the vote bot sends to the web', '10')
    .option('--interval <seconds>', 'seconds between stat refreshes', '5')
    .action(async (o) => {
      if (process.getuid?.() !== 0) throw new Error('the demo builds network namespaces and cgroups and loads BPF: run it as root (sudo ./dev demo)');
      await runDemo({
        duration: o.duration === undefined ? undefined : positive(o.duration, '--duration', 86_400),
        rps: positive(o.rps, '--rps', 1000),
        interval: positive(o.interval, '--interval', 3600),
        controller: hasController(),
      });
    });
}

async function runDemo(opts: DemoOptions): Promise<void> {
  const removed = await DemoStack.sweepLeftovers();
  if (removed.length) step(`removed what an earlier run left behind: ${removed.join(', ')}`);
  const stack = new DemoStack({ rps: opts.rps, controller: opts.controller, step });
  // A process exit that skips the awaited cleanup still removes the temp dir; the sim
  // removes its own namespaces and cgroups on exit and on signals.
  process.on('exit', () => fs.rmSync(stack.tmp, { recursive: true, force: true }));
  let stopping: Promise<void> | undefined;
  const cleanup = () => {
    stopping ??= (async () => {
      step('cleaning up: processes, network namespaces, cgroups');
      await stack.destroy();
      step('clean: nothing of the demo is left on this machine');
    })();
    return stopping;
  };
  const onSignal = (sig: NodeJS.Signals, code: number) => {
    process.stderr.write(`\n`);
    step(`${sig}: stopping`);
    void cleanup().then(() => process.exit(code), (e) => {
      process.stderr.write(`mesh-agent demo: cleanup failed: ${(e as Error).message}\n`);
      process.exit(1);
    });
  };
  process.on('SIGINT', () => onSignal('SIGINT', 130));
  process.on('SIGTERM', () => onSignal('SIGTERM', 143));

  try {
    await stack.start();
    let forwarded = (await forwardPort(stack.node, Number(ADMIN.split(':')[1]))) !== null;
    if (opts.controller) forwarded = (await forwardPort(stack.node, Number(CONTROLLER.split(':')[1]))) !== null && forwarded;
    if (opts.controller) forwarded = (await forwardPort(stack.node, Number(DASHBOARD.split(':')[1]))) !== null && forwarded;
    howToLook(stack, forwarded, opts.controller);
    const started = Date.now();
    let tapShown = false;
    const end = opts.duration === undefined ? Infinity : started + opts.duration * 1000;
    while (!stopping && Date.now() < end) {
      await sleep(Math.min(opts.interval * 1000, end - Date.now()));
      if (stopping) break;
      const dead = stack.crashed();
      if (dead.length) throw new Error(`a demo process died: ${dead.join('; ')}`);
      await refresh(stack, Math.round((Date.now() - started) / 1000), opts.controller);
      if (opts.controller && !tapShown) tapShown = await tapExcerpt(stack);
    }
  } finally {
    if (!stopping) await cleanup();
  }
}

async function refresh(stack: DemoStack, elapsedS: number, controller: boolean): Promise<void> {
  const lines = [header(elapsedS)];
  // The services' own counts first: everything the agent reports below is read later, so it
  // has seen at least these connections (the lines can be compared).
  const bot = botLine(stack.services.get('vote-bot')?.log.latest.get('bot'));
  const mailer = mailerLine(stack.services.get('mailer')?.log.latest.get('delivered'));
  if (controller) {
    lines.push(`$ mesh-agent stat deploy -n ${NAMESPACE} -t 1m   (the controller's view, from the agent's reports)`);
    lines.push(await statTable(stack));
  } else {
    try {
      lines.push('success per deployment, measured by the mesh since start (the agent\'s /metrics, inbound response_total):');
      lines.push(successTable(successByDeployment(await stack.agentMetrics(), NAMESPACE)));
    } catch (e) {
      lines.push(`agent metrics: ${(e as Error).message}`);
    }
  }
  try {
    lines.push(...agentLines(await stack.agentStatus()));
  } catch (e) {
    lines.push(`agent status: ${(e as Error).message}`);
  }
  lines.push(bot, mailer);
  process.stdout.write(lines.join('\n') + '\n');
}

/** Exactly what the user's `stat` prints: the real command, run in the node namespace. */
async function statTable(stack: DemoStack): Promise<string> {
  const r = await stack.cli(['stat', 'deploy', '-n', NAMESPACE, '-t', '1m', '--controller', CONTROLLER]);
  if (r.code !== 0) return `stat failed (exit ${r.code}): ${r.stderr.trim()}`;
  return (r.stdout.trim() || r.stderr.trim());
}

/** A few seconds of `tap deploy/web`, once: the first requests with their responses. */
async function tapExcerpt(stack: DemoStack): Promise<boolean> {
  const r = await stack.cli(['tap', 'deploy/web', '-n', NAMESPACE, '--max-rps', '5', '--controller', CONTROLLER], 3000);
  const lines = r.stdout.split('\n').filter(Boolean);
  if (lines.length === 0) {
    process.stdout.write(`tap deploy/web printed nothing yet (${r.stderr.trim().split('\n').at(-1) ?? ''}); trying again at the next refresh\n`);
    return false;
  }
  process.stdout.write([`$ mesh-agent tap deploy/web -n ${NAMESPACE}   (first lines of 3 s; req, rsp and end per request)`, ...lines.slice(0, 9), ''].join('\n'));
  return true;
}

/** How the user runs mesh-agent from their shell: through ./dev from the checkout, else by full path. */
function cliCommand(): string {
  return process.cwd() === ROOT ? './dev node bin/mesh-agent.ts' : `${process.execPath} ${BIN}`;
}

/** Whether `cmd` is an executable on PATH: a root shell without sudo installed gets commands it can run. */
function onPath(cmd: string): boolean {
  return (process.env.PATH ?? '').split(':').some((d) => {
    try {
      fs.accessSync(path.join(d || '.', cmd), fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

function howToLook(stack: DemoStack, forwarded: boolean, controller: boolean): void {
  const enter = `${onPath('sudo') ? 'sudo ' : ''}nsenter --net=/var/run/netns/${stack.node.nodeNs}`;
  const cli = forwarded ? cliCommand() : `${enter} ${process.execPath} ${BIN}`;
  const curl = forwarded ? 'curl' : `${enter} curl`;
  const what = controller ? `The agent's admin API (${ADMIN}) and the controller (${CONTROLLER})` : `The agent's admin API (${ADMIN})`;
  step(forwarded
    ? `running. ${what}, in the node's network namespace, are forwarded to the same addresses here; in another terminal:`
    : `running. ${what} listen in the node's network namespace and the port is taken here, so enter it; in another terminal:`);
  process.stderr.write([
    `    ${cli} status`,
    ...(controller
      ? [`    ${cli} stat deploy -n ${NAMESPACE}`, `    ${cli} stat pod -n ${NAMESPACE} -o wide`, `    ${cli} tap deploy/web -n ${NAMESPACE}`, `    ${cli} tap deploy/web -n ${NAMESPACE} --to deploy/voting --path /emojivoto.VotingService/Vote`]
      : [`    ${curl} -s http://${ADMIN}/metrics | grep '^response_total'`]),
    ...(controller ? [`  dashboard: http://${DASHBOARD}/${forwarded ? '' : ` (in the node's network namespace: ${enter} chromium ...)`}`] : []),
    `  namespace ${NAMESPACE}; deployments: ${[...stack.services.keys()].join(', ')}`,
    `  ${expectationLine()}`,
    `  Ctrl-C stops the demo and removes everything it made.`,
    '',
  ].join('\n'));
}
