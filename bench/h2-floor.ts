// What an HTTP/2 request costs the agent's forwarder beyond node:http2's own floor (issue 16):
// JS heap bytes allocated and CPU per request, one request at a time (h2load -c1 -m1, so nothing
// is batched however loaded the machine is), for the agent's forwarder (src/proxy/http2 behind
// the test harness, telemetry discarded) and for the smallest node:http2 forwarder (a stream in,
// a stream out, bodies piped, trailers passed on). The upstream runs in a child process, h2load
// in another, so this process holds only the forwarder measured. Allocation is exact when no GC
// runs during a run, hence the young generation's size:
//   node --expose-gc --max-semi-space-size=512 --min-semi-space-size=512 bench/h2-floor.ts [--requests 1500] [--rounds 3]
import { execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http2 from 'node:http2';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as v8 from 'node:v8';
import { createHttp2Handler, Http2SessionPool } from '../src/proxy/http2/index.ts';
import { startHarness } from '../src/proxy/http2/harness.ts';
import { ownedTempPrefix } from '../src/sim/layout.ts';

const { values: o } = parseArgs({ options: { requests: { type: 'string', default: '1500' }, rounds: { type: 'string', default: '3' }, upstream: { type: 'boolean', default: false } } });

if (o.upstream) {
  // The upstream: 200 "hello", or for gRPC a 5-byte message and grpc-status 0 in trailers.
  const s = http2.createServer({ settings: { maxConcurrentStreams: 1000 } });
  s.on('stream', (st, h) => {
    st.on('error', () => {});
    if (h['content-type'] === 'application/grpc') {
      st.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      st.on('wantTrailers', () => st.sendTrailers({ 'grpc-status': '0' }));
      st.resume();
      st.on('end', () => st.end(Buffer.alloc(5)));
    } else {
      st.respond({ ':status': 200, 'content-type': 'text/plain' });
      st.end('hello');
    }
  });
  s.listen(0, '127.0.0.1', () => process.stdout.write(`${(s.address() as { port: number }).port}\n`));
} else {
  await main();
}

async function main(): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with --expose-gc --max-semi-space-size=512 --min-semi-space-size=512 (allocation is read from the heap with no GC during a run)');
  const requests = Number(o.requests);
  const rounds = Number(o.rounds);
  if (!Number.isInteger(requests) || requests < 1 || !Number.isInteger(rounds) || rounds < 1) throw new Error('--requests and --rounds want positive whole numbers');
  const tmp = fs.mkdtempSync(ownedTempPrefix('bench'));
  const grpcBody = path.join(tmp, 'grpc.bin');
  fs.writeFileSync(grpcBody, Buffer.alloc(5));
  const upstream = spawn(process.execPath, [fileURLToPath(import.meta.url), '--upstream'], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const upPort = await new Promise<number>((resolve, reject) => {
      upstream.stdout!.once('data', (d) => resolve(Number(String(d).trim())));
      upstream.once('exit', (c) => reject(new Error(`the upstream exited (${c}) before listening`)));
    });
    const agent = await agentForwarder(upPort);
    const minimal = await minimalForwarder(upPort);
    const rows: { fwd: string; mode: string; bytes: number; cpuMs: number }[] = [];
    for (let r = 0; r < rounds; r++) {
      for (const mode of ['http2', 'grpc'] as const) {
        for (const [fwd, port] of [['agent', agent], ['node:http2 floor', minimal]] as const) {
          const args = ['-c1', '-m1', ...(mode === 'grpc' ? ['-d', grpcBody, '-H', 'content-type: application/grpc', '-H', 'te: trailers'] : []), `http://127.0.0.1:${port}/`];
          await h2load(['-n', '3000', ...args]); // the JIT settles
          gc();
          const gcs = new v8.GCProfiler();
          gcs.start();
          const heap0 = v8.getHeapStatistics().used_heap_size;
          const cpu0 = process.cpuUsage();
          const ok = await h2load(['-n', String(requests), ...args]);
          const cpu = process.cpuUsage(cpu0);
          const heap1 = v8.getHeapStatistics().used_heap_size;
          if (gcs.stop()!.statistics.length > 0) throw new Error(`a GC ran during the ${fwd} ${mode} run, so its allocation is unknown: fewer --requests, or a larger --max-semi-space-size`);
          rows.push({ fwd, mode, bytes: (heap1 - heap0) / ok, cpuMs: (cpu.user + cpu.system) / ok });
          process.stderr.write(`round ${r + 1} ${mode} ${fwd}: ${((heap1 - heap0) / ok / 1024).toFixed(1)} KB, ${((cpu.user + cpu.system) / ok).toFixed(0)} CPU-ms per 1,000 requests\n`);
        }
      }
    }
    const med = (a: number[]) => { const s = [...a].sort((x, y) => x - y); return (s[(s.length - 1) >> 1]! + s[s.length >> 1]!) / 2; };
    for (const mode of ['http2', 'grpc']) {
      for (const fwd of ['agent', 'node:http2 floor']) {
        const rs = rows.filter((x) => x.mode === mode && x.fwd === fwd);
        process.stdout.write(`${mode.padEnd(6)} ${fwd.padEnd(17)} ${(med(rs.map((x) => x.bytes)) / 1024).toFixed(1)} KB allocated, ${med(rs.map((x) => x.cpuMs)).toFixed(0)} CPU-ms per 1,000 requests (medians of ${rounds})\n`);
      }
    }
  } finally {
    upstream.kill();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  process.exit(0);
}

async function agentForwarder(upPort: number): Promise<number> {
  const proxy = await startHarness({ handler: createHttp2Handler({ pool: new Http2SessionPool() }), dest: { ip: '127.0.0.1', port: upPort } });
  proxy.sink.request = () => {}; // the agent's telemetry is the same for every protocol; not measured here
  return proxy.port;
}

async function minimalForwarder(upPort: number): Promise<number> {
  const up = http2.connect(`http://127.0.0.1:${upPort}`);
  const srv = http2.createServer();
  srv.on('stream', (s, h, flags) => {
    const noBody = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0;
    const u = up.request(h, { endStream: noBody });
    let trailers: http2.IncomingHttpHeaders = {};
    u.on('response', (rh) => { s.respond(rh, { waitForTrailers: true }); u.pipe(s); });
    u.on('trailers', (t) => { trailers = t; });
    s.on('wantTrailers', () => s.sendTrailers(trailers));
    if (!noBody) s.pipe(u);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return (srv.address() as { port: number }).port;
}

function h2load(args: string[]): Promise<number> {
  return new Promise((resolve, reject) => execFile('h2load', args, (e, out) => {
    const m = /(\d+) succeeded/.exec(out);
    if (e || !m) reject(new Error(`h2load ${args.join(' ')} failed: ${e?.message ?? out.slice(-400)}; is h2load installed (./dev setup)?`));
    else resolve(Number(m[1]));
  }));
}
