// What a new TCP connection costs through an opaque forwarder on Node's `net` and with accept,
// dial and relay in C++, next to nginx and the agent (issue 16: `conn-rate` at least 0.5×
// nginx's, `cpu-conn`). The client is the bench's own bench/load/conn-rate.ts: connect, read the
// server's greeting until it closes, close; closed loop (`--concurrency 50`, conn-rate's load)
// for connections a second, open loop (`--rate R`, cpu-conn's) for CPU per connection. Each
// forwarder runs in a process of its own on loopback, to one nginx stream server answering
// "hi\n" and closing (the bench's server pod). CPU is the forwarder process's utime and stime
// from /proc (all its threads), per 1,000 connections done; the forwarders are measured in
// interleaved rounds (A B C, C B A), and each round's ratios are against that round's nginx.
// The client's CPU (a reaped child's) and the greeting server's are recorded per 1,000 connections
// too: on a small machine the closed loop's rate is set by all three processes' CPU, not only the
// forwarder's.
//   node bench/conn-floor.ts [--seconds 5] [--rounds 3] [--rates 1000,5000] [--only nginx,node-net,...] [--json FILE]
// --json FILE also writes every measurement (one row per forwarder, round and load) for pooling runs.
// Forwarders: nginx (one worker, the bench's stream proxy: proxy_pass, no half-close), node-net
// (net.createServer, net.connect, pipe() both ways, half-close kept: the least an opaque
// forwarder on Node's `net` does), native-c and native-js (bench/native/conn-forwarder.cc, built
// on demand with node-gyp: the listening socket, accept4, the nonblocking dial and the relay
// with half-close all in C++ on Node's loop; native-c runs no JavaScript, native-js calls one
// JavaScript function per connection at accept, which picks the upstream, and one at close with
// the bytes each way, as the agent's routing and telemetry would need), native-c-et and
// native-js-et (the same, the sockets in an epoll set of the addon's own, each added once,
// edge-triggered, polled through one uv_poll handle, as nginx does, instead of one libuv poll
// handle per socket: libuv's uv_poll_init adds and removes each fd to check it and sets it
// nonblocking again, and each change of a handle's events is an epoll_ctl), agent (src/proxy's
// Proxy with a proxy worker's telemetry; server-first, so detection hands it to the opaque
// tunnel at once). `direct` (the client to the server, no forwarder) is measured in the closed
// loop only: the client's and the server's own ceiling on this machine.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { common } from './nginx-conf.ts';
import { buildBenchAddon } from './native-build.ts';
import { ownedTempPrefix } from '../src/sim/layout.ts';
import { FloorRun, freePort, ticks } from './floor-run.ts';

const CLIENT_IP = '127.0.0.1';
const SERVER_IP = '127.0.0.3';
const USAGE = 'node bench/conn-floor.ts [--seconds 5] [--rounds 3] [--rates 1000,5000] [--concurrency 50] [--only direct,nginx,node-net,native-c,native-js,native-c-et,native-js-et,agent] [--json FILE]';
const CONN_RATE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'load', 'conn-rate.ts');

/** bench/native/conn-forwarder.cc's exports. */
interface ConnForwarder {
  /** native-c-et and native-js-et: before listen(). */
  useOwnEpoll(): void;
  listen(ip: number, upIp: number, upPort: number, io?: Int32Array, onAccept?: (id: number) => void, onClose?: (id: number, up: number, down: number, failed: boolean) => void): number;
  stats(): Record<string, number>;
}

const { values: o } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '3' },
    rates: { type: 'string', default: '1000,5000' },
    concurrency: { type: 'string', default: '50' },
    only: { type: 'string' },
    json: { type: 'string' },
    help: { type: 'boolean', default: false },
    serve: { type: 'string' }, // internal: run one Node forwarder to --upstream and print its port
    upstream: { type: 'string' },
  },
});

const run = new FloorRun('conn-floor');

if (o.serve) await serve(o.serve, Number(o.upstream));
else if (o.help) process.stdout.write(`${USAGE}\n${fs.readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\nimport ')[0]!.replace(/^\/\/ ?/gm, '')}\n`);
else await run.run(main);

/** A dotted IPv4 address as a host-order number (conn-forwarder.cc's form). */
function ipv4(ip: string): number {
  return ip.split('.').reduce((a, b) => a * 256 + Number(b), 0);
}

