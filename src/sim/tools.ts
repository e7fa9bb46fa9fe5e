// Tiny network tools run inside simulated pods: node src/sim/tools.ts <cmd> [--flag value]...
// Each prints JSON lines on stdout; failures print {"error": ...} on stderr and exit 1.
//   tcp-echo   --port P                     echo server; one {"accepted":{...},"at":t} line per connection
//   tcp-banner --port P --banner TEXT       server speaks first, then echoes
//   tcp-client --connect IP:PORT --send TEXT [--wait-banner] [--timeout-ms N]
//   tcp-many   --connect IP:PORT --count N [--hold] [--keep-going]  N sequential connections, one echo each -> {"ok":N};
//              --hold: each stays open, {"open":N} once all are, and all close when stdin ends;
//              --keep-going: a connection that fails is counted ({"failed":F,"errors":{CODE:n}} with the
//              last line, and "open" counts those held) instead of ending the run
//   tcp-loop   --connect IP:PORT [--interval-ms N] [--attempt-timeout-ms N]
//              one short connection (connect, echo, close) after another until killed; one
//              {"attempt":i,"ok":true,"localPort":p} or {"attempt":i,"ok":false,"stage":...,"error":...} line each,
//              with t0 and t1, when it began and ended
// Times (at, t0, t1) are CLOCK_MONOTONIC in ms, the clock every process on the machine shares
// (process.hrtime), so a test can order them against its own events.
//   hold       --connect IP:PORT [--http] [--first LINE]
//              one connection held open until it closes or stdin does; each stdin line is sent on it:
//              as is (echoed back: {"reply":TEXT}), or with --http as the path of a keep-alive HTTP/1
//              GET ({"status":N,"localPort":p}: the same localPort is the same connection).
//              --first: the first line, sent as soon as it connects (a proxy's protocol detection
//              sees the client's bytes at once, never its silence)
//              {"connected":{...}} first, {"closed":{"error":CODE|null}} when the connection closes
//   udp-echo   --port P
//   udp-client --connect IP:PORT --send TEXT [--timeout-ms N]
import * as dgram from 'node:dgram';
import * as net from 'node:net';

type Flags = Record<string, string | true>;

function parseFlags(argv: string[]): Flags {
  const flags: Flags = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const next = argv[i + 1];
    if (next === undefined || next.startsWith('--')) flags[a.slice(2)] = true;
    else flags[a.slice(2)] = argv[++i];
  }
  return flags;
}

function str(f: Flags, name: string): string {
  const v = f[name];
  if (typeof v !== 'string') throw new Error(`missing --${name} <value>`);
  return v;
}

function int(f: Flags, name: string, dflt?: number): number {
  if (f[name] === undefined && dflt !== undefined) return dflt;
  const n = Number(str(f, name));
  if (!Number.isInteger(n) || n < 0) throw new Error(`--${name} must be a non-negative integer`);
  return n;
}

function target(f: Flags): { host: string; port: number } {
  const v = str(f, 'connect');
  const i = v.lastIndexOf(':');
  const port = Number(v.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port)) throw new Error(`--connect wants IP:PORT, got ${v}`);
  return { host: v.slice(0, i), port };
}

function out(obj: object): void {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

/** CLOCK_MONOTONIC in ms: comparable across processes, unlike Date.now() it never steps. */
function mono(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

function endpoints(s: net.Socket): object {
  return { localAddress: s.localAddress, localPort: s.localPort, remoteAddress: s.remoteAddress, remotePort: s.remotePort };
}

function tcpServer(port: number, banner?: string): void {
  const server = net.createServer((s) => {
    out({ accepted: endpoints(s), at: mono() });
    s.on('error', () => s.destroy());
    if (banner !== undefined) s.write(banner);
    s.pipe(s);
  });
  server.on('error', fail);
  server.listen(port, '0.0.0.0', () => out({ listening: (server.address() as net.AddressInfo).port }));
}

/** Reads until the accumulated data ends with `until` (or the first chunk if until is undefined). */
function readUntil(s: net.Socket, until: string | undefined): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const onData = (d: Buffer): void => {
      got += d.toString('utf8');
      if (until === undefined || got.endsWith(until)) done(null);
    };
    const onEnd = (): void => done(new Error(`connection closed before the reply was complete (got ${JSON.stringify(got)})`));
    const done = (e: Error | null): void => {
      s.off('data', onData).off('end', onEnd).off('error', done);
      if (e) reject(e);
      else resolve(got);
    };
    s.on('data', onData).on('end', onEnd).on('error', done);
  });
}

