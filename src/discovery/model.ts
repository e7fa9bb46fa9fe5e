// What the controller tells every agent about the cluster (DESIGN.md, "Discovery"): Services,
// their EndpointSlices and every pod's workload, as plain data shared by both ends. The stream
// carries one object per line, per EndpointSlice rather than per Service, so one endpoint's
// change costs one slice (at most 100 endpoints), never the whole Service or the world.
//
// Stream (newline-delimited JSON, controller -> agent, one per agent connection):
//   {"type":"reset","version":1}                 a full snapshot follows
//   {"type":"service","op":"set","service":{..}}  {"type":"service","op":"delete","key":"ns/name"}
//   {"type":"slice","op":"set","slice":{..}}      {"type":"slice","op":"delete","key":"ns/name"}
//   {"type":"pod","op":"set","pod":{..}}          {"type":"pod","op":"delete","key":"ns/name"}
//   {"type":"route","op":"set","route":{..}}      {"type":"route","op":"delete","key":"Kind/ns/name"}   (version 2)
//   {"type":"access","op":"set","access":{..}}    {"type":"access","op":"delete","key":"TrafficTarget/ns/name"}   (version 3)
//   route records with query parameter matches and a RequestHeaderModifier                                (version 4)
//   route records with a ResponseHeaderModifier and a RequestRedirect                                     (version 5)
//   route records with header modifiers on backends                                                       (version 6)
//   access records of Linkerd Servers ({"kind":"Server",..}, key "Server/ns/name")                      (version 7)
//   Server records whose route matches are the route model's (anchored regexes, queryParams),           (version 8)
//   accessPolicy audit, ServerAuthorization authorizations (kind, clusterNetworks)
//   {"type":"synced"}                             the snapshot is complete; deltas follow
// The agent keeps serving its previous state until "synced" and swaps then, so a reconnect
// never leaves a window with half a world.

/**
 * 2 added route records (src/routing/route-model.ts), 3 access records (SMI TrafficTargets,
 * src/policy/model.ts), 4 a route match's queryParams and a rule's requestHeaders, 5 a rule's
 * responseHeaders and redirect, 6 a backend's requestHeaders and responseHeaders, 7 Linkerd
 * Server records, 8 their routes' matches in the route model's shape (server-model.ts), audit and
 * ServerAuthorization. An agent reads versions 1 to 8; an older agent refuses a newer controller with the error below, rather
 * than choking on its first line of a new type, or (4, 5, 6, 8) applying a record whose new fields
 * its parser does not know: a query match read without its queryParams matches every request (8:
 * an AuthorizationPolicy on it would allow every query), a redirect rule read without its redirect
 * sends to the parent Service, a backend read without its header edits gets requests without
 * them. It keeps its last state until it is upgraded. A newer agent reads an older stream as it
 * was meant (parseMessage's version: 7's Server route regexes were matched whole, unanchored).
 */
import { parseRouteKey, parseStreamedRoute, RouteError, type RouteRecord } from '../routing/route-model.ts';
import { parseAccessKey, parseAccessRecord, PolicyError, type AccessRecord } from '../policy/model.ts';
import { parseServerKey, parseServerRecord, type ServerRecord } from '../policy/server-model.ts';
import { MAX_PORT_RANGES } from '../proxy/ports.ts';
import { show } from '../util/show.ts';
import { DNS_LABELISH, MAX_NAME, isName, isPort, recordReader, type Fail } from '../util/record-reader.ts';

export const DISCOVERY_VERSION = 8;
export const MIN_DISCOVERY_VERSION = 1;

export interface DiscoServicePort {
  /** The Service port's name ('' when the Service has one unnamed port). EndpointSlice ports carry the same name. */
  name: string;
  port: number;
  /** spec.ports[].targetPort as written: a number, or a container port's name. */
  targetPort: number | string;
  appProtocol?: string;
}

