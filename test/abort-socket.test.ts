// abortSocket on Node's sockets: an RST where libuv can give one, and never a socket left open.
import test from 'ava';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { once } from 'node:events';
import { abortSocket } from '../src/proxy/opaque.ts';

const HOST = '127.0.0.1';

function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

async function connected(t: { teardown(fn: () => void): void }): Promise<{ ours: net.Socket; peer: net.Socket }> {
  const server = net.createServer({ allowHalfOpen: true });
  server.listen(0, HOST);
  await once(server, 'listening');
  t.teardown(() => server.close());
  const accepted = once(server, 'connection') as Promise<[net.Socket]>;
  const ours = net.connect((server.address() as net.AddressInfo).port, HOST);
  await once(ours, 'connect');
  const [peer] = await accepted;
  peer.on('error', () => {});
  t.teardown(() => peer.destroy());
  return { ours, peer };
}

// libuv refuses an RST (uv_tcp_close_reset: EINVAL) while a shutdown is under way, which is from
// end() until the loop's next poll when nothing is left to write; Node then drops the handle
// without closing it: no 'close', and the fd stays open for good. Fails on an abortSocket that
// called resetAndDestroy() there.
test.serial('abortSocket right after end(): the socket closes, no error, no fd left', async (t) => {
  const { ours, peer } = await connected(t);
  const errors: string[] = [];
  ours.on('error', (e: NodeJS.ErrnoException) => errors.push(`${e.code} ${e.syscall}`));
  const fds = openFds();
  const closed = once(ours, 'close');
  const peerGot: Buffer[] = [];
  peer.on('data', (b: Buffer) => peerGot.push(b));
  const peerEnded = once(peer, 'end');
  ours.write('last words');
  ours.end();
  abortSocket(ours); // the same turn of the loop: the shutdown is pending
  await closed;
  t.deepEqual(errors, []);
  t.is(openFds(), fds - 1, "our socket's fd is closed");
  await peerEnded; // what we wrote, then our FIN: the end we had asked for stands
  t.is(Buffer.concat(peerGot).toString(), 'last words');
});

// With bytes still queued the shutdown has not started, and the RST goes as asked: the peer sees
// ECONNRESET, not the bytes and a FIN.
test.serial('abortSocket after end() with bytes still queued: an RST', async (t) => {
  const { ours, peer } = await connected(t);
  peer.pause(); // reads nothing, so our send queue fills
  ours.on('error', () => {});
  const big = Buffer.alloc(32 * 1024 * 1024, 1);
  ours.write(big);
  ours.end();
  t.true(ours.writableLength > 0, 'bytes queued');
  const closed = once(ours, 'close');
  abortSocket(ours);
  await closed;
  const err = once(peer, 'error') as Promise<[NodeJS.ErrnoException]>;
  peer.resume();
  const [e] = await err;
  t.is(e.code, 'ECONNRESET');
});
