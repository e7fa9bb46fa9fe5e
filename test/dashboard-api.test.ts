// The dashboard served beside a real controller on loopback: every route's bad input answers
// 4xx with its message, reports reach open pages as events, tap keeps the CLI's bounds, assets
// are served compressed with a strict policy, other Host names are refused; and `mesh-agent
// dashboard` finds it (with --controller, or through a kubectl port-forward stand-in).
import test from 'ava';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ControllerServer } from '../src/controller/server.ts';
import { requestJson } from '../src/controller/client.ts';
import { PATH_REPORTS } from '../src/controller/protocol.ts';
import { DashboardServer } from '../src/dashboard/server.ts';
import { pair, peerOf, pod, report, summary } from './helpers/reports.ts';
import { freePort } from './helpers/ports.ts';
import { meshBin } from '../src/sim/dist-bin.ts';
import { testTempDir } from './helpers/temp-dir.ts';
import { ReportClient } from '../src/telemetry/report-client.ts';
import { TelemetryHub } from '../src/telemetry/hub.ts';
import { until } from './helpers/until.ts';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const BIN = meshBin();
const quiet = () => {};

async function stack(t: any, opts: { dashboard?: boolean; maxTaps?: number } = {}) {
  const ctl = new ControllerServer({ log: quiet });
  const api = await ctl.listen('127.0.0.1', 0);
  let dash: DashboardServer | undefined;
  let base = '';
  if (opts.dashboard !== false) {
    dash = new DashboardServer(ctl, { log: quiet, maxTaps: opts.maxTaps });
    const d = await dash.listen('127.0.0.1', 0);
    base = `http://127.0.0.1:${d.port}`;
  }
  t.teardown(async () => {
    await dash?.close();
    await ctl.close();
  });
  return { ctl, controller: `http://127.0.0.1:${api.port}`, controllerAddr: `127.0.0.1:${api.port}`, base };
}

function get(url: string, headers: Record<string, string> = {}, method = 'GET'): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}
const getJson = async (url: string) => {
  const r = await get(url);
  return { status: r.status, json: JSON.parse(r.body.toString()) };
};

const NOW = () => Date.now();
const web = pod('shop', 'web', '10.0.0.1');
const apiPod = pod('shop', 'api', '10.0.0.2');
const shopReport = (seq: number) => report({ seq, start: NOW() - 2000, end: NOW(), pods: [web, apiPod], agent: summary(), pairs: [pair(peerOf(web), peerOf(apiPod), 4, 3)] });

test('every route answers bad input with a 4xx and a message the page shows', async (t) => {
  const s = await stack(t);
  const cases: Array<[string, number, RegExp]> = [
    ['/api/workloads', 400, /namespace is required/],
    ['/api/workloads?namespace=shop', 404, /namespace shop: no agent reports a pod in it or traffic to it in the last 1m; no agent has reported traffic yet/],
    ['/api/workloads?namespace=shop&window=1y', 400, /time window "1y"/],
    ['/api/edges?namespace=shop&extra=1', 400, /does not take "extra"/],
    ['/api/workload?namespace=shop&kind=deploy', 400, /name is required/],
    ['/api/namespaces?window=0s', 400, /must be more than zero/],
    ['/api/nope', 404, /no API route \/api\/nope/],
    ['/api/tap?namespace=shop&resource=deploy/web&maxRps=20000', 400, /maxRps: needs a number in \(0, 10000\]/],
    ['/api/tap?namespace=shop&resource=deploy/web', 503, /no agent is connected to the controller/],
    ['/api/tap?namespace=shop&resource=web', 400, /"web" is not TYPE\/NAME/],
  ];
  for (const [url, status, msg] of cases) {
    const r = await getJson(s.base + url);
    t.is(r.status, status, url);
    t.regex(r.json.error, msg, url);
  }
  await requestJson(s.controller, 'POST', PATH_REPORTS, shopReport(1));
  const nf = await getJson(`${s.base}/api/workloads?namespace=other`);
  t.deepEqual([nf.status, nf.json.error], [404, 'namespace other: no agent reports a pod in it or traffic to it in the last 1m; namespaces: shop']);
  const wl = await getJson(`${s.base}/api/workload?namespace=shop&kind=deploy&name=nope`);
  t.deepEqual([wl.status, wl.json.error], [404, 'deployment nope in namespace shop: no pod of it is reported and no traffic to or from it in the last 1m']);
  const ok = await getJson(`${s.base}/api/workload?namespace=shop&kind=deploy&name=api`);
  t.deepEqual([ok.status, ok.json.workload.requests, ok.json.workload.successes, ok.json.inbound[0].src.name], [200, 4, 3, 'web']);
  const nodes = await getJson(`${s.base}/api/nodes`);
  t.deepEqual([nodes.json.nodes[0].node, nodes.json.nodes[0].agent.healthy], ['node-a', true]);
});