export interface DiscoService {
  namespace: string;
  name: string;
  /** IPv4 ClusterIPs; empty for a headless Service (connections to its pods go to the original destination). */
  clusterIPs: string[];
  /**
   * spec.clusterIP None: no ClusterIP, yet its EndpointSlices list its pods. A route naming it as
   * a backendRef balances over them (a Service without ports: at the backendRef's port), as
   * Gateway API expects. Absent otherwise, and for ExternalName and IPv6-only Services, which
   * have no endpoints here; an older agent ignores it (and answers such a backend 500).
   */
  headless?: true;
  ports: DiscoServicePort[];
  /** Only the annotations the data plane reads (ROUTING_ANNOTATION_PREFIXES), so unrelated edits send nothing. */
  annotations: Record<string, string>;
  /**
   * spec.internalTrafficPolicy Local: a node's clients go to endpoints on their own node only, none
   * when it has none (as kube-proxy). Absent for Cluster; an older agent ignores it.
   */
  nodeLocal?: true;
}

export interface DiscoEndpoint {
  ip: string;
  /** EndpointSlice conditions.ready (absent counts as ready, as the API says). */
  ready: boolean;
  /**
   * Not ready, but terminating and still serving (conditions.terminating and serving): a pod
   * draining. Used only for a Service port with no ready endpoint, as kube-proxy does (KEP-1669).
   * Absent otherwise; an older agent ignores it (and leaves such endpoints out).
   */
  terminating?: true;
  /** targetRef name when it is a Pod. */
  pod?: string;
  node?: string;
  zone?: string;
  /**
   * hints.forZones[].name: the zones whose clients should use this endpoint (topology aware
   * routing, trafficDistribution PreferClose). Absent without hints; an older agent ignores it
   * and balances over every endpoint, as before.
   */
  forZones?: string[];
  /** hints.forNodes[].name (PreferSameNode, Kubernetes 1.33+): the nodes whose clients should use it. */
  forNodes?: string[];
}

export interface DiscoSlice {
  namespace: string;
  /** The EndpointSlice's own name. */
  name: string;
  /** Its kubernetes.io/service-name label. */
  service: string;
  /** Resolved ports: the Service port's name and the number endpoints listen on. */
  ports: Array<{ name: string; port: number }>;
  endpoints: DiscoEndpoint[];
}

export interface DiscoPod {
  namespace: string;
  name: string;
  ip: string;
  /** Owner kind and name as telemetry/workload.ts spells them (deployment/web, pod/name). */
  kind: string;
  owner: string;
  node?: string;
  serviceAccount: string;
  /**
   * The pod's own mesh-agent.io/inject annotation when it says enabled or disabled (absent: the
   * namespace's decides, which the agent knows from its own namespace watch). Tells a client's
   * agent whether the destination is meshed, so whether to tunnel to it (docs/identity.md).
   */
  inject?: 'enabled' | 'disabled';
  /** status.hostIP: the node address the destination's agent listens on for tunnels (port 15008). */
  hostIp?: string;
  /**
   * The pod's own skip-inbound ports (mesh-agent.io/skip-inbound-ports, else Linkerd's
   * config.linkerd.io/skip-inbound-ports), as inclusive ranges: a client's agent dials them
   * directly, never through a tunnel, as Linkerd's destination controller gives such a port no
   * identity (docs/policy.md). Absent: none.
   */
  skipInbound?: Array<[number, number]>;
}

export type DiscoMessage =
  | { type: 'reset'; version: number }
  | { type: 'synced' }
  | { type: 'service'; op: 'set'; service: DiscoService }
  | { type: 'slice'; op: 'set'; slice: DiscoSlice }
  | { type: 'pod'; op: 'set'; pod: DiscoPod }
  | { type: 'route'; op: 'set'; route: RouteRecord }
  /** A TrafficTarget's record, or (version 7) a Linkerd Server's (kind Server; 8: its route matches the route model's). */
  | { type: 'access'; op: 'set'; access: AccessRecord | ServerRecord }
  | { type: 'service' | 'slice' | 'pod' | 'route' | 'access'; op: 'delete'; key: string };

/** Annotation prefixes a Service's record carries to the agents (balancer now; retries and timeouts later). */
export const ROUTING_ANNOTATION_PREFIXES = ['balancer.linkerd.io/', 'retry.linkerd.io/', 'timeout.linkerd.io/', 'mesh-agent.io/'];

export const keyOf = (o: { namespace: string; name: string }): string => `${o.namespace}/${o.name}`;

