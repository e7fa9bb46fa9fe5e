// Kernel splice of an opaque tunnel (opaque.ts, trySplice) with the real sockhash and verdict:
// the hand-over waits until Node's writes are in the kernel, so a slow reader's full send buffer
// delays it, and nothing may be reordered or lost across it.
import test from 'ava';
import * as net from 'node:net';
import * as crypto from 'node:crypto';
import { once } from 'node:events';
import { loadAddon } from '../src/datapath/addon.ts';
import { forwardOpaque, type OpaqueCloseEvent } from '../src/proxy/opaque.ts';
import { defaultLimits, type ConnContext } from '../src/proxy/context.ts';
import { RecordingSink } from '../src/telemetry/events.ts';
import { requireRoot } from './helpers/root.ts';

const sha = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');

/** Everything a socket reads until its EOF. */
function readAll(s: net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  s.on('data', (d: Buffer) => chunks.push(d));
  return new Promise((resolve, reject) => {
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
  });
}

test('a splice waits for a slow client to take the full send buffer Node holds for it; then every byte arrives, in order, both ways', async (t) => {
  requireRoot(t);
  const { Datapath } = loadAddon();
  const dp = new Datapath();
  dp.load({ kernelSplice: true });
  t.teardown(() => dp.close());

  // A server-first banner far larger than the socket buffers (the proxy holds most of it for the
  // client), then more that the origin sends while the splice waits (queued in the kernel, and
  // moved by the verdict once spliced); it reads the upload to its EOF, then ends.
  const head = crypto.randomBytes(16 << 20);
  const rest = crypto.randomBytes(4 << 20);
  const upload = crypto.randomBytes(4 << 20);
  let originGot!: Promise<Buffer>;
  const origin = net.createServer({ allowHalfOpen: true }, (s) => {
    s.write(rest);
    originGot = readAll(s).then((b) => {
      s.end();
      return b;
    });
  });
  origin.listen(0, '127.0.0.1');
  await once(origin, 'listening');
  t.teardown(() => origin.close());

  let spliced: string | null | undefined;
  let closeEv!: (ev: OpaqueCloseEvent) => void;
  const closed = new Promise<OpaqueCloseEvent>((resolve) => { closeEv = resolve; });
  let handed!: (heldForClient: number) => void;
  const handedOver = new Promise<number>((resolve) => { handed = resolve; });
  const proxy = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, async (client) => {
    const up = net.connect({ host: '127.0.0.1', port: (origin.address() as net.AddressInfo).port, allowHalfOpen: true });
    await once(up, 'connect');
    const ctx: ConnContext = {
      connId: 1, client, telemetry: new RecordingSink(), openedAt: Date.now(),
      endpoints: { direction: 'outbound', sourceIp: '127.0.0.1', sourcePort: 0, sourcePodKey: 0n, destIp: '127.0.0.1', destPort: 0 },
      dial: () => { throw new Error('the test gives the forwarder its upstream'); },
    };
    forwardOpaque(ctx, up, defaultLimits, {
      protocol: 'opaque', detectedBy: 'server-first', detectMs: 0, upstreamHead: head,
      splicer: dp, onSplice: (err) => (spliced = err), onClose: closeEv,
    });
    handed(client.writableLength);
  });
  proxy.listen(0, '127.0.0.1');
  await once(proxy, 'listening');
  t.teardown(() => proxy.close());

  const c = net.connect({ host: '127.0.0.1', port: (proxy.address() as net.AddressInfo).port, allowHalfOpen: true });
  c.pause(); // the slow reader: nothing taken until the tunnel is handed over
  const held = await handedOver;
  t.true(held > 0, 'the proxy holds part of the banner for the client');
  t.is(spliced, undefined, 'the splice waits for it');
  const got = readAll(c);
  c.resume();
  c.end(upload);
  const all = await got;
  t.is(all.length, head.length + rest.length, 'every byte of the download');
  t.is(sha(all), sha(Buffer.concat([head, rest])), 'the banner, then what came after it: same bytes, same order');
  t.is(sha(await originGot), sha(upload), 'the upload: same bytes, same order');
  t.is(spliced, null, 'the kernel moved the rest');
  const ev = await closed;
  t.is(ev.error, undefined);
  t.is(ev.bytesIn, upload.length);
  t.is(ev.bytesOut, head.length + rest.length);
});