test('an open page hears of each report as an event; the controller says where its dashboard is', async (t) => {
  const s = await stack(t);
  const events: string[] = [];
  const res = await new Promise<http.IncomingMessage>((resolve) => http.get(`${s.base}/api/events`, resolve));
  t.teardown(() => res.destroy());
  t.is(res.headers['content-type'], 'text/event-stream');
  res.setEncoding('utf8');
  let waiting: (() => void) | null = null;
  res.on('data', (d: string) => {
    events.push(d);
    waiting?.();
  });
  const next = (re: RegExp) => new Promise<void>((resolve) => {
    waiting = () => events.join('').match(re) && resolve();
    waiting();
  });
  await next(/event: hello/);
  await requestJson(s.controller, 'POST', PATH_REPORTS, shopReport(1));
  await next(/event: report\ndata: \{"node":"node-a"/);
  // A resend (same agent and seq) changes nothing: no event. Events keep their order on the
  // stream, so once node-b's arrives every earlier one has been read.
  t.deepEqual(await requestJson(s.controller, 'POST', PATH_REPORTS, shopReport(1)), { result: 'duplicate' });
  await requestJson(s.controller, 'POST', PATH_REPORTS, shopReport(2));
  await requestJson(s.controller, 'POST', PATH_REPORTS, report({ node: 'node-b', agentId: 'agent-b', seq: 1, start: NOW() - 2000, end: NOW() }));
  await next(/"node":"node-b"/);
  t.is(events.join('').match(/event: report\ndata: \{"node":"node-a"/g)!.length, 2);
  const st = await requestJson(s.controller, 'GET', '/v1/status');
  t.is(st.dashboard.port, Number(new URL(s.base).port));
});

test('assets: the page with a strict content policy, gzip when asked, other hosts and methods refused', async (t) => {
  const s = await stack(t);
  const page = await get(`${s.base}/`);
  t.is(page.status, 200);
  t.regex(page.body.toString(), /<script type="module" src="\/app.js">/);
  t.regex(String(page.headers['content-security-policy']), /script-src 'self'/);
  const js = await get(`${s.base}/app.js`, { 'accept-encoding': 'gzip' });
  t.is(js.headers['content-encoding'], 'gzip');
  t.is(js.headers['content-type'], 'text/javascript; charset=utf-8');
  t.true(js.body.length < 30 * 1024, `the bundle is ${js.body.length} bytes compressed`);
  t.is((await get(`${s.base}/app.js`)).headers['content-encoding'], undefined);
  const evil = await get(`${s.base}/api/namespaces`, { host: 'evil.example:8084' });
  t.is(evil.status, 403);
  t.regex(JSON.parse(evil.body.toString()).error, /host "evil.example:8084" is not allowed/);
  t.is((await get(`${s.base}/api/namespaces`, {}, 'POST')).status, 405);
  // Requests another page sends: refused for the API (a tap starts on a GET), not for the page itself.
  const host = new URL(s.base).host;
  const foreign: Record<string, string>[] = [{ origin: 'http://evil.example' }, { origin: 'null' }, { 'sec-fetch-site': 'cross-site' }, { 'sec-fetch-site': 'same-site' }, { origin: 'http://127.0.0.1:1', 'sec-fetch-site': 'same-site' }];
  for (const h of foreign) {
    const r = await get(`${s.base}/api/namespaces`, h);
    t.is(r.status, 403, JSON.stringify(h));
    t.regex(JSON.parse(r.body.toString()).error, /from another site .* is refused/);
  }
  const own: Record<string, string>[] = [{}, { origin: `http://${host}`, 'sec-fetch-site': 'same-origin' }, { 'sec-fetch-site': 'none' }];
  for (const h of own) t.is((await get(`${s.base}/api/namespaces`, h)).status, 200, JSON.stringify(h));
  t.is((await get(`${s.base}/`, { 'sec-fetch-site': 'cross-site' })).status, 200, 'a link from elsewhere opens the page');
});

test('assets not built: a 503 that says how to build them, with the same security headers as the page', async (t) => {
  const ctl = new ControllerServer({ log: quiet });
  await ctl.listen('127.0.0.1', 0);
  const dash = new DashboardServer(ctl, { log: quiet, assetsDir: testTempDir(t) });
  const d = await dash.listen('127.0.0.1', 0);
  t.teardown(async () => {
    await dash.close();
    await ctl.close();
  });
  const r = await get(`http://127.0.0.1:${d.port}/`);
  t.is(r.status, 503);
  t.regex(r.body.toString(), /web assets are not built .* run \.\/dev setup/);
  t.is(r.headers['x-content-type-options'], 'nosniff');
  t.regex(String(r.headers['content-security-policy']), /default-src 'self'/);
});

test('tap from the page: refused beyond the open-tap bound, before any byte of the stream', async (t) => {
  const s = await stack(t, { maxTaps: 0 });
  const r = await getJson(`${s.base}/api/tap?namespace=shop&resource=deploy/web`);
  t.deepEqual([r.status, r.json.error], [429, '0 taps are already open from dashboards; stop one first']);
});

/** The status of a request, and the request (still open: a tap streams until destroyed). */
function open(url: string): Promise<{ status: number; req: http.ClientRequest; body: () => Promise<string> }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (d: string) => (text += d));
      resolve({ status: res.statusCode!, req, body: () => new Promise((r) => (res.readableEnded ? r(text) : res.once('end', () => r(text)))) });
    });
    req.on('error', reject);
  });
}