/**
 * What a route backend naming the Service is balanced over: its endpoints, reached by a ClusterIP
 * or headless (clusterIP None) Service; none for an ExternalName or IPv6-only Service, whose
 * slices the agents do not read.
 */
export type Addressing = 'clusterIP' | 'headless' | 'none';

export const addressingOf = (s: DiscoService): Addressing => (s.clusterIPs.length > 0 ? 'clusterIP' : s.headless === true ? 'headless' : 'none');

/** The name clients use for a Service, as Linkerd's `authority` label spells it. */
export function serviceAuthority(namespace: string, name: string, port: number, clusterDomain = 'cluster.local'): string {
  return `${name}.${namespace}.svc.${clusterDomain}:${port}`;
}

// ---- validation: every field of every line, as parseReport does for reports ----

/** Bounds that keep one line's cost small; the line itself is bounded by lines.ts. */
export const MAX_PORTS = 100;
export const MAX_SLICE_ENDPOINTS = 1000;
export const MAX_ANNOTATIONS = 64;
/** hints.forZones and hints.forNodes hold at most 8 entries each (the API's own limit). */
export const MAX_HINTS = 8;
export { MAX_NAME, isName, isPort } from '../util/record-reader.ts';
const MAX_VALUE = 4096;

export class DiscoveryError extends Error {}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

export const isIPv4 = (s: unknown): s is string => typeof s === 'string' && IPV4.test(s);

const read = recordReader((m) => new DiscoveryError(m));
const fail: Fail = read.fail;
const { obj, name, list } = read;

function optName(v: unknown, where: string): string | undefined {
  return v === undefined ? undefined : name(v, where);
}

function portName(v: unknown, where: string): string {
  if (v === undefined || v === '') return '';
  if (typeof v !== 'string' || v.length > 63 || !DNS_LABELISH.test(v)) fail(where, `expected a port name, got ${show(v)}`);
  return v;
}

function port(v: unknown, where: string): number {
  if (!isPort(v)) fail(where, `expected a port 1-65535, got ${show(v)}`);
  return v;
}

function ipv4(v: unknown, where: string): string {
  if (!isIPv4(v)) fail(where, `expected an IPv4 address, got ${show(v)}`);
  return v;
}

function key(v: unknown, where: string): string {
  if (typeof v !== 'string') fail(where, 'expected "namespace/name"');
  const i = v.indexOf('/');
  if (i <= 0) fail(where, `expected "namespace/name", got ${show(v)}`);
  name(v.slice(0, i), where);
  name(v.slice(i + 1), where);
  return v;
}

export function parseService(v: unknown): DiscoService {
  const o = obj(v, 'service');
  const ns = name(o.namespace, 'service.namespace');
  const nm = name(o.name, 'service.name');
  const w = `service ${ns}/${nm}`;
  const clusterIPs = list(o.clusterIPs, `${w}: clusterIPs`, 2).map((ip, i) => ipv4(ip, `${w}: clusterIPs[${i}]`));
  const ports = list(o.ports, `${w}: ports`, MAX_PORTS).map((p, i) => {
    const po = obj(p, `${w}: ports[${i}]`);
    const tp = po.targetPort;
    let targetPort: number | string;
    if (typeof tp === 'number') targetPort = port(tp, `${w}: ports[${i}].targetPort`);
    else if (typeof tp === 'string' && tp !== '' && tp.length <= 15 && /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(tp)) targetPort = tp;
    else fail(`${w}: ports[${i}].targetPort`, `expected a port number or a port name, got ${show(tp)}`);
    const out: DiscoServicePort = { name: portName(po.name, `${w}: ports[${i}].name`), port: port(po.port, `${w}: ports[${i}].port`), targetPort };
    if (po.appProtocol !== undefined) {
      if (typeof po.appProtocol !== 'string' || po.appProtocol.length > 256) fail(`${w}: ports[${i}].appProtocol`, 'expected a short string');
      out.appProtocol = po.appProtocol;
    }
    return out;
  });
  const ann = obj(o.annotations ?? {}, `${w}: annotations`);
  const entries = Object.entries(ann);
  if (entries.length > MAX_ANNOTATIONS) fail(`${w}: annotations`, `more than ${MAX_ANNOTATIONS}`);
  const annotations: Record<string, string> = {};
  for (const [k, val] of entries) {
    if (typeof val !== 'string' || k.length > MAX_NAME || val.length > MAX_VALUE) fail(`${w}: annotations`, `${k.slice(0, 80)}: expected a string value`);
    annotations[k] = val;
  }
  const out: DiscoService = { namespace: ns, name: nm, clusterIPs, ports, annotations };
  if (o.headless !== undefined) {
    if (o.headless !== true) fail(`${w}: headless`, 'expected true or nothing');
    if (clusterIPs.length > 0) fail(`${w}: headless`, `a headless Service has no ClusterIP, got ${clusterIPs.join(', ')}`);
    out.headless = true;
  }
  if (o.nodeLocal !== undefined) {
    if (o.nodeLocal !== true) fail(`${w}: nodeLocal`, 'expected true or nothing');
    out.nodeLocal = true;
  }
  return out;
}