function connect(host: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port });
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

async function tcpClient(f: Flags): Promise<void> {
  const { host, port } = target(f);
  const text = str(f, 'send');
  const s = await connect(host, port);
  out({ connected: endpoints(s) });
  if (f['wait-banner']) out({ banner: await readUntil(s, undefined) });
  const reply = readUntil(s, text);
  s.write(text);
  out({ reply: await reply });
  s.end();
}

/** One connection the test drives from stdin, telling when the other side closes it. */
async function hold(f: Flags): Promise<void> {
  const { host, port } = target(f);
  const s = await connect(host, port);
  out({ connected: endpoints(s) });
  const localPort = s.localPort;
  let error: string | null = null;
  s.on('error', (e: NodeJS.ErrnoException) => (error ??= e.code ?? e.message));
  s.on('close', () => {
    out({ closed: { error } });
    process.exit(0);
  });
  let buf = '';
  s.on('data', (d: Buffer) => {
    buf += d.toString('latin1');
    if (!f.http) {
      out({ reply: buf });
      buf = '';
      return;
    }
    // One response at a time, its body by Content-Length or chunked (one chunk list, no trailers).
    for (;;) {
      const head = buf.indexOf('\r\n\r\n');
      if (head < 0) return;
      const h = buf.slice(0, head);
      let end: number;
      if (/\r\ntransfer-encoding: *chunked/i.test(h)) {
        const last = buf.indexOf('0\r\n\r\n', head + 4);
        if (last < 0) return;
        end = last + 5;
      } else end = head + 4 + Number(/\r\ncontent-length: *(\d+)/i.exec(h)?.[1] ?? 0);
      if (buf.length < end) return;
      out({ status: Number(buf.slice(9, 12)), localPort });
      buf = buf.slice(end);
    }
  });
  const send = (l: string): void => void s.write(f.http ? `GET ${l} HTTP/1.1\r\nHost: ${host}:${port}\r\n\r\n` : l);
  if (typeof f.first === 'string') send(f.first);
  let line = '';
  process.stdin.on('data', (d: Buffer) => {
    line += d.toString('utf8');
    for (let i = line.indexOf('\n'); i >= 0; i = line.indexOf('\n')) {
      send(line.slice(0, i));
      line = line.slice(i + 1);
    }
  });
  process.stdin.on('end', () => s.end());
}

async function tcpMany(f: Flags): Promise<void> {
  const { host, port } = target(f);
  const count = int(f, 'count');
  const held: net.Socket[] = [];
  let failed = 0;
  const errors: Record<string, number> = {};
  for (let i = 0; i < count; i++) {
    let s: net.Socket | undefined;
    try {
      s = await connect(host, port);
      const text = `ping-${i};`;
      const reply = readUntil(s, text);
      s.write(text);
      await reply;
    } catch (e) {
      if (!f['keep-going']) throw e;
      s?.destroy();
      failed++;
      const code = errorKind(e);
      errors[code] = (errors[code] ?? 0) + 1;
      continue;
    }
    if (f.hold) {
      held.push(s);
      continue;
    }
    await new Promise<void>((r) => s.end(r));
    s.destroy();
  }
  const failures = f['keep-going'] ? { failed, errors } : {};
  if (f.hold) {
    out({ open: held.length, ...failures });
    process.stdin.resume();
    await new Promise<void>((r) => process.stdin.once('end', r));
    await Promise.all(held.map((s) => new Promise<void>((r) => s.end(r))));
    for (const s of held) s.destroy();
  }
  out({ ok: count - failed, ...failures });
}

/** What went wrong in one attempt: the errno code when there is one (ECONNRESET, ECONNREFUSED, ...). */
function errorKind(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  if (err.code) return err.code;
  if (/closed before the reply/.test(err.message)) return 'CLOSED';
  return err.message;
}

