// --cli-access loopback (docs/controller.md "Who can reach it"), with real sockets: the controller
// runs in a node network namespace of its own, listening on every address, and a pod namespace
// routed to it over a veth reaches it on the node IP, as a pod reaches a ClusterIP. From the pod,
// stat, tap, diagnostics and /v1/status get 403 naming the port-forward (the real `mesh-agent
// stat` shows it), while an agent's report is served; from 127.0.0.1 in the node namespace (where
// kubectl port-forward dials) stat, tap and the status are served. Needs root (network namespaces).
import test from 'ava';
import { isLoopback, parseAccessMode } from '../src/util/loopback-access.ts';
import { PATH_DIAG_ENDPOINTS, PATH_REPORTS, PATH_STAT, PATH_STATUS, PATH_TAP } from '../src/controller/protocol.ts';
import { meshBin } from '../src/sim/dist-bin.ts';
import { nodeAndPod } from './helpers/node-pod-netns.ts';
import { pod, report } from './helpers/reports.ts';

const NODE_IP = '10.231.0.1';
const POD_IP = '10.231.1.2';
const PORT = 8086;
const FIX = 'port-forward svc/mesh-agent-controller 8086';

test('isLoopback: 127.0.0.0/8, ::1 and IPv4-mapped 127.x; nothing else', (t) => {
  for (const a of ['127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1', '::FFFF:127.0.0.5']) t.true(isLoopback(a), a);
  for (const a of [undefined, '', '10.0.0.1', '::ffff:10.0.0.1', '::2', 'fe80::1', '128.0.0.1', '::ffff:7f00:1x']) t.false(isLoopback(a), String(a));
  t.is(parseAccessMode('loopback', '--cli-access'), 'loopback');
  t.throws(() => parseAccessMode('local', '--cli-access'), { message: /--cli-access "local": expected loopback .* or any/ });
});

test('--cli-access loopback: the CLI endpoints and the status refuse a pod with the fix, serve loopback; the agents\' endpoints unaffected', async (t) => {
  const { nodeNs, podNs, inNs, meshInNode } = await nodeAndPod(t, NODE_IP, POD_IP);
  await meshInNode(['controller', '--listen', `0.0.0.0:${PORT}`, '--dashboard-listen', 'off', '--cli-access', 'loopback'], 'controller listening');

  /** One HTTP/2 request with curl in namespace ns: status and body. */
  const ask = async (ns: string, host: string, method: string, p: string, body?: unknown) => {
    const r = await inNs(ns, 'curl', ['-sS', '--http2-prior-knowledge', '-X', method, ...(body === undefined ? [] : ['-H', 'content-type: application/json', '--data-binary', JSON.stringify(body)]), '-w', '\n%{http_code}', `http://${host}:${PORT}${p}`]);
    if (r.code !== 0) throw new Error(`curl ${method} ${p} in ${ns} exited ${r.code}: ${r.stderr}`);
    const nl = r.stdout.lastIndexOf('\n');
    return { status: Number(r.stdout.slice(nl + 1)), body: r.stdout.slice(0, nl) };
  };
  const tapBody = { resource: 'deploy/web', namespace: 'shop', maxRps: 10 };
  const stat = `${PATH_STAT}?kind=deployment&namespace=shop&window=1m`;

  // From the pod: each CLI endpoint and the status refused before it does anything, naming the fix.
  for (const [method, p, body] of [['GET', stat], ['POST', PATH_TAP, tapBody], ['GET', `${PATH_DIAG_ENDPOINTS}?namespace=shop&name=web`], ['GET', PATH_STATUS]] as const) {
    const r = await ask(podNs, NODE_IP, method, p, body);
    t.is(r.status, 403, `${method} ${p}: ${r.body}`);
    const error = JSON.parse(r.body).error as string;
    t.true(error.includes(`not to ${POD_IP}`) && error.includes(`kubectl -n mesh-agent ${FIX}`) && error.includes('--cli-access any'), error);
  }
  // The real CLI from the pod shows the refusal and the fix.
  const cli = await inNs(podNs, process.execPath, ['--disable-warning=ExperimentalWarning', meshBin(), 'stat', 'deploy', '-n', 'shop', '--controller', `${NODE_IP}:${PORT}`]);
  t.not(cli.code, 0);
  t.true(cli.stderr.includes(FIX), cli.stderr);

  // From the pod, the agents' endpoint is the same as without the flag.
  const now = Date.now();
  const rep = await ask(podNs, NODE_IP, 'POST', PATH_REPORTS, report({ seq: 1, start: now - 10_000, end: now, pods: [pod('shop', 'web', POD_IP)] }));
  t.deepEqual([rep.status, JSON.parse(rep.body)], [200, { result: 'added' }]);
  // The status, through port-forward (loopback in the controller's namespace).
  const status = await ask(nodeNs, '127.0.0.1', 'GET', PATH_STATUS);
  t.is(status.status, 200, status.body);
  const s = JSON.parse(status.body);
  t.is(s.cliAccess.mode, 'loopback');
  t.is(s.cliAccess.refused, 5);
  t.like(s.cliAccess.lastRefusal, { peer: POD_IP, route: `GET ${PATH_STAT}` }); // the CLI's, last

  // From loopback in the controller's namespace (where kubectl port-forward dials): served.
  const served = await ask(nodeNs, '127.0.0.1', 'GET', stat);
  t.is(served.status, 200, served.body);
  t.true(served.body.includes('"web"'), served.body);
  const tap = await ask(nodeNs, '127.0.0.1', 'POST', PATH_TAP, tapBody);
  t.is(tap.status, 200, tap.body);
  t.like(JSON.parse(tap.body), { type: 'error', status: 503 }); // past the gate: no agent holds a tap stream
  // The node IP from inside the namespace is not loopback either.
  t.is((await ask(nodeNs, NODE_IP, 'GET', stat)).status, 403);
});
