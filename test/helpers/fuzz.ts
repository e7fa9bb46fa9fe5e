// The fuzz tests' common part: a seeded PRNG whose seed is printed (MESH_FUZZ_SEED=<n> replays a
// run), byte mutations of a corpus, random chunkings of one input for stream parsers, mutations of
// JSON messages and the checks every parser of a peer's JSON gets, and the CPU-time measure the
// runs are bounded by (a busy machine stretches wall time, not CPU time).
import { performance } from 'node:perf_hooks';
import { splitmix32 } from './rng.ts';

export const latin1 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'latin1'));
export const utf8 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'utf8'));
export const cat = (...parts: Uint8Array[]): Uint8Array => new Uint8Array(Buffer.concat(parts));
/** An input as a failure names it: hex, cut at 96 bytes. */
export const hex = (b: Uint8Array): string => Buffer.from(b.subarray(0, 96)).toString('hex') + (b.length > 96 ? `...(${b.length} bytes)` : '');

/** CPU time (user + system) since `start`, in ms. */
export function cpuMsSince(start: NodeJS.CpuUsage): number {
  const u = process.cpuUsage(start);
  return (u.user + u.system) / 1000;
}

/** Bytes a mutation writes where a value was: delimiters, controls, the ends of the byte range. */
const INTERESTING = [0, 1, 0x09, 0x0a, 0x0d, 0x20, 0x22, 0x2c, 0x2f, 0x3a, 0x3b, 0x5c, 0x7f, 0x80, 0xc3, 0xff];
/** What a mutation puts in place of a run of digits: limits, overflows, signs, exponents, hex. */
const NUMBERS = ['0', '-1', '1', '65535', '65536', '4294967296', '9007199254740993', '999999999999999', '1000000000000000', '1e308', '1e999', '0.5', 'ffffffffffffffff', '000000000000000000001', 'NaN'];

export type Fuzz = ReturnType<typeof fuzzer>;

