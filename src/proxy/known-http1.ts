// Destinations (ip:port) known to speak HTTP/1 client-first: the last connection the dispatcher
// decided there was an HTTP/1 request with the server still silent. For these the dispatcher
// skips the eager dial and the HTTP/1 handler takes a pooled upstream (docs/proxy.md).
// Bounded, least recently used out: one entry per destination, a Map in recency order.

export const DEFAULT_KNOWN_HTTP1_MAX = 4096;

export class KnownHttp1 {
  private readonly map = new Map<string, true>();
  readonly max: number;

  constructor(max = DEFAULT_KNOWN_HTTP1_MAX) {
    if (!Number.isInteger(max) || max < 1) throw new Error(`known-http1 size ${max} is not a positive integer`);
    this.max = max;
  }

  static key(ip: string, port: number): string {
    return ip + ':' + port;
  }

  get size(): number {
    return this.map.size;
  }

  has(key: string): boolean {
    return this.map.has(key);
  }

  /** Marks `key` as most recently seen; the least recently marked goes when full. */
  add(key: string): void {
    if (this.map.delete(key)) {
      this.map.set(key, true);
      return;
    }
    if (this.map.size >= this.max) this.map.delete(this.map.keys().next().value!);
    this.map.set(key, true);
  }

  delete(key: string): void {
    this.map.delete(key);
  }
}
