// Fuzzes what the controller reads from an agent's tap stream (TapRelay): tap records and answers
// to diagnostics queries, mutated and random, written by a real HTTP/2 client to a real
// ControllerServer while a tap is open from the CLI side (streamJson) and a query waits for its
// answer. Checks, batch by batch: nothing throws (an exception out of the stream's reader would
// take the controller down), the agent's stream stays open, a line that is not a JSON object is
// counted and logged (once a minute), a record of the open tap reaches the CLI intact and in order, every other line is
// dropped, and a query is answered with the first reply to it. MESH_FUZZ_SEED=<n> replays a run.
import test from 'ava';
import * as http2 from 'node:http2';
import { ControllerServer } from '../src/controller/server.ts';
import { requestJson, streamJson } from '../src/controller/client.ts';
import { MAX_LINE_BYTES, readLines } from '../src/controller/lines.ts';
import { PATH_AGENT_TAP, PATH_DIAG_ENDPOINTS, PATH_TAP } from '../src/controller/protocol.ts';
import { BAD_LINE_LOG_INTERVAL_MS, MAX_RELAYED_DEPTH } from '../src/controller/tap-relay.ts';
import { MAX_TAP_RPS } from '../src/telemetry/tap.ts';
import { cpuMsSince, fuzzer, utf8 } from './helpers/fuzz.ts';
import { pod, report } from './helpers/reports.ts';
import { within } from './helpers/until.ts';

const BATCHES = 60;
const LINES_PER_BATCH = 100;
/** CPU time of the run (~2 s measured): CPU time, which a busy machine does not stretch. */
const MAX_RUN_CPU_MS = 30_000;
/** How long one batch's effects may take to arrive: generous, the machine may be busy. */
const BATCH_MS = 30_000;

const f = fuzzer('tap-relay');
const { below, chance, pick, randomText } = f;

/** How deep a JSON value nests (a list or object is one level), counting no further than `max + 1`. */
function depth(v: unknown, max: number): number {
  let deepest = 0;
  const stack: Array<[unknown, number]> = [[v, 0]];
  while (stack.length > 0) {
    const [x, d] = stack.pop()!;
    if (x === null || typeof x !== 'object') continue;
    deepest = Math.max(deepest, d + 1);
    if (deepest > max) return deepest;
    for (const y of Object.values(x)) stack.push([y, d + 1]);
  }
  return deepest;
}

type Verdict =
  | { kind: 'blank' | 'not-object' | 'dropped' | 'too-deep' }
  | { kind: 'reply'; id: string; answer: { node: string; result?: unknown; error?: string } }
  | { kind: 'relayed'; record: Record<string, any> };

/** What the relay must do with one line (the oracle): TapRelay's rules, written again from its doc comments. */
function verdict(line: string, tap: string): Verdict {
  if (line.trim() === '') return { kind: 'blank' };
  let msg: any;
  try {
    msg = JSON.parse(line);
  } catch {
    return { kind: 'not-object' };
  }
  if (msg === null || typeof msg !== 'object') return { kind: 'not-object' };
  if (typeof msg.reply === 'string') {
    if (typeof msg.error === 'string') return { kind: 'reply', id: msg.reply, answer: { node: 'n1', error: msg.error.slice(0, 1000) } };
    if (depth(msg.result, MAX_RELAYED_DEPTH) > MAX_RELAYED_DEPTH) return { kind: 'reply', id: msg.reply, answer: { node: 'n1', error: 'too-deep' } };
    return { kind: 'reply', id: msg.reply, answer: { node: 'n1', result: msg.result } };
  }
  const r = msg.record;
  if (msg.tap !== tap || r === null || typeof r !== 'object' || typeof r.src?.ip !== 'string' || typeof r.dst?.ip !== 'string' || !Number.isFinite(r.startedAt)) return { kind: 'dropped' };
  if (depth(r, MAX_RELAYED_DEPTH) > MAX_RELAYED_DEPTH) return { kind: 'too-deep' };
  return { kind: 'relayed', record: r };
}

