// Inbound authorization as plain data (docs/policy.md): a pod's default policy (Linkerd's
// values, from an annotation or the cluster default) and SMI access control (TrafficTarget with
// its HTTPRouteGroups and TCPRoutes, converted once by the controller into AccessRecords that the
// discovery stream carries). The agent of the destination's node compiles what applies to each
// of its pods (authorize.ts) and decides per connection and per request.
import { isName, isPort, recordReader, type Fail } from '../util/record-reader.ts';
import { regexProblem } from '../util/regex-check.ts';
import { show } from '../util/show.ts';
import { plainIp } from '../util/ip.ts';

/**
 * Linkerd's default inbound policies, with Linkerd's spelling and meaning. `audit` (Linkerd 2.15+)
 * admits everyone like all-unauthenticated, but what it admits is counted under authz "audit", so
 * an operator sees what enforcement would deny before turning it on.
 */
export const DEFAULT_POLICIES = ['all-unauthenticated', 'all-authenticated', 'cluster-authenticated', 'cluster-unauthenticated', 'deny', 'audit'] as const;
export type DefaultPolicy = (typeof DEFAULT_POLICIES)[number];
export const DEFAULT_INBOUND_POLICY: DefaultPolicy = 'all-unauthenticated';

/** Ours wins over Linkerd's when both are set on the same object. */
export const POLICY_ANNOTATION = 'mesh-agent.io/default-inbound-policy';
export const LINKERD_POLICY_ANNOTATION = 'config.linkerd.io/default-inbound-policy';

/** Linkerd's default clusterNetworks: the private ranges a cluster's pods and nodes use. */
export const DEFAULT_CLUSTER_NETWORKS = '10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16';

export const SMI_ACCESS_GROUP = 'access.smi-spec.io';
export const SMI_SPECS_GROUP = 'specs.smi-spec.io';
export const TRAFFIC_TARGET_VERSION = 'access.smi-spec.io/v1alpha3';
export const SMI_SPECS_VERSION = 'specs.smi-spec.io/v1alpha4';

export class PolicyError extends Error {}

export function parseDefaultPolicy(value: string, where = 'default inbound policy'): DefaultPolicy {
  const v = value.trim();
  if ((DEFAULT_POLICIES as readonly string[]).includes(v)) return v as DefaultPolicy;
  throw new PolicyError(`${where}: ${show(value)} is not a policy; use one of ${DEFAULT_POLICIES.join(', ')}`);
}

/** The policies that restrict who may connect: their pods fail closed (docs/policy.md). Audit denies no one. */
export function restricts(p: DefaultPolicy): boolean {
  return p !== 'all-unauthenticated' && p !== 'audit';
}

/** A workload identity: a ServiceAccount. */
export interface Identity {
  namespace: string;
  serviceAccount: string;
}

export const DEFAULT_TRUST_DOMAIN = 'cluster.local';

/** SPIFFE ID, as ztunnel spells a workload's identity (Linkerd's client_id label carries it). */
export function spiffeId(id: Identity, trustDomain = DEFAULT_TRUST_DOMAIN): string {
  return `spiffe://${trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;
}

/** spiffe://<td>/ns/<ns>/sa/<sa> -> the identity, or null for anything else. */
export function parseSpiffeId(s: string): Identity | null {
  const m = /^spiffe:\/\/[^/]+\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(s);
  return m && isName(m[1]) && isName(m[2]) ? { namespace: m[1]!, serviceAccount: m[2]! } : null;
}

// ---- IPv4 networks ----

export interface Cidr {
  base: number;
  mask: number;
  text: string;
}

function ipToInt(ip: string): number | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip);
  if (!m) return null;
  let n = 0;
  for (let i = 1; i <= 4; i++) {
    const b = Number(m[i]);
    if (b > 255) return null;
    n = n * 256 + b;
  }
  return n >>> 0;
}

/** "10.0.0.0/8,192.168.0.0/16" (IPv6 entries are skipped: the capture is IPv4 only). */
export function parseNetworks(spec: string, where = 'cluster networks'): Cidr[] {
  const out: Cidr[] = [];
  for (const raw of spec.split(',')) {
    const t = raw.trim();
    if (t === '') continue;
    if (t.includes(':')) continue;
    const m = /^([\d.]+)(?:\/(\d{1,2}))?$/.exec(t);
    const ip = m ? ipToInt(m[1]!) : null;
    const bits = m?.[2] === undefined ? 32 : Number(m[2]);
    if (ip === null || bits > 32) throw new PolicyError(`${where}: ${show(t)} is not an IPv4 network; write it as 10.0.0.0/8`);
    const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
    out.push({ base: (ip & mask) >>> 0, mask, text: `${m![1]}/${bits}` });
  }
  return out;
}

export function inNetworks(ip: string, nets: readonly Cidr[]): boolean {
  const n = ipToInt(plainIp(ip));
  if (n === null) return false;
  return nets.some((c) => ((n & c.mask) >>> 0) === c.base);
}

// ---- SMI access control, converted (smi-access.ts) ----

/** One HTTPRouteGroup match as a TrafficTarget allows it. Regular expressions match the whole value. */
export interface AccessHttpMatch {
  /** The match's name in its HTTPRouteGroup. */
  name: string;
  pathRegex?: string;
  /** Upper-case; absent: any method ("*"). */
  methods?: string[];
  /** Lower-case header name -> regular expression for the whole value. */
  headers?: Array<{ name: string; regex: string }>;
}

export type AccessRule =
  | { kind: 'HTTPRouteGroup'; name: string; matches: AccessHttpMatch[] }
  /** ports absent: every port. */
  | { kind: 'TCPRoute'; name: string; ports?: number[] };

/** A TrafficTarget with the route objects it names resolved, as the agents receive it. */
export interface AccessRecord {
  namespace: string;
  name: string;
  destination: { serviceAccount: string; namespace: string; port?: number };
  sources: Identity[];
  rules: AccessRule[];
  /**
   * Set when the object's current version could not be converted: this record is its last good
   * version, still enforced; the reason is shown by the destination's agents (status, log).
   */
  problems?: string[];
}

export const accessKey = (r: { namespace: string; name: string }): string => `TrafficTarget/${r.namespace}/${r.name}`;

export const MAX_ACCESS_SOURCES = 256;
export const MAX_ACCESS_RULES = 64;
export const MAX_ACCESS_MATCHES = 128;

const read = recordReader((m) => new PolicyError(m));
const fail: Fail = read.fail;
const { obj, name, list } = read;

export function checkRegex(v: unknown, where: string): string {
  if (typeof v !== 'string' || v.length === 0) fail(where, 'expected a regular expression');
  const problem = regexProblem(v);
  if (problem !== null) fail(where, problem);
  return v;
}

function parseHttpMatch(v: unknown, where: string): AccessHttpMatch {
  const o = obj(v, where);
  const out: AccessHttpMatch = { name: typeof o.name === 'string' && o.name.length <= 253 ? o.name : fail(`${where}.name`, `expected a match name, got ${show(o.name)}`) };
  if (o.pathRegex !== undefined) out.pathRegex = checkRegex(o.pathRegex, `${where}.pathRegex`);
  if (o.methods !== undefined) {
    out.methods = list(o.methods, `${where}.methods`, 32).map((m, i) => {
      if (typeof m !== 'string' || !/^[A-Z]{1,32}$/.test(m)) fail(`${where}.methods[${i}]`, `expected an upper-case HTTP method, got ${show(m)}`);
      return m;
    });
  }
  if (o.headers !== undefined) {
    out.headers = list(o.headers, `${where}.headers`, 16).map((h, i) => {
      const ho = obj(h, `${where}.headers[${i}]`);
      if (typeof ho.name !== 'string' || !/^[!#$%&'*+\-.^_`|~0-9a-z]{1,256}$/.test(ho.name)) fail(`${where}.headers[${i}].name`, `expected a lower-case header name, got ${show(ho.name)}`);
      return { name: ho.name, regex: checkRegex(ho.regex, `${where}.headers[${i}].regex`) };
    });
  }
  return out;
}

