// An HTTPRoute's match as Kubernetes objects write it, read into the route model (route-model.ts
// RouteMatch). Gateway API's HTTPRoute (gateway.networking.k8s.io) and Linkerd's
// (policy.linkerd.io v1beta1-v1beta3) share this schema, so one reading serves both uses: the
// routes of a Service (gateway-api.ts) and the routes of a Linkerd Server that an
// AuthorizationPolicy allows (policy/linkerd-policy.ts). route-match.ts matches what this gives.
import { checkRegex, MAX_HEADERS, MAX_QUERY_PARAMS, TOKEN, type HeaderMatch, type QueryParamMatch, type RouteMatch } from './route-model.ts';
import { show } from '../util/show.ts';

type Obj = Record<string, any>;

/** A match the object cannot have: the message names the field and what to write. */
export class InvalidMatch extends Error {}

/** Gateway API's regular expressions match the whole value (as Envoy's RE2 does); the model's search. */
export const fullMatch = (re: string) => `^(?:${re})$`;

export function checkRegexOr(v: string, where: string): void {
  try {
    checkRegex(v, where);
  } catch (e) {
    throw new InvalidMatch((e as Error).message);
  }
}

export function headerMatches(v: unknown, where: string): HeaderMatch[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.length > MAX_HEADERS) throw new InvalidMatch(`${where}: expected a list of at most ${MAX_HEADERS} header matches`);
  const out: HeaderMatch[] = [];
  for (const [i, h] of v.entries()) {
    const w = `${where}[${i}]`;
    const type = h?.type ?? 'Exact';
    if (type !== 'Exact' && type !== 'RegularExpression') throw new InvalidMatch(`${w}.type: ${show(type)} is not supported; use Exact or RegularExpression`);
    if (typeof h?.name !== 'string' || !TOKEN.test(h.name)) throw new InvalidMatch(`${w}.name: ${show(h?.name)} is not a header name`);
    if (typeof h?.value !== 'string' || h.value.length > 4096) throw new InvalidMatch(`${w}.value: expected a string`);
    const name = h.name.toLowerCase();
    if (type === 'RegularExpression') checkRegexOr(h.value, `${w}.value`);
    // The spec: of entries with equivalent names, only the first counts.
    if (!out.some((x) => x.name === name)) out.push({ name, type, value: type === 'RegularExpression' ? fullMatch(h.value) : h.value });
  }
  return out.length > 0 ? out : undefined;
}

function queryMatches(v: unknown, where: string): QueryParamMatch[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.length > MAX_QUERY_PARAMS) throw new InvalidMatch(`${where}: expected a list of at most ${MAX_QUERY_PARAMS} query parameter matches`);
  const out: QueryParamMatch[] = [];
  for (const [i, q] of v.entries()) {
    const w = `${where}[${i}]`;
    const type = q?.type ?? 'Exact';
    if (type !== 'Exact' && type !== 'RegularExpression') throw new InvalidMatch(`${w}.type: ${show(type)} is not supported; use Exact or RegularExpression`);
    if (typeof q?.name !== 'string' || !TOKEN.test(q.name)) throw new InvalidMatch(`${w}.name: ${show(q?.name)} is not a query parameter name; use letters, digits and !#$%&'*+-.^_\`|~ (at most 256)`);
    if (typeof q?.value !== 'string' || q.value === '' || q.value.length > 1024) throw new InvalidMatch(`${w}.value: expected a string of 1 to 1024 characters`);
    if (type === 'RegularExpression') checkRegexOr(q.value, `${w}.value`);
    // Names are case-sensitive; of entries with the same name, only the first counts (the spec).
    if (!out.some((x) => x.name === q.name)) out.push({ name: q.name, type, value: type === 'RegularExpression' ? fullMatch(q.value) : q.value });
  }
  return out.length > 0 ? out : undefined;
}

/**
 * One HTTPRoute match (path, method, headers, queryParams), defaults filled in as the CRDs' are: a
 * path absent is PathPrefix "/", a path's type absent PathPrefix, a header's or query
 * parameter's Exact. Throws InvalidMatch naming the field.
 */
export function httpMatch(m: Obj, where: string): RouteMatch {
  const out: RouteMatch = {};
  const path = m?.path ?? { type: 'PathPrefix', value: '/' };
  const type = path?.type ?? 'PathPrefix';
  const value = path?.value ?? '/';
  if (type !== 'Exact' && type !== 'PathPrefix' && type !== 'RegularExpression') throw new InvalidMatch(`${where}.path.type: ${show(type)} is not supported; use Exact, PathPrefix or RegularExpression`);
  if (typeof value !== 'string' || value.length > 1024) throw new InvalidMatch(`${where}.path.value: expected a string of at most 1024 characters`);
  if (type === 'RegularExpression') checkRegexOr(value, `${where}.path.value`);
  else if (!value.startsWith('/')) throw new InvalidMatch(`${where}.path.value: ${show(value)} must start with "/"`);
  // PathPrefix "/" matches everything: leave it out, so matching skips it.
  if (!(type === 'PathPrefix' && value === '/')) out.path = { type, value: type === 'RegularExpression' ? fullMatch(value) : value };
  if (m?.method !== undefined && m.method !== null) {
    if (typeof m.method !== 'string' || !/^[A-Z]{1,32}$/.test(m.method)) throw new InvalidMatch(`${where}.method: ${show(m.method)} is not an HTTP method such as GET`);
    out.method = m.method;
  }
  const headers = headerMatches(m?.headers, `${where}.headers`);
  if (headers) out.headers = headers;
  const query = queryMatches(m?.queryParams, `${where}.queryParams`);
  if (query) out.queryParams = query;
  return out;
}