/** A seeded generator for one fuzz file; logs `name fuzz: MESH_FUZZ_SEED=<seed>` first. */
export function fuzzer(name: string) {
  const env = process.env.MESH_FUZZ_SEED;
  const seed = env !== undefined && env !== '' ? Number(env) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
  console.log(`${name} fuzz: MESH_FUZZ_SEED=${seed}`);
  const u32 = splitmix32(seed);
  const below = (n: number): number => (n <= 0 ? 0 : u32() % n);
  const chance = (p: number): boolean => u32() / 2 ** 32 < p;
  const pick = <T>(xs: readonly T[]): T => xs[below(xs.length)]!;
  const randomBytes = (n: number): Uint8Array => Uint8Array.from({ length: n }, () => below(256));
  const randomText = (n: number, alphabet: string): string => {
    let s = '';
    for (let i = 0; i < n; i++) s += alphabet[below(alphabet.length)];
    return s;
  };

  /** What one duplication of a line may add: mutations stack (up to 4), and copies of copies multiply. */
  const MAX_COPIED_BYTES = 1 << 20;

  /** One random mutation of `input` (never modified): flips, bytes, cuts, splices, repeats, numbers. */
  function mutate(input: Uint8Array, corpus: readonly Uint8Array[]): Uint8Array {
    const b = input.slice();
    const at = below(b.length + 1);
    switch (below(11)) {
      case 0: // bit flips
        for (let n = 1 + below(8); n > 0 && b.length > 0; n--) b[below(b.length)]! ^= 1 << below(8);
        return b;
      case 1: // delimiters and controls
        for (let n = 1 + below(4); n > 0 && b.length > 0; n--) b[below(b.length)] = pick(INTERESTING);
        return b;
      case 2: // truncation
        return b.subarray(0, at);
      case 3: {
        // splicing: head of this, tail of another
        const other = pick(corpus);
        return cat(b.subarray(0, at), other.subarray(below(other.length + 1)));
      }
      case 4: // insert random bytes
        return cat(b.subarray(0, at), randomBytes(1 + below(16)), b.subarray(at));
      case 5: // delete a range
        return cat(b.subarray(0, at), b.subarray(at + 1 + below(32)));
      case 6: {
        // duplicate a chunk
        const chunk = b.subarray(at, at + 1 + below(64));
        return cat(b.subarray(0, at), chunk, chunk, b.subarray(at + chunk.length));
      }
      case 7: {
        // duplicate a line (a header, a field of a line protocol), once or many times
        const lines = splitKeep(b, 0x0a);
        if (lines.length === 0) return b;
        const i = below(lines.length);
        // Bounded by size: stacked, 200 copies of a line 200 copies long ran past V8's longest string.
        const copies = Math.min(chance(0.8) ? 1 : 1 + below(200), Math.max(1, Math.floor(MAX_COPIED_BYTES / Math.max(1, lines[i]!.length))));
        return cat(...lines.slice(0, i + 1), ...Array<Uint8Array>(copies).fill(lines[i]!), ...lines.slice(i + 1));
      }
      case 8: {
        // a run of digits replaced by a limit, an overflow or a non-number
        const runs: Array<[number, number]> = [];
        for (let i = 0; i < b.length; ) {
          if (b[i]! >= 0x30 && b[i]! <= 0x39) {
            const s = i;
            while (i < b.length && b[i]! >= 0x30 && b[i]! <= 0x39) i++;
            runs.push([s, i]);
          } else i++;
        }
        if (runs.length === 0) return b;
        const [s, e] = pick(runs);
        return cat(b.subarray(0, s), latin1(pick(NUMBERS)), b.subarray(e));
      }
      case 9: {
        // an overlong field: one byte or a short run repeated past any sane limit
        const unit = b.length > 0 && chance(0.5) ? b.subarray(at, at + 1 + below(8)) : latin1(pick(['a', ' ', '\t', '0', ',', ';', 'é']));
        const times = Math.ceil((chance(0.7) ? 1 + below(1000) : 1000 + below(70_000)) / Math.max(1, unit.length));
        return cat(b.subarray(0, at), latin1(Buffer.from(unit).toString('latin1').repeat(times)), b.subarray(at));
      }
      default: // random bytes of the same length region
        return cat(b.subarray(0, at), randomBytes(below(64)), b.subarray(at + below(64)));
    }
  }

  /** `k` stacked mutations (1-4 when not given). */
  function mutateN(input: Uint8Array, corpus: readonly Uint8Array[], k = 1 + below(4)): Uint8Array {
    let b = input;
    for (; k > 0; k--) b = mutate(b, corpus);
    return b;
  }

  /**
   * `input` cut into chunks as a socket might deliver it: one byte at a time (when `input` is at
   * most `byteWiseMax` long), cut at random points, or cut just inside every CR and LF.
   */
  function chunkings(input: Uint8Array, byteWiseMax = 4096): Uint8Array[] {
    const mode = below(3);
    const cuts: number[] = [];
    if (mode === 0 && input.length <= byteWiseMax) for (let i = 1; i < input.length; i++) cuts.push(i);
    else if (mode === 1 || mode === 0) {
      for (let n = below(Math.min(input.length, 32)); n > 0; n--) cuts.push(1 + below(Math.max(1, input.length - 1)));
    } else {
      for (let i = 0; i < input.length; i++) if (input[i] === 0x0a || input[i] === 0x0d) cuts.push(i, i + 1);
    }
    const sorted = [...new Set(cuts)].filter((c) => c > 0 && c < input.length).sort((a, b) => a - b);
    const out: Uint8Array[] = [];
    let prev = 0;
    for (const c of sorted) {
      out.push(input.subarray(prev, c));
      prev = c;
    }
    out.push(input.subarray(prev));
    return out;
  }

  /** What a JSON mutation puts where a value was: other types, limits, overlong strings and lists, names that are not. */
  function oddValue(v: unknown): unknown {
    switch (below(14)) {
      case 0: return null;
      case 1: return pick([true, false]);
      case 2: return pick([0, -1, 1.5, 65535, 65536, 2 ** 53 + 2, 1e21, -1e308, 1e308]);
      case 3: return pick(['', ' ', 'A', 'a/b', '-a', 'a-', 'a..b', '10.0.0.256', '1.2.3', '::1', '0x10', '\u0000', '\ud800', 'é', 'spiffe://', '-----BEGIN CERTIFICATE-----']);
      case 4: return 'a'.repeat(pick([63, 64, 253, 254, 256, 257, 513, 1025, 4097, 70_000]));
      case 5: return [];
      case 6: return {};
      case 7: return Array.isArray(v) && v.length > 0 ? Array(pick([2, 9, 17, 65, 101, 1001])).fill(v[0]) : [v];
      case 8: {
        // an own "__proto__" key, as JSON.parse makes one
        const o = JSON.parse('{"__proto__":{"polluted":true}}') as Record<string, unknown>;
        if (typeof v === 'object' && v !== null) for (const [k, x] of Object.entries(v)) o[k] = x;
        return o;
      }
      case 9: // lists thousands deep, written into the text by jsonText (more than structuredClone takes as a value)
        return `${DEEP}${1 + below(5000)}`;
      case 10: return typeof v === 'string' ? v.toUpperCase() : String(v);
      case 11: return typeof v === 'number' ? -v : typeof v === 'string' ? v + randomText(1 + below(4), '/.-_ A\n') : v;
      case 12: return typeof v === 'string' ? v.slice(0, below(v.length + 1)) : v;
      default: return randomText(below(20), 'abc/.-0123456789 \n"\\');
    }
  }

  /** One structural change of a (copied) JSON value: a field replaced, deleted, added, or a list entry repeated. */
  function mutateJson(v: unknown): unknown {
    const copy = structuredClone(v);
    const all = slots(copy);
    if (all.length === 0) return oddValue(copy);
    const [c, k] = pick(all);
    const op = below(5);
    if (op === 0 && !Array.isArray(c)) delete (c as Record<string, unknown>)[k as string];
    else if (op === 1 && Array.isArray(c)) c.splice(k as number, 0, ...Array(1 + below(3)).fill(c[k as number]));
    else if (op === 2 && !Array.isArray(c)) (c as Record<string, unknown>)[pick(['extra', 'type', 'op', 'version', 'name', 'ip', 'result', '__proto__', 'constructor'])] = oddValue(undefined);
    else (c as Record<string | number, unknown>)[k] = oddValue((c as Record<string | number, unknown>)[k]);
    return copy;
  }

  /** A message as a peer might send it: a corpus value mutated 0-3 times, as JSON, a quarter of the time mutated as bytes too. */
  function jsonText(corpus: readonly unknown[], texts: readonly Uint8Array[]): string {
    let v = structuredClone(pick(corpus));
    for (let k = below(4); k > 0; k--) v = mutateJson(v);
    const s = (JSON.stringify(v) ?? 'undefined').replace(/"\\u0000deep:(\d+)"/g, (_, n: string) => '['.repeat(Number(n)) + ']'.repeat(Number(n)));
    return chance(0.25) ? Buffer.from(mutateN(utf8(s), texts, 1 + below(2))).toString('utf8') : s;
  }

  return { seed, u32, below, chance, pick, randomBytes, randomText, mutate, mutateN, chunkings, mutateJson, jsonText };
}

