// The dashboard API's query parameters: every one is checked, and a bad one is a 4xx whose
// message the page shows as it is (what is wrong and what to send instead). Pure.
import { parseWindow, resourceKind, SHORT } from '../controller/stat.ts';
import { checkTapRequest } from '../controller/tap-request.ts';
import type { TapRequest } from '../controller/protocol.ts';
import type { WorkloadRef } from './views.ts';

export class ApiError extends Error {
  readonly status: number;
  constructor(status: number, msg: string) {
    super(msg);
    this.status = status;
  }
}

/** The API's routes and the parameters each takes; anything else is refused rather than ignored. */
export const ROUTES: Readonly<Record<string, readonly string[]>> = {
  '/api/health': [],
  '/api/namespaces': ['window'],
  '/api/workloads': ['namespace', 'window'],
  '/api/edges': ['namespace', 'window'],
  '/api/workload': ['namespace', 'kind', 'name', 'window'],
  '/api/nodes': [],
  '/api/events': [],
  '/api/tap': ['namespace', 'resource', 'to', 'toNamespace', 'method', 'path', 'maxRps'],
};

export const DEFAULT_WINDOW = '1m';
export const DEFAULT_TAP_RPS = 100;

/** Refuses parameters the route does not take, and any given twice. */
export function checkParams(route: string, q: URLSearchParams): void {
  const allowed = ROUTES[route];
  if (!allowed) throw new ApiError(404, `no API route ${route}; the routes are ${Object.keys(ROUTES).join(', ')}`);
  const seen = new Set<string>();
  for (const k of q.keys()) {
    if (!allowed.includes(k)) {
      throw new ApiError(400, allowed.length ? `${route} does not take "${k}"; it takes ${allowed.join(', ')}` : `${route} takes no parameters (got "${k}")`);
    }
    if (seen.has(k)) throw new ApiError(400, `${route}: "${k}" is given more than once`);
    seen.add(k);
  }
}

export function windowParam(q: URLSearchParams, retentionMs: number): { text: string; ms: number } {
  const text = q.get('window') ?? DEFAULT_WINDOW;
  try {
    return { text, ms: parseWindow(text, retentionMs) };
  } catch (e) {
    throw new ApiError(400, (e as Error).message);
  }
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

export function namespaceParam(q: URLSearchParams, name = 'namespace'): string {
  const ns = q.get(name);
  if (ns === null || ns === '') throw new ApiError(400, `${name} is required, e.g. ?${name}=default`);
  if (ns.length > 63 || !DNS_LABEL.test(ns)) throw new ApiError(400, `${name} "${ns.slice(0, 80)}" is not a namespace name (lower-case letters, digits and '-', at most 63)`);
  return ns;
}

/** kind (deploy, deployment, sts, ..., pod) and name of a workload. */
export function workloadParam(q: URLSearchParams): WorkloadRef {
  const namespace = namespaceParam(q);
  const kindText = q.get('kind');
  if (!kindText) throw new ApiError(400, 'kind is required: deployment, statefulset, daemonset, job, replicaset or pod');
  let kind: string;
  try {
    kind = resourceKind(kindText);
  } catch (e) {
    throw new ApiError(400, (e as Error).message);
  }
  if (kind === 'namespace') throw new ApiError(400, 'kind namespace is not a workload; open the namespace page (/api/workloads?namespace=NAME)');
  const name = q.get('name');
  if (!name) throw new ApiError(400, `name is required: the ${kind}'s name`);
  if (name.length > 253 || !DNS_SUBDOMAIN.test(name)) throw new ApiError(400, `name "${name.slice(0, 80)}" is not a ${kind} name (lower-case letters, digits, '-' and '.', at most 253)`);
  return { namespace, kind, name };
}

/** A tap from the page: the same request, and the same bounds, as `mesh-agent tap`. */
export function tapParams(q: URLSearchParams): TapRequest {
  const namespace = namespaceParam(q);
  const resource = q.get('resource');
  if (!resource) throw new ApiError(400, 'resource is required: TYPE/NAME, e.g. deploy/web');
  const rpsText = q.get('maxRps');
  const maxRps = rpsText === null || rpsText === '' ? DEFAULT_TAP_RPS : /^\d+(\.\d+)?$/.test(rpsText) ? Number(rpsText) : NaN;
  const opt = (k: string) => (q.get(k) === null || q.get(k) === '' ? undefined : q.get(k)!);
  const toNamespace = opt('toNamespace');
  if (toNamespace !== undefined) namespaceParam(q, 'toNamespace');
  try {
    const req = checkTapRequest({ resource, namespace, to: opt('to'), toNamespace, method: opt('method'), path: opt('path'), maxRps });
    return req;
  } catch (e) {
    throw new ApiError(400, (e as Error).message.replace(/^tap request: /, ''));
  }
}

/** "deploy/web" as the API and the tap name a workload. */
export const resourceName = (w: WorkloadRef) => `${SHORT[w.kind] ?? w.kind}/${w.name}`;
