// ClusterIP allocation from the service CIDR, as the API server does on Service create (pure).
// Dynamic addresses are handed out in order from .10 (deterministic for tests); the real
// allocator picks at random, which no consumer may rely on either way.

export function ipToInt(ip: string): number {
  const p = ip.split('.').map(Number);
  return ((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0;
}

export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export function parseCidr(cidr: string): { base: number; size: number } {
  const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d+)$/.exec(cidr);
  const bits = Number(m?.[2]);
  if (!m || bits < 8 || bits > 30) throw new Error(`service CIDR ${cidr} is not an IPv4 CIDR between /8 and /30`);
  const size = 2 ** (32 - bits);
  return { base: (ipToInt(m[1]) & ~(size - 1)) >>> 0, size };
}

export class ClusterIpAllocator {
  readonly cidr: string;
  readonly #base: number;
  readonly #size: number;
  readonly #used = new Set<number>();
  #next = 10;

  constructor(cidr: string) {
    this.cidr = cidr;
    ({ base: this.#base, size: this.#size } = parseCidr(cidr));
  }

  contains(ip: string): boolean {
    const n = ipToInt(ip);
    return n > this.#base && n < this.#base + this.#size - 1;
  }

  allocate(requested?: string): string {
    if (requested !== undefined) {
      if (!/^\d+\.\d+\.\d+\.\d+$/.test(requested) || !this.contains(requested)) throw new Error(`the provided IP is not in the valid range; the range of valid IPs is ${this.cidr}`);
      const n = ipToInt(requested) - this.#base;
      if (this.#used.has(n)) throw new Error('provided IP is already allocated');
      this.#used.add(n);
      return requested;
    }
    for (let tries = 0; tries < this.#size; tries++) {
      const n = this.#next;
      this.#next = this.#next + 1 >= this.#size - 1 ? 1 : this.#next + 1;
      if (!this.#used.has(n)) {
        this.#used.add(n);
        return intToIp(this.#base + n);
      }
    }
    throw new Error(`range is full: no free ClusterIP in ${this.cidr}`);
  }

  release(ip: string): void {
    this.#used.delete(ipToInt(ip) - this.#base);
  }
}
