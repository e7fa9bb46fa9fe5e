// SMI TrafficSplit (split.smi-spec.io/v1alpha4), for Maesh and OSM users, converted into the
// route model. spec.service is the root Service clients call; spec.backends split its requests
// by weight across Services of the same namespace, on the port the client called (SMI has no
// ports: "there must be a match between a port on the root service and every backend"). With
// spec.matches (HTTPRouteGroups, specs.smi-spec.io/v1alpha4), only matching requests are split
// and the rest go to the root Service itself. pathRegex is anchored at the start of the path,
// as the spec says; header values are regular expressions searched in the header's value.
// Pure, like gateway-api.ts: the caller says which Services and HTTPRouteGroups exist.
import { checkRegex, MAX_BACKENDS, MAX_MATCHES, MAX_WEIGHT, parseRouteRecord, SAME_PORT, type BackendRef, type HeaderMatch, type RouteMatch, type RouteRecord, type RouteRule } from './route-model.ts';
import { backendPortOf, createdAtOf, frontless, unbalanced, type Condition, type RouteConversion, type ServiceLookup } from './gateway-api.ts';
import { isName } from '../util/record-reader.ts';
import { objectName } from '../k8s/objects.ts';
import { show } from '../util/show.ts';

type Obj = Record<string, any>;

export const SMI_SPLIT_GROUP = 'split.smi-spec.io';
export const SMI_SPECS_GROUP = 'specs.smi-spec.io';

/** An HTTPRouteGroup by namespace and name, as the source last saw it. */
export type RouteGroupLookup = (namespace: string, name: string) => Obj | undefined;

export interface SplitConversion extends Omit<RouteConversion, 'kind'> {
  kind: 'TrafficSplit';
  /** TrafficSplit has no parents list: its conditions go to status.conditions. */
  conditions: Condition[];
  /** The HTTPRouteGroups it read, so a change to one converts it again. */
  groups: string[];
}

