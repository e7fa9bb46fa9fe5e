const LATIN1 = new TextDecoder('latin1');

/** Decodes bytes already checked to be printable ASCII (latin1 and ASCII agree there). */
export function ascii(buf: Uint8Array, start: number, end: number): string {
  return LATIN1.decode(buf.subarray(start, end));
}
