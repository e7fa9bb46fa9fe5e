// `mesh-agent dashboard`: prints the URL of the controller's web dashboard, as `linkerd viz
// dashboard` does. In a cluster it port-forwards the controller's Service with kubectl (a child
// process, held until Ctrl-C); with --controller it checks a controller already in reach.
// A browser is opened only on a machine with a display, and never with --show-url.
// Exit codes: 0 (URL printed; port-forward ended by Ctrl-C), 1 error, 2 usage.
import { spawn, type ChildProcess } from 'node:child_process';
import { httpGet } from '../util/http-get.ts';
import type { Command } from 'commander';
import { controllerUrl, DEFAULT_DASHBOARD_PORT } from '../controller/addr.ts';
import { requestJson } from '../controller/client.ts';
import { PATH_STATUS } from '../controller/protocol.ts';
import { INSTALL_DEFAULTS } from '../k8s/manifests.ts';

/** Linkerd viz's local port. */
export const DEFAULT_LOCAL_PORT = 50750;
const SERVICE = 'svc/mesh-agent-controller';

/** Whether a browser can be shown: a desktop session on Linux, or macOS. Never on a headless machine. */
export function canOpenBrowser(env: NodeJS.ProcessEnv, platform: NodeJS.Platform): boolean {
  if (platform === 'darwin') return true;
  if (platform === 'linux' || platform === 'freebsd') return Boolean(env.DISPLAY || env.WAYLAND_DISPLAY);
  return false;
}

/** GET /api/health of a dashboard: resolves when it answers as one, rejects with why not. */
export async function checkDashboard(url: string, timeoutMs = 5000): Promise<void> {
  let a;
  try {
    a = await httpGet(new URL('/api/health', url), { timeoutMs });
  } catch (e) {
    throw new Error(`${url} is unreachable: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    if (a.status === 200 && JSON.parse(a.body).ok === true) return;
  } catch {}
  throw new Error(`${url} answered HTTP ${a.status}, not as a mesh-agent dashboard: ${a.body.slice(0, 200)}`);
}

/** The "Forwarding from 127.0.0.1:PORT -> REMOTE" line kubectl prints once the forward listens. */
export function forwardedPort(line: string): number | null {
  const m = /^Forwarding from 127\.0\.0\.1:(\d+) -> \d+/.exec(line.trim());
  return m ? Number(m[1]) : null;
}

function openBrowser(url: string): void {
  const cmd = process.platform === 'darwin' ? 'open' : 'xdg-open';
  const c = spawn(cmd, [url], { stdio: 'ignore', detached: true });
  c.on('error', () => process.stderr.write(`could not run ${cmd}; open ${url} yourself\n`));
  c.unref();
}

export function registerDashboard(program: Command) {
  program
    .command('dashboard')
    .description('print the URL of the web dashboard, port-forwarding the controller with kubectl (as linkerd viz dashboard)')
    .option('--controller <addr>', 'a controller in reach (HOST:PORT of its API, as stat and tap take it): no port-forward')
    .option('--port <n>', `local port of the port-forward (0: any free port)`, String(DEFAULT_LOCAL_PORT))
    .option('-n, --namespace <ns>', 'namespace of the controller (mesh-agent install --namespace)', INSTALL_DEFAULTS.namespace)
    .option('--show-url', 'print only the URL, never open a browser (with --controller, then exit)')
    .action(async function (this: Command, o) {
      const port = Number(o.port);
      if (!/^\d+$/.test(o.port) || port > 65535) this.error(`error: --port ${o.port}: use 0-65535`);
      if (o.controller !== undefined && this.getOptionValueSource('port') === 'cli') this.error('error: --port is the port-forward\'s local port; with --controller the dashboard is reached on its own port');
      if (o.controller !== undefined) {
        let api: string;
        try {
          api = controllerUrl(o.controller, '--controller');
        } catch (e) {
          this.error(`error: ${(e as Error).message}`);
        }
        const status = await requestJson(api, 'GET', PATH_STATUS);
        if (!status.dashboard) throw new Error(`the controller at ${api} serves no dashboard (it runs with --dashboard-listen off); restart it with --dashboard-listen 0.0.0.0:${DEFAULT_DASHBOARD_PORT}`);
        const url = `http://${new URL(api).hostname}:${status.dashboard.port}/`;
        await checkDashboard(url).catch((e) => {
          throw new Error(`the controller at ${api} answers, but its dashboard does not: ${(e as Error).message}; is port ${status.dashboard.port} forwarded too?`);
        });
        return show(url, Boolean(o.showUrl));
      }
      await portForward(o.namespace, port, Boolean(o.showUrl));
    });
}

function show(url: string, urlOnly: boolean): void {
  if (urlOnly) return void process.stdout.write(`${url}\n`);
  process.stdout.write(`mesh-agent dashboard available at:\n${url}\n`);
  if (canOpenBrowser(process.env, process.platform)) openBrowser(url);
}

async function portForward(namespace: string, localPort: number, urlOnly: boolean): Promise<void> {
  const args = ['-n', namespace, 'port-forward', SERVICE, `${localPort === 0 ? '' : localPort}:${DEFAULT_DASHBOARD_PORT}`];
  // Ctrl-C is ours from the start, not only once the URL is printed: a signal that arrived
  // before the handlers would end the process by the signal's default action, kubectl left behind.
  const signalled = new Promise<'signal'>((resolve) => {
    process.once('SIGINT', () => resolve('signal'));
    process.once('SIGTERM', () => resolve('signal'));
  });
  const child: ChildProcess = spawn('kubectl', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-2000)));
  const stop = () => child.kill('SIGTERM');
  process.once('exit', stop);
  const ended = new Promise<{ code: number | null; error?: Error }>((resolve) => {
    child.once('error', (error) => resolve({ code: null, error }));
    child.once('exit', (code) => resolve({ code }));
  });
  const failed = (r: { code: number | null; error?: Error }) =>
    (r.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT'
      ? new Error('kubectl is not on PATH: install it (the dashboard is reached by port-forwarding the controller), or pass --controller HOST:PORT when the controller is in reach')
      : new Error(`kubectl ${args.join(' ')} ended (${r.error?.message ?? `exit ${r.code}`}): ${stderr.trim() || 'no output'}; is mesh-agent installed in namespace ${namespace} (mesh-agent install | kubectl apply -f -)?`);

  const ready = new Promise<number>((resolve) => {
    let buf = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      for (const line of buf.split('\n')) {
        const p = forwardedPort(line);
        if (p !== null) return resolve(p);
      }
      buf = buf.slice(buf.lastIndexOf('\n') + 1);
    });
  });
  const timeout = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 30_000).unref());
  const first = await Promise.race([ready, ended, timeout, signalled]);
  if (first === 'signal') {
    stop();
    await ended;
    return;
  }
  if (first === 'timeout') {
    stop();
    throw new Error(`kubectl ${args.join(' ')} did not start forwarding within 30 s: ${stderr.trim() || 'no output'}`);
  }
  if (typeof first !== 'number') throw failed(first);
  const url = `http://127.0.0.1:${first}/`;
  await checkDashboard(url).catch((e) => {
    stop();
    throw new Error(`the port-forward is up but the dashboard does not answer: ${(e as Error).message}; is the controller running (kubectl -n ${namespace} get pods)?`);
  });
  show(url, urlOnly);
  if (!urlOnly) process.stderr.write('Ctrl-C stops the port-forward.\n');
  const why = await Promise.race([ended, signalled]);
  if (why === 'signal') {
    stop();
    await ended;
    return;
  }
  throw failed(why);
}
