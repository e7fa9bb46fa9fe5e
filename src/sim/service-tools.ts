// Processes for Service tests, the demo and the bench, run with node inside simulated pods:
//
//   backend --name POD [--grpc PORT] [--http PORT]
//       answers gRPC (meshtest.Echo/Unary, and Count with one message) and HTTP/1 with its name;
//       JSON lines on stdin change it: {"delayMs":50} (every answer waits), {"status":503} (HTTP
//       status), {"grpcCode":14} (gRPC status), {"failPercent":30} (that share of HTTP answers
//       503, spread evenly: never two in a row), {"count":true} (prints {"count":{grpc,http,
//       cancelled,attempts}}: requests whose client went before the answer, and how many times
//       each x-request-id was seen). Prints {"listening":{...}} when up. An HTTP request for
//       /headers (any query) is answered with JSON {name, headers}: the header field lines it
//       received as [name, value] pairs, in order, so a test sees what a proxy changed.
//   load (--grpc HOST:PORT [--grpc-method Unary|Count] | --http HOST:PORT [--new-connections]
//        [--path P] [--header NAME:VALUE] [--method M] [--body-bytes N]) [--requests N] [--concurrency C] [--rps R]
//       one gRPC channel or one keep-alive HTTP/1 connection (--new-connections: a new
//       connection per HTTP request, as kube-proxy balances them; every HTTP request carries a
//       unique x-request-id); N requests (default 1000) with C in flight (default 10) then
//       {"done":{byName,failures,errors,ms}}; with --rps R it runs paced until stdin closes (or
//       --requests are sent), printing {"tick":{byName,failures,errors}} every --tick-ms
//       (default 500) with what finished in that tick.
// One answer names the pod that served it, so the client counts the spread itself.
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import * as http from 'node:http';
import * as readline from 'node:readline';
import { fileURLToPath } from 'node:url';

interface Msg { text: string; n: number }

const PROTO = fileURLToPath(new URL('echo.proto', import.meta.url));

function echoService(): grpc.ServiceClientConstructor {
  const def = protoLoader.loadSync(PROTO, { defaults: true });
  return (grpc.loadPackageDefinition(def).meshtest as grpc.GrpcObject).Echo as grpc.ServiceClientConstructor;
}

