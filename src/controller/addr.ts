// The controller's address as agents and the CLI take it: HOST:PORT or http://HOST:PORT
// (HOST may be a name: the install's ConfigMap holds mesh-agent-controller.NS.svc:8086).
import * as net from 'node:net';

export const DEFAULT_CONTROLLER_PORT = 8086;
/** The controller's web dashboard (linkerd-viz's web uses 8084 too). */
export const DEFAULT_DASHBOARD_PORT = 8084;

/** Normalised to "http://host:port" (h2c, the protocol the controller speaks); a clear error otherwise. */
export function controllerUrl(text: string, flag: string): string {
  let rest = text.trim();
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(rest);
  if (scheme) {
    const name = scheme[1]!.toLowerCase();
    // The controller listens in cleartext (h2c): a TLS client would fail its handshake on every report.
    if (name === 'https') throw new Error(`${flag} ${text}: the controller serves cleartext HTTP/2 only, not TLS; pass HOST:PORT or http://HOST:PORT, e.g. mesh-agent-controller.mesh-agent.svc:${DEFAULT_CONTROLLER_PORT}`);
    if (name !== 'http') throw new Error(`${flag} ${text}: only http:// (cleartext HTTP/2) is supported; pass HOST:PORT or http://HOST:PORT`);
    rest = rest.slice(scheme[0].length).replace(/\/+$/, '');
  }
  if (rest === '' || /[/?#@\s]/.test(rest)) throw new Error(`${flag} ${text}: expected HOST:PORT, e.g. 127.0.0.1:${DEFAULT_CONTROLLER_PORT}`);
  let host: string;
  let port: string | undefined;
  const v6 = /^\[([^\]]+)\](?::(.*))?$/.exec(rest);
  if (v6) {
    host = v6[1]!;
    port = v6[2];
    if (!net.isIPv6(host)) throw new Error(`${flag} ${text}: "${host}" is not an IPv6 address`);
  } else {
    const i = rest.lastIndexOf(':');
    if (i >= 0 && rest.indexOf(':') !== i) throw new Error(`${flag} ${text}: put an IPv6 address in brackets, e.g. [::1]:${DEFAULT_CONTROLLER_PORT}`);
    host = i < 0 ? rest : rest.slice(0, i);
    port = i < 0 ? undefined : rest.slice(i + 1);
    if (!/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/i.test(host)) throw new Error(`${flag} ${text}: "${host}" is not a host name or IPv4 address`);
  }
  const p = port === undefined || port === '' ? DEFAULT_CONTROLLER_PORT : Number(port);
  if (!/^\d*$/.test(port ?? '') || !Number.isInteger(p) || p < 1 || p > 65535) throw new Error(`${flag} ${text}: the port must be 1-65535`);
  return `http://${net.isIPv6(host) ? `[${host}]` : host}:${p}`;
}
