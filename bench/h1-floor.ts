// The least a keep-alive HTTP/1 forwarder on Node's `net` costs per request, next to nginx and the
// agent (issue 16): cpu-http1's load (h2load --h1 -t1 -c10 --rps R/10, after 1 s at each rate)
// through each forwarder in a process of its own on loopback, to one nginx upstream answering
// 200 "ok\n" as the bench's server pod does. CPU is the forwarder process's utime and stime from
// /proc (all its threads), per 1,000 requests that succeeded; rounds are interleaved (A B C, C B A).
//   node bench/h1-floor.ts [--seconds 10] [--rounds 3] [--rates 1000,5000,10000] [--only nginx,floor,...] [--prof DIR]
// Forwarders: nginx (one worker, the bench's proxy config), nginx-N (N such processes on one port
// with reuseport, as the bench runs it with N proxies, when N > 1), floor (net.createServer, one
// upstream connection per client dialed at accept, on('data') -> write() both ways, no parsing),
// floor-onread (the same, the upstream read with `onread` into one buffer), agent (src/proxy's
// Proxy, detection and the HTTP/1 forwarder, the worker thread's telemetry, to a pod IP),
// agent-native (the same with --native-io: its HTTP/1 sockets driven from C++, src/proxy/native-socket.ts).
// Only when named in --only, built then with node-gyp (bench/native/poll-forwarder.cc): addon-c
// and addon-js, which accept and dial as the floor does, then hand both fds to a small addon that
// reads and writes them from C++ with libuv poll handles on Node's loop: addon-c runs no
// JavaScript per read, addon-js calls one JavaScript function per read over a shared buffer that
// looks at the bytes as a forwarder must (the end of the head, a response's status line).
// --prof DIR runs the Node forwarders with --cpu-prof into DIR (read it with bench/cpuprofile-top.ts).
import { execFile, execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { common, h1, h1Upstream, httpCommon } from './nginx-conf.ts';
import { parseH2load } from './parse.ts';
import { ownedTempPrefix } from '../src/sim/layout.ts';
import { FloorRun, freePort, ticks } from './floor-run.ts';
import { socketFd } from '../src/proxy/kernel-splice.ts';
import { buildBenchAddon, NATIVE_DIR } from './native-build.ts';

/** The forwarders listen here; the upstream has an address of its own, so telemetry tells the pods apart. */
const CLIENT_IP = '127.0.0.1';
const SERVER_IP = '127.0.0.3';
const NGINX_PROCS = os.availableParallelism(); // the bench's proxy count (bench/env.ts PROXIES)
const USAGE = 'node bench/h1-floor.ts [--seconds 10] [--rounds 3] [--rates 1000,5000,10000] [--only nginx,floor,addon-c,addon-js,...] [--prof DIR]';
/** bench/native: the addon-c and addon-js forwarders' addon, built on demand into its build/. */
const POLL_FORWARDER = path.join(NATIVE_DIR, 'build', 'Release', 'poll_forwarder.node');

/** bench/native/poll-forwarder.cc's exports. */
interface PollForwarder {
  /** addon-c: no arguments; addon-js: the buffer reads land in and the function called per read. */
  start(shared?: ArrayBuffer, onRead?: (pair: number, direction: number, length: number) => void): void;
  /** dup()s both connected fds and forwards between the dups; the caller destroys its sockets. */
  pair(clientFd: number, upstreamFd: number): number;
  stats(): Record<'pairs' | 'reads' | 'writes' | 'partialWrites' | 'writableWakeups' | 'closes', number>;
}

const { values: o } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '3' },
    rates: { type: 'string', default: '1000,5000,10000' },
    only: { type: 'string' },
    prof: { type: 'string' },
    help: { type: 'boolean', default: false },
    serve: { type: 'string' }, // internal: run one Node forwarder to --upstream and print its port
    upstream: { type: 'string' },
  },
});

const run = new FloorRun('h1-floor');

if (o.serve) await serve(o.serve, Number(o.upstream));
else if (o.help) process.stdout.write(`${USAGE}\n${fs.readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\nimport ')[0]!.replace(/^\/\/ ?/gm, '')}\n`);
else await run.run(main);

