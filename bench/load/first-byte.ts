// Time from connect() to the server's first byte, after sending the iperf3 control
// connection's opening (a 36-character cookie of [a-z2-7] and a NUL). Through the mesh this
// is what protocol detection costs such a client. Prints {"connectMs":C,"firstByteMs":F}.
//   node bench/load/first-byte.ts --connect IP:PORT
import * as net from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { connect: { type: 'string' } } });
const m = /^(.+):(\d+)$/.exec(values.connect ?? '');
if (!m) {
  process.stderr.write(JSON.stringify({ error: 'missing --connect IP:PORT' }) + '\n');
  process.exit(2);
}
const ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';
const cookie = Array.from({ length: 36 }, () => ALPHABET[Math.floor(Math.random() * 32)]).join('') + '\0';
const t0 = performance.now();
const s = net.connect({ host: m[1], port: Number(m[2]) });
let connectMs = 0;
s.once('connect', () => {
  connectMs = performance.now() - t0;
  s.write(cookie);
});
s.once('data', () => {
  process.stdout.write(JSON.stringify({ connectMs, firstByteMs: performance.now() - t0 }) + '\n');
  s.destroy();
});
s.once('error', (e) => {
  process.stderr.write(JSON.stringify({ error: e.message }) + '\n');
  process.exit(1);
});
setTimeout(() => {
  process.stderr.write(JSON.stringify({ error: 'no byte from the server within 10 s' }) + '\n');
  process.exit(1);
}, 10_000).unref();
