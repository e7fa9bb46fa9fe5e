import test from 'ava';
import { clientHello } from './helpers/first-flight.ts';
import { performance } from 'node:perf_hooks';
import { v8Gc } from '../src/util/shrink-heap.ts';
import { cat, cpuMsSince, fuzzer, hex, latin1 as bytes } from './helpers/fuzz.ts';
import { MAX_METHOD_BYTES, OPAQUE_REASONS, detect, type Detection } from '../src/protocol-detect/index.ts';

const INPUTS = 100_000;
/** CPU time of the whole run (~2 s measured): CPU time, which a busy machine does not stretch. */
const MAX_RUN_CPU_MS = 20_000;
/** One call, the fastest of several tries when the first is slower (a GC pause or a descheduled process is not the detector's work). */
const MAX_CALL_MS = 50;
const CALL_RETRIES = 5;

const { seed, below, chance, pick, randomBytes, randomText, mutate: mutateBytes } = fuzzer('protocol-detect');

// ---------------------------------------------------------------------------
// Corpus: real ClientHellos from OpenSSL plus text and binary protocol starts.

const TEXT_CORPUS = [
  'GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n',
  'POST /api/v1/items?x=1 HTTP/1.1\r\nContent-Length: 7\r\n\r\n{"a":1}',
  'CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n',
  'CONNECT [fd00::1]:443 HTTP/1.0\r\n\r\n',
  'OPTIONS * HTTP/1.1\r\n\r\n',
  'GET http://example.com/a?b HTTP/1.1\r\n\r\n',
  'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x64',
  '220 mail.example.com ESMTP Postfix\r\n',
  '*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n',
  'J\x00\x00\x00\x0a8.0.36\x00\x0d\x00\x00\x00abcdefgh\x00\xff\xff\xff\x02\x00\xff\xdf\x15',
  '\x00\x00\x00\x08\x04\xd2\x16\x2f',
];

/** Re-frames the handshake bytes of a single-record hello into records of random sizes. */
function refragment(hello: Uint8Array): Uint8Array {
  const fragment = hello.subarray(5, 5 + ((hello[3] << 8) | hello[4]));
  const records: Uint8Array[] = [];
  for (let off = 0; off < fragment.length; ) {
    const piece = fragment.subarray(off, off + 1 + below(chance(0.5) ? 16 : 600));
    records.push(new Uint8Array([22, 3, 1 + below(4), piece.length >> 8, piece.length & 0xff]), piece);
    off += piece.length;
  }
  return cat(...records);
}

// ---------------------------------------------------------------------------
// Mutations: the shared byte mutations, and a quarter of the time TLS's length fields.

function mutate(input: Uint8Array, corpus: Uint8Array[]): Uint8Array {
  if (!chance(0.25)) return mutateBytes(input, corpus);
  const b = input.slice();
  if (chance(0.5)) {
    // TLS length fields: record (3..4), handshake (6..8), or any 16-bit field
    const at = pick([3, 6, 7, 43, 44, below(Math.max(1, b.length - 1))]);
    const v = pick([0, 1, 0xff, 0xffff, 0x4000, 0x4001, below(0x10000), ((b[at] << 8) | b[at + 1]) + pick([-1, 1])]);
    if (at + 1 < b.length) {
      b[at] = (v >> 8) & 0xff;
      b[at + 1] = v & 0xff;
    }
    return b;
  }
  // huge declared lengths
  if (b.length > 8 && b[0] === 22) b.set(pick([[0xff, 0xff, 0xff], [0x00, 0xff, 0xff], [0x01, 0x00, 0x00]]), 6);
  else if (b.length > 4) b.set([0xff, 0xff], below(b.length - 1));
  return b;
}

const TCHARS = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const PATH_CHARS = 'abcdefghijklmnopqrstuvwxyz0123456789-._~!$&\'()*+,;=:@/?%';

// ---------------------------------------------------------------------------
// Checks

const REASONS = new Set<string>(OPAQUE_REASONS);
const TCHAR_RE = new RegExp(`^[${TCHARS.replace(/[\\\]^-]/g, '\\$&')}]{1,${MAX_METHOD_BYTES}}$`);