/** One Node forwarder, in this (child) process; prints its port. */
async function serve(kind: string, upPort: number): Promise<void> {
  process.on('SIGTERM', () => process.exit(0)); // a normal exit writes --cpu-prof's profile
  let port: number;
  if (kind === 'agent' || kind === 'agent-native') {
    const { Proxy } = await import('../src/proxy/index.ts');
    const { TelemetryHub } = await import('../src/telemetry/hub.ts');
    const { MetricsRecorder } = await import('../src/telemetry/recorder.ts');
    const { ReportAggregator } = await import('../src/telemetry/report.ts');
    // Both ends are pods the agent knows, as cpu-http1's client and server pods; telemetry as a proxy worker records it.
    const pod = (name: string) => ({ namespace: 'bench', pod: `${name}-0`, kind: 'deployment', name });
    const workloads = { byIp: (ip: string) => (ip === CLIENT_IP ? pod('client') : ip === SERVER_IP ? pod('server') : null), generation: () => 1 };
    const hub = new TelemetryHub({ workloads, onError: (msg) => process.stderr.write(`agent telemetry: ${msg}\n`) });
    hub.add(new MetricsRecorder({ workloads }));
    hub.add(new ReportAggregator(workloads));
    const nativeIo = kind === 'agent-native';
    if (nativeIo) {
      const { nativeIoCounts, nativeIoOps } = await import('../src/proxy/native-socket.ts');
      if (nativeIoOps() === null) throw new Error('agent-native needs the datapath addon with its native socket calls: build it with ./dev setup');
      // On exit: shows the sockets really were adopted (a client per h2load connection, their upstreams).
      process.on('exit', () => process.stderr.write(`agent-native adopted ${JSON.stringify(nativeIoCounts)}\n`));
    }
    const proxy = new Proxy({ listen: { host: CLIENT_IP, port: 0 }, lookup: () => ({ ip: SERVER_IP, port: upPort, podKey: 1n }), telemetry: hub, log: () => {}, nativeIo });
    port = (await proxy.listen()).port;
  } else if (kind === 'floor' || kind === 'floor-onread') {
    const buffer = Buffer.allocUnsafe(64 * 1024);
    const srv = net.createServer({ noDelay: true }, (c) => {
      // A read is written on as a copy: a write that waits keeps it, and the next read reuses `buffer`.
      const onread = kind === 'floor-onread' ? { buffer, callback: (n: number, b: Uint8Array) => (c.write(Buffer.from(b.subarray(0, n))), true) } : undefined;
      const u = net.connect({ host: SERVER_IP, port: upPort, noDelay: true, onread });
      c.on('data', (d) => u.write(d));
      if (!onread) u.on('data', (d) => c.write(d));
      for (const [a, b] of [[c, u], [u, c]]) {
        a.on('error', () => b.destroy());
        a.on('close', () => b.destroy());
      }
    });
    await new Promise<void>((r) => srv.listen(0, CLIENT_IP, r));
    port = (srv.address() as net.AddressInfo).port;
  } else if (kind === 'addon-c' || kind === 'addon-js') {
    port = await serveAddon(kind, upPort);
  } else throw new Error(`unknown forwarder ${kind}`);
  process.stdout.write(`${port}\n`);
}

