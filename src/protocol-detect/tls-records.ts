/** TLS record layer, only as much as a ClientHello needs (RFC 8446 §5.1). */

export const CONTENT_TYPE_HANDSHAKE = 22;
export const RECORD_HEADER_BYTES = 5;
/** A plaintext fragment is at most 2^14 bytes and never empty for handshakes. */
export const MAX_FRAGMENT_BYTES = 16384;

/** 'short': the bytes stop before the answer; 'bad': no TLS client sends this. */
export type Short = 'short';
export type Bad = 'bad';

/**
 * The fragment length of the handshake record starting at `off`. Checked
 * byte by byte so a wrong second byte already says 'bad'.
 */
export function handshakeRecordLength(buf: Uint8Array, off: number): number | Short | Bad {
  const avail = buf.length - off;
  if (avail < 1) return 'short';
  if (buf[off] !== CONTENT_TYPE_HANDSHAKE) return 'bad';
  if (avail < 2) return 'short';
  if (buf[off + 1] !== 3) return 'bad';
  if (avail < 3) return 'short';
  // legacy_record_version 0x0301..0x0304; OpenSSL sends 0x0301 on a first ClientHello.
  if (buf[off + 2] < 1 || buf[off + 2] > 4) return 'bad';
  if (avail < RECORD_HEADER_BYTES) return 'short';
  const len = (buf[off + 3] << 8) | buf[off + 4];
  if (len === 0 || len > MAX_FRAGMENT_BYTES) return 'bad';
  return len;
}

/**
 * The first `need` bytes of the handshake stream, gathered across as many
 * handshake records as it takes (a ClientHello may span records, and handshake
 * messages are never interleaved with other content types). Copies only when
 * the bytes span more than one record. Every loop turn consumes at least
 * RECORD_HEADER_BYTES + 1 bytes of `buf`, so the work is linear in its length.
 *
 * The caller asks again with all bytes so far whenever a segment arrives, and a
 * peer may frame its hello in 1-byte records: the record headers are walked
 * first, allocating nothing, and the bytes gathered only once they are all
 * there (building a piece per record on every ask made that the square of the
 * record count in allocations: seconds of CPU for one 16 KB hello).
 */
export function handshakeBytes(buf: Uint8Array, need: number): Uint8Array | Short | Bad {
  const n = buf.length;
  let got = 0;
  let off = 0;
  while (got < need) {
    // handshakeRecordLength's checks inlined: this runs once per record on every ask.
    if (n - off < RECORD_HEADER_BYTES || buf[off] !== CONTENT_TYPE_HANDSHAKE || buf[off + 1] !== 3) return handshakeRecordLength(buf, off) as Short | Bad;
    const len = (buf[off + 3] << 8) | buf[off + 4];
    if (buf[off + 2] < 1 || buf[off + 2] > 4 || len === 0 || len > MAX_FRAGMENT_BYTES) return 'bad';
    const avail = Math.min(len, n - off - RECORD_HEADER_BYTES);
    got += Math.min(avail, need - got);
    if (got < need && avail < len) return 'short';
    off += RECORD_HEADER_BYTES + len;
  }
  const firstLen = (buf[3] << 8) | buf[4];
  if (need <= firstLen) return buf.subarray(RECORD_HEADER_BYTES, RECORD_HEADER_BYTES + need);
  const out = new Uint8Array(need);
  let at = 0;
  for (off = 0; at < need; ) {
    const start = off + RECORD_HEADER_BYTES;
    const len = (buf[off + 3] << 8) | buf[off + 4];
    const take = Math.min(len, need - at);
    out.set(buf.subarray(start, start + take), at);
    at += take;
    off = start + len;
  }
  return out;
}