async function tcpLoop(f: Flags): Promise<void> {
  const { host, port } = target(f);
  const intervalMs = int(f, 'interval-ms', 20);
  const attemptTimeoutMs = int(f, 'attempt-timeout-ms', 3000);
  for (let i = 0; ; i++) {
    const startedAt = Date.now();
    const t0 = mono();
    let stage = 'connect';
    let s: net.Socket | undefined;
    // A black-holed connection must show up as a failure, not as a loop that stops printing.
    const timer = setTimeout(() => s?.destroy(Object.assign(new Error('timed out'), { code: 'TIMEOUT' })), attemptTimeoutMs);
    try {
      const pending = net.connect({ host, port });
      s = pending;
      await new Promise<void>((resolve, reject) => {
        pending.once('connect', () => (pending.off('error', reject), resolve()));
        pending.once('error', reject);
        pending.once('close', () => reject(Object.assign(new Error('timed out'), { code: 'TIMEOUT' })));
      });
      stage = 'reply';
      const text = `ping-${i};`;
      const reply = readUntil(pending, text);
      pending.write(text);
      await reply;
      out({ attempt: i, ok: true, localPort: pending.localPort, ms: Date.now() - startedAt, t0, t1: mono() });
      pending.end();
      pending.on('error', () => {});
    } catch (e) {
      s?.destroy();
      out({ attempt: i, ok: false, stage, error: errorKind(e), ms: Date.now() - startedAt, t0, t1: mono() });
    } finally {
      clearTimeout(timer);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

function udpEcho(port: number): void {
  const sock = dgram.createSocket('udp4');
  sock.on('error', fail);
  sock.on('message', (msg, rinfo) => {
    out({ datagram: { remoteAddress: rinfo.address, remotePort: rinfo.port, size: msg.length } });
    sock.send(msg, rinfo.port, rinfo.address);
  });
  sock.bind(port, '0.0.0.0', () => out({ listening: sock.address().port }));
}

async function udpClient(f: Flags): Promise<void> {
  const { host, port } = target(f);
  const text = str(f, 'send');
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.connect(port, host, () => {
      sock.off('error', reject);
      resolve();
    });
  });
  const local = sock.address();
  const remote = sock.remoteAddress();
  out({ connected: { localAddress: local.address, localPort: local.port, remoteAddress: remote.address, remotePort: remote.port } });
  const reply = new Promise<string>((resolve, reject) => {
    sock.once('message', (m) => resolve(m.toString('utf8')));
    sock.once('error', reject);
  });
  // UDP may drop the first datagram (e.g. while ARP resolves): resend until answered.
  const resend = setInterval(() => sock.send(text), 300);
  sock.send(text);
  try {
    out({ reply: await reply });
  } finally {
    clearInterval(resend);
    sock.close();
  }
}

function fail(e: unknown): never {
  process.stderr.write(JSON.stringify({ error: (e as Error).message ?? String(e) }) + '\n');
  process.exit(1);
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  const f = parseFlags(rest);
  const timeoutMs = int(f, 'timeout-ms', 5000);
  const clientTimeout = (): void => {
    setTimeout(() => fail(new Error(`${cmd} timed out after ${timeoutMs} ms`)), timeoutMs).unref();
  };
  switch (cmd) {
    case 'tcp-echo':
      return tcpServer(int(f, 'port'));
    case 'tcp-banner':
      return tcpServer(int(f, 'port'), str(f, 'banner'));
    case 'udp-echo':
      return udpEcho(int(f, 'port'));
    case 'tcp-client':
      clientTimeout();
      return tcpClient(f);
    case 'tcp-many':
      clientTimeout();
      return tcpMany(f);
    case 'tcp-loop':
      return tcpLoop(f);
    case 'hold':
      return hold(f);
    case 'udp-client':
      clientTimeout();
      return udpClient(f);
    default:
      throw new Error(`unknown command ${String(cmd)}; use tcp-echo, tcp-banner, tcp-client, tcp-many, tcp-loop, hold, udp-echo or udp-client`);
  }
}

main(process.argv.slice(2)).catch(fail);