export function parseSlice(v: unknown): DiscoSlice {
  const o = obj(v, 'slice');
  const ns = name(o.namespace, 'slice.namespace');
  const nm = name(o.name, 'slice.name');
  const w = `slice ${ns}/${nm}`;
  const ports = list(o.ports, `${w}: ports`, MAX_PORTS).map((p, i) => {
    const po = obj(p, `${w}: ports[${i}]`);
    return { name: portName(po.name, `${w}: ports[${i}].name`), port: port(po.port, `${w}: ports[${i}].port`) };
  });
  const endpoints = list(o.endpoints, `${w}: endpoints`, MAX_SLICE_ENDPOINTS).map((e, i) => {
    const eo = obj(e, `${w}: endpoints[${i}]`);
    if (typeof eo.ready !== 'boolean') fail(`${w}: endpoints[${i}].ready`, 'expected a boolean');
    const out: DiscoEndpoint = { ip: ipv4(eo.ip, `${w}: endpoints[${i}].ip`), ready: eo.ready };
    if (eo.terminating !== undefined) {
      if (eo.terminating !== true) fail(`${w}: endpoints[${i}].terminating`, 'expected true or nothing');
      out.terminating = true;
    }
    const pod = optName(eo.pod, `${w}: endpoints[${i}].pod`);
    const node = optName(eo.node, `${w}: endpoints[${i}].node`);
    if (eo.zone !== undefined && (typeof eo.zone !== 'string' || eo.zone.length > MAX_NAME)) fail(`${w}: endpoints[${i}].zone`, 'expected a short string');
    if (pod !== undefined) out.pod = pod;
    if (node !== undefined) out.node = node;
    if (eo.zone !== undefined) out.zone = eo.zone as string;
    if (eo.forZones !== undefined) {
      out.forZones = list(eo.forZones, `${w}: endpoints[${i}].forZones`, MAX_HINTS).map((z, j) => {
        if (typeof z !== 'string' || z === '' || z.length > MAX_NAME) fail(`${w}: endpoints[${i}].forZones[${j}]`, `expected a zone name, got ${show(z, 40)}`);
        return z;
      });
    }
    if (eo.forNodes !== undefined) out.forNodes = list(eo.forNodes, `${w}: endpoints[${i}].forNodes`, MAX_HINTS).map((n, j) => name(n, `${w}: endpoints[${i}].forNodes[${j}]`));
    return out;
  });
  return { namespace: ns, name: nm, service: name(o.service, `${w}: service`), ports, endpoints };
}

export function parsePod(v: unknown): DiscoPod {
  const o = obj(v, 'pod');
  const ns = name(o.namespace, 'pod.namespace');
  const nm = name(o.name, 'pod.name');
  const w = `pod ${ns}/${nm}`;
  if (typeof o.kind !== 'string' || !/^[a-z]{1,40}$/.test(o.kind)) fail(`${w}: kind`, 'expected a lower-case owner kind');
  const out: DiscoPod = {
    namespace: ns,
    name: nm,
    ip: ipv4(o.ip, `${w}: ip`),
    kind: o.kind,
    owner: name(o.owner, `${w}: owner`),
    serviceAccount: name(o.serviceAccount, `${w}: serviceAccount`),
  };
  const node = optName(o.node, `${w}: node`);
  if (node !== undefined) out.node = node;
  if (o.inject !== undefined) {
    if (o.inject !== 'enabled' && o.inject !== 'disabled') fail(`${w}: inject`, `expected "enabled" or "disabled", got ${show(o.inject, 40)}`);
    out.inject = o.inject;
  }
  if (o.hostIp !== undefined) out.hostIp = ipv4(o.hostIp, `${w}: hostIp`);
  if (o.skipInbound !== undefined) out.skipInbound = portRanges(o.skipInbound, `${w}: skipInbound`);
  return out;
}