function arg(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

function out(o: object): void {
  process.stdout.write(JSON.stringify(o) + '\n');
}

async function backend(args: string[]): Promise<void> {
  const name = arg(args, '--name') ?? 'backend';
  const grpcPort = arg(args, '--grpc');
  const httpPort = arg(args, '--http');
  const state = { delayMs: 0, status: 200, grpcCode: 0, failPercent: 0 };
  const count = { grpc: 0, http: 0, cancelled: 0 };
  const attempts: Record<string, number> = {};
  const later = (f: () => void) => (state.delayMs > 0 ? setTimeout(f, state.delayMs) : f());
  const listening: Record<string, number> = {};
  if (grpcPort !== undefined) {
    const Echo = echoService();
    const server = new grpc.Server();
    server.addService(Echo.service, {
      Unary(call: grpc.ServerUnaryCall<Msg, Msg>, cb: grpc.sendUnaryData<Msg>) {
        count.grpc++;
        later(() => {
          if (state.grpcCode !== 0) cb({ code: state.grpcCode, details: `${name} fails on purpose` } as grpc.ServiceError);
          else cb(null, { text: name, n: call.request.n });
        });
      },
      Count(call: grpc.ServerWritableStream<Msg, Msg>) {
        count.grpc++;
        later(() => {
          if (state.grpcCode !== 0) call.emit('error', { code: state.grpcCode, details: `${name} fails on purpose` });
          else {
            call.write({ text: name, n: call.request.n });
            call.end();
          }
        });
      },
      Chat(call: grpc.ServerDuplexStream<Msg, Msg>) {
        call.on('data', (m: Msg) => call.write({ text: name, n: m.n }));
        call.on('end', () => call.end());
      },
    });
    listening.grpc = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`0.0.0.0:${grpcPort}`, grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  }
  if (httpPort !== undefined) {
    const server = http.createServer((req, res) => {
      const n = count.http++;
      const id = req.headers['x-request-id'];
      if (typeof id === 'string') attempts[id] = (attempts[id] ?? 0) + 1;
      res.on('close', () => { if (!res.writableFinished) count.cancelled++; });
      req.resume();
      req.on('end', () => later(() => {
        if (res.destroyed) return;
        // Spread evenly: answer n fails when the running share of failures crosses a whole number.
        const p = state.failPercent / 100;
        const fail = Math.floor((n + 1) * p) > Math.floor(n * p);
        if (!fail && (req.url === '/headers' || req.url?.startsWith('/headers?'))) {
          const headers: Array<[string, string]> = [];
          for (let i = 0; i < req.rawHeaders.length; i += 2) headers.push([req.rawHeaders[i]!.toLowerCase(), req.rawHeaders[i + 1]!]);
          res.writeHead(state.status, { 'content-type': 'application/json', 'x-served-by': name });
          res.end(JSON.stringify({ name, headers }));
          return;
        }
        res.writeHead(fail ? 503 : state.status, { 'content-type': 'text/plain', 'x-served-by': name });
        res.end(name);
      }));
    });
    server.keepAliveTimeout = 60_000;
    await new Promise<void>((r) => server.listen(Number(httpPort), '0.0.0.0', r));
    listening.http = Number(httpPort);
  }
  readline.createInterface({ input: process.stdin }).on('line', (line) => {
    let cmd: Record<string, unknown>;
    try {
      cmd = JSON.parse(line);
    } catch {
      return out({ error: `not JSON: ${line.slice(0, 80)}` });
    }
    if (typeof cmd.delayMs === 'number') state.delayMs = cmd.delayMs;
    if (typeof cmd.status === 'number') state.status = cmd.status;
    if (typeof cmd.grpcCode === 'number') state.grpcCode = cmd.grpcCode;
    if (typeof cmd.failPercent === 'number') state.failPercent = cmd.failPercent;
    out(cmd.count ? { count: { ...count, attempts } } : { ok: { ...state } });
  });
  process.stdin.on('end', () => process.exit(0));
  out({ listening });
}

interface Tally {
  byName: Record<string, number>;
  failures: number;
  errors: Record<string, number>;
}

const tally = (): Tally => ({ byName: {}, failures: 0, errors: {} });

type Call = () => Promise<string>;

function grpcCaller(target: string, method: string): { call: Call; close(): void } {
  const Echo = echoService();
  const c = new Echo(target, grpc.credentials.createInsecure()) as grpc.Client & Record<string, (...a: any[]) => any>;
  let n = 0;
  const failed = (e: grpc.ServiceError) => new Error(`grpc ${grpc.status[e.code] ?? e.code}`);
  if (method === 'Count') {
    return {
      call: () => new Promise((resolve, reject) => {
        const s = c.Count({ text: 'x', n: n++ }, { deadline: Date.now() + 10_000 });
        let first = '';
        s.on('data', (m: Msg) => (first ||= m.text));
        s.on('error', (e: grpc.ServiceError) => reject(failed(e)));
        s.on('end', () => resolve(first));
      }),
      close: () => c.close(),
    };
  }
  return {
    call: () => new Promise((resolve, reject) =>
      c.Unary({ text: 'x', n: n++ }, { deadline: Date.now() + 10_000 }, (e: grpc.ServiceError | null, r: Msg) => (e ? reject(failed(e)) : resolve(r.text)))),
    close: () => c.close(),
  };
}

interface HttpOptions {
  newConnections: boolean;
  path: string;
  method: string;
  headers: Record<string, string>;
  body: Buffer | null;
}

function httpCaller(target: string, o: HttpOptions): { call: Call; close(): void } {
  const [host, port] = target.split(':');
  const agent = new http.Agent({ keepAlive: !o.newConnections, maxSockets: o.newConnections ? Infinity : 1 });
  // Unique per request across load processes: a retried request shows up twice under one id.
  const prefix = `${process.pid}-${Date.now().toString(36)}-`;
  let n = 0;
  return {
    call: () => new Promise((resolve, reject) => {
      const headers: Record<string, string> = { ...o.headers, 'x-request-id': prefix + n++ };
      if (o.newConnections) headers.connection = 'close';
      if (o.body !== null) headers['content-length'] = String(o.body.length);
      const req = http.request({ host, port: Number(port), path: o.path, method: o.method, agent, headers }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (body += d));
        res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`http ${res.statusCode}`))));
      });
      req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
      req.on('error', reject);
      req.end(o.body ?? undefined);
    }),
    close: () => agent.destroy(),
  };
}

