import { ascii } from './ascii.ts';
import { Reader } from './reader.ts';

/** What the proxy needs from a ClientHello; null/[] when absent or unreadable. */
export interface ClientHelloInfo {
  sni: string | null;
  alpn: string[];
}

const EXT_SERVER_NAME = 0;
const EXT_ALPN = 16;
const NAME_TYPE_HOST_NAME = 0;
const MAX_HOST_NAME_BYTES = 255;

const malformed = (): ClientHelloInfo => ({ sni: null, alpn: [] });

/**
 * Parses a ClientHello body (after the 4-byte handshake header) through its
 * extensions (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2). Any framing error makes
 * the whole hello malformed: SNI null and no ALPN.
 */
export function parseClientHello(body: Uint8Array): ClientHelloInfo {
  const r = new Reader(body);
  if (r.u8() !== 3) return malformed(); // legacy_version major
  r.u8();
  r.skip(32); // random
  const sessionId = r.u8();
  if (sessionId > 32) return malformed();
  r.skip(sessionId);
  const suites = r.u16();
  if (suites < 2 || suites % 2 !== 0) return malformed();
  r.skip(suites);
  const compression = r.u8();
  if (compression < 1) return malformed();
  r.skip(compression);
  if (!r.ok) return malformed();
  if (r.remaining === 0) return { sni: null, alpn: [] }; // pre-extension clients

  const exts = r.sub(r.u16());
  if (!r.ok || r.remaining !== 0) return malformed();
  let sni: string | null = null;
  let alpn: string[] = [];
  let seenSni = false;
  let seenAlpn = false;
  while (exts.remaining > 0) {
    const type = exts.u16();
    const data = exts.sub(exts.u16());
    if (!exts.ok) return malformed();
    if (type === EXT_SERVER_NAME) {
      if (seenSni) return malformed(); // RFC 8446 §4.2: at most one of each type
      seenSni = true;
      const name = parseServerName(data);
      if (name === undefined) return malformed();
      sni = name;
    } else if (type === EXT_ALPN) {
      if (seenAlpn) return malformed();
      seenAlpn = true;
      const protocols = parseAlpn(data);
      if (protocols === undefined) return malformed();
      alpn = protocols;
    }
  }
  return { sni, alpn };
}

/** RFC 6066 §3. undefined: malformed; null: no usable host_name. */
function parseServerName(data: Reader): string | null | undefined {
  const list = data.sub(data.u16());
  if (!data.ok || data.remaining !== 0) return undefined;
  let host: string | null = null;
  let seenHost = false;
  while (list.remaining > 0) {
    const type = list.u8();
    const name = list.bytes(list.u16());
    if (!list.ok) return undefined;
    if (type === NAME_TYPE_HOST_NAME && !seenHost) {
      seenHost = true;
      host = hostName(name);
    }
  }
  return host;
}

/** A DNS name as SNI carries it (ASCII, no IP literals), lowercased; else null. */
function hostName(name: Uint8Array): string | null {
  if (name.length === 0 || name.length > MAX_HOST_NAME_BYTES) return null;
  for (const b of name) {
    const lower = b | 0x20;
    const ok = (lower >= 0x61 && lower <= 0x7a) || (b >= 0x30 && b <= 0x39) || b === 0x2d || b === 0x2e || b === 0x5f;
    if (!ok) return null;
  }
  return ascii(name, 0, name.length).toLowerCase();
}

/** RFC 7301 §3.1. undefined: malformed. Names that are not printable ASCII are left out. */
function parseAlpn(data: Reader): string[] | undefined {
  const list = data.sub(data.u16());
  if (!data.ok || data.remaining !== 0 || list.remaining < 2) return undefined;
  const protocols: string[] = [];
  while (list.remaining > 0) {
    const len = list.u8();
    const name = list.bytes(len);
    if (!list.ok || len === 0) return undefined;
    if (name.every((b) => b > 0x20 && b < 0x7f)) protocols.push(ascii(name, 0, name.length));
  }
  return protocols;
}