/** Inclusive port ranges [lo, hi], as many as the datapath holds per pod (MAX_PORT_RANGES). */
function portRanges(v: unknown, where: string): Array<[number, number]> {
  return list(v, where, MAX_PORT_RANGES).map((r, i) => {
    const [lo, hi] = list(r, `${where}[${i}]`, 2);
    if (!isPort(lo) || !isPort(hi) || lo > hi) fail(`${where}[${i}]`, `expected [low port, high port], got ${show(r, 40)}`);
    return [lo, hi];
  });
}

/** One line of the stream, validated whole; throws DiscoveryError naming the field. `version`: the stream's (its reset's). */
export function parseMessage(line: string, version = DISCOVERY_VERSION): DiscoMessage {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch (e) {
    throw new DiscoveryError(`not JSON: ${(e as Error).message}`);
  }
  const o = obj(v, 'message');
  switch (o.type) {
    case 'reset':
      if (typeof o.version !== 'number' || !Number.isInteger(o.version) || o.version < MIN_DISCOVERY_VERSION || o.version > DISCOVERY_VERSION) {
        fail('reset', `discovery version ${show(o.version)} is not one this agent reads (${MIN_DISCOVERY_VERSION}-${DISCOVERY_VERSION}); run agents and the controller of the same release`);
      }
      return { type: 'reset', version: o.version };
    case 'synced':
      return { type: 'synced' };
    case 'service':
    case 'slice':
    case 'pod': {
      const type = o.type;
      if (o.op === 'delete') return { type, op: 'delete', key: key(o.key, `${type} delete`) };
      if (o.op !== 'set') fail(type, `op must be "set" or "delete", got ${show(o.op, 40)}`);
      if (type === 'service') return { type, op: 'set', service: parseService(o.service) };
      if (type === 'slice') return { type, op: 'set', slice: parseSlice(o.slice) };
      return { type, op: 'set', pod: parsePod(o.pod) };
    }
    case 'route': {
      if (o.op === 'delete') {
        if (typeof o.key !== 'string' || parseRouteKey(o.key) === null) fail('route delete', `expected "Kind/namespace/name", got ${show(o.key)}`);
        return { type: 'route', op: 'delete', key: o.key };
      }
      if (o.op !== 'set') fail('route', `op must be "set" or "delete", got ${show(o.op, 40)}`);
      try {
        // A record this agent cannot read whole fails that route closed (route.refused) and keeps
        // the link; one without a readable kind, name and parents is garbage like any other line.
        return { type: 'route', op: 'set', route: parseStreamedRoute(o.route) };
      } catch (e) {
        if (e instanceof RouteError) throw new DiscoveryError(e.message);
        throw e;
      }
    }
    case 'access': {
      if (o.op === 'delete') {
        if (typeof o.key !== 'string' || (parseAccessKey(o.key) === null && parseServerKey(o.key) === null)) fail('access delete', `expected "TrafficTarget/namespace/name" or "Server/namespace/name", got ${show(o.key)}`);
        return { type: 'access', op: 'delete', key: o.key };
      }
      if (o.op !== 'set') fail('access', `op must be "set" or "delete", got ${show(o.op, 40)}`);
      try {
        const a = o.access as { kind?: unknown } | null | undefined;
        return { type: 'access', op: 'set', access: a !== null && typeof a === 'object' && a.kind === 'Server' ? parseServerRecord(a, version) : parseAccessRecord(o.access) };
      } catch (e) {
        if (e instanceof PolicyError) throw new DiscoveryError(e.message);
        throw e;
      }
    }
    default:
      fail('message', `unknown type ${show(o.type, 40)}`);
  }
}
