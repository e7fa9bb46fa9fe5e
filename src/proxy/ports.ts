/**
 * Sets of TCP ports ("3306,5000-5010"), used for the opaque-port list: connections to
 * these destination ports skip protocol detection and are forwarded as opaque TCP.
 */

/**
 * Default opaque ports. Each is either a server-speaks-first protocol (the eager upstream
 * dial would catch it anyway; listing it skips the detection race entirely) or a
 * client-first binary/text protocol whose first bytes are not HTTP or TLS and gain nothing
 * from detection:
 *   25, 587  SMTP, submission (server banner first)
 *   3306     MySQL (server greeting first)
 *   4222     NATS (server INFO first)
 *   4444     Galera state transfer (MySQL cluster)
 *   5432     PostgreSQL (client-first binary startup/SSLRequest)
 *   6379     Redis (RESP; inline commands such as "GET k" look like an HTTP request-line prefix)
 *   9300     Elasticsearch transport
 *   11211    memcached (text commands, "get k")
 *   27017    MongoDB (client-first binary)
 */
export const DEFAULT_OPAQUE_PORTS = '25,587,3306,4222,4444,5432,6379,9300,11211,27017';

/** The datapath holds at most this many ranges per list (native/bpf/mesh_shared.h); discovery carries as many. */
export const MAX_PORT_RANGES = 16;

export class PortSet {
  /** Sorted, merged, inclusive ranges. */
  readonly #ranges: Array<[number, number]>;
  /** One bit per port: has() is a single array read on the hot path. */
  readonly #bits = new Uint8Array(65536 / 8);

  private constructor(ranges: Array<[number, number]>) {
    this.#ranges = mergeRanges(ranges);
    for (const [lo, hi] of this.#ranges) {
      for (let p = lo; p <= hi; p++) this.#bits[p >> 3] |= 1 << (p & 7);
    }
  }

  static empty(): PortSet {
    return new PortSet([]);
  }

  static of(ranges: Array<[number, number] | number>): PortSet {
    const rs: Array<[number, number]> = ranges.map((r) => (typeof r === 'number' ? [r, r] : [r[0], r[1]]));
    for (const [lo, hi] of rs) {
      if (!isPort(lo) || !isPort(hi) || lo > hi) throw new Error(`invalid port range ${lo}-${hi}`);
    }
    return new PortSet(rs);
  }

  /**
   * Parses "25,587,5000-5010". Whitespace around tokens is ignored; an empty spec is the empty
   * set. Ports are 1..65535. Errors name the offending token.
   */
  static parse(spec: string): PortSet {
    const ranges: Array<[number, number]> = [];
    const trimmed = spec.trim();
    if (trimmed === '') return new PortSet([]);
    for (const raw of trimmed.split(',')) {
      const token = raw.trim();
      if (token === '') throw new Error(`invalid port list "${spec}": empty entry`);
      const m = /^(\d{1,5})(?:\s*-\s*(\d{1,5}))?$/.exec(token);
      if (!m) throw new Error(`invalid port list "${spec}": bad token "${token}" (want PORT or LO-HI)`);
      const lo = Number(m[1]);
      const hi = m[2] === undefined ? lo : Number(m[2]);
      if (!isPort(lo) || !isPort(hi)) {
        throw new Error(`invalid port list "${spec}": "${token}" is outside 1-65535`);
      }
      if (lo > hi) throw new Error(`invalid port list "${spec}": range "${token}" has its low end above its high end`);
      ranges.push([lo, hi]);
    }
    return new PortSet(ranges);
  }

  has(port: number): boolean {
    if (!(port >= 0 && port <= 65535)) return false;
    return (this.#bits[port >> 3] & (1 << (port & 7))) !== 0;
  }

  ranges(): Array<[number, number]> {
    return this.#ranges.map(([lo, hi]) => [lo, hi]);
  }

  toString(): string {
    return this.#ranges.map(([lo, hi]) => (lo === hi ? String(lo) : `${lo}-${hi}`)).join(',');
  }
}

function isPort(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && n <= 65535;
}

function mergeRanges(ranges: Array<[number, number]>): Array<[number, number]> {
  const sorted = ranges.map(([lo, hi]): [number, number] => [lo, hi]).sort((a, b) => a[0] - b[0]);
  const out: Array<[number, number]> = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r[0] <= last[1] + 1) last[1] = Math.max(last[1], r[1]);
    else out.push(r);
  }
  return out;
}
