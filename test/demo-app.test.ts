// The demo application's pure parts: the bot's mix and the rates it implies, the placement and
// ownership of the pods (replicas on different nodes, resolving to their deployments), and the
// SMTP reply framing.
import test from 'ava';
import { DEMO_NODES, DEPLOYMENTS, nodeOf, podLabels } from '../src/demo/app.ts';
import { deploymentOwnership } from '../src/sim/cluster-objects.ts';
import { BROKEN_VOTE } from '../src/demo/emoji-list.ts';
import * as net from 'node:net';
import { spawn } from 'node:child_process';
import { JsonLineLog } from '../src/demo/json-lines.ts';
import { replyCode, sendMail, takeLines } from '../src/demo/smtp.ts';
import { botRound, EXPECTED_SUCCESS, expectedRps, failureRange, REQUESTS_PER_ROUND } from '../src/demo/traffic-mix.ts';
import { podFromObject } from '../src/k8s/objects.ts';
import { workloadOf } from '../src/telemetry/workload.ts';
import { podObject } from '../src/sim/pod-object.ts';
import { DASHBOARD_LINE, dashboardLine } from '../src/cli/demo.ts';
import { DASHBOARD } from '../src/demo/stack.ts';
import { StartProgress, STEP_LINE } from '../src/demo/progress.ts';

test('every bot round has one doughnut vote in three and the stated web success rate', (t) => {
  for (let n = 0; n < 20; n++) {
    const round = botRound(n);
    t.is(round.length, REQUESTS_PER_ROUND);
    const votes = round.filter((r) => r.path.startsWith('/api/vote'));
    t.is(votes.length, 3);
    const broken = votes.filter((r) => decodeURIComponent(r.path.split('=')[1]) === BROKEN_VOTE).length;
    t.is(broken, 1);
    t.is((round.length - broken) / round.length, EXPECTED_SUCCESS.web);
    t.is((4 - broken) / 4, EXPECTED_SUCCESS.voting);
  }
  t.deepEqual(expectedRps(10), { web: 10, voting: 8, emoji: 10 });
});

test('the failures any stretch of n requests holds follow from the mix: exactly, at most one off n times the failure share', (t) => {
  // The web's outcomes as the bot sends them, from the rounds themselves.
  const webOutcomes = Array.from({ length: 8 }, (_, n) => botRound(n)).flat().map((r) => decodeURIComponent(r.path.split('=')[1] ?? '') !== BROKEN_VOTE);
  for (let n = 1; n <= 30; n++) {
    const [min, max] = failureRange('web', n);
    for (let start = 0; start + n <= webOutcomes.length; start++) {
      const failures = webOutcomes.slice(start, start + n).filter((ok) => !ok).length;
      t.true(failures >= min && failures <= max, `web, ${n} requests from ${start}: ${failures} not in [${min}, ${max}]`);
    }
    for (const d of ['web', 'voting', 'emoji']) {
      const [lo, hi] = failureRange(d, n);
      const mean = (1 - EXPECTED_SUCCESS[d]!) * n;
      t.true(lo > mean - 1 && hi < mean + 1 && hi - lo <= 1, `${d} ${n}: [${lo}, ${hi}] around ${mean}`);
    }
  }
  t.deepEqual(failureRange('web', 200), [40, 40]);
  t.deepEqual(failureRange('voting', 7), [1, 2]);
  t.deepEqual(failureRange('emoji', 50), [0, 0]);
  t.deepEqual(EXPECTED_SUCCESS, { web: 0.8, voting: 0.75, emoji: 1 });
  t.throws(() => failureRange('mailer', 1), { message: /no traffic mix for deployment mailer/ });
});

test('the bot spreads its good votes over every other emoji', (t) => {
  const seen = new Set<string>();
  for (let n = 0; n < 20; n++) for (const r of botRound(n)) if (r.path.startsWith('/api/vote')) seen.add(decodeURIComponent(r.path.split('=')[1]));
  t.is(seen.size, 10);
});

