// The page in headless Chromium against a controller on loopback with reports we control:
// "no traffic yet" on an empty controller, a report shows up without a reload, an unknown
// namespace shows the API's message, the tables sort by keyboard, no console errors.
import test from 'ava';
import { ControllerServer } from '../src/controller/server.ts';
import { requestJson } from '../src/controller/client.ts';
import { PATH_REPORTS } from '../src/controller/protocol.ts';
import { DashboardServer } from '../src/dashboard/server.ts';
import { launchChromium, screenshot } from './helpers/browser.ts';
import { pair, peerOf, pod, report, summary } from './helpers/reports.ts';
import * as http from 'node:http';
import { ReportClient } from '../src/telemetry/report-client.ts';
import { TelemetryHub } from '../src/telemetry/hub.ts';
import type { PodInventory } from '../src/telemetry/report.ts';
import { until } from './helpers/until.ts';

test('empty controller, then a report: no traffic yet, live update, errors shown, keyboard sorting', async (t) => {
  const ctl = new ControllerServer({ log: () => {} });
  const api = await ctl.listen('127.0.0.1', 0);
  const dash = new DashboardServer(ctl, { log: () => {} });
  const base = `http://127.0.0.1:${(await dash.listen('127.0.0.1', 0)).port}/`;
  const browser = await launchChromium();
  t.teardown(async () => {
    await browser.close();
    await dash.close();
    await ctl.close();
  });
  const { page, errors } = await browser.page();

  await page.goto(base);
  await page.getByTestId('no-traffic').getByText('No agent has reported to this controller yet').waitFor();
  await screenshot(page, 'dashboard-no-traffic');
  await page.goto(`${base}#/nodes`);
  await page.getByRole('heading', { name: 'Nodes' }).waitFor();
  await page.getByTestId('no-traffic').getByText('No agent has reported to this controller yet.').waitFor();
  await page.goto(`${base}#/namespaces`);
  await page.locator('.live.on').waitFor();

  // A report arrives: the open page shows it without a reload.
  const web = pod('shop', 'web', '10.0.0.1');
  const apiPod = pod('shop', 'api', '10.0.0.2');
  const db = pod('shop', 'db', '10.0.0.3');
  const now = Date.now();
  await requestJson(`http://127.0.0.1:${api.port}`, 'POST', PATH_REPORTS, report({ seq: 1, start: now - 2000, end: now, pods: [web, apiPod, db], agent: summary(), pairs: [pair(peerOf(web), peerOf(apiPod), 20, 10), pair(peerOf(apiPod), peerOf(db), 4, 4)] }));
  const cell = page.getByTestId('namespaces').locator('tr[data-row="shop"] td[data-col="success"]');
  await cell.waitFor();
  t.is(await cell.textContent(), '58.33%', '14 of 24 requests in the namespace');
  t.is(await cell.getAttribute('title'), '14 of 24 requests');

  // A namespace that does not exist: the API's message, not a blank page. Chromium logs the
  // 404 answers themselves as console errors; those, and only those, are expected here.
  t.deepEqual(errors.splice(0), [], 'no console errors before');
  await page.goto(`${base}#/namespaces/nope`);
  // Both of the page's requests (workloads, edges) answered: their 404s are logged by then.
  await page.waitForFunction(() => document.querySelectorAll('[role=alert]').length === 2);
  t.regex((await page.getByRole('alert').first().textContent())!, /namespace nope: no agent reports a pod in it.*namespaces: shop/);
  t.true(errors.splice(0).every((e) => e.includes('status of 404')), 'only the 404s asked for');

  // Keyboard: tab to the Success header's button, Enter sorts by it (highest first), again reverses.
  await page.goto(`${base}#/namespaces/shop`);
  await page.getByTestId('workloads').waitFor();
  await page.locator('svg.topology g.edge-bad[data-edge="web>api"]').waitFor(); // 50%: the failing edge stands out
  const header = page.getByTestId('workloads').getByRole('button', { name: 'Success' });
  for (let i = 0; i < 40 && !(await header.evaluate((el) => el === document.activeElement)); i++) await page.keyboard.press('Tab');
  t.true(await header.evaluate((el) => el === document.activeElement), 'the Success header is reachable with Tab');
  await page.keyboard.press('Enter');
  const order = () => page.getByTestId('workloads').locator('tbody tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-row')));
  t.deepEqual(await order(), ['deployment/db', 'deployment/api', 'deployment/web']);
  t.is(await page.getByTestId('workloads').locator('th[aria-sort="descending"]').textContent(), 'Success▼');
  await page.keyboard.press('Enter');
  t.deepEqual(await order(), ['deployment/api', 'deployment/db', 'deployment/web'], 'empty values sort last either way');
  t.true(await page.evaluate(() => document.documentElement.scrollWidth <= 1280), 'no horizontal scrolling at 1280x800');
  t.deepEqual(errors, []);
});