/** Null when `d` is a well-formed Detection, else what is wrong with it. */
function shapeError(d: unknown): string | null {
  if (typeof d !== 'object' || d === null) return 'not an object';
  const o = d as Record<string, unknown>;
  const keys = Object.keys(o).sort().join(',');
  switch (o.kind) {
    case 'need-more':
    case 'http2':
      return keys === 'kind' ? null : `extra keys ${keys}`;
    case 'http1':
      if (keys !== 'kind,method,target,version') return `keys ${keys}`;
      if (typeof o.method !== 'string' || !TCHAR_RE.test(o.method)) return 'method';
      if (typeof o.target !== 'string' || !/^[\x21-\x7e]+$/.test(o.target)) return 'target';
      return o.version === '1.0' || o.version === '1.1' ? null : 'version';
    case 'tls':
      if (keys !== 'alpn,kind,sni') return `keys ${keys}`;
      if (o.sni !== null && (typeof o.sni !== 'string' || !/^[a-z0-9._-]{1,255}$/.test(o.sni))) return 'sni';
      if (!Array.isArray(o.alpn) || !o.alpn.every((p) => typeof p === 'string' && /^[\x21-\x7e]{1,255}$/.test(p))) return 'alpn';
      return null;
    case 'opaque':
      if (keys !== 'kind,reason') return `keys ${keys}`;
      return typeof o.reason === 'string' && REASONS.has(o.reason) ? null : `reason ${String(o.reason)}`;
    default:
      return `kind ${String(o.kind)}`;
  }
}

/** Verdict classes the run must reach. */
const label = (d: Detection) => (d.kind === 'opaque' ? `opaque:${d.reason}` : d.kind === 'tls' ? `tls:${d.sni === null ? 'no-sni' : 'sni'}` : d.kind);
const same = (a: Detection, b: Detection) => JSON.stringify(a) === JSON.stringify(b);

