// The fuzz tests' common part: a seeded PRNG whose seed is printed (MESH_FUZZ_SEED=<n> replays a
// run), byte mutations of a corpus, random chunkings of one input for stream parsers, and the
// CPU-time measure the runs are bounded by (a busy machine stretches wall time, not CPU time).
import { splitmix32 } from './rng.ts';

export const latin1 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'latin1'));
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
        const copies = chance(0.8) ? 1 : 1 + below(200);
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

  return { seed, u32, below, chance, pick, randomBytes, randomText, mutate, mutateN, chunkings };
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
