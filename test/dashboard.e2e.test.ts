// The dashboard of the demo's controller in headless Chromium (root: the demo builds a simulated
// node): the namespace page shows web near 80% and voting near 75% (bounds from the counts
// behind each number), clicking web shows its edges to emoji and voting with their rates, the
// tap panel started from the keyboard shows live requests, no console errors, 1280x800.
// Screenshots of each page go to test-artifacts/ (docs/img/ has copies for docs/dashboard.md).
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Page } from 'playwright-core';
import { cleanupLeftovers } from '../src/sim/index.ts';
import { formatSuccess } from '../src/controller/format.ts';
import { DASHBOARD_LINE } from '../src/cli/demo.ts';
import { DemoRun, leftovers, processesOf } from './helpers/demo-run.ts';
import { requireRoot } from './helpers/root.ts';
import { CHROMIUM, launchChromium, screenshot } from './helpers/browser.ts';
import { testTempDir } from './helpers/temp-dir.ts';

const RPS = 10;
/** The demo's agents report every 2 s (src/sim/mesh.ts). */
const REPORT_INTERVAL_MS = 2000;
let run: DemoRun | undefined;
test.after.always(async () => {
  // Only a demo we had to kill leaves anything to sweep (the test checks a clean stop itself).
  if (!run || run.child.exitCode !== null || run.child.signalCode !== null) return;
  run.child.kill('SIGKILL');
  await run.exited;
  await cleanupLeftovers();
});

/** "S of N requests" from a success cell's title. */
type Counts = { text: string; successes: number; requests: number };

/** Text and title of several cells from one DOM read, so all come from one render of one API answer. */
async function cells<K extends string>(page: Page, selectors: Record<K, string>): Promise<Record<K, { text: string; title: string }>> {
  const got = await page.evaluate((sels) => Object.fromEntries(Object.entries(sels).map(([k, sel]) => {
    const e = document.querySelector(sel as string);
    return [k, e ? { text: e.textContent ?? '', title: e.getAttribute('title') ?? '' } : null];
  })), selectors as Record<string, string>);
  for (const [k, v] of Object.entries(got)) if (!v) throw new Error(`${k}: nothing matches ${selectors[k as K]}`);
  return got as Record<K, { text: string; title: string }>;
}

function countsOf(what: string, c: { text: string; title: string }): Counts {
  const m = /^(\d+) of (\d+) requests$/.exec(c.title);
  if (!m) throw new Error(`${what}: title "${c.title}" does not give the counts`);
  return { text: c.text, successes: Number(m[1]), requests: Number(m[2]) };
}