async function main(): Promise<void> {
  const seconds = Number(o.seconds);
  const rounds = Number(o.rounds);
  const rates = o.rates!.split(',').map(Number);
  if (!(seconds >= 1) || !Number.isInteger(rounds) || rounds < 1 || !rates.every((r) => Number.isInteger(r) && r >= 10 && r % 10 === 0)) {
    throw new Error(`--seconds wants a number >= 1, --rounds a positive whole number, --rates multiples of 10 (h2load runs 10 connections); usage: ${USAGE}`);
  }
  for (const tool of ['nginx', 'h2load']) {
    if (spawnSync(tool, ['--version'], { stdio: 'ignore' }).error) {
      throw new Error(`${tool} is missing: install it (./dev setup installs nginx and nghttp2-client's h2load)`);
    }
  }
  const all = ['nginx', ...(NGINX_PROCS > 1 ? [`nginx-${NGINX_PROCS}`] : []), 'floor', 'floor-onread', 'agent', 'agent-native'];
  const onDemand = ['addon-c', 'addon-js']; // need a compiler: only when named
  const names = o.only ? o.only.split(',') : all;
  const unknown = names.filter((n) => !all.includes(n) && !onDemand.includes(n));
  if (unknown.length > 0) throw new Error(`--only: unknown forwarder(s) ${unknown.join(', ')}; known: ${[...all, ...onDemand].join(', ')}`);
  if (names.some((n) => onDemand.includes(n))) buildBenchAddon('poll_forwarder', 'poll-forwarder.cc', 'addon-c and addon-js');

  run.tmp = fs.mkdtempSync(ownedTempPrefix('bench'));

  const start = (cmd: string, args: string[]) => {
    // nginx's start-up warnings are noise here; its error log is read if it fails.
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', cmd === 'nginx' ? 'ignore' : 'inherit'] });
    run.children.add(c);
    c.once('exit', () => run.children.delete(c));
    return c;
  };
  const nginx = async (name: string, conf: string): Promise<number[]> => {
    const dir = path.join(run.tmp, name);
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'nginx.conf'), `${common(dir)}http {\n${httpCommon(dir)}${conf}\n}\n`);
    const c = start('nginx', ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-e', path.join(dir, 'error.log')]);
    // nginx writes its pid file once its sockets listen.
    for (const t0 = Date.now(); !fs.existsSync(path.join(dir, 'nginx.pid')); await new Promise((r) => setTimeout(r, 20))) {
      if (c.exitCode !== null || Date.now() - t0 > 10_000) throw new Error(`nginx (${name}) did not start: ${fs.readFileSync(path.join(dir, 'error.log'), 'utf8').slice(-600)}`);
    }
    return [c.pid!];
  };
  const upPort = await freePort(SERVER_IP);
  await nginx('upstream', `  server { listen ${SERVER_IP}:${upPort} reuseport backlog=4096; location / { return 200 "ok\\n"; } }`);

  // Each forwarder: its port and the pids whose CPU is its own.
  const fwd = new Map<string, { port: number; pids: number[] }>();
  for (const name of names) {
    if (name.startsWith('nginx')) {
      const port = await freePort(CLIENT_IP);
      const pids: number[] = [];
      for (let i = 0; i < (name === 'nginx' ? 1 : NGINX_PROCS); i++) {
        pids.push(...(await nginx(`${name}-${i}`, `  ${h1Upstream('h1', `${SERVER_IP}:${upPort}`)}\n  server { listen ${CLIENT_IP}:${port} reuseport backlog=4096; location / { ${h1('h1')} } }`)));
      }
      fwd.set(name, { port, pids });
    } else {
      const prof = o.prof ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(o.prof)}`, `--cpu-prof-name=${name}.cpuprofile`] : [];
      const c = start(process.execPath, [...prof, fileURLToPath(import.meta.url), '--serve', name, '--upstream', String(upPort)]);
      const port = await new Promise<number>((resolve, reject) => {
        c.stdout!.once('data', (d) => resolve(Number(String(d).trim())));
        c.once('exit', (code) => reject(new Error(`the ${name} forwarder exited (${code}) before listening`)));
      });
      fwd.set(name, { port, pids: [c.pid!] });
    }
  }

  const h2load = (port: number, rate: number, s: number) => new Promise<number>((resolve, reject) => {
    const args = ['--h1', '-t1', '-c10', '--rps', String(rate / 10), '-D', String(s), `http://${CLIENT_IP}:${port}/`];
    const c = execFile('h2load', args, (e, out) => {
      run.children.delete(c);
      try {
        const h = parseH2load(out);
        if (e || h.succeeded === 0 || h.failed > h.succeeded / 100) throw new Error(`${h.failed} failed, ${h.succeeded} succeeded`);
        resolve(h.succeeded);
      } catch (err) {
        reject(new Error(`h2load ${args.join(' ')}: ${e?.message ?? (err as Error).message}\n${out.slice(-600)}`));
      }
    });
    run.children.add(c);
  });

  const hz = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }));
  const rows: { name: string; rate: number; user: number; sys: number; reqPerS: number }[] = [];
  const loads: number[] = [];
  for (let r = 0; r < rounds; r++) {
    for (const name of r % 2 === 0 ? names : [...names].reverse()) {
      const { port, pids } = fwd.get(name)!;
      for (const rate of rates) await h2load(port, rate, 1); // the bench's warm-up: 1 s at each rate
      for (const rate of rates) {
        const t0 = ticks(pids);
        const n = await h2load(port, rate, seconds);
        const t1 = ticks(pids);
        loads.push(os.loadavg()[0]!);
        const perK = (t: number) => (t * 1000) / hz / (n / 1000);
        rows.push({ name, rate, user: perK(t1.user - t0.user), sys: perK(t1.sys - t0.sys), reqPerS: n / seconds });
        process.stderr.write(`round ${r + 1} ${name} at ${rate} req/s: ${perK(t1.user - t0.user + t1.sys - t0.sys).toFixed(1)} CPU-ms per 1,000 (load ${loads.at(-1)!.toFixed(1)})\n`);
      }
    }
  }

  const med = (a: number[]) => { const s = [...a].sort((x, y) => x - y); return (s[(s.length - 1) >> 1]! + s[s.length >> 1]!) / 2; };
  const span = (a: number[]) => `${Math.min(...a).toFixed(0)}-${Math.max(...a).toFixed(0)}`;
  const out = [`CPU-ms per 1,000 requests, median (range) of ${rounds} rounds of ${seconds} s; load average ${Math.min(...loads).toFixed(1)}-${Math.max(...loads).toFixed(1)}`,
    `${'forwarder'.padEnd(14)}${'rate'.padStart(7)}${'total'.padStart(16)}${'user'.padStart(14)}${'system'.padStart(14)}${'reached req/s'.padStart(15)}`];
  for (const name of names) {
    for (const rate of rates) {
      const rs = rows.filter((x) => x.name === name && x.rate === rate);
      const col = (v: number[]) => `${med(v).toFixed(1)} (${span(v)})`;
      out.push(`${name.padEnd(14)}${String(rate).padStart(7)}${col(rs.map((x) => x.user + x.sys)).padStart(16)}${col(rs.map((x) => x.user)).padStart(14)}${col(rs.map((x) => x.sys)).padStart(14)}${med(rs.map((x) => x.reqPerS)).toFixed(0).padStart(15)}`);
    }
  }
  process.stdout.write(`${out.join('\n')}\n`);
}

