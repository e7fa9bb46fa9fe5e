/**
 * Bounds-checked big-endian reader over a byte range. A read past the end
 * returns 0 (or an empty range) and clears `ok` for good, so a parser reads a
 * whole structure straight through and checks `ok` once: no exceptions.
 */
export class Reader {
  ok = true;
  private readonly buf: Uint8Array;
  private pos: number;
  private readonly end: number;

  constructor(buf: Uint8Array, start = 0, end = buf.length) {
    this.buf = buf;
    this.pos = start;
    this.end = end;
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  u8(): number {
    return this.take(1) ? this.buf[this.pos - 1] : 0;
  }

  u16(): number {
    return this.take(2) ? (this.buf[this.pos - 2] << 8) | this.buf[this.pos - 1] : 0;
  }

  u24(): number {
    return this.take(3) ? (this.buf[this.pos - 3] << 16) | (this.buf[this.pos - 2] << 8) | this.buf[this.pos - 1] : 0;
  }

  skip(n: number): void {
    this.take(n);
  }

  /** The next n bytes, without copying. */
  bytes(n: number): Uint8Array {
    return this.take(n) ? this.buf.subarray(this.pos - n, this.pos) : this.buf.subarray(0, 0);
  }

  /** A reader over the next n bytes (a TLS vector body); failed and empty if they are not there. */
  sub(n: number): Reader {
    if (!this.take(n)) {
      const failed = new Reader(this.buf, 0, 0);
      failed.ok = false;
      return failed;
    }
    return new Reader(this.buf, this.pos - n, this.pos);
  }

  private take(n: number): boolean {
    if (!this.ok || n < 0 || n > this.end - this.pos) {
      this.ok = false;
      return false;
    }
    this.pos += n;
    return true;
  }
}
