// The tunnel's wire format compared on loopback, outside the agent (docs/identity.md, "Why
// HBONE"): the same Node relays, one process per role, carrying either
//   relay: one plaintext hop (client -> relay -> server), as the plaintext mesh;
//   h2:    two hops joined by TLS 1.3 + HTTP/2 CONNECT, one multiplexed connection (HBONE);
//   tls:   two hops joined by one TLS 1.3 connection per client connection, with a 6-byte header
//          naming the target (the transport-header design).
// Roles: `server` (echoes 200 bytes per request, or sinks bulk), `near` (the client's side),
// `far` (the destination's side), `client` (bulk: 1 GiB on one connection; rr: 50 connections
// in lockstep, a 100-byte request and its answer, for `seconds`). The client prints
// {"gbitPerSec":G} or {"requestsPerSec":R}.
//   node bench/load/wire-compare.ts ROLE MODE KIND PORTBASE [KEYFILE CERTFILE] [SECONDS]
import * as fs from 'node:fs';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import * as tls from 'node:tls';

const [role, mode, kind, base, keyFile, certFile, secondsText] = process.argv.slice(2) as [string, string, string, string, string?, string?, string?];
const SERVER = Number(base);
const NEAR = SERVER + 1;
const FAR = SERVER + 2;
const H = '127.0.0.1';
const BULK_BYTES = 1024 * (1 << 20);
const creds = () => ({ key: fs.readFileSync(keyFile!), cert: fs.readFileSync(certFile!) });
const SETTINGS: http2.Settings = { initialWindowSize: 4 << 20, maxFrameSize: 64 << 10 };

function join(a: net.Socket | import('node:stream').Duplex, b: net.Socket | import('node:stream').Duplex): void {
  a.pipe(b);
  b.pipe(a);
  a.on('error', () => b.destroy());
  b.on('error', () => a.destroy());
}

if (role === 'server') {
  net.createServer((s) => {
    s.on('error', () => {});
    if (kind === 'bulk') {
      // Answers once the whole GiB is in (no half-close: not every hop here passes a FIN on).
      let n = 0;
      s.on('data', (d: Buffer) => {
        n += d.length;
        if (n === BULK_BYTES) s.write('done');
      });
    } else s.on('data', () => s.write(Buffer.alloc(200, 'r')));
  }).listen(SERVER, H, () => process.stdout.write('ready\n'));
} else if (role === 'far') {
  if (mode === 'h2') {
    const h2s = http2.createServer({ settings: SETTINGS });
    h2s.on('session', (s) => s.on('connect', () => s.setLocalWindowSize(16 << 20)));
    h2s.on('stream', (st) => {
      const up = net.connect(SERVER, H, () => {
        st.respond({ ':status': 200 });
        join(st, up);
      });
    });
    tls.createServer({ ...creds(), ALPNProtocols: ['h2'], minVersion: 'TLSv1.3' }, (s) => h2s.emit('connection', s)).listen(FAR, H, () => process.stdout.write('ready\n'));
  } else {
    tls.createServer({ ...creds(), minVersion: 'TLSv1.3' }, (s) => {
      s.once('readable', () => {
        const h = s.read(6) as Buffer | null;
        if (h === null) return void s.destroy();
        const up = net.connect(h.readUInt16BE(4), H, () => join(s, up));
      });
    }).listen(FAR, H, () => process.stdout.write('ready\n'));
  }
} else if (role === 'near') {
  let session: http2.ClientHttp2Session | null = null;
  net.createServer({ noDelay: true }, (c) => {
    c.on('error', () => {});
    if (mode === 'relay') return join(c, net.connect({ port: SERVER, host: H, noDelay: true }));
    if (mode === 'h2') {
      if (session === null) {
        session = http2.connect(`https://${H}`, { settings: SETTINGS, createConnection: () => tls.connect({ port: FAR, host: H, rejectUnauthorized: false, ALPNProtocols: ['h2'], minVersion: 'TLSv1.3' }) });
        const s = session;
        s.on('connect', () => s.setLocalWindowSize(16 << 20));
        s.on('error', () => {});
      }
      return join(c, session.request({ ':method': 'CONNECT', ':authority': `${H}:${SERVER}` }));
    }
    const t = tls.connect({ port: FAR, host: H, rejectUnauthorized: false, minVersion: 'TLSv1.3' });
    t.setNoDelay(true);
    const head = Buffer.from([127, 0, 0, 1, 0, 0]);
    head.writeUInt16BE(SERVER, 4);
    t.write(head);
    join(c, t);
  }).listen(NEAR, H, () => process.stdout.write('ready\n'));
} else if (kind === 'bulk') {
  const s = net.connect(NEAR, H);
  const chunk = Buffer.alloc(1 << 20);
  let left = 1024;
  let t0 = 0;
  s.on('connect', () => {
    t0 = performance.now();
    const go = (): void => {
      while (left > 0) {
        left--;
        if (!s.write(chunk)) return void s.once('drain', go);
      }
    };
    go();
  });
  s.on('data', () => {
    process.stdout.write(JSON.stringify({ gbitPerSec: (BULK_BYTES * 8) / ((performance.now() - t0) / 1000) / 1e9 }) + '\n');
    process.exit(0);
  });
} else {
  const end = performance.now() + Number(secondsText ?? '3') * 1000;
  let n = 0;
  let open = 50;
  const t0 = performance.now();
  for (let i = 0; i < 50; i++) {
    const s = net.connect({ port: NEAR, host: H, noDelay: true });
    const ask = () => s.write(Buffer.alloc(100, 'q'));
    s.on('connect', ask);
    s.on('data', () => {
      n++;
      if (performance.now() < end) ask();
      else s.destroy();
    });
    s.on('close', () => {
      if (--open === 0) {
        process.stdout.write(JSON.stringify({ requestsPerSec: n / ((performance.now() - t0) / 1000) }) + '\n');
        process.exit(0);
      }
    });
  }
}