test('tap from the page: a path filter longer than the agents take is a 400, not a tap that never shows a request; HEAD starts no tap', async (t) => {
  const s = await stack(t);
  const warns: string[] = [];
  const hub = new TelemetryHub({ workloads: { byIp: () => null } });
  const inventory = [web, apiPod].map((p) => ({ namespace: p.namespace, name: p.name, ip: p.ip, kind: p.kind, owner: p.owner, meshed: true }));
  const agent = new ReportClient({ url: s.controller, node: 'n1', hub, inventory: () => inventory, intervalMs: 100, log: (level, msg) => void (level === 'warn' && warns.push(msg)) });
  t.teardown(() => agent.stop());
  agent.start();
  await until(() => requestJson(s.controller, 'GET', '/v1/status'), (st: any) => st.nodes.length === 1 && st.tapLinks.length === 1, 'agent known', { intervalMs: 50 });
  const tap = (path: string) => `${s.base}/api/tap?namespace=shop&resource=deploy/api&path=${encodeURIComponent(path)}`;

  const longest = await open(tap(`/${'x'.repeat(4095)}`));
  t.is(longest.status, 200, 'a 4096-character prefix is the agents\' bound: served');
  await until(() => agent.state().activeTaps, (n) => n === 1, 'the agent runs the tap', { intervalMs: 20 });
  longest.req.destroy();
  await until(() => agent.state().activeTaps, (n) => n === 0, 'the tap ended', { intervalMs: 20 });

  // HEAD has no body to stream into: a tap it started would run unseen until the connection closed.
  const head = await get(tap('/'), {}, 'HEAD');
  t.deepEqual([head.status, head.headers.allow, s.ctl.relay.activeTaps], [405, 'GET', 0]);
  const events = await get(`${s.base}/api/events`, {}, 'HEAD');
  t.deepEqual([events.status, events.headers.allow], [405, 'GET']);

  const over = await open(tap(`/${'x'.repeat(4096)}`));
  if (over.status === 200) {
    over.req.destroy();
    await until(() => warns, (w) => w.some((m) => m.includes('ignored a tap command')), 'the agent\'s warning', { intervalMs: 20 });
    t.fail(`answered 200 (the page says "Tapping"), but the agent ignores the filter: ${warns.find((m) => m.includes('ignored a tap command'))!.slice(0, 120)}`);
    return;
  }
  t.is(over.status, 400);
  t.regex(JSON.parse(await over.body()).error, /path: at most 4096 characters/);
});

function cli(args: string[], env: Record<string, string> = {}) {
  const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', BIN, 'dashboard', ...args], { env: { ...process.env, DISPLAY: '', WAYLAND_DISPLAY: '', ...env } });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((r) => child.once("exit", (code, signal) => r({ code, signal, stdout, stderr })));
  return { child, done, out: () => stdout };
}