/** What the CLI must get for a relayed record (n1 is the tap's first agent: id base 0). */
function relayedLine(r: Record<string, any>): unknown {
  const ep = (e: any) => {
    const port = Number(e.port) || 0;
    if (e.ip === '10.1.0.5') return { ip: e.ip, port, resource: 'deploy/web', namespace: 'shop', pod: 'web-1' };
    if (e.ip === '10.1.0.6') return { ip: e.ip, port, resource: 'deploy/api', namespace: 'shop', pod: 'api-1' };
    return { ip: e.ip, port };
  };
  // The tap is of deployment/web: a record from its pod is outbound, any other inbound.
  return { type: 'request', id: `0:${Number(r.n) || 0}`, node: 'n1', direction: r.src.ip === '10.1.0.5' ? 'outbound' : 'inbound', source: ep(r.src), destination: ep(r.dst), record: r };
}

const record = (n: number) => ({
  n, src: { ip: '10.1.0.5', port: 40000 + n }, dst: { ip: '10.1.0.6', port: 8080 }, protocol: 'http1', method: 'GET', authority: 'api.shop:8080', path: `/items/${n}`,
  status: 200, latencyUs: 1500, durationUs: 20, requestBytes: 0, responseBytes: 12, success: true, startedAt: 1_700_000_000_000 + n,
  tls: { clientId: 'spiffe://cluster.local/ns/shop/sa/web', serverId: 'spiffe://cluster.local/ns/shop/sa/api' },
});

