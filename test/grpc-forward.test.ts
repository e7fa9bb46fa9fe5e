import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';
import { createHttp2Handler, Http2SessionPool } from '../src/proxy/http2/index.ts';
import { startHarness } from '../src/proxy/http2/harness.ts';
import { waitFor } from './helpers/until.ts';


interface Msg { text: string; n: number }
type AnyClient = grpc.Client & Record<string, (...args: unknown[]) => any>;

async function loadService() {
  const def = await protoLoader.load(fileURLToPath(new URL('../src/sim/echo.proto', import.meta.url)), { defaults: true });
  const pkg = grpc.loadPackageDefinition(def).meshtest as grpc.GrpcObject;
  return pkg.Echo as grpc.ServiceClientConstructor;
}

interface ServerState { cancelled: number; countStarted: () => void }

async function startServer(Echo: grpc.ServiceClientConstructor, state: ServerState) {
  const server = new grpc.Server();
  server.addService(Echo.service, {
    Unary(call: grpc.ServerUnaryCall<Msg, Msg>, cb: grpc.sendUnaryData<Msg>) {
      if (call.request.text === 'missing') {
        cb({ code: grpc.status.NOT_FOUND, details: 'no such thing: ünïcode' });
        return;
      }
      cb(null, { text: call.request.text.toUpperCase(), n: call.request.n + 1 });
    },
    Count(call: grpc.ServerWritableStream<Msg, Msg>) {
      call.on('cancelled', () => state.cancelled++);
      state.countStarted();
      let i = 0;
      const tick = () => {
        if (call.cancelled) return;
        if (i === call.request.n) {
          if (call.request.text === 'fail-at-end') call.emit('error', { code: grpc.status.RESOURCE_EXHAUSTED, details: 'quota gone' });
          else call.end();
          return;
        }
        call.write({ text: call.request.text, n: i++ });
        // 'slow' keeps the stream open so the client can cancel it mid-flight.
        if (call.request.text === 'slow') setTimeout(tick, 20); else setImmediate(tick);
      };
      tick();
    },
    Chat(call: grpc.ServerDuplexStream<Msg, Msg>) {
      call.on('data', (m: Msg) => call.write({ text: `re:${m.text}`, n: m.n * 2 }));
      call.on('end', () => call.end());
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  return { server, port };
}

async function setup(t: { teardown(fn: () => unknown): void }) {
  const Echo = await loadService();
  let countStarted!: () => void;
  const started = new Promise<void>((r) => { countStarted = r; });
  const state: ServerState = { cancelled: 0, countStarted: () => countStarted() };
  const { server, port } = await startServer(Echo, state);
  const pool = new Http2SessionPool();
  const proxy = await startHarness({ handler: createHttp2Handler({ pool }), dest: { ip: '127.0.0.1', port } });
  const client = new Echo(`127.0.0.1:${proxy.port}`, grpc.credentials.createInsecure()) as unknown as AnyClient;
  t.teardown(async () => {
    client.close();
    pool.close();
    await proxy.close();
    server.forceShutdown();
  });
  return { client, proxy, state, started };
}

function unary(client: AnyClient, req: Msg): Promise<Msg> {
  return new Promise((resolve, reject) => client.Unary(req, (err: Error | null, res: Msg) => (err ? reject(err) : resolve(res))));
}

test('unary call through the proxy, telemetry has grpc-status 0', async (t) => {
  const { client, proxy } = await setup(t);
  t.deepEqual(await unary(client, { text: 'hi', n: 41 }), { text: 'HI', n: 42 });
  await waitFor(() => proxy.sink.requests.length === 1);
  t.like(proxy.sink.requests[0], { protocol: 'http2', method: 'POST', path: '/meshtest.Echo/Unary', status: 200, grpcStatus: 0, success: true });
});

test('gRPC error status and message arrive intact; telemetry grpcStatus 5, success false', async (t) => {
  const { client, proxy } = await setup(t);
  const err = await t.throwsAsync(unary(client, { text: 'missing', n: 0 })) as grpc.ServiceError;
  t.is(err.code, grpc.status.NOT_FOUND);
  t.is(err.details, 'no such thing: ünïcode');
  await waitFor(() => proxy.sink.requests.length === 1);
  t.like(proxy.sink.requests[0], { status: 200, grpcStatus: 5, success: false });
});

test('server streaming: 500 messages, then a status carried in trailers after data', async (t) => {
  const { client, proxy } = await setup(t);
  const got: Msg[] = [];
  const call = client.Count({ text: 'x', n: 500 }) as grpc.ClientReadableStream<Msg>;
  call.on('data', (m: Msg) => got.push(m));
  await new Promise((resolve, reject) => { call.on('end', resolve); call.on('error', reject); });
  t.is(got.length, 500);
  t.deepEqual(got.map((m) => m.n), [...Array(500).keys()]);

  const failing = client.Count({ text: 'fail-at-end', n: 3 }) as grpc.ClientReadableStream<Msg>;
  let n = 0;
  failing.on('data', () => n++);
  const err = await new Promise<grpc.ServiceError>((resolve) => failing.on('error', resolve));
  t.is(n, 3);
  t.is(err.code, grpc.status.RESOURCE_EXHAUSTED);
  t.is(err.details, 'quota gone');
  await waitFor(() => proxy.sink.requests.length === 2);
  t.like(proxy.sink.requests[0], { grpcStatus: 0, success: true });
  t.like(proxy.sink.requests[1], { grpcStatus: 8, success: false });
  t.true(proxy.sink.requests[1].responseBytes > 0);
});

test('bidi streaming: every message echoed in order', async (t) => {
  const { client } = await setup(t);
  const call = client.Chat() as grpc.ClientDuplexStream<Msg, Msg>;
  const got: Msg[] = [];
  call.on('data', (m: Msg) => {
    got.push(m);
    // Ping-pong: the next message waits for the echo, so both directions interleave.
    if (got.length < 50) call.write({ text: `m${got.length}`, n: got.length });
    else call.end();
  });
  call.write({ text: 'm0', n: 0 });
  await new Promise((resolve, reject) => { call.on('end', resolve); call.on('error', reject); });
  t.is(got.length, 50);
  t.deepEqual(got[49], { text: 're:m49', n: 98 });
});

test('client cancel propagates to the server call', async (t) => {
  const { client, proxy, state, started } = await setup(t);
  const call = client.Count({ text: 'slow', n: 1000 }) as grpc.ClientReadableStream<Msg>;
  call.on('error', () => {});
  await new Promise((resolve) => call.once('data', resolve));
  await started;
  call.cancel();
  await waitFor(() => state.cancelled === 1);
  t.is(state.cancelled, 1);
  await waitFor(() => proxy.sink.requests.length === 1);
  t.like(proxy.sink.requests[0], { success: false });
  t.regex(proxy.sink.requests[0].error ?? '', /client reset \(code 8\)/);
});
