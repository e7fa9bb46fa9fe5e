// The relay's links to the agents over real HTTP/2: a tap reaches an agent that takes over its
// node's link while the tap is open.
import test from 'ava';
import * as http2 from 'node:http2';
import { ControllerServer } from '../src/controller/server.ts';
import { requestJson, streamJson } from '../src/controller/client.ts';
import { readLines } from '../src/controller/lines.ts';
import { PATH_AGENT_TAP, PATH_TAP } from '../src/controller/protocol.ts';
import { pod, report } from './helpers/reports.ts';
import { within } from './helpers/until.ts';

/** An agent's tap stream for `node`, and the commands the controller writes on it. */
function agentLink(url: string, node: string, agentId: string) {
  const session = http2.connect(url);
  const st = session.request({ ':method': 'POST', ':path': PATH_AGENT_TAP, 'mesh-node': node, 'mesh-agent-id': agentId }, { endStream: false });
  st.on('error', () => {});
  const commands: any[] = [];
  let wake = () => {};
  readLines(st, (l) => {
    commands.push(JSON.parse(l));
    wake();
  }, () => {});
  const command = (ok: (c: any) => boolean, what: string) => within(new Promise<any>((resolve) => {
    const check = () => {
      const c = commands.find(ok);
      if (c) resolve(c);
    };
    wake = check;
    check();
  }), 10_000, () => `no ${what} command reached agent ${agentId} within 10 s; it got ${JSON.stringify(commands)}`);
  return { session, st, command };
}

test('an agent that takes over its node\'s tap link (a restart before the old stream closed) is sent the open taps', async (t) => {
  const ctl = new ControllerServer({ log: () => {} });
  const { port } = await ctl.listen('127.0.0.1', 0);
  const url = `http://127.0.0.1:${port}`;
  const ac = new AbortController();
  const links: Array<ReturnType<typeof agentLink>> = [];
  t.teardown(async () => {
    ac.abort();
    for (const l of links) l.session.destroy();
    await ctl.close();
  });
  await requestJson(url, 'POST', '/v1/reports', report({ node: 'n1', agentId: 'a1', seq: 1, start: 0, end: Date.now(), pods: [pod('shop', 'web', '10.1.0.5')] }));
  const first = agentLink(url, 'n1', 'a1');
  links.push(first);
  await within((async () => {
    while (ctl.relay.links().length === 0) await new Promise((r) => setTimeout(r, 10));
  })(), 10_000, () => 'the first agent\'s tap link never registered');
  const records: any[] = [];
  let recordCame = () => {};
  const started = new Promise<void>((resolve) => {
    void streamJson(url, PATH_TAP, { resource: 'deployment/web', namespace: 'shop', maxRps: 10 }, (o: any) => {
      if (o.type === 'started') resolve();
      if (o.type === 'request') {
        records.push(o);
        recordCame();
      }
    }, ac.signal).catch(() => {});
  });
  const nthRecord = (n: number) => within(new Promise<void>((resolve) => {
    recordCame = () => records.length >= n && resolve();
    recordCame();
  }), 10_000, () => `tap got ${records.length} records, not ${n}`);
  // What an agent sends for a request its tap filter matched: its own count n from 1.
  const send = (l: ReturnType<typeof agentLink>, filterId: string) => l.st.write(JSON.stringify({ tap: filterId, record: { n: 1, src: { ip: '10.1.0.5', port: 40000 }, dst: { ip: '10.1.0.9', port: 80 }, startedAt: Date.now() } }) + '\n');
  await started;
  const start = await first.command((c) => c.op === 'start', 'tap start');
  send(first, start.filter.id);
  await nthRecord(1);
  // The agent restarts: its new process opens a new link while the old stream is still open.
  const second = agentLink(url, 'n1', 'a2');
  links.push(second);
  const again = await second.command((c) => c.op === 'start', 'tap start');
  t.is(again.filter.id, start.filter.id);
  t.deepEqual(ctl.relay.links(), [{ node: 'n1', agentId: 'a2' }]);
  // The new process counts its requests from 1 again: its ids must not repeat the old one's
  // (a tap reader pairs and dedupes by id, as Linkerd's tap ids are unique within a tap).
  send(second, again.filter.id);
  await nthRecord(2);
  t.not(records[1].id, records[0].id, `ids ${records[0].id} and ${records[1].id}`);
});