test('fuzz: detect is total, well-shaped, deterministic, prefix-consistent and bounded', async (t) => {
  t.log(`MESH_FUZZ_SEED=${seed}`);
  const hellos = await Promise.all([
    clientHello({ servername: 'api.example.com', ALPNProtocols: ['h2', 'http/1.1'], maxVersion: 'TLSv1.2' }),
    clientHello({ servername: 'svc.ns.svc.cluster.local', ALPNProtocols: ['h2'], minVersion: 'TLSv1.3' }),
    clientHello({}),
  ]);
  const hellosExpected = hellos.map((h) => detect(h));
  t.true(hellosExpected.every((d) => d.kind === 'tls'));
  const corpus = [...hellos, ...TEXT_CORPUS.map(bytes)];

  const gc = v8Gc();
  gc();
  const heapBefore = process.memoryUsage().heapUsed;

  const failures: string[] = [];
  const fail = (what: string, input: Uint8Array, max: number | undefined) => {
    if (failures.length < 10) failures.push(`${what} (max=${max}) input=${hex(input)}`);
  };
  const counts = new Map<string, number>();
  let maxCallMs = 0;
  let oracleChecks = 0;

  const timed = (input: Uint8Array, max: number | undefined): Detection | undefined => {
    const start = performance.now();
    let d: Detection;
    try {
      d = detect(input, max);
    } catch (e) {
      fail(`threw ${String(e)}`, input, max);
      return undefined;
    }
    let ms = performance.now() - start;
    if (ms > MAX_CALL_MS) {
      // Tell the detector's own work from a GC pause or a descheduled process.
      for (let i = 0; i < CALL_RETRIES && ms > MAX_CALL_MS; i++) {
        const again = performance.now();
        detect(input, max);
        ms = Math.min(ms, performance.now() - again);
      }
    }
    maxCallMs = Math.max(maxCallMs, ms);
    return d;
  };

  const runStart = performance.now();
  const cpuStart = process.cpuUsage();
  for (let n = 0; n < INPUTS && failures.length < 10; n++) {
    let input: Uint8Array;
    let expected: Detection | undefined; // an oracle, where the generator knows the answer
    const max = chance(0.1) ? 1 + below(chance(0.5) ? 64 : 20000) : undefined;
    switch (below(8)) {
      case 0:
        input = randomBytes(below(chance(0.9) ? 64 : 2048));
        break;
      case 1: // random bytes behind a plausible ClientHello header
        input = cat(new Uint8Array([22, 3, 1 + below(4), below(0x41), below(256), 1, 0, below(256), below(256)]), randomBytes(below(600)));
        break;
      case 2: {
        // random valid request line: the verdict is known
        const method = randomText(1 + below(MAX_METHOD_BYTES), TCHARS);
        const target = `/${randomText(below(200), PATH_CHARS)}`;
        const version = pick(['1.0', '1.1'] as const);
        input = bytes(`${method} ${target} HTTP/${version}${pick(['\r\n', '\n'])}${randomText(below(40), PATH_CHARS)}`);
        if (method !== 'PRI' && max === undefined) expected = { kind: 'http1', method, target, version };
        if (chance(0.3)) {
          input = mutate(input, corpus);
          expected = undefined;
        }
        break;
      }
      case 3: {
        // a real hello re-framed into random records: the verdict must not change
        const i = below(3);
        input = refragment(hellos[i]);
        if (max === undefined && input.length <= 16384) expected = hellosExpected[i];
        break;
      }
      case 4: // random tchar text: exercises method/target/version states
        input = bytes(randomText(below(80), TCHARS + ' /:\r\n'));
        break;
      default: {
        // stacked mutations of the corpus
        input = pick(corpus);
        if (chance(0.2)) input = refragment(hellos[below(3)]);
        for (let k = 1 + below(4); k > 0; k--) input = mutate(input, corpus);
      }
    }

    const before = input.slice();
    const d = timed(input, max);
    if (d === undefined) continue;
    const shape = shapeError(d);
    if (shape !== null) fail(`bad shape: ${shape}: ${JSON.stringify(d)}`, input, max);
    counts.set(label(d), (counts.get(label(d)) ?? 0) + 1);

    if (expected !== undefined) {
      oracleChecks++;
      if (!same(d, expected)) fail(`oracle: got ${JSON.stringify(d)}, want ${JSON.stringify(expected)}`, input, max);
    }

    // Deterministic, and the input is left alone.
    const again = timed(input, max);
    if (again && !same(d, again)) fail(`not deterministic: ${JSON.stringify(d)} then ${JSON.stringify(again)}`, input, max);
    if (!Buffer.from(before).equals(input)) fail('input was modified', input, max);

    // A verdict on a prefix is the verdict on the whole (stronger than agreeing on kind).
    const k = below(input.length + 1);
    const p = timed(input.subarray(0, k), max);
    if (p && p.kind !== 'need-more' && !same(p, d)) fail(`prefix ${k} said ${JSON.stringify(p)}, whole said ${JSON.stringify(d)}`, input, max);
    // Every so often, walk every prefix.
    if (n % 500 === 0 && input.length <= 2048) {
      for (let j = 0; j <= input.length; j++) {
        const q = timed(input.subarray(0, j), max);
        if (q && q.kind !== 'need-more' && !same(q, d)) {
          fail(`prefix ${j} said ${JSON.stringify(q)}, whole said ${JSON.stringify(d)}`, input, max);
          break;
        }
      }
    }
  }
  const runMs = performance.now() - runStart;
  const runCpuMs = cpuMsSince(cpuStart);

  gc();
  const heapGrowthMb = (process.memoryUsage().heapUsed - heapBefore) / 2 ** 20;
  const heapBoundMb = 16;

  t.log(`${INPUTS} inputs in ${runMs.toFixed(0)} ms (${runCpuMs.toFixed(0)} ms of CPU), slowest call ${maxCallMs.toFixed(2)} ms, heap ${heapGrowthMb >= 0 ? '+' : ''}${heapGrowthMb.toFixed(1)} MB after a full collection, ${oracleChecks} oracle checks`);
  t.log([...counts].sort().map(([k, v]) => `${k}=${v}`).join(' '));

  t.deepEqual(failures, [], `replay with MESH_FUZZ_SEED=${seed}`);
  t.true(runCpuMs < MAX_RUN_CPU_MS, `run took ${runCpuMs} ms of CPU`);
  t.true(maxCallMs < MAX_CALL_MS, `slowest call took ${maxCallMs} ms`);
  t.true(heapGrowthMb < heapBoundMb, `heap grew ${heapGrowthMb} MB`);
  // The generators must actually reach every verdict, or the run proves little.
  for (const kind of ['need-more', 'http1', 'http2', 'tls:sni', 'tls:no-sni', 'opaque:not-http', 'opaque:not-tls', 'opaque:max-bytes', 'opaque:bad-target', 'opaque:http-version']) {
    t.true((counts.get(kind) ?? 0) > 0, `no input reached ${kind}`);
  }
  t.true(oracleChecks > INPUTS / 10);
});