const DEEP = '\u0000deep:';

/** Every place a value sits in a JSON value: [container, key] pairs, the root excluded. */
function slots(v: unknown, out: Array<[Record<string, unknown> | unknown[], string | number]> = []): Array<[Record<string, unknown> | unknown[], string | number]> {
  if (Array.isArray(v)) v.forEach((x, i) => (out.push([v, i]), slots(x, out)));
  else if (v !== null && typeof v === 'object') for (const [k, x] of Object.entries(v)) out.push([v as Record<string, unknown>, k]), slots(x, out);
  return out;
}

/** JSON with every object's keys in order: a parser may build its result in another order than the text's. */
const canon = (v: unknown): string => JSON.stringify(v, (_k, x: unknown) => (x !== null && typeof x === 'object' && !Array.isArray(x) ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => (a < b ? -1 : 1))) : x));

/** A parser of a peer's JSON message, as the fuzz checks it. */
export interface JsonParser {
  name: string;
  /** Valid messages (as values); each must parse to itself. */
  corpus: unknown[];
  /** Parses one message's text as the reader does (JSON.parse first where the reader does it). */
  parse: (text: string) => unknown;
  /** The parser's documented error: anything else thrown is a bug. */
  documented: (e: unknown) => boolean;
  /** The text a result came from, when that is not the result's JSON (default: JSON.stringify). */
  text?: (result: never) => string;
}