// DNS rebinding: a site whose name its owner points at 127.0.0.1 once its page is loaded. Chromium's
// --host-resolver-rules stands in for the rebound answer; a script at that origin asks the
// dashboard's API same-origin, as the rebound page's script would. mesh-agent-controller.com is
// a name anyone can register (".com" passes for a namespace in "mesh-agent-controller.NS").
test('DNS rebinding: a page at a public name resolving to the dashboard cannot read its API', async (t) => {
  const ctl = new ControllerServer({ log: () => {} });
  await ctl.listen('127.0.0.1', 0);
  const dash = new DashboardServer(ctl, { log: () => {} });
  const port = (await dash.listen('127.0.0.1', 0)).port;
  const names = ['mesh-agent-controller.com', 'mesh-agent-controller.io'];
  const browser = await launchChromium(undefined, [`--host-resolver-rules=${names.map((n) => `MAP ${n} 127.0.0.1`).join(',')}`]);
  t.teardown(async () => {
    await browser.close();
    await dash.close();
    await ctl.close();
  });
  const { page } = await browser.page();
  for (const name of names) {
    await page.goto(`http://${name}:${port}/`);
    const got = await page.evaluate(async () => {
      const r = await fetch('/api/nodes');
      return { status: r.status, body: await r.text() };
    });
    t.is(got.status, 403, `${name}: ${got.body.slice(0, 200)}`);
    t.regex(got.body, /is not allowed/);
  }
});

// Cross-site requests: any web page the operator has open can send GETs to the forwarded
// 127.0.0.1:PORT (an <img>, or fetch with mode no-cors: no Origin header, the answer unreadable),
// so a GET that starts a tap must be refused unless the dashboard's own page sends it.
test('cross-site: another site\'s page cannot start a tap; the dashboard\'s own page can', async (t) => {
  const inventory: PodInventory[] = [
    { namespace: 'shop', name: 'web-1', ip: '10.0.0.1', kind: 'deployment', owner: 'web', meshed: true },
    { namespace: 'shop', name: 'api-1', ip: '10.0.0.2', kind: 'deployment', owner: 'api', meshed: true },
  ];
  let tapsStarted = 0;
  const ctl = new ControllerServer({ log: (_l, msg) => void (msg === 'tap started' && tapsStarted++) });
  const api = await ctl.listen('127.0.0.1', 0);
  const url = `http://127.0.0.1:${api.port}`;
  const dash = new DashboardServer(ctl, { log: () => {} });
  const base = `http://127.0.0.1:${(await dash.listen('127.0.0.1', 0)).port}`;
  // The status each API request was answered with: written before the browser sees the answer.
  // (Chromium may drop a no-cors answer it will not hand to the page, so what is open later is racy.)
  const answered = new Map<string, number>();
  (dash as unknown as { server: http.Server }).server.prependListener('request', (req, res) => {
    queueMicrotask(() => answered.set(new URL(req.url!, base).pathname, res.statusCode));
  });
  const hub = new TelemetryHub({ workloads: { byIp: () => null } });
  const agent = new ReportClient({ url, node: 'n1', hub, inventory: () => inventory, intervalMs: 100, log: () => {} });
  // The other site: any page, on another host name (localhost is another site than 127.0.0.1).
  const other = http.createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>elsewhere</title>'));
  await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
  const otherPort = (other.address() as { port: number }).port;
  const browser = await launchChromium();
  t.teardown(async () => {
    await browser.close();
    await agent.stop();
    await dash.close();
    await ctl.close();
    other.closeAllConnections();
    await new Promise((r) => other.close(r));
  });
  agent.start();
  await until(() => requestJson(url, 'GET', '/v1/status'), (s: any) => s.nodes.length === 1 && s.tapLinks.length === 1, 'agent known', { intervalMs: 50 });

  const { page } = await browser.page();
  await page.goto(`http://localhost:${otherPort}/`);
  const tapUrl = `${base}/api/tap?namespace=shop&resource=deploy/api&maxRps=10000`;
  // no-cors: the request is sent and answered (opaque to the page); fetch settles once the
  // answer's headers arrive, by when the dashboard has started the tap or refused it.
  const send = (u: string) => page.evaluate(async (u) => void (await fetch(u, { mode: 'no-cors' }).catch(() => {})), u);
  await send(tapUrl);
  t.is(tapsStarted, 0, 'a tap started from another site');
  t.is(answered.get('/api/tap'), 403, 'the tap from another site is answered 403');
  await send(`${base}/api/events`);
  t.is(answered.get('/api/events'), 403, 'an event stream from another site is answered 403');

  // The dashboard's own page still taps: Start on the workload page.
  const own = (await browser.page()).page;
  await own.goto(`${base}/#/namespaces/shop/deployment/api`);
  await own.getByRole('button', { name: 'Start' }).click();
  await own.getByRole('status').filter({ hasText: 'Tapping deploy/api' }).waitFor();
  t.is(answered.get('/api/tap'), 200);
  t.is(tapsStarted, 1, 'only the dashboard page\'s own tap');
});
