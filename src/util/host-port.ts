// HOST:PORT of a service the agent dials by name or address (the controller, the identity
// service): HOST is a DNS name (a trailing dot allowed), an IPv4 address or an IPv6 address in
// brackets. An unbracketed IPv6 address is refused: in "fd00::1:8080" the port cannot be told
// from the address.
import * as net from 'node:net';

/**
 * `said` prefixes every error (e.g. `--identity-addr fd00::1:8080`); `examplePort` is the port
 * the bracket hint shows; `defaultPort` is taken when none is given (none: a port is required).
 */
export function parseServiceHostPort(text: string, said: string, examplePort: number, defaultPort?: number): { host: string; port: number } {
  // A URL (https://HOST:PORT/...): its colons would read as an unbracketed IPv6 address.
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text) || /[/?#]/.test(text)) {
    const bare = text.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '').replace(/[/?#].*$/, '');
    throw new Error(`${said}: expected HOST:PORT, without a scheme or a path, e.g. ${bare === '' ? 'HOST' : bare}${/:\d+$/.test(bare) ? '' : `:${examplePort}`}`);
  }
  let host: string;
  let port: string | undefined;
  const v6 = /^\[([^\]]+)\](?::(.*))?$/.exec(text);
  if (v6) {
    host = v6[1]!;
    port = v6[2];
    if (!net.isIPv6(host)) throw new Error(`${said}: "${host}" is not an IPv6 address`);
  } else {
    const i = text.lastIndexOf(':');
    if (i >= 0 && text.indexOf(':') !== i) throw new Error(`${said}: put an IPv6 address in brackets, e.g. [::1]:${examplePort}`);
    host = i < 0 ? text : text.slice(0, i);
    port = i < 0 ? undefined : text.slice(i + 1);
    // A trailing dot: a fully qualified name, looked up without the resolver's search list.
    if (!/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?\.?$/i.test(host)) throw new Error(`${said}: "${host}" is not a host name or IPv4 address`);
  }
  if ((port === undefined || port === '') && defaultPort === undefined) throw new Error(`${said}: no port; expected HOST:PORT, e.g. ${net.isIPv6(host) ? `[${host}]` : host}:${examplePort}`);
  const p = port === undefined || port === '' ? defaultPort! : Number(port);
  if (!/^\d*$/.test(port ?? '') || !Number.isInteger(p) || p < 1 || p > 65535) throw new Error(`${said}: the port must be 1-65535`);
  return { host, port: p };
}
