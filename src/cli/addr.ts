// Parsing of address flags, shared by the commands.
import * as net from 'node:net';

/** "IP:PORT", ":PORT" or "PORT" (with defaultHost); a clear error otherwise. */
export function parseHostPort(value: string, flag: string, defaultHost?: string, defaultPort?: number): { host: string; port: number } {
  let host: string | undefined;
  let portText: string | undefined;
  const i = value.lastIndexOf(':');
  if (i < 0) {
    if (/^\d+$/.test(value)) portText = value;
    else host = value;
  } else {
    host = value.slice(0, i) || undefined;
    portText = value.slice(i + 1);
  }
  host = host?.replace(/^\[(.*)\]$/, '$1') ?? defaultHost;
  const port = portText === undefined || portText === '' ? defaultPort : Number(portText);
  if (!host) throw new Error(`${flag} ${value}: no IP address; pass ${flag} IP:PORT`);
  if (!net.isIP(host)) throw new Error(`${flag} ${value}: "${host}" is not an IP address`);
  if (port === undefined || !Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`${flag} ${value}: the port must be 1-65535`);
  return { host, port };
}