function parseRule(v: unknown, where: string): AccessRule {
  const o = obj(v, where);
  const nm = name(o.name, `${where}.name`);
  if (o.kind === 'HTTPRouteGroup') {
    return { kind: 'HTTPRouteGroup', name: nm, matches: list(o.matches, `${where}.matches`, MAX_ACCESS_MATCHES).map((m, i) => parseHttpMatch(m, `${where}.matches[${i}]`)) };
  }
  if (o.kind === 'TCPRoute') {
    const r: AccessRule = { kind: 'TCPRoute', name: nm };
    if (o.ports !== undefined) {
      r.ports = list(o.ports, `${where}.ports`, 256).map((p, i) => (isPort(p) ? p : fail(`${where}.ports[${i}]`, `expected a port 1-65535, got ${show(p)}`)));
    }
    return r;
  }
  fail(`${where}.kind`, `expected HTTPRouteGroup or TCPRoute, got ${show(o.kind)}`);
}

function parseIdentity(v: unknown, where: string): Identity {
  const o = obj(v, where);
  return { namespace: name(o.namespace, `${where}.namespace`), serviceAccount: name(o.serviceAccount, `${where}.serviceAccount`) };
}

/** Validates a record as the agent receives it (the controller gates its output with the same parser). */
export function parseAccessRecord(v: unknown): AccessRecord {
  const o = obj(v, 'access');
  const ns = name(o.namespace, 'access.namespace');
  const nm = name(o.name, 'access.name');
  const w = `TrafficTarget ${ns}/${nm}`;
  const d = obj(o.destination, `${w}: destination`);
  const destination: AccessRecord['destination'] = { serviceAccount: name(d.serviceAccount, `${w}: destination.serviceAccount`), namespace: name(d.namespace, `${w}: destination.namespace`) };
  if (d.port !== undefined) destination.port = isPort(d.port) ? d.port : fail(`${w}: destination.port`, `expected a port 1-65535, got ${show(d.port)}`);
  const out: AccessRecord = {
    namespace: ns,
    name: nm,
    destination,
    sources: list(o.sources, `${w}: sources`, MAX_ACCESS_SOURCES).map((s, i) => parseIdentity(s, `${w}: sources[${i}]`)),
    rules: list(o.rules, `${w}: rules`, MAX_ACCESS_RULES).map((r, i) => parseRule(r, `${w}: rules[${i}]`)),
  };
  if (o.problems !== undefined) {
    out.problems = list(o.problems, `${w}: problems`, 16).map((p, i) => (typeof p === 'string' && p.length <= 2048 ? p : fail(`${w}: problems[${i}]`, 'expected a short string')));
  }
  return out;
}

/** "TrafficTarget/ns/name" -> its parts, or null. */
export function parseAccessKey(key: string): { namespace: string; name: string } | null {
  const m = /^TrafficTarget\/([^/]+)\/([^/]+)$/.exec(key);
  return m && isName(m[1]) && isName(m[2]) ? { namespace: m[1]!, name: m[2]! } : null;
}
