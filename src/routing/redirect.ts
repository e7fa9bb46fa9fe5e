// Gateway API's RequestRedirect, compiled once per rule: the proxy answers the request itself
// with a 3xx and a Location built from the request's URL with the filter's parts replaced
// (HTTPRequestRedirectFilter): the scheme (else the client's, http: a meshed client talks plain
// HTTP to its proxy), the hostname (else the request's Host / :authority without its port), the
// port (else the scheme's well-known port when the filter names a scheme, else the port the
// client called, as the spec's "Gateway Listener port"), left out when it is the scheme's
// default (80 for http, 443 for https), and the path (ReplaceFullPath, or ReplacePrefixMatch of
// the rule's one PathPrefix match), the query kept. No upstream is involved. Only rules with the
// filter compile one; their requests are the only ones that pay for the string building.
import type { Redirect } from './route-model.ts';
import { originForm } from '../util/request-target.ts';

const REASONS: Record<number, string> = { 301: 'Moved Permanently', 302: 'Found', 303: 'See Other', 307: 'Temporary Redirect', 308: 'Permanent Redirect' };
const DEFAULT_PORT: Record<string, number> = { http: 80, https: 443 };
/** A Host we can put in a Location as is: a name or IPv4 address, or a bracketed IPv6 one. */
const SAFE_HOST = /^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])$/;

export class CompiledRedirect {
  /** As the route gave it (diagnostics policy shows it). */
  readonly spec: Redirect;
  readonly status: number;
  /** The HTTP/1 reason phrase of the status. */
  readonly reason: string;
  /** The prefix a ReplacePrefixMatch replaces, its trailing "/" removed ("/" becomes ""); null for none. */
  private readonly prefix: string | null;

  constructor(r: Redirect) {
    this.spec = r;
    this.status = r.statusCode;
    this.reason = REASONS[r.statusCode] ?? 'Redirect';
    this.prefix = r.path?.type === 'ReplacePrefixMatch' ? r.path.prefix.replace(/\/+$/, '') : null;
  }

  /**
   * The Location for a request: `target` as the client sent it (origin- or absolute-form, or
   * :path), `authority` its Host or :authority ('' when it sent none), `service` the Service's
   * authority (name.namespace.svc.cluster.local:port) for a request without a usable one, `port`
   * the port the client called.
   */
  location(target: string, authority: string, service: string, port: number): string {
    const r = this.spec;
    const scheme = r.scheme ?? 'http';
    const host = r.hostname ?? hostOf(authority) ?? hostOf(service) ?? 'localhost';
    const p = r.port ?? (r.scheme !== undefined ? DEFAULT_PORT[scheme]! : port);
    const hostPort = p === DEFAULT_PORT[scheme] ? host : `${host}:${p}`;
    const origin = originForm(target);
    let path = origin.charCodeAt(0) === 47 /* / */ ? origin : '/';
    const q = path.indexOf('?');
    const query = q < 0 ? '' : path.slice(q);
    if (q >= 0) path = path.slice(0, q);
    if (r.path?.type === 'ReplaceFullPath') path = r.path.value;
    else if (r.path !== undefined) path = replacePrefix(path, this.prefix!, r.path.value);
    return `${scheme}://${hostPort}${path}${query}`;
  }
}

/**
 * `path` (which the rule's PathPrefix matched: `prefix` is it, element by element, without a
 * trailing "/") with that prefix replaced by `by`: /foo/bar with prefix /foo by /baz is
 * /baz/bar, by / is /bar; /foo itself becomes /baz (or /). Prefix "/" (given as ""): the
 * replacement goes in front, /x by /v2 is /v2/x, and / is /v2.
 */
export function replacePrefix(path: string, prefix: string, by: string): string {
  // Prefix "/" matched "/" whole, as /foo matches /foo: the replacement alone.
  if (prefix === '' && path === '/') return by;
  const rest = path.startsWith(prefix) ? path.slice(prefix.length) : path;
  const head = rest.startsWith('/') || rest === '' ? by.replace(/\/+$/, '') : by;
  const out = head + rest;
  return out === '' ? '/' : out;
}

/** The host of a Host / :authority value without its port; null when it is missing or odd. */
function hostOf(authority: string): string | null {
  let h = authority;
  if (h.startsWith('[')) {
    const close = h.indexOf(']');
    h = close < 0 ? '' : h.slice(0, close + 1);
  } else {
    const colon = h.indexOf(':');
    if (colon >= 0) h = h.slice(0, colon);
  }
  return SAFE_HOST.test(h) ? h : null;
}