test('mesh-agent dashboard --controller: prints the URL and exits 0; exits 1 when there is none to reach', async (t) => {
  const s = await stack(t);
  const full = await cli(['--controller', s.controllerAddr]).done;
  t.is(full.code, 0, full.stderr);
  t.is(full.stdout, `mesh-agent dashboard available at:\n${s.base}/\n`);
  const only = await cli(['--controller', s.controllerAddr, '--show-url']).done;
  t.deepEqual([only.code, only.stdout], [0, `${s.base}/\n`]);
  const usage = await cli(['--controller', s.controllerAddr, '--port', '9000']).done;
  t.is(usage.code, 2);
  t.regex(usage.stderr, /--port is the port-forward's local port/);
  const none = await stack(t, { dashboard: false });
  const off = await cli(['--controller', none.controllerAddr]).done;
  t.is(off.code, 1);
  t.regex(off.stderr, /serves no dashboard \(it runs with --dashboard-listen off\)/);
  await none.ctl.close();
  const gone = await cli(['--controller', none.controllerAddr]).done;
  t.is(gone.code, 1);
  t.regex(gone.stderr, /is unreachable/);
});

test('mesh-agent dashboard: port-forwards with kubectl, prints the URL, Ctrl-C ends both with 0; a failed kubectl is exit 1', async (t) => {
  const s = await stack(t);
  const dir = testTempDir(t);
  fs.writeFileSync(path.join(dir, 'kubectl'), `#!/bin/sh\nexec "${process.execPath}" --disable-warning=ExperimentalWarning "${path.join(ROOT, 'test/fixtures/dashboard/fake-kubectl.ts')}" "$@"\n`, { mode: 0o755 });
  const argsFile = path.join(dir, 'args.json');
  const env = { PATH: `${dir}:${process.env.PATH}`, FAKE_KUBECTL_TARGET: new URL(s.base).port, FAKE_KUBECTL_ARGS: argsFile };
  const run = cli(['--port', '0', '-n', 'mesh'], env);
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setInterval(() => {
      const m = /^(http:\/\/127\.0\.0\.1:\d+\/)$/m.exec(run.out());
      if (m) {
        clearInterval(timer);
        resolve(m[1]!);
      }
    }, 20);
    run.done.then((r) => reject(new Error(`dashboard exited ${r.code}: ${r.stderr}`)));
  });
  t.deepEqual(JSON.parse(fs.readFileSync(argsFile, 'utf8')), ['-n', 'mesh', 'port-forward', 'svc/mesh-agent-controller', ':8084']);
  t.is((await getJson(`${url}api/health`)).json.ok, true, 'the printed URL reaches the dashboard');
  run.child.kill('SIGINT');
  const r = await run.done;
  t.is(r.code, 0, `signal ${r.signal}: ${r.stderr}`);
  const failed = await cli([], { ...env, FAKE_KUBECTL_FAIL: '1' }).done;
  t.is(failed.code, 1);
  t.regex(failed.stderr, /services "mesh-agent-controller" not found; is mesh-agent installed in namespace mesh-agent/);
  const missing = await cli([], { PATH: dir.replace(/$/, '-nothing') }).done;
  t.is(missing.code, 1);
  t.regex(missing.stderr, /kubectl is not on PATH/);
});

test('mesh-agent controller: the default dashboard port taken is a warning (reports, stat and tap go on); an address asked for is exit 1', async (t) => {
  // Hold 8084 ourselves: a port another process holds for a while (a demo's forward) could be
  // let go before the controller binds it. Wait until it is ours.
  const deadline = Date.now() + 60_000;
  let holder: net.Server;
  for (;;) {
    holder = net.createServer();
    const err = await new Promise<Error | null>((resolve) => {
      holder.once('error', resolve);
      holder.listen(8084, '0.0.0.0', () => resolve(null));
    });
    if (err === null) break;
    if (Date.now() > deadline) throw new Error(`port 8084 stayed taken by another process for a minute (${err.message}); stop it (a demo?) and run again`);
    await new Promise((r) => setTimeout(r, 200));
  }
  t.teardown(() => holder.close());
  const port = await freePort();
  const ctl = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', BIN, 'controller', '--listen', `127.0.0.1:${port}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => ctl.kill('SIGKILL'));
  let out = '';
  ctl.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  ctl.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
  await new Promise<void>((resolve, reject) => {
    const timer = setInterval(() => {
      if (/"msg":"controller listening"/.test(out) && /runs without its dashboard/.test(out)) {
        clearInterval(timer);
        resolve();
      } else if (/"msg":"dashboard listening"/.test(out)) {
        clearInterval(timer);
        reject(new Error(`the controller's dashboard listened on the port this test holds: ${out}`));
      }
    }, 20);
    ctl.once('exit', (code) => {
      clearInterval(timer);
      reject(new Error(`controller exited ${code}: ${out}`));
    });
  });
  t.regex(out, /"level":"warn","msg":"dashboard listen on 0\.0\.0\.0:8084 failed: listen EADDRINUSE[^"]*; the controller runs without its dashboard"/);
  const st = await requestJson(`http://127.0.0.1:${port}`, 'GET', '/v1/status');
  t.is(st.dashboard, null);
  const asked = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', BIN, 'controller', '--listen', `127.0.0.1:${await freePort()}`, '--dashboard-listen', '0.0.0.0:8084'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  asked.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  const code = await new Promise<number | null>((r) => asked.once('exit', r));
  t.is(code, 1);
  t.regex(err, /dashboard listen on 0\.0\.0\.0:8084 failed: listen EADDRINUSE.*pass --dashboard-listen with a free address/);
});
