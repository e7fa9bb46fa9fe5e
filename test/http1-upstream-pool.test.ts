// The HTTP/1 upstream pool on its own, with real loopback sockets: a socket moved between client
// connections and the pool keeps one set of listeners (own()), a parked socket that speaks or
// closes is dropped, and the pool's one sweep timer closes what sat idle past the timeout.
import test from 'ava';
import * as net from 'node:net';
import { once } from 'node:events';
import { own, UpstreamPool, type UpstreamOwner } from '../src/proxy/http1/pool.ts';
import { waitFor } from './helpers/until.ts';

const HOST = '127.0.0.1';

/** A server that keeps every accepted socket, and n client sockets connected to it. */
async function connected(n: number) {
  const accepted: net.Socket[] = [];
  const server = net.createServer((s) => accepted.push(s));
  server.listen(0, HOST);
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  const clients: net.Socket[] = [];
  for (let i = 0; i < n; i++) {
    const c = net.connect(port, HOST);
    await once(c, 'connect');
    clients.push(c);
  }
  await waitFor(() => accepted.length === n);
  return { accepted, clients, close: () => { for (const s of [...accepted, ...clients]) s.destroy(); server.close(); } };
}

class Recorder implements UpstreamOwner {
  data: string[] = [];
  ended = false;
  upstreamData(chunk: Buffer): void { this.data.push(chunk.toString('latin1')); }
  upstreamEnd(): void { this.ended = true; }
  upstreamError(): void {}
  upstreamClose(): void {}
}

test('a socket moved between owners and the pool keeps one listener per event; events reach its owner of the moment', async (t) => {
  const { accepted, clients, close } = await connected(1);
  const pool = new UpstreamPool({ idleTimeoutMs: 60_000 });
  t.teardown(() => { pool.close(); close(); });
  const [up] = clients;
  const before = new Map(['data', 'end', 'error', 'close'].map((ev) => [ev, up!.listenerCount(ev)]));
  const a = new Recorder();
  own(up!, a);
  for (let i = 0; i < 5; i++) {
    own(up!, null);
    pool.release('k', up!);
    t.is(pool.acquire('k'), up!);
    own(up!, a);
  }
  for (const [ev, n] of before) t.is(up!.listenerCount(ev), n + 1, `one '${ev}' listener of ours after 5 moves`);
  t.is(up!.listenerCount('timeout'), 0, 'no socket timer per park');
  up!.resume();
  accepted[0]!.write('to a');
  await waitFor(() => a.data.length === 1);
  const b = new Recorder();
  own(up!, b);
  accepted[0]!.end('to b');
  await waitFor(() => b.ended);
  t.deepEqual(a.data, ['to a']);
  t.deepEqual(b.data, ['to b']);
  t.false(a.ended);
});

test('a parked socket that receives bytes or a FIN is removed and destroyed', async (t) => {
  const { accepted, clients, close } = await connected(2);
  const pool = new UpstreamPool({ idleTimeoutMs: 60_000 });
  t.teardown(() => { pool.close(); close(); });
  pool.release('k', clients[0]!);
  pool.release('k', clients[1]!);
  t.is(pool.idleCount('k'), 2);
  accepted[0]!.write('unasked');
  accepted[1]!.end();
  await waitFor(() => clients[0]!.destroyed && clients[1]!.destroyed);
  t.is(pool.idleCount(), 0);
  t.is(pool.acquire('k'), null);
});

test('the sweep closes connections parked past the idle timeout; acquire never hands one out', async (t) => {
  const { clients, close } = await connected(3);
  // Idle ages on a clock the test moves: exact however slow the machine.
  let clock = 0;
  const pool = new UpstreamPool({ idleTimeoutMs: 1000, now: () => clock });
  t.teardown(() => { pool.close(); close(); });
  pool.release('old', clients[0]!);
  clock = 600;
  pool.release('new', clients[1]!);
  pool.release('gone', clients[2]!);
  clock = 1000;
  pool.sweep();
  t.is(pool.idleCount(), 3, 'parked exactly the timeout: kept');
  clock = 1001;
  pool.sweep();
  t.true(clients[0]!.destroyed, 'parked 1001 ms: closed by the sweep');
  t.is(pool.idleCount('old'), 0);
  t.is(pool.idleCount('new'), 1);
  clock = 1601;
  t.is(pool.acquire('new'), null, 'parked 1001 ms, not swept yet: not handed out');
  t.true(clients[1]!.destroyed, 'and closed');
  t.is(pool.idleCount('gone'), 1, 'another destination is left to the sweep');
  pool.sweep();
  t.true(clients[2]!.destroyed);
  t.is(pool.idleCount(), 0);
});

test('a connection parked with the time it became idle keeps that age: in order among the others, and too old ones not kept', async (t) => {
  const { clients, close } = await connected(3);
  let clock = 10_000;
  const pool = new UpstreamPool({ idleTimeoutMs: 4000, now: () => clock });
  t.teardown(() => { pool.close(); close(); });
  const [fresh, old, stale] = clients;
  pool.release('k', fresh!); // idle since now
  pool.release('k', old!, clock - 1500); // bound to a client, idle since 1.5 s ago
  pool.release('k', stale!, clock - 4001); // idle longer than the pool keeps any: closed
  t.is(pool.idleCount('k'), 2);
  t.true(stale!.destroyed);
  t.is(pool.acquire('k', 1000), fresh!, 'the freshest first');
  t.is(pool.acquire('k', 1000), null, 'the other has been idle 1.5 s: not for a request that cannot be re-sent');
  t.is(pool.acquire('k'), old!);
});
