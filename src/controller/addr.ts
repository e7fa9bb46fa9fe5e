// The controller's address as agents and the CLI take it: HOST:PORT or http://HOST:PORT
// (HOST may be a name: the install's ConfigMap holds mesh-agent-controller.NS.svc:8086).
import * as net from 'node:net';
import { parseServiceHostPort } from '../util/host-port.ts';

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
  const { host, port } = parseServiceHostPort(rest, `${flag} ${text}`, DEFAULT_CONTROLLER_PORT, DEFAULT_CONTROLLER_PORT);
  return `http://${net.isIPv6(host) ? `[${host}]` : host}:${port}`;
}