test('fuzz: an agent\'s tap lines: nothing thrown, the stream kept, bad lines dropped (not JSON objects logged), records relayed intact and in order, a query answered by its first reply', async (t) => {
  t.log(`MESH_FUZZ_SEED=${f.seed}`);
  const warnings: string[] = [];
  const ctl = new ControllerServer({ log: (level, msg) => level === 'warn' && warnings.push(msg) });
  const { port } = await ctl.listen('127.0.0.1', 0);
  const url = `http://127.0.0.1:${port}`;
  // An exception out of the relay surfaces as an uncaught exception of this process: say which batch did it.
  let batch: { index: number; text: string } | null = null;
  const onCrash = (e: Error) => console.error(`tap-relay fuzz: uncaught ${e.stack} while the controller read batch ${batch?.index} (MESH_FUZZ_SEED=${f.seed}); its lines: ${JSON.stringify(batch?.text.slice(0, 4000))}`);
  process.on('uncaughtExceptionMonitor', onCrash);
  const agent = http2.connect(url);
  const ac = new AbortController();
  t.teardown(async () => {
    process.off('uncaughtExceptionMonitor', onCrash);
    ac.abort();
    agent.destroy();
    await ctl.close();
  });
  // The node and its pods, live for the whole run (a long report interval).
  await requestJson(url, 'POST', '/v1/reports', report({ node: 'n1', agentId: 'a1', seq: 1, start: 0, end: 3_600_000, pods: [pod('shop', 'web', '10.1.0.5'), pod('shop', 'api', '10.1.0.6')] }));

  // The agent's side: a tap stream, and the commands the controller writes on it.
  const st = agent.request({ ':method': 'POST', ':path': PATH_AGENT_TAP, 'mesh-node': 'n1', 'mesh-agent-id': 'a1' }, { endStream: false });
  st.on('error', () => {});
  let streamClosed = false;
  st.on('close', () => (streamClosed = true));
  const commands: any[] = [];
  let onCommand = () => {};
  readLines(st, (l) => (commands.push(JSON.parse(l)), onCommand()), () => {});
  const command = (ok: (c: any) => boolean, what: string) => within(new Promise<any>((resolve) => {
    const check = () => {
      const c = commands.find(ok);
      if (c) resolve(c);
    };
    onCommand = check;
    check();
  }), BATCH_MS, () => `no ${what} command reached the agent within ${BATCH_MS} ms; commands: ${JSON.stringify(commands).slice(0, 600)}`);

  // The CLI's side: a tap of deploy/web, every line it gets.
  const out: any[] = [];
  let onOut = () => {};
  void streamJson(url, PATH_TAP, { resource: 'deployment/web', namespace: 'shop', maxRps: MAX_TAP_RPS }, (o) => (out.push(o), onOut()), ac.signal).catch(() => {});
  const tap: string = (await command((c) => c.op === 'start', 'tap start')).filter.id;
  const outLine = (ok: (o: any) => boolean, what: string) => within(new Promise<void>((resolve) => {
    onOut = () => ok(out[out.length - 1]) && resolve();
    if (out.length > 0 && ok(out[out.length - 1])) resolve();
  }), BATCH_MS, () => `${what} did not reach the CLI within ${BATCH_MS} ms (batch ${batch?.index}, MESH_FUZZ_SEED=${f.seed})`);
  await outLine((o) => o.type === 'started', 'the tap\'s started line');
  out.length = 0;

  const failures: string[] = [];
  const fail = (what: string) => failures.length < 10 && failures.push(`batch ${batch?.index}: ${what}`);
  const counts: Record<string, number> = {};
  let notObjects = 0;
  let relayed = 0;
  let sentinel = 1_000_000;
  const asked = new Set<string>();
  const cpuStart = process.cpuUsage();
  const runStart = Date.now();
  for (let b = 0; b < BATCHES && failures.length === 0; b++) {
    // The batch, made before its query is asked: the query's id goes in last, so that the query's
    // wait for an answer (QUERY_TIMEOUT_MS) covers only the controller's work.
    const QID = 'q-asked-later';
    const good = [
      { tap, record: record(b) }, { tap, record: { ...record(b), tls: undefined, grpcStatus: 14, error: 'upstream reset' } },
      { tap: 't-ended', record: record(b) }, { reply: QID, result: { service: 'shop/api', endpoints: [{ ip: '10.1.0.6', port: 8080, ewmaMs: 1.5, state: 'ready' }] } },
      { reply: QID, error: 'no Service shop/api in discovery' }, { reply: 'q-stray', result: {} },
    ];
    const texts = good.map((v) => utf8(JSON.stringify(v)));
    let lines: string[] = [];
    while (lines.length < LINES_PER_BATCH) {
      const text = chance(0.9) ? f.jsonText(good, texts) : randomText(below(200), '{}[]":,0123456789 tapreco\r\t\\');
      // A line over the bound closes the stream (test/controller-lines.fuzz.test.ts): not this test's subject.
      const pieces = text.split('\n');
      if (pieces.some((p) => Buffer.byteLength(p) > MAX_LINE_BYTES)) continue;
      lines.push(...pieces);
    }
    const end = sentinel++;
    lines.push(JSON.stringify({ tap, record: record(end) }), JSON.stringify({ reply: QID, result: 'sentinel' }));
    // A query waits on this agent for the batch: its first reply answers it.
    const answer = requestJson(url, 'GET', `${PATH_DIAG_ENDPOINTS}?namespace=shop&name=api&node=n1`, undefined, BATCH_MS);
    answer.catch(() => {}); // awaited below, after the batch's records
    const qid: string = (await command((c) => c.op === 'query' && !asked.has(c.id), 'query')).id;
    asked.add(qid);
    lines = lines.map((l) => l.replaceAll(QID, qid));
    batch = { index: b, text: lines.join('\n') };
    const from = out.length;
    const warned = warnings.length;
    st.write(batch.text + '\n');
    // What must come out, by the oracle.
    const want: unknown[] = [];
    let want4q: Verdict | undefined;
    for (const raw of lines) {
      const v = verdict(raw.endsWith('\r') ? raw.slice(0, -1) : raw, tap);
      counts[v.kind] = (counts[v.kind] ?? 0) + 1;
      if (v.kind === 'not-object') notObjects++;
      if (v.kind === 'relayed') want.push(relayedLine(v.record));
      if (v.kind === 'reply' && v.id === qid) want4q ??= v;
    }
    await outLine((o) => o.type === 'request' && o.record?.n === end, `batch ${b}'s last record`);
    const got = await answer;
    const gotLines = out.slice(from);
    relayed += gotLines.length;
    if (gotLines.length !== want.length) fail(`${gotLines.length} records relayed, want ${want.length}`);
    for (let i = 0; i < Math.min(gotLines.length, want.length); i++) {
      // Compared as text: JSON is what the CLI got, and a record nested deep is never relayed, so this never overflows.
      const g = JSON.stringify(gotLines[i]);
      const w = JSON.stringify(JSON.parse(JSON.stringify(want[i])));
      if (g !== w) {
        let at = 0;
        while (g[at] === w[at]) at++;
        fail(`relayed line ${i} differs at character ${at}: ...${g.slice(Math.max(0, at - 60), at + 100)}; want ...${w.slice(Math.max(0, at - 60), at + 100)}`);
        break;
      }
    }
    const wantAnswer = want4q?.kind === 'reply' ? want4q.answer : undefined;
    const gotAnswer = got.agents?.[0];
    if (wantAnswer?.error === 'too-deep' ? !/nested deeper than/.test(gotAnswer?.error ?? '') : JSON.stringify(gotAnswer) !== JSON.stringify(JSON.parse(JSON.stringify(wantAnswer)))) {
      fail(`the query was answered ${JSON.stringify(got).slice(0, 300)}; want ${JSON.stringify(wantAnswer)?.slice(0, 300)}`);
    }
    const others = warnings.slice(warned).filter((w) => !/not a JSON object; ignored|nested deeper than/.test(w));
    if (others.length > 0) fail(`unexpected warnings: ${others.slice(0, 3).join(' | ').slice(0, 600)}`);
    if (streamClosed) fail('the controller closed the agent\'s tap stream');
  }
  const runCpuMs = cpuMsSince(cpuStart);
  const status = await requestJson(url, 'GET', '/v1/status');
  t.log(`${BATCHES} batches, ${Object.entries(counts).map(([k, v]) => `${k}=${v}`).join(' ')}; ${relayed} lines relayed; ${runCpuMs.toFixed(0)} ms of CPU`);
  t.deepEqual(failures, [], `replay with MESH_FUZZ_SEED=${f.seed}`);
  t.deepEqual(status.tapLinks, [{ node: 'n1', agentId: 'a1' }], 'the agent\'s tap stream is still open');
  t.is(status.activeTaps, 1);
  // Every bad line counted; logged once a minute per node and kind (the first at once).
  t.deepEqual(status.tapBadLines, { notObject: notObjects, tooDeep: counts['too-deep'] ?? 0, tooLong: 0 });
  const minutes = 1 + Math.floor((Date.now() - runStart) / BAD_LINE_LOG_INTERVAL_MS);
  for (const [re, n] of [[/not a JSON object; ignored/, notObjects], [/tap record nested deeper than/, counts['too-deep'] ?? 0]] as const) {
    const logged = warnings.filter((w) => re.test(w)).length;
    t.true(logged >= Math.min(1, n) && logged <= Math.min(minutes, n), `${re}: ${logged} lines for ${n} in ${minutes} minute(s)`);
  }
  t.true(relayed < MAX_TAP_RPS, 'the run stays within the tap\'s burst, so no record was rate-limited');
  t.true(runCpuMs < MAX_RUN_CPU_MS, `run took ${runCpuMs} ms of CPU`);
  for (const k of ['not-object', 'dropped', 'relayed', 'reply']) t.true((counts[k] ?? 0) > 50, `${k}: ${counts[k] ?? 0} lines`);
});