test('every service has at least 2 replicas on different nodes behind a Service; pods resolve to their deployments', (t) => {
  for (const [i, d] of DEPLOYMENTS.entries()) {
    const nodes = Array.from({ length: d.replicas }, (_, r) => nodeOf(i, r));
    t.is(new Set(nodes).size, d.replicas, `${d.name} on nodes ${nodes}`);
    t.true(nodes.every((n) => n >= 0 && n < DEMO_NODES));
    if (d.name !== 'vote-bot') {
      t.true(d.replicas >= 2 && d.service !== undefined, d.name);
    }
    // What the cluster's ReplicaSet stand-in gives a pod of this deployment.
    const owned = deploymentOwnership('emojivoto', d.name, '6f1c0e1a-1111-4222-8333-944455556666');
    const name = `${owned.ownerReferences[0]!.name}-x2b4d`;
    const obj = podObject({ name, namespace: 'emojivoto', uid: '6f1c0e1a-1111-4222-8333-944455556667', ip: '10.244.1.2', hostIp: '10.244.0.1', qos: 'Burstable', hostNetwork: false, containerId: 'a'.repeat(64), labels: { ...podLabels(d), ...owned.labels }, annotations: {}, ownerReferences: owned.ownerReferences, createdAt: new Date() }, 'n');
    const pod = podFromObject(obj as any);
    t.deepEqual(workloadOf(pod!), { namespace: 'emojivoto', pod: name, kind: 'deployment', name: d.name });
  }
});

test('SMTP replies: multi-line replies end at "NNN ", lines split on CRLF', (t) => {
  t.deepEqual(replyCode('250-mailer'), { code: 250, last: false });
  t.deepEqual(replyCode('250 ok'), { code: 250, last: true });
  t.deepEqual(replyCode('220'), { code: 220, last: true });
  t.is(replyCode('HTTP/1.1 200 OK'), null);
  t.deepEqual(takeLines('220 hi\r\n250-a\r\n25'), { lines: ['220 hi', '250-a'], rest: '25' });
});

test('SMTP: a server that keeps talking after 221 does not crash the client', async (t) => {
  const replies = ['250 hi', '250 ok', '250 ok', '354 go', '250 queued'];
  const server = net.createServer((c) => {
    c.write('220 mailer\r\n');
    let n = 0;
    c.setEncoding('utf8').on('data', (d: string) => {
      for (const line of d.split('\r\n')) {
        if (line === 'QUIT') c.end('221 bye\r\n250 extra\r\n');
        else if (line === 'DATA' || /^(HELO|MAIL|RCPT) /.test(line) || line === '.') c.write(replies[n++] + '\r\n');
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const port = (server.address() as net.AddressInfo).port;
  t.is(await sendMail('127.0.0.1', port, { from: 'a@x', to: 'b@x', subject: 's', body: 'b' }), '250 queued');
});

test('a child\'s JSON lines: null and numbers are skipped, objects kept', async (t) => {
  const child = spawn(process.execPath, ['-e', 'console.log("null"); console.log("7"); console.log(JSON.stringify({ ready: 1 }))'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const log = new JsonLineLog(child);
  await new Promise((r) => child.once('close', r)); // 'close': stdout fully read ('exit' may come first)
  t.deepEqual([...log.latest], [['ready', 1]]);
});

test('the demo\'s dashboard line parses back: the URL, and the namespace to enter when the ports are not forwarded', (t) => {
  const here = DASHBOARD_LINE.exec(dashboardLine(null));
  t.deepEqual([here?.[1], here?.[2]], [`http://${DASHBOARD}/`, undefined]);
  const inside = DASHBOARD_LINE.exec(dashboardLine('sudo nsenter --net=/var/run/netns/ma1x2-cp'));
  t.deepEqual([inside?.[1], inside?.[2]], [`http://${DASHBOARD}/`, '/var/run/netns/ma1x2-cp'], 'a second demo\'s dashboard is opened in its own namespace, not at the first demo\'s forwarded port');
});

test('the start\'s progress: each step numbered of the total with its own time, the last with the whole start\'s', (t) => {
  const lines: string[] = [];
  const p = new StartProgress(3, (l) => lines.push(l), 1000);
  p.done('node made', 2500);
  p.done('agent on sim-node-2 ready', 6600);
  p.done('first answer', 6700);
  t.deepEqual(lines, ['node made [1/3, +1.5 s]', 'agent on sim-node-2 ready [2/3, +4.1 s]', 'first answer [3/3, +0.1 s; started in 5.7 s]']);
  t.deepEqual(lines.map((l) => STEP_LINE.exec(l)?.slice(1)), [['1', '3', '1.5', undefined], ['2', '3', '4.1', undefined], ['3', '3', '0.1', '5.7']]);
});