test('the demo\'s dashboard in Chromium: success rates, edges, live tap, every page', async (t) => {
  requireRoot(t);
  run = new DemoRun(['--duration', '600', '--rps', String(RPS)]);
  const m = await run.waitFor(DASHBOARD_LINE, 90_000);
  const url = m[1]!;
  const netns = m[2];
  const ids = run.ids();
  const procs = processesOf(ids);
  // The URL works as printed: forwarded to this machine, or (ports taken by another demo) inside the node's namespace.
  let exe = CHROMIUM;
  const dir = testTempDir(t);
  if (netns) {
    exe = path.join(dir, 'chromium');
    fs.writeFileSync(exe, `#!/bin/sh\nexec nsenter --net=${netns} ${CHROMIUM} "$@"\n`, { mode: 0o755 });
  }
  const browser = await launchChromium(exe);
  t.teardown(() => browser.close());
  const { page, errors } = await browser.page();

  // Namespaces.
  await page.goto(url);
  await page.getByTestId('namespaces').locator('tr[data-row="emojivoto"]').waitFor({ timeout: 30_000 });
  await screenshot(page, 'dashboard-namespaces');

  // The namespace: wait until web has seen ten rounds of the bot's mix, then hold each rate to its counts.
  await page.getByRole('link', { name: 'emojivoto' }).click();
  const webCell = 'tr[data-row="deployment/web"] td[data-col="success"]';
  await page.waitForFunction((sel) => {
    const m = /of (\d+) requests/.exec(document.querySelector(sel)?.getAttribute('title') ?? '');
    return m !== null && Number(m[1]) >= 50;
  }, webCell, { timeout: 60_000, polling: 200 });
  await page.locator('svg.topology g[data-edge="web>voting"]').waitFor();
  const ns = await cells(page, { web: webCell, voting: 'tr[data-row="deployment/voting"] td[data-col="success"]' });
  const web = countsOf('web', ns.web);
  const voting = countsOf('voting', ns.voting);
  // The bot's requests are sequential and web is counted by the bot's node alone, so its window
  // holds a contiguous run of them: 1 failure in 5, within one of N/5. Voting is counted by the
  // agents of both web pods' nodes, whose reports (every 2 s) are cut at different moments: 1 in
  // 4, within one plus the votes of one report interval at the bot's rate.
  const skew = Math.ceil(RPS * (REPORT_INTERVAL_MS / 1000) * 0.8) + 1;
  t.is(web.text, formatSuccess(web.successes / web.requests));
  t.true(Math.abs(web.requests - web.successes - web.requests / 5) <= 1, `web ${web.text}: ${web.successes} of ${web.requests}`);
  t.is(voting.text, formatSuccess(voting.successes / voting.requests));
  t.true(Math.abs(voting.requests - voting.successes - voting.requests / 4) <= 1 + skew / 4, `voting ${voting.text}: ${voting.successes} of ${voting.requests}`);
  t.true(await page.locator('svg.topology g.edge-bad[data-edge="web>voting"]').count() === 1, 'the failing edge stands out');
  t.true(await page.evaluate(() => document.documentElement.scrollWidth <= 1280), 'fits 1280 wide');
  await screenshot(page, 'dashboard-namespace');

  // Click web: its edges to emoji and voting, with their rates.
  await page.getByTestId('workloads').getByRole('link', { name: 'web', exact: true }).click();
  await page.getByTestId('outbound').waitFor();
  // One read of the page: the dashboard refreshes, and values of two refreshes cover different windows.
  const out = (row: string, col: string) => `[data-testid=outbound] tr[data-row="emojivoto/deployment/${row}"] td[data-col="${col}"]`;
  const wl = await cells(page, {
    inbound: '[data-testid=workload-stats] dd[title]', webRps: '[data-testid=workload-stats] div:nth-child(2) dd',
    emoji: out('emoji', 'success'), vote: out('voting', 'success'), emojiRps: out('emoji', 'rps'), voteRps: out('voting', 'rps'),
  });
  const inbound = countsOf('web', wl.inbound);
  const emoji = countsOf('emoji', wl.emoji);
  const vote = countsOf('voting', wl.vote);
  const rate = (c: { text: string }) => Number(c.text.replace('rps', ''));
  const rps = (row: 'emoji' | 'voting') => rate(row === 'emoji' ? wl.emojiRps : wl.voteRps);
  const webRps = rate(wl.webRps);
  // Per web request one emoji call; per round of five, four voting calls. A report boundary
  // may split a web request from its calls at either end of the window, and the nodes' boundaries differ.
  t.true(Math.abs(emoji.requests - inbound.requests) <= 2 + skew, `emoji ${emoji.requests} vs web ${inbound.requests}`);
  t.true(Math.abs(vote.requests - 0.8 * inbound.requests) <= 3 + skew, `voting ${vote.requests} vs web ${inbound.requests}`);
  t.is(emoji.successes, emoji.requests);
  // Rates divide the same counts by the same covered time; the bot never exceeds its schedule by more than its 1 s catch-up.
  t.true(Math.abs(rps('emoji') - (webRps * emoji.requests) / inbound.requests) <= 0.11, `emoji ${rps('emoji')} rps (${emoji.requests} requests) vs web ${webRps} rps (${inbound.requests})`);
  t.true(Math.abs(rps('voting') - (webRps * vote.requests) / inbound.requests) <= 0.11, `voting ${rps('voting')} rps (${vote.requests} requests) vs web ${webRps} rps (${inbound.requests})`);
  t.true(webRps > 0 && webRps <= RPS * 1.1, `web ${webRps} rps with the bot at ${RPS}`);
  // web's two replicas, on the first two nodes.
  await page.getByTestId('pods').getByText('sim-node-1').waitFor();
  await page.getByTestId('pods').getByText('sim-node-2').waitFor();

  // Tap, by keyboard: tab to Start and press Enter; requests show up within a bound from the bot's rate.
  const start = page.getByRole('button', { name: 'Start' });
  for (let i = 0; i < 200 && !(await start.evaluate((el) => el === document.activeElement)); i++) await page.keyboard.press('Tab');
  t.true(await start.evaluate((el) => el === document.activeElement), 'Start is reachable with Tab');
  const bound = Math.max(2000, (20 * 1000) / RPS);
  const t0 = Date.now();
  await page.keyboard.press('Enter');
  await page.locator('[data-tap-row]').first().waitFor({ timeout: bound });
  const firstAfter = Date.now() - t0;
  t.true(firstAfter <= bound, `first tapped request after ${firstAfter} ms`);
  await page.locator('[data-tap-row]', { hasText: 'from emojivoto/deploy/vote-bot' }).first().waitFor({ timeout: bound });
  await page.locator('[data-tap-row]', { hasText: 'to emojivoto/deploy/voting' }).first().waitFor({ timeout: bound });
  t.regex((await page.getByRole('status').filter({ hasText: 'Tapping' }).textContent())!, /Tapping deploy\/web: 2 pods, 3 agents, at most 100 requests\/s/);
  await screenshot(page, 'dashboard-workload');
  await page.getByRole('button', { name: 'Stop' }).click();
  await page.getByText('Stopped.').waitFor();

  // Nodes.
  await page.getByRole('link', { name: 'Nodes' }).click();
  const node = page.getByTestId('nodes').locator('tr[data-row="sim-node-1"]');
  await node.waitFor();
  t.is(await node.locator('td[data-col="health"]').textContent(), 'healthy');
  t.regex((await node.locator('td[data-col="programs"]').textContent())!, /^(\d+)\/\1 attached$/);
  t.is(await node.locator('td[data-col="meshed"]').textContent(), '3/3', 'emoji, mailer and web run on the first node');
  t.is(await page.getByTestId('nodes').locator('tr[data-row]').count(), 3, 'an agent per node');
  t.regex((await node.locator('td[data-col="link"]').textContent())!, /tap connected/);
  await screenshot(page, 'dashboard-nodes');
  t.deepEqual(errors, [], 'no console errors on any page');

  await browser.close();
  run.child.kill('SIGTERM');
  t.is((await run.exited).code, 143, run.output);
  t.deepEqual(leftovers(ids, run.child.pid!, procs), []);
});