/** One Node forwarder, in this (child) process; prints its port. */
async function serve(kind: string, upPort: number): Promise<void> {
  process.on('SIGTERM', () => process.exit(0));
  let port: number;
  if (kind === 'agent') {
    const { Proxy } = await import('../src/proxy/index.ts');
    const { TelemetryHub } = await import('../src/telemetry/hub.ts');
    const { MetricsRecorder } = await import('../src/telemetry/recorder.ts');
    const { ReportAggregator } = await import('../src/telemetry/report.ts');
    const pod = (name: string) => ({ namespace: 'bench', pod: `${name}-0`, kind: 'deployment', name });
    const workloads = { byIp: (ip: string) => (ip === CLIENT_IP ? pod('client') : ip === SERVER_IP ? pod('server') : null), generation: () => 1 };
    const hub = new TelemetryHub({ workloads, onError: (msg) => process.stderr.write(`agent telemetry: ${msg}\n`) });
    hub.add(new MetricsRecorder({ workloads }));
    hub.add(new ReportAggregator(workloads));
    const proxy = new Proxy({ listen: { host: CLIENT_IP, port: 0 }, lookup: () => ({ ip: SERVER_IP, port: upPort, podKey: 1n }), telemetry: hub, log: () => {}, nativeIo: true });
    port = (await proxy.listen()).port;
  } else if (kind === 'node-net') {
    const srv = net.createServer({ allowHalfOpen: true, noDelay: true }, (c) => {
      const u = net.connect({ host: SERVER_IP, port: upPort, allowHalfOpen: true, noDelay: true });
      c.pipe(u);
      u.pipe(c);
      for (const [a, b] of [[c, u], [u, c]] as const) {
        a.on('error', () => b.destroy());
        a.on('close', () => b.destroy());
      }
    });
    srv.listen({ host: CLIENT_IP, port: 0, backlog: 4096 });
    await new Promise((r) => srv.once('listening', r));
    port = (srv.address() as net.AddressInfo).port;
  } else if (/^native-(c|js)(-et)?$/.test(kind)) {
    const addon = createRequire(import.meta.url)(process.env.CONN_FORWARDER!) as ConnForwarder;
    if (kind.endsWith('-et')) addon.useOwnEpoll();
    if (kind.startsWith('native-c')) port = addon.listen(ipv4(CLIENT_IP), ipv4(SERVER_IP), upPort);
    else {
      // What the agent's JavaScript would do per connection, at its least: pick the upstream
      // from the peer (a route lookup), and at the close record the connection's bytes.
      const io = new Int32Array(4);
      const routes = new Map([[ipv4(CLIENT_IP), { ip: ipv4(SERVER_IP), port: upPort }]]);
      const open = new Map<number, { peer: number; start: number }>();
      const seen = { accepted: 0, closed: 0, failed: 0, bytesUp: 0, bytesDown: 0, ms: 0 };
      process.on('exit', () => process.stderr.write(`${kind} saw ${JSON.stringify(seen)}\n`));
      port = addon.listen(ipv4(CLIENT_IP), 0, 0, io, (id) => {
        const r = routes.get(io[0]!);
        seen.accepted++;
        if (!r) return; // port 0: refused
        open.set(id, { peer: io[0]!, start: performance.now() });
        io[2] = r.ip;
        io[3] = r.port;
      }, (id, up, down, failed) => {
        const c = open.get(id);
        if (!c) return;
        open.delete(id);
        seen.closed++;
        if (failed) seen.failed++;
        seen.bytesUp += up;
        seen.bytesDown += down;
        seen.ms += performance.now() - c.start;
      });
    }
    process.on('exit', () => process.stderr.write(`${kind} ${JSON.stringify(addon.stats())}\n`));
  } else throw new Error(`unknown forwarder ${kind}`);
  process.stdout.write(`${port}\n`);
}

interface Row { name: string; round: number; rate: number | 'closed'; perSecond: number; user: number; sys: number; client: number; server: number; load: number }

