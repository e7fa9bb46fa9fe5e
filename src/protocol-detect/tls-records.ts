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
 */
export function handshakeBytes(buf: Uint8Array, need: number): Uint8Array | Short | Bad {
  const pieces: Uint8Array[] = [];
  let got = 0;
  let off = 0;
  while (got < need) {
    const len = handshakeRecordLength(buf, off);
    if (typeof len !== 'number') return len;
    const start = off + RECORD_HEADER_BYTES;
    const avail = Math.min(len, buf.length - start);
    const take = Math.min(avail, need - got);
    pieces.push(buf.subarray(start, start + take));
    got += take;
    if (got < need && avail < len) return 'short';
    off = start + len;
  }
  if (pieces.length === 1) return pieces[0];
  const out = new Uint8Array(need);
  let at = 0;
  for (const p of pieces) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