/**
 * addon-c and addon-js: accepts and dials with `net` as the floor does, then hands both fds to
 * bench/native/poll-forwarder.cc, which forwards from then on. Accepted sockets start paused, so
 * Node reads nothing before the handover; the upstream has sent nothing by its 'connect'.
 */
async function serveAddon(kind: 'addon-c' | 'addon-js', upPort: number): Promise<number> {
  const addon = createRequire(import.meta.url)(POLL_FORWARDER) as PollForwarder;
  if (kind === 'addon-c') addon.start();
  else {
    const shared = new ArrayBuffer(64 * 1024);
    const bytes = new Uint8Array(shared);
    // What the JavaScript saw: whole heads each way, and the responses' status classes.
    const seen = { requests: 0, responses: 0, status2xx: 0, noHead: 0 };
    process.on('exit', () => process.stderr.write(`addon-js saw ${JSON.stringify(seen)}\n`));
    addon.start(shared, (_pair, direction, length) => {
      // What a forwarder must find in every message: the end of its head ("\r\n\r\n")...
      let end = -1;
      for (let i = 3; i < length; i++) {
        if (bytes[i] === 10 && bytes[i - 1] === 13 && bytes[i - 2] === 10 && bytes[i - 3] === 13) {
          end = i + 1;
          break;
        }
      }
      if (end < 0) {
        seen.noHead++; // a head split over reads, or a body; the bench's small messages do not
        return;
      }
      if (direction === 0) {
        seen.requests++;
        return;
      }
      // ...and in a response, the status code of "HTTP/1.1 200 OK".
      seen.responses++;
      const status = (bytes[9]! - 48) * 100 + (bytes[10]! - 48) * 10 + (bytes[11]! - 48);
      if (bytes[8] === 32 && status >= 200 && status < 300) seen.status2xx++;
    });
  }
  process.on('exit', () => process.stderr.write(`${kind} ${JSON.stringify(addon.stats())}\n`));
  const srv = net.createServer({ noDelay: true, pauseOnConnect: true }, (c) => {
    const u = net.connect({ host: SERVER_IP, port: upPort, noDelay: true }); // TCP_NODELAY stays with the dups
    for (const [a, b] of [[c, u], [u, c]]) {
      a.on('error', () => b.destroy());
      a.on('close', () => b.destroy());
    }
    u.once('connect', () => {
      const cfd = socketFd(c);
      const ufd = socketFd(u);
      if (cfd !== null && ufd !== null) addon.pair(cfd, ufd); // else the client has gone already
      c.destroy();
      u.destroy();
    });
  });
  await new Promise<void>((r) => srv.listen(0, CLIENT_IP, r));
  return (srv.address() as net.AddressInfo).port;
}