async function main(): Promise<void> {
  const seconds = Number(o.seconds);
  const rounds = Number(o.rounds);
  const rates = o.rates!.split(',').filter(Boolean).map(Number);
  const concurrency = Number(o.concurrency);
  if (!(seconds >= 1) || !Number.isInteger(rounds) || rounds < 1 || !rates.every((r) => Number.isInteger(r) && r > 0) || !(concurrency >= 1)) {
    throw new Error(`--seconds wants a number >= 1, --rounds and --concurrency positive whole numbers, --rates positive whole numbers; usage: ${USAGE}`);
  }
  if (spawnSync('nginx', ['-v'], { stdio: 'ignore' }).error) throw new Error('nginx is missing: install it (./dev setup installs nginx)');
  const all = ['direct', 'nginx', 'node-net', 'native-c', 'native-js', 'native-c-et', 'native-js-et', 'agent'];
  const names = o.only ? o.only.split(',') : all;
  const unknown = names.filter((n) => !all.includes(n));
  if (unknown.length > 0) throw new Error(`--only: unknown forwarder(s) ${unknown.join(', ')}; known: ${all.join(', ')}`);
  const addonPath = names.some((n) => n.startsWith('native-')) ? buildBenchAddon('conn_forwarder', 'conn-forwarder.cc', 'the native-* forwarders') : '';

  run.tmp = fs.mkdtempSync(ownedTempPrefix('bench'));
  const start = (cmd: string, args: string[], env?: NodeJS.ProcessEnv) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', cmd === 'nginx' ? 'ignore' : 'inherit'], env: env ?? process.env });
    run.children.add(c);
    c.once('exit', () => run.children.delete(c));
    return c;
  };
  const nginx = async (name: string, stream: string): Promise<number> => {
    const dir = path.join(run.tmp, name);
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'nginx.conf'), `${common(dir)}stream {\n${stream}\n}\n`);
    const c = start('nginx', ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-e', path.join(dir, 'error.log')]);
    for (const t0 = Date.now(); !fs.existsSync(path.join(dir, 'nginx.pid')); await new Promise((r) => setTimeout(r, 20))) {
      if (c.exitCode !== null || Date.now() - t0 > 10_000) throw new Error(`nginx (${name}) did not start: ${fs.readFileSync(path.join(dir, 'error.log'), 'utf8').slice(-600)}`);
    }
    return c.pid!;
  };
  const upPort = await freePort(SERVER_IP);
  const serverPid = await nginx('upstream', `  server { listen ${SERVER_IP}:${upPort} reuseport backlog=4096; return "hi\\n"; }`);

  const fwd = new Map<string, { port: number; pids: number[] }>();
  for (const name of names) {
    if (name === 'direct') fwd.set(name, { port: upPort, pids: [] });
    else if (name === 'nginx') {
      const port = await freePort(CLIENT_IP);
      fwd.set(name, { port, pids: [await nginx(name, `  server { listen ${CLIENT_IP}:${port} reuseport backlog=4096; proxy_pass ${SERVER_IP}:${upPort}; }`)] });
    } else {
      const c = start(process.execPath, [fileURLToPath(import.meta.url), '--serve', name, '--upstream', String(upPort)], { ...process.env, CONN_FORWARDER: addonPath });
      const port = await new Promise<number>((resolve, reject) => {
        c.stdout!.once('data', (d) => resolve(Number(String(d).trim())));
        c.once('exit', (code) => reject(new Error(`the ${name} forwarder exited (${code}) before listening`)));
      });
      fwd.set(name, { port, pids: [c.pid!] });
    }
  }

  /** One run of bench/load/conn-rate.ts; throws past 1% errors, as the bench's conn-rate does. */
  const client = (port: number, load: string[], s: number) => new Promise<{ connections: number; perSecond: number; errors: number }>((resolve, reject) => {
    const host = port === upPort ? SERVER_IP : CLIENT_IP;
    const args = [CONN_RATE, '--connect', `${host}:${port}`, ...load, '--seconds', String(s)];
    const c = start(process.execPath, args);
    let out = '';
    c.stdout!.on('data', (d) => (out += d));
    c.once('exit', (code) => {
      try {
        const r = JSON.parse(out) as { connections: number; perSecond: number; errors: number };
        if (code !== 0 || r.connections === 0 || r.errors > r.connections / 100) throw new Error(`${r.errors} errors, ${r.connections} connections`);
        resolve(r);
      } catch (err) {
        reject(new Error(`conn-rate ${args.slice(1).join(' ')}: exit ${code}, ${(err as Error).message}: ${out.slice(-400)}`));
      }
    });
  });

  const started = new Date().toISOString();
  const hz = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }));
  const rows: Row[] = [];
  const measure = async (name: string, round: number, rate: number | 'closed') => {
    const { port, pids } = fwd.get(name)!;
    const t0 = ticks(pids);
    const c0 = reapedTicks();
    const s0 = ticks([serverPid]);
    const r = await client(port, rate === 'closed' ? ['--concurrency', String(concurrency)] : ['--rate', String(rate)], seconds);
    const t1 = ticks(pids);
    const c1 = reapedTicks();
    const s1 = ticks([serverPid]);
    const perK = (t: number) => (t * 1000) / hz / (r.connections / 1000);
    const row: Row = { name, round, rate, perSecond: r.perSecond, user: perK(t1.user - t0.user), sys: perK(t1.sys - t0.sys), client: perK(c1 - c0), server: perK(s1.user + s1.sys - s0.user - s0.sys), load: os.loadavg()[0]! };
    rows.push(row);
    process.stderr.write(`round ${round + 1} ${name} ${rate === 'closed' ? 'closed loop' : `at ${rate}/s`}: ${r.perSecond.toFixed(0)} conn/s, ${pids.length ? `${(row.user + row.sys).toFixed(1)} CPU-ms per 1,000 (user ${row.user.toFixed(1)})` : 'no forwarder'}, the client ${row.client.toFixed(1)}, the server ${row.server.toFixed(1)}, ${r.errors} errors (load ${row.load.toFixed(1)})\n`);
  };
  for (let r = 0; r < rounds; r++) {
    for (const name of r % 2 === 0 ? names : [...names].reverse()) {
      await client(fwd.get(name)!.port, ['--concurrency', String(concurrency)], 1); // warm-up
      await measure(name, r, 'closed');
      if (name !== 'direct') for (const rate of rates) await measure(name, r, rate);
    }
  }
  if (o.json) fs.writeFileSync(o.json, JSON.stringify({ started, seconds, rows }, null, 1));
  process.stdout.write(report(rows, names, rates, rounds, seconds));
}