/** One parse may take this long: the fastest of several tries when the first is slower (a GC pause or a descheduled process is not the parser's work). */
const MAX_PARSE_MS = 100;

/**
 * Feeds each parser `inputs / parsers.length` mutated messages of at most `maxBytes` (what the
 * reader lets through) and checks: only the documented error; what is accepted parses again to
 * itself; no parse over MAX_PARSE_MS. Returns the failures (at most 10) and what was measured.
 */
export function fuzzJsonParsers(f: Fuzz, parsers: readonly JsonParser[], inputs: number, maxBytes: number) {
  const failures: string[] = [];
  const fail = (p: JsonParser, what: string, l: string) => {
    if (failures.length < 10) failures.push(`${p.name}: ${what}; text=${JSON.stringify(l.slice(0, 400))}${l.length > 400 ? `...(${l.length})` : ''}`);
  };
  const accepted = new Map<string, number>();
  let maxCallMs = 0;
  const cpuStart = process.cpuUsage();
  const t0 = performance.now();
  const reparse = (p: JsonParser, r: unknown, l: string) => {
    const again = p.text ? p.text(r as never) : JSON.stringify(r);
    try {
      const r2 = p.parse(again);
      if (canon(r2) !== canon(r)) fail(p, `accepted, but ${again.slice(0, 300)} parses to ${JSON.stringify(r2).slice(0, 300)}`, l);
    } catch (e) {
      fail(p, `accepted, but ${again.slice(0, 300)} is refused: ${(e as Error).message}`, l);
    }
  };
  for (const p of parsers) {
    for (const v of p.corpus) {
      // The corpus is valid: the harness's sanity.
      const l = JSON.stringify(v);
      try {
        reparse(p, p.parse(l), l);
      } catch (e) {
        fail(p, `refused a valid message: ${(e as Error).message}`, l);
      }
    }
    const texts = p.corpus.map((v) => utf8(JSON.stringify(v)));
    let ok = 0;
    for (let n = 0; n < inputs / parsers.length && failures.length < 10; n++) {
      const l = f.jsonText(p.corpus, texts);
      if (Buffer.byteLength(l) > maxBytes) continue;
      let r: unknown;
      let start = performance.now();
      try {
        r = p.parse(l);
      } catch (e) {
        if (!p.documented(e)) fail(p, `threw ${(e as Error)?.stack?.split('\n').slice(0, 3).join(' | ')}`, l);
        continue;
      } finally {
        let ms = performance.now() - start;
        for (let i = 0; i < 5 && ms > MAX_PARSE_MS; i++) {
          start = performance.now();
          try {
            p.parse(l);
          } catch {
            // timed only
          }
          ms = Math.min(ms, performance.now() - start);
        }
        if (ms > MAX_PARSE_MS) fail(p, `took ${ms.toFixed(1)} ms`, l);
        maxCallMs = Math.max(maxCallMs, ms);
      }
      ok++;
      reparse(p, r, l);
    }
    accepted.set(p.name, ok);
  }
  const cpuMs = cpuMsSince(cpuStart);
  const summary = `${inputs} messages generated in ${(performance.now() - t0).toFixed(0)} ms (${cpuMs.toFixed(0)} ms of CPU), slowest parse ${maxCallMs.toFixed(2)} ms; accepted: ${[...accepted].map(([k, v]) => `${k.split(' ')[0]}=${v}`).join(' ')}`;
  return { failures, accepted, cpuMs, summary };
}

/** `b` cut after every `sep` (each piece keeps its separator; the last may have none). */
function splitKeep(b: Uint8Array, sep: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let s = 0;
  for (let i = 0; i < b.length; i++) {
    if (b[i] === sep) {
      out.push(b.subarray(s, i + 1));
      s = i + 1;
    }
  }
  if (s < b.length) out.push(b.subarray(s));
  return out;
}
