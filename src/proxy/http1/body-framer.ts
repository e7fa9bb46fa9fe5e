// Pure body framing: tells the forwarder how many of the bytes it holds belong to the current
// message body, so it can forward them untouched and know where the message ends. Chunked
// bodies are tracked, not decoded: sizes, extensions, the last-chunk and trailers are walked
// byte by byte and the original bytes go on as they came.

export const FRAME_ERROR = -1;

const S_SIZE = 0; // reading hex digits of a chunk size
const S_SIZE_WS = 1; // whitespace after the size (before ';' or CR)
const S_EXT = 2; // inside chunk extensions, until CR
const S_SIZE_LF = 3; // expecting LF after the size line
const S_DATA = 4; // inside chunk data
const S_DATA_CR = 5; // expecting CR after chunk data
const S_DATA_LF = 6; // expecting LF after chunk data
const S_TRAILER_START = 7; // at the start of a trailer line (CR means end)
const S_TRAILER = 8; // inside a trailer line, until CR
const S_TRAILER_LF = 9; // expecting LF after a trailer line
const S_END_LF = 10; // expecting the final LF
const S_DONE = 11;

const HEX = new Int8Array(256).fill(-1);
for (let c = 0; c < 10; c++) HEX[48 + c] = c;
for (let c = 0; c < 6; c++) {
  HEX[65 + c] = 10 + c;
  HEX[97 + c] = 10 + c;
}

/** Largest chunk size accepted (2^48 bytes); keeps arithmetic exact in a double. */
const MAX_CHUNK = 2 ** 48;

/** Frames a body of known length. */
export class LengthFramer {
  remaining: number;
  constructor(length: number) {
    this.remaining = length;
  }
  get done(): boolean {
    return this.remaining === 0;
  }
  /** Returns how many bytes of buf[off..] belong to the body. */
  push(buf: Buffer, off: number): number {
    const n = Math.min(this.remaining, buf.length - off);
    this.remaining -= n;
    return n;
  }
}

/** Frames a chunked body; `metaLimit` bounds a size line's extensions and the trailer section. */
export class ChunkedFramer {
  private state = S_SIZE;
  private size = 0;
  private digits = 0;
  private metaBytes = 0;
  private readonly metaLimit: number;
  error = '';

  constructor(metaLimit = 64 * 1024) {
    this.metaLimit = metaLimit;
  }

  get done(): boolean {
    return this.state === S_DONE;
  }

  /** Returns how many bytes of buf[off..] belong to the body, or FRAME_ERROR. */
  push(buf: Buffer, off: number): number {
    let p = off;
    const len = buf.length;
    while (p < len) {
      switch (this.state) {
        case S_DATA: {
          const n = Math.min(this.size, len - p);
          this.size -= n;
          p += n;
          if (this.size === 0) this.state = S_DATA_CR;
          continue;
        }
        case S_SIZE: {
          const c = buf[p];
          const h = HEX[c];
          if (h >= 0) {
            this.size = this.size * 16 + h;
            if (this.size > MAX_CHUNK) return this.fail('chunk size too large');
            this.digits++;
            p++;
            continue;
          }
          if (this.digits === 0) return this.fail('bad chunk size');
          if (c === 13) this.state = S_SIZE_LF;
          else if (c === 59) this.state = S_EXT;
          else if (c === 32 || c === 9) this.state = S_SIZE_WS;
          else return this.fail('bad chunk size');
          this.metaBytes = 0;
          p++;
          continue;
        }
        case S_SIZE_WS: {
          const c = buf[p++];
          if (c === 13) this.state = S_SIZE_LF;
          else if (c === 59) this.state = S_EXT;
          else if (c !== 32 && c !== 9) return this.fail('bad chunk size');
          continue;
        }
        case S_EXT: {
          const c = buf[p++];
          if (c === 13) this.state = S_SIZE_LF;
          else if ((c < 32 && c !== 9) || c === 127) return this.fail('bad chunk extension');
          else if (++this.metaBytes > this.metaLimit) return this.fail('chunk extensions too long');
          continue;
        }
        case S_SIZE_LF:
          if (buf[p++] !== 10) return this.fail('bad chunk size line');
          if (this.size === 0) {
            this.state = S_TRAILER_START;
            this.metaBytes = 0;
          } else {
            this.state = S_DATA;
          }
          continue;
        case S_DATA_CR:
          if (buf[p++] !== 13) return this.fail('missing CRLF after chunk');
          this.state = S_DATA_LF;
          continue;
        case S_DATA_LF:
          if (buf[p++] !== 10) return this.fail('missing CRLF after chunk');
          this.state = S_SIZE;
          this.size = 0;
          this.digits = 0;
          continue;
        case S_TRAILER_START: {
          const c = buf[p++];
          if (c === 13) this.state = S_END_LF;
          else if (c === 32 || c === 9 || c === 10 || c === 58) return this.fail('bad trailer');
          else this.state = S_TRAILER;
          if (++this.metaBytes > this.metaLimit) return this.fail('trailers too long');
          continue;
        }
        case S_TRAILER: {
          const c = buf[p++];
          if (c === 13) this.state = S_TRAILER_LF;
          else if ((c < 32 && c !== 9) || c === 127) return this.fail('bad trailer');
          if (++this.metaBytes > this.metaLimit) return this.fail('trailers too long');
          continue;
        }
        case S_TRAILER_LF:
          if (buf[p++] !== 10) return this.fail('bad trailer');
          this.state = S_TRAILER_START;
          continue;
        case S_END_LF:
          if (buf[p++] !== 10) return this.fail('bad last chunk');
          this.state = S_DONE;
          return p - off;
        default: // S_DONE
          return p - off;
      }
    }
    return p - off;
  }

  private fail(why: string): number {
    this.error = why;
    return FRAME_ERROR;
  }
}

export type BodyFramer = LengthFramer | ChunkedFramer;