/** The table: medians and ranges over rounds; ratios against the same round's nginx. */
function report(rows: Row[], names: string[], rates: number[], rounds: number, seconds: number): string {
  const med = (a: number[]) => { const s = [...a].sort((x, y) => x - y); return (s[(s.length - 1) >> 1]! + s[s.length >> 1]!) / 2; };
  const col = (a: number[], d = 0) => (a.length ? `${med(a).toFixed(d)} (${Math.min(...a).toFixed(d)}-${Math.max(...a).toFixed(d)})` : '-');
  const loads = rows.map((r) => r.load);
  const pick = (name: string, rate: Row['rate']) => rows.filter((x) => x.name === name && x.rate === rate);
  const ratio = (name: string, rate: Row['rate'], f: (x: Row) => number) => pick(name, rate).flatMap((x) => {
    const n = rows.find((y) => y.name === 'nginx' && y.round === x.round && y.rate === rate);
    return n ? [f(x) / f(n)] : [];
  });
  const out = [`median (range) of ${rounds} rounds of ${seconds} s; 1-minute load average ${Math.min(...loads).toFixed(1)}-${Math.max(...loads).toFixed(1)}; ratios against nginx in the same round`,
    `closed loop (conn-rate): ${'forwarder'.padEnd(11)}${'conn/s'.padStart(20)}${'vs nginx'.padStart(20)}${'CPU-ms/1,000'.padStart(22)}${'client CPU-ms/1,000'.padStart(22)}`];
  for (const name of names) {
    const rs = pick(name, 'closed');
    out.push(`${''.padEnd(25)}${name.padEnd(11)}${col(rs.map((x) => x.perSecond)).padStart(20)}${col(ratio(name, 'closed', (x) => x.perSecond), 2).padStart(20)}${(name === 'direct' ? '-' : col(rs.map((x) => x.user + x.sys), 1)).padStart(22)}${col(rs.map((x) => x.client), 1).padStart(22)}`);
  }
  for (const rate of rates) {
    out.push(`at ${`${rate}/s (cpu-conn):`.padEnd(22)}${'forwarder'.padEnd(11)}${'CPU-ms/1,000'.padStart(20)}${'user'.padStart(20)}${'system'.padStart(20)}${'vs nginx'.padStart(20)}${'reached/s'.padStart(11)}`);
    for (const name of names.filter((n) => n !== 'direct')) {
      const rs = pick(name, rate);
      out.push(`${''.padEnd(25)}${name.padEnd(11)}${col(rs.map((x) => x.user + x.sys), 1).padStart(20)}${col(rs.map((x) => x.user), 1).padStart(20)}${col(rs.map((x) => x.sys), 1).padStart(20)}${col(ratio(name, rate, (x) => x.user + x.sys), 2).padStart(20)}${med(rs.map((x) => x.perSecond)).toFixed(0).padStart(11)}`);
    }
  }
  return `${out.join('\n')}\n`;
}

/**
 * CPU of this process's children that have exited and been reaped (cutime + cstime, fields 16 and
 * 17 of /proc/self/stat), in clock ticks: around one client run, that client's CPU, as the
 * forwarders stay up and nothing else of ours exits meanwhile.
 */
function reapedTicks(): number {
  const stat = fs.readFileSync('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[16 - 3]) + Number(f[17 - 3]);
}
