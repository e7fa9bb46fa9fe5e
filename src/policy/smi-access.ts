// SMI access control (access.smi-spec.io/v1alpha3 TrafficTarget, with specs.smi-spec.io/v1alpha4
// HTTPRouteGroup and TCPRoute) converted into the AccessRecord the agents enforce. Pure: the
// caller says which route objects exist. Decisions where the spec is loose (docs/policy.md):
// - the destination ServiceAccount is in the TrafficTarget's namespace (as OSM requires);
// - pathRegex and header regexes match the whole value (as Envoy's safe_regex in OSM does): a
//   rule allowing "/ok" does not allow "/okay" or "/ok/../admin";
// - a rule's `matches` names the HTTPRouteGroup matches it allows; absent or empty, all of them;
// - a TCPRoute without ports allows every port of the destination.
// A TrafficTarget that refers to a route object that does not exist is not converted: a missing
// HTTPRouteGroup must not turn into "allow nothing" silently, nor into "allow everything".
import { isName } from '../util/record-reader.ts';
import { objectName } from '../k8s/objects.ts';
import {
  checkRegex, MAX_ACCESS_MATCHES, MAX_ACCESS_RULES, MAX_ACCESS_SOURCES, parseAccessRecord, PolicyError,
  SMI_SPECS_GROUP, type AccessHttpMatch, type AccessRecord, type AccessRule, type Identity,
} from './model.ts';
import { show } from '../util/show.ts';

type Obj = Record<string, any>;

/** A route object (HTTPRouteGroup or TCPRoute) by namespace and name, as the source last saw it. */
export type RouteObjectLookup = (kind: 'HTTPRouteGroup' | 'TCPRoute', namespace: string, name: string) => Obj | undefined;

export interface AccessConversion {
  namespace: string;
  name: string;
  /** null when this version could not be converted (problems say why). */
  record: AccessRecord | null;
  problems: string[];
  /** "HTTPRouteGroup/ns/name", "TCPRoute/ns/name": a change to one converts this again. */
  reads: string[];
}

class Invalid extends Error {}

function regex(v: unknown, where: string): string {
  try {
    checkRegex(v, where);
  } catch (e) {
    throw new Invalid((e as Error).message);
  }
  return v as string;
}

