// `mesh-agent demo`: an emojivoto-like application on a simulated 3-node cluster (network
// namespaces, a bridge, kubelet-style cgroups and kube-proxy rules on this machine), meshed by
// the real agents and controller, with live stats.
import type { Command } from 'commander';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DEMO_NODES, NAMESPACE } from '../demo/app.ts';
import { meshBin } from '../sim/dist-bin.ts';
import { ADMIN, BIN, CONTROLLER, DASHBOARD, DASHBOARD_PORT, DemoStack, forwardPort, ROOT } from '../demo/stack.ts';
import { agentLines, botLine, expectationLine, header, mailerLine } from '../demo/view.ts';

const bold = (s: string) => (process.stderr.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const step = (msg: string) => process.stderr.write(`${bold('==>')} ${msg}\n`);

interface DemoOptions {
  duration?: number;
  rps: number;
  interval: number;
}

function positive(v: string, flag: string, max: number): number {
  const n = Number(v);
  if (!(Number.isFinite(n) && n > 0 && n <= max)) throw new Error(`${flag} ${v}: expected a number greater than 0 and at most ${max}`);
  return n;
}

export function registerDemo(program: Command) {
  program
    .command('demo')
    .description(`run an emojivoto-like app on a simulated ${DEMO_NODES}-node cluster (as root), meshed by the agents, and show its live stats`)
    .option('--duration <seconds>', 'run this long, then clean up and exit 0 (default: until Ctrl-C)')
    .option('--rps <n>', 'requests per second the vote bot sends to the web', '10')
    .option('--interval <seconds>', 'seconds between stat refreshes', '5')
    .action(async (o) => {
      if (process.getuid?.() !== 0) throw new Error('the demo builds network namespaces and cgroups and loads BPF: run it as root (sudo ./dev demo)');
      // The mesh runs from dist/: a stale one is refused before the cluster is built.
      meshBin();
      await runDemo({
        duration: o.duration === undefined ? undefined : positive(o.duration, '--duration', 86_400),
        rps: positive(o.rps, '--rps', 1000),
        interval: positive(o.interval, '--interval', 3600),
      });
    });
}

async function runDemo(opts: DemoOptions): Promise<void> {
  const removed = await DemoStack.sweepLeftovers();
  if (removed.length) step(`removed what an earlier run left behind: ${removed.join(', ')}`);
  const stack = new DemoStack({ rps: opts.rps, step });
  // A process exit that skips the awaited cleanup still removes the temp dir; the sim
  // removes its own namespaces and cgroups on exit and on signals.
  process.on('exit', () => fs.rmSync(stack.tmp, { recursive: true, force: true }));
  let stopping: Promise<void> | undefined;
  const cleanup = () => {
    stopping ??= (async () => {
      step('cleaning up: processes, network namespaces, cgroups, nftables rules');
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
    // The first node's agent, and the controller and its dashboard from the control plane, on this machine's loopback.
    const cp = stack.cluster.controlPlane;
    const forwards = [
      await forwardPort(stack.node, Number(ADMIN.split(':')[1])),
      await forwardPort(cp, Number(CONTROLLER.split(':')[1])),
      await forwardPort(cp, DASHBOARD_PORT),
    ];
    howToLook(stack, forwards.every((f) => f !== null));
    const started = Date.now();
    let tapShown = false;
    const end = opts.duration === undefined ? Infinity : started + opts.duration * 1000;
    while (!stopping && Date.now() < end) {
      await sleep(Math.min(opts.interval * 1000, end - Date.now()));
      if (stopping) break;
      const dead = stack.crashed();
      if (dead.length) throw new Error(`a demo process died: ${dead.join('; ')}`);
      await refresh(stack, Math.round((Date.now() - started) / 1000));
      if (!tapShown) tapShown = await tapExcerpt(stack);
    }
  } finally {
    if (!stopping) await cleanup();
  }
}

async function refresh(stack: DemoStack, elapsedS: number): Promise<void> {
  const lines = [header(elapsedS)];
  // The services' own counts first: everything the agents report below is read later, so they
  // have seen at least these connections (the lines can be compared).
  const bot = botLine(stack.services.get('vote-bot')?.replicas[0]?.log.latest.get('bot'));
  const mailer = mailerLine(stack.total('mailer', 'delivered'), stack.services.get('mailer')?.replicas.length ?? 0);
  lines.push(`$ mesh-agent stat deploy -n ${NAMESPACE} -t 1m   (the controller's view, from the agents' reports)`);
  lines.push(await statTable(stack, 'deploy'));
  lines.push(`$ mesh-agent stat pod -n ${NAMESPACE} -t 1m   (the spread per pod: each Service's replicas, balanced per request by the caller's agent)`);
  lines.push(await statTable(stack, 'pod'));
  try {
    lines.push(...agentLines(await stack.agentStatuses()));
  } catch (e) {
    lines.push(`agent status: ${(e as Error).message}`);
  }
  lines.push(bot, mailer);
  process.stdout.write(lines.join('\n') + '\n');
}

/** Exactly what the user's `stat` prints: the real command, where the controller is reachable. */
async function statTable(stack: DemoStack, kind: 'deploy' | 'pod'): Promise<string> {
  const r = await stack.cli(['stat', kind, '-n', NAMESPACE, '-t', '1m', '--controller', stack.mesh.controllerAddr]);
  if (r.code !== 0) return `stat failed (exit ${r.code}): ${r.stderr.trim()}`;
  return (r.stdout.trim() || r.stderr.trim());
}

/** A few seconds of `tap deploy/web`, once: the first requests with their responses. */
async function tapExcerpt(stack: DemoStack): Promise<boolean> {
  const r = await stack.cli(['tap', 'deploy/web', '-n', NAMESPACE, '--max-rps', '5', '--controller', stack.mesh.controllerAddr], 3000);
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

/**
 * The dashboard's line as howToLook prints it, for scripts and tests: the URL, and when the
 * ports are not forwarded here (another demo holds them), the namespace to open it from.
 */
export const DASHBOARD_LINE = / dashboard: (http:\/\/\S+)(?: \(in the control plane's network namespace: .*--net=(\S+) chromium)?/;

/** The dashboard's URL; `enter`: the command that enters the control plane's namespace, when the ports are not forwarded here. */
export function dashboardLine(enter: string | null): string {
  return `  dashboard: http://${DASHBOARD}/${enter === null ? '' : ` (in the control plane's network namespace: ${enter} chromium ...)`}`;
}

function howToLook(stack: DemoStack, forwarded: boolean): void {
  const sudo = onPath('sudo') ? 'sudo ' : '';
  const enter = (ns: string) => `${sudo}nsenter --net=/var/run/netns/${ns}`;
  const cp = stack.cluster.controlPlane;
  // Without the forwards (another demo holds the ports), the controller's commands run in the control plane's namespace.
  const cli = forwarded ? cliCommand() : `${enter(cp.nodeNs)} ${process.execPath} ${BIN}`;
  const status = forwarded ? cliCommand() : `${enter(stack.node.nodeNs)} ${process.execPath} ${BIN}`;
  step(forwarded
    ? `running. The ${stack.node.name} agent's admin API (${ADMIN}), the controller (${CONTROLLER}) and its dashboard are forwarded to the same addresses here; in another terminal:`
    : 'running. The ports are taken here (another demo?), so enter the namespaces; in another terminal:');
  process.stderr.write([
    `    ${status} status`,
    `    ${cli} stat deploy -n ${NAMESPACE}`,
    `    ${cli} stat pod -n ${NAMESPACE} -o wide`,
    `    ${cli} tap deploy/web -n ${NAMESPACE}`,
    `    ${cli} tap deploy/web -n ${NAMESPACE} --to deploy/voting --path /emojivoto.VotingService/Vote`,
    `    ${cli} diagnostics endpoints svc/voting-svc -n ${NAMESPACE}`,
    dashboardLine(forwarded ? null : enter(cp.nodeNs)),
    `  the other nodes' agents: ${stack.cluster.nodes.slice(1).map((n) => `${enter(n.nodeNs)} ${process.execPath} ${BIN} status`).join('; ')}`,
    `  namespace ${NAMESPACE}; deployments: ${[...stack.services.entries()].map(([name, s]) => `${name} x${s.replicas.length}`).join(', ')}`,
    `  ${expectationLine()}`,
    `  Ctrl-C stops the demo and removes everything it made.`,
    '',
  ].join('\n'));
}
