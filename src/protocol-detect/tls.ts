import { parseClientHello } from './client-hello.ts';
import { needMore, opaque, type Detection } from './detection.ts';
import { handshakeBytes, handshakeRecordLength, RECORD_HEADER_BYTES } from './tls-records.ts';

const HANDSHAKE_CLIENT_HELLO = 1;
const HANDSHAKE_HEADER_BYTES = 4; // msg_type(1) + length(3)

/** A ClientHello we cannot read: still TLS, so it is passed through as TLS. */
const unreadable = (): Detection => ({ kind: 'tls', sni: null, alpn: [] });

/**
 * A handshake record header followed by msg_type client_hello makes the
 * stream TLS; from then on the verdict is always tls, and only SNI and ALPN
 * depend on the rest. `buf` is already cut to maxBytes.
 */
export function detectTls(buf: Uint8Array, maxBytes: number): Detection {
  const first = handshakeRecordLength(buf, 0);
  if (first === 'bad') return opaque('not-tls');
  if (first === 'short' || buf.length <= RECORD_HEADER_BYTES) return needMore();
  if (buf[RECORD_HEADER_BYTES] !== HANDSHAKE_CLIENT_HELLO) return opaque('not-tls');

  // Committed to TLS: out of budget means unreadable, not opaque.
  const pending = () => (buf.length >= maxBytes ? unreadable() : needMore());
  const header = handshakeBytes(buf, HANDSHAKE_HEADER_BYTES);
  if (header === 'short') return pending();
  if (header === 'bad') return unreadable();
  const bodyLen = (header[1] << 16) | (header[2] << 8) | header[3];
  // Cannot fit in the budget even as one record: say so now instead of waiting.
  if (RECORD_HEADER_BYTES + HANDSHAKE_HEADER_BYTES + bodyLen > maxBytes) return unreadable();

  const message = handshakeBytes(buf, HANDSHAKE_HEADER_BYTES + bodyLen);
  if (message === 'short') return pending();
  if (message === 'bad') return unreadable();
  const { sni, alpn } = parseClientHello(message.subarray(HANDSHAKE_HEADER_BYTES));
  return { kind: 'tls', sni, alpn };
}
