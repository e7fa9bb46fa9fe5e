import test from 'ava';
import { execFile } from 'node:child_process';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { meshBin } from '../src/sim/dist-bin.ts';

const BIN = meshBin();

/** The CLI run asynchronously, so the admin stand-in in this process can answer it. */
function status(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--disable-warning=ExperimentalWarning', BIN, 'status', ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr });
    });
  });
}

/** A healthy agent's /status: one attached program, nothing else to complain about. */
const HEALTHY = { datapath: { programs: [{ section: 'cgroup/connect4', id: 1, attachedTo: '/sys/fs/cgroup' }], maps: [], counters: { mapFull: 0 } }, pods: [] };

async function adminStandIn(t: any): Promise<string> {
  const server = http.createServer((_req, res) => res.end(JSON.stringify(HEALTHY)));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

test('status --timeout takes a duration (5s) as well as milliseconds; a healthy agent is healthy either way', async (t) => {
  const admin = await adminStandIn(t);
  for (const timeout of ['3000', '5s', '1m']) {
    const r = await status(['--admin', admin, '-o', 'json', '--timeout', timeout]);
    t.is(r.code, 0, `--timeout ${timeout}: ${r.stderr}`);
    t.is(JSON.parse(r.stdout).reachable, true);
  }
});

test('status: bad flag values are usage errors (exit 2 naming the flag), never "unreachable" or "degraded", and print nothing on stdout', async (t) => {
  const admin = await adminStandIn(t);
  for (const [args, flag] of [
    [['--timeout', '-1'], '--timeout'],
    [['--timeout', 'soon'], '--timeout'],
    [['--timeout', '0'], '--timeout'],
    [['-o', 'yaml'], '--output'],
    [['--admin', 'localhost:4191'], '--admin'],
  ] as Array<[string[], string]>) {
    const r = await status(['--admin', admin, ...args]);
    t.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    t.is(r.stdout, '', args.join(' '));
    t.true(r.stderr.includes(flag), `${args.join(' ')}: ${r.stderr}`);
    t.false(r.stderr.includes('unreachable'), `${args.join(' ')}: ${r.stderr}`);
  }
});

test('status reaches an agent whose --admin port is one fetch() refuses (6000, 6665, 10080: the Fetch standard\'s "bad ports")', async (t) => {
  let server: http.Server | undefined;
  let port = 0;
  for (const p of [6665, 6666, 6667, 6668, 6669, 10080, 6000]) {
    const s = http.createServer((_req, res) => res.end(JSON.stringify(HEALTHY)));
    const ok = await new Promise<boolean>((r) => {
      s.once('error', () => r(false));
      s.listen(p, '127.0.0.1', () => r(true));
    });
    if (ok) {
      server = s;
      port = p;
      break;
    }
  }
  if (!server) return t.pass('every port of the list is taken on this machine');
  t.teardown(() => server!.close());
  const r = await status(['--admin', `127.0.0.1:${port}`, '-o', 'json']);
  t.is(r.code, 0, r.stderr);
  t.is(JSON.parse(r.stdout).reachable, true);
});

test('an agent that answers /status with a server error is reachable and degraded (exit 1, its message as the reason), not "unreachable"', async (t) => {
  const server = http.createServer((_req, res) => {
    res.statusCode = 500;
    res.setHeader('content-type', 'text/plain');
    res.end('collecting the status failed: worker 1 did not answer; see the agent log\n');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const admin = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  const r = await status(['--admin', admin]);
  t.is(r.code, 1, r.stderr);
  t.notRegex(r.stdout + r.stderr, /unreachable/);
  t.regex(r.stdout, /STATUS: degraded\n  - the agent answered \/status with HTTP 500: collecting the status failed: worker 1 did not answer; see the agent log/);
  const j = await status(['--admin', admin, '-o', 'json']);
  t.is(j.code, 1, j.stderr);
  t.like(JSON.parse(j.stdout), { reachable: true, healthy: false, reasons: ['the agent answered /status with HTTP 500: collecting the status failed: worker 1 did not answer; see the agent log'] });
});