class Invalid extends Error {}
function groupMatches(g: Obj, where: string): RouteMatch[] {
  const raw: Obj[] = g?.spec?.matches ?? g?.matches ?? []; // v1alpha2 put matches at the top level
  if (!Array.isArray(raw)) throw new Invalid(`${where}: matches must be a list`);
  const out: RouteMatch[] = [];
  for (const [i, m] of raw.entries()) {
    const w = `${where}.matches[${i}]${typeof m?.name === 'string' ? ` (${m.name})` : ''}`;
    const base: RouteMatch = {};
    if (m?.pathRegex !== undefined && m.pathRegex !== null) {
      if (typeof m.pathRegex !== 'string') throw new Invalid(`${w}.pathRegex: expected a string`);
      if (m.pathRegex !== '.*' && m.pathRegex !== '') {
        const value = `^(?:${m.pathRegex})`;
        try {
          checkRegex(value, `${w}.pathRegex`);
        } catch (e) {
          throw new Invalid((e as Error).message);
        }
        base.path = { type: 'RegularExpression', value };
      }
    }
    if (m?.headers !== undefined && m.headers !== null) {
      // v1alpha4: a map of name -> regex; v1alpha2/3: a list of one-entry maps.
      const entries: Array<[string, unknown]> = Array.isArray(m.headers) ? m.headers.flatMap((h: Obj) => Object.entries(h ?? {})) : Object.entries(m.headers);
      const headers: HeaderMatch[] = [];
      for (const [name, value] of entries) {
        if (!/^[A-Za-z0-9!#$%&'*+\-.^_`|~]{1,256}$/.test(name)) throw new Invalid(`${w}.headers: ${show(name)} is not a header name`);
        if (typeof value !== 'string') throw new Invalid(`${w}.headers.${name}: expected a regular expression`);
        try {
          checkRegex(value, `${w}.headers.${name}`);
        } catch (e) {
          throw new Invalid((e as Error).message);
        }
        headers.push({ name: name.toLowerCase(), type: 'RegularExpression', value });
      }
      if (headers.length > 0) base.headers = headers;
    }
    const methods: unknown[] = m?.methods ?? [];
    if (!Array.isArray(methods)) throw new Invalid(`${w}.methods: expected a list`);
    if (methods.length === 0 || methods.includes('*')) out.push(base);
    else {
      for (const meth of methods) {
        if (typeof meth !== 'string' || !/^[A-Z]{1,32}$/.test(meth)) throw new Invalid(`${w}.methods: ${show(meth)} is not an HTTP method such as GET, or "*"`);
        out.push({ ...base, method: meth });
      }
    }
  }
  return out;
}

/**
 * TrafficSplit -> one route on every port of its root Service: a split rule (its matches, if
 * any) and, with matches, a default rule to the root Service itself.
 */
export function routeFromTrafficSplit(o: Obj, services: ServiceLookup, groups: RouteGroupLookup): SplitConversion {
  const { namespace, name } = objectName(o);
  const what = `TrafficSplit ${namespace}/${name}`;
  const spec: Obj = o?.spec ?? {};
  const problems: string[] = [];
  const conditions: Condition[] = [];
  const read: string[] = [];
  const unresolved: Array<[string, string]> = [];
  let record: RouteRecord | null = null;
  let accepted: Condition = { type: 'Accepted', status: 'True', reason: 'Accepted', message: `splits Service ${namespace}/${spec.service}` };
  try {
    if (!isName(spec.service)) throw new Invalid(`spec.service: ${show(spec.service)} is not a Service name`);
    const root = services(namespace, spec.service);
    if (root === undefined) accepted = { type: 'Accepted', status: 'False', reason: 'NoMatchingParent', message: `Service ${namespace}/${spec.service} not found` };
    // The root is what clients call, its ClusterIP: as a route's parent (gateway-api.ts frontless).
    else if (frontless(root, namespace, spec.service) !== null) accepted = { type: 'Accepted', status: 'False', reason: 'NoMatchingParent', message: frontless(root, namespace, spec.service)! };
    const rawBackends: Obj[] = spec.backends ?? [];
    if (!Array.isArray(rawBackends) || rawBackends.length === 0 || rawBackends.length > MAX_BACKENDS) throw new Invalid(`spec.backends: expected 1 to ${MAX_BACKENDS} backends`);
    // SMI backends have no port: each takes the port the client called (SAME_PORT).
    const backends: BackendRef[] = rawBackends.map((b, i) => {
      const w = `spec.backends[${i}]`;
      if (!isName(b?.service)) throw new Invalid(`${w}.service: ${show(b?.service)} is not a Service name`);
      const weight = typeof b.weight === 'string' && /^\d+$/.test(b.weight) ? Number(b.weight) : b.weight;
      if (!Number.isInteger(weight) || weight < 0 || weight > MAX_WEIGHT) throw new Invalid(`${w}.weight: ${show(b.weight)} is out of range; use a whole number from 0 to ${MAX_WEIGHT}`);
      const ref: BackendRef = { namespace, name: b.service, port: SAME_PORT, weight };
      const svc = services(namespace, b.service);
      if (svc === undefined) {
        ref.problem = `${w}: Service ${namespace}/${b.service} not found`;
        unresolved.push(['BackendNotFound', ref.problem]);
      } else if (root !== undefined && !root.ports.some((p) => backendPortOf(svc, p))) {
        ref.problem = `${w}: Service ${namespace}/${b.service} has none of ${namespace}/${spec.service}'s ports (${root.ports.join(', ')})`;
        unresolved.push(['BackendNotFound', ref.problem]);
      } else if (unbalanced(svc, namespace, b.service) !== null) {
        ref.problem = `${w}: ${unbalanced(svc, namespace, b.service)}`;
        unresolved.push(['BackendNotFound', ref.problem]);
      }
      return ref;
    });
    if (backends.every((b) => b.weight === 0)) throw new Invalid('spec.backends: every weight is 0, so no request could be sent; give one backend a weight above 0');
    const matches: RouteMatch[] = [];
    const rawMatches: Obj[] = spec.matches ?? [];
    if (!Array.isArray(rawMatches)) throw new Invalid('spec.matches: expected a list');
    for (const [i, m] of rawMatches.entries()) {
      const w = `spec.matches[${i}]`;
      if ((m?.kind ?? 'HTTPRouteGroup') !== 'HTTPRouteGroup') throw new Invalid(`${w}.kind: ${show(m?.kind)} is not supported; only HTTPRouteGroup`);
      if (!isName(m?.name)) throw new Invalid(`${w}.name: ${show(m?.name)} is not a name`);
      read.push(`${namespace}/${m.name}`);
      const g = groups(namespace, m.name);
      if (g === undefined) throw new Invalid(`${w}: HTTPRouteGroup ${namespace}/${m.name} not found`);
      matches.push(...groupMatches(g, `HTTPRouteGroup ${namespace}/${m.name}`));
    }
    if (matches.length > MAX_MATCHES) throw new Invalid(`the HTTPRouteGroups have more than ${MAX_MATCHES} matches together`);
    if (rawMatches.length > 0 && matches.length === 0) throw new Invalid('spec.matches: the HTTPRouteGroups have no matches, so nothing would be split');
    const rules: RouteRule[] = [{ name: 'split', matches, backends }];
    if (matches.length > 0) rules.push({ name: 'root', matches: [], backends: [] });
    record = parseRouteRecord({ kind: 'TrafficSplit', namespace, name, createdAt: createdAtOf(o), parents: [{ namespace, name: spec.service }], rules });
  } catch (e) {
    accepted = { type: 'Accepted', status: 'False', reason: 'UnsupportedValue', message: (e as Error).message };
    record = null;
    problems.push(`${what}: not accepted (the last good version keeps serving): ${(e as Error).message}`);
  }
  conditions.push(accepted);
  if (accepted.reason === 'NoMatchingParent') problems.push(`${what}: ${accepted.message}`);
  conditions.push(unresolved.length === 0
    ? { type: 'ResolvedRefs', status: 'True', reason: 'ResolvedRefs', message: 'every backend resolved' }
    : { type: 'ResolvedRefs', status: 'False', reason: unresolved[0]![0], message: unresolved.map((u) => u[1]).join('; ').slice(0, 1024) });
  for (const u of unresolved) problems.push(`${what}: ${u[1]}; that backend's share answers 500`);
  const parents = [{ parentRef: { group: '', kind: 'Service', name: spec.service }, conditions }];
  return { kind: 'TrafficSplit', namespace, name, record, parents, conditions, problems, groups: read };
}