function allArgs(args: string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length - 1; i++) if (args[i] === name) out.push(args[i + 1]!);
  return out;
}

async function load(args: string[]): Promise<void> {
  const g = arg(args, '--grpc');
  const h = arg(args, '--http');
  if ((g === undefined) === (h === undefined)) throw new Error('load needs one of --grpc HOST:PORT or --http HOST:PORT');
  const headers: Record<string, string> = {};
  for (const hv of allArgs(args, '--header')) {
    const i = hv.indexOf(':');
    headers[hv.slice(0, i).trim().toLowerCase()] = hv.slice(i + 1).trim();
  }
  const bodyBytes = arg(args, '--body-bytes');
  const caller = g !== undefined
    ? grpcCaller(g, arg(args, '--grpc-method') ?? 'Unary')
    : httpCaller(h!, {
      newConnections: args.includes('--new-connections'), path: arg(args, '--path') ?? '/', method: arg(args, '--method') ?? 'GET', headers,
      body: bodyBytes === undefined ? null : Buffer.alloc(Number(bodyBytes), 120),
    });
  const concurrency = Number(arg(args, '--concurrency') ?? 10);
  const rps = arg(args, '--rps');
  let t = tally();
  const record = (p: Promise<string>) => p.then(
    (name) => void (t.byName[name] = (t.byName[name] ?? 0) + 1),
    (e: Error) => {
      t.failures++;
      t.errors[e.message] = (t.errors[e.message] ?? 0) + 1;
    },
  );
  if (rps !== undefined) {
    // Paced: one request every 1000/rps ms, however long the answers take (an open loop).
    const every = 1000 / Number(rps);
    const tickMs = Number(arg(args, '--tick-ms') ?? 500);
    let stop = false;
    const inflight = new Set<Promise<void>>();
    const limit = arg(args, '--requests') === undefined ? Infinity : Number(arg(args, '--requests'));
    // Until stdin closes; a run of --requests ends on its own (its stdin may be closed from the start).
    if (limit === Infinity) {
      process.stdin.on('end', () => (stop = true));
      process.stdin.resume();
    }
    const ticker = setInterval(() => {
      out({ tick: t });
      t = tally();
    }, tickMs);
    const start = performance.now();
    for (let i = 0; !stop && i < limit; i++) {
      const p = record(caller.call());
      inflight.add(p);
      void p.finally(() => inflight.delete(p));
      const wait = start + (i + 1) * every - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
    await Promise.all(inflight);
    clearInterval(ticker);
    out({ tick: t });
    out({ stopped: true });
    caller.close();
    return;
  }
  const total = Number(arg(args, '--requests') ?? 1000);
  let next = 0;
  const t0 = performance.now();
  const worker = async () => {
    while (next < total) {
      next++;
      await record(caller.call());
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, total) }, worker));
  out({ done: { ...t, ms: Math.round(performance.now() - t0) } });
  caller.close();
}

const [mode, ...rest] = process.argv.slice(2);
if (mode === 'backend') await backend(rest);
else if (mode === 'load') await load(rest);
else {
  console.error('usage: node service-tools.ts backend --name POD [--grpc PORT] [--http PORT] | load (--grpc|--http) HOST:PORT [--requests N] [--concurrency C] [--rps R]');
  process.exit(2);
}
