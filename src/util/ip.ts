// An address as the kernel reports it for a dual-stack listener, reduced to what the mesh keys on.

/** Strips the IPv4-mapped prefix a dual-stack listener reports ("::ffff:10.0.0.5"; "::FFFF:" is as valid). */
export function plainIp(addr: string): string {
  return addr.slice(0, 7).toLowerCase() === '::ffff:' && addr.includes('.') ? addr.slice(7) : addr;
}