function httpMatches(g: Obj, where: string): AccessHttpMatch[] {
  const raw: unknown = g?.spec?.matches ?? [];
  if (!Array.isArray(raw)) throw new Invalid(`${where}: spec.matches must be a list`);
  return raw.map((m: Obj, i: number) => {
    const w = `${where}.spec.matches[${i}]`;
    if (typeof m?.name !== 'string' || m.name === '') throw new Invalid(`${w}.name: every match needs a name (a TrafficTarget names the matches it allows)`);
    const out: AccessHttpMatch = { name: m.name };
    if (m.pathRegex !== undefined && m.pathRegex !== null && m.pathRegex !== '' && m.pathRegex !== '.*') out.pathRegex = regex(m.pathRegex, `${w}.pathRegex`);
    const methods: unknown = m.methods ?? [];
    if (!Array.isArray(methods)) throw new Invalid(`${w}.methods: expected a list`);
    if (methods.length > 0 && !methods.includes('*')) {
      out.methods = methods.map((x) => {
        if (typeof x !== 'string' || !/^[A-Z]{1,32}$/.test(x)) throw new Invalid(`${w}.methods: ${show(x)} is not an HTTP method such as GET, or "*"`);
        return x;
      });
    }
    if (m.headers !== undefined && m.headers !== null) {
      const entries: Array<[string, unknown]> = Array.isArray(m.headers) ? m.headers.flatMap((h: Obj) => Object.entries(h ?? {})) : Object.entries(m.headers);
      if (entries.length > 0) {
        out.headers = entries.map(([n, v]) => {
          if (!/^[A-Za-z0-9!#$%&'*+\-.^_`|~]{1,256}$/.test(n)) throw new Invalid(`${w}.headers: ${show(n)} is not a header name`);
          return { name: n.toLowerCase(), regex: regex(v, `${w}.headers.${n}`) };
        });
      }
    }
    return out;
  });
}

function tcpPorts(r: Obj, where: string): number[] | undefined {
  const ports: unknown = r?.spec?.matches?.ports;
  if (ports === undefined || ports === null) return undefined;
  if (!Array.isArray(ports)) throw new Invalid(`${where}: spec.matches.ports must be a list`);
  if (ports.length === 0) return undefined;
  return ports.map((p) => {
    const n = typeof p === 'string' && /^\d+$/.test(p) ? Number(p) : p;
    if (!Number.isInteger(n) || n < 1 || n > 65535) throw new Invalid(`${where}: spec.matches.ports: ${show(p)} is not a port 1-65535`);
    return n as number;
  });
}

function serviceAccount(v: Obj, where: string, defaultNs: string): Identity {
  if ((v?.kind ?? 'ServiceAccount') !== 'ServiceAccount') throw new Invalid(`${where}.kind: ${show(v?.kind)} is not supported; only ServiceAccount`);
  if (!isName(v?.name)) throw new Invalid(`${where}.name: ${show(v?.name)} is not a ServiceAccount name`);
  const ns = v.namespace ?? defaultNs;
  if (!isName(ns)) throw new Invalid(`${where}.namespace: ${show(ns)} is not a namespace`);
  return { namespace: ns, serviceAccount: v.name };
}

export function accessFromTrafficTarget(o: Obj, lookup: RouteObjectLookup): AccessConversion {
  const { namespace, name } = objectName(o);
  const what = `TrafficTarget ${namespace}/${name}`;
  const reads: string[] = [];
  const spec: Obj = o?.spec ?? {};
  try {
    const dest = serviceAccount(spec.destination, 'spec.destination', namespace);
    if (dest.namespace !== namespace) throw new Invalid(`spec.destination.namespace: ${dest.namespace} is not the TrafficTarget's namespace ${namespace}; a TrafficTarget grants access to a ServiceAccount of its own namespace`);
    const destination: AccessRecord['destination'] = { serviceAccount: dest.serviceAccount, namespace };
    const port = spec.destination.port;
    if (port !== undefined && port !== null) {
      if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Invalid(`spec.destination.port: ${show(port)} is not a port 1-65535`);
      destination.port = port;
    }
    const rawSources: unknown = spec.sources;
    if (!Array.isArray(rawSources) || rawSources.length === 0) throw new Invalid('spec.sources: expected at least one ServiceAccount');
    if (rawSources.length > MAX_ACCESS_SOURCES) throw new Invalid(`spec.sources: more than ${MAX_ACCESS_SOURCES}`);
    const sources = rawSources.map((s, i) => serviceAccount(s, `spec.sources[${i}]`, namespace));
    const rawRules: unknown = spec.rules;
    if (!Array.isArray(rawRules) || rawRules.length === 0) throw new Invalid('spec.rules: expected at least one HTTPRouteGroup or TCPRoute');
    if (rawRules.length > MAX_ACCESS_RULES) throw new Invalid(`spec.rules: more than ${MAX_ACCESS_RULES}`);
    const rules: AccessRule[] = rawRules.map((r: Obj, i: number) => {
      const w = `spec.rules[${i}]`;
      const kind = r?.kind;
      if (kind !== 'HTTPRouteGroup' && kind !== 'TCPRoute') throw new Invalid(`${w}.kind: ${show(kind)} is not supported; use HTTPRouteGroup or TCPRoute (${SMI_SPECS_GROUP})`);
      if (!isName(r?.name)) throw new Invalid(`${w}.name: ${show(r?.name)} is not a name`);
      reads.push(`${kind}/${namespace}/${r.name}`);
      const ref = lookup(kind, namespace, r.name);
      if (ref === undefined) throw new Invalid(`${w}: ${kind} ${namespace}/${r.name} not found`);
      if (kind === 'TCPRoute') {
        const ports = tcpPorts(ref, `TCPRoute ${namespace}/${r.name}`);
        return ports === undefined ? { kind, name: r.name } : { kind, name: r.name, ports };
      }
      const all = httpMatches(ref, `HTTPRouteGroup ${namespace}/${r.name}`);
      const wanted: unknown = r.matches ?? [];
      if (!Array.isArray(wanted)) throw new Invalid(`${w}.matches: expected a list of match names`);
      let matches = all;
      if (wanted.length > 0) {
        matches = wanted.map((m) => {
          const hit = all.find((x) => x.name === m);
          if (hit === undefined) throw new Invalid(`${w}.matches: HTTPRouteGroup ${namespace}/${r.name} has no match named ${show(m)} (it has ${all.map((x) => x.name).join(', ') || 'none'})`);
          return hit;
        });
      }
      if (matches.length === 0) throw new Invalid(`${w}: HTTPRouteGroup ${namespace}/${r.name} has no matches, so the rule would allow nothing`);
      if (matches.length > MAX_ACCESS_MATCHES) throw new Invalid(`${w}: more than ${MAX_ACCESS_MATCHES} matches`);
      return { kind, name: r.name, matches };
    });
    const record = parseAccessRecord({ namespace, name, destination, sources, rules });
    return { namespace, name, record, problems: [], reads };
  } catch (e) {
    if (!(e instanceof Invalid) && !(e instanceof PolicyError)) throw e;
    return { namespace, name, record: null, problems: [`${what}: not accepted: ${e.message}`], reads };
  }
}
