// Kubernetes objects -> discovery records (model.ts). Pure: the controller's sources (the API
// server's watches, --resources files) call these and hand the records to the hub. Bad parts of
// an object (an address that is not an IP, a port out of range, a targetPort without a name)
// are left out and named in `problems`; the rest of the object is kept. Every record that comes
// out has passed the model's own parser, so the controller never sends a line an agent refuses.
import { isIP } from 'node:net';
import { ANNOTATIONS, parsePorts, PORT_NAME as IANA_PORT_NAME, portsAnnotation } from '../k8s/annotations.ts';
import { objectName, ownerOf } from '../k8s/objects.ts';
import { workloadOf } from '../telemetry/workload.ts';
import {
  isIPv4, isName, isPort, MAX_ANNOTATIONS, MAX_HINTS, MAX_NAME, MAX_PORTS, MAX_SLICE_ENDPOINTS, parsePod, parseService, parseSlice, ROUTING_ANNOTATION_PREFIXES,
  type DiscoEndpoint, type DiscoPod, type DiscoService, type DiscoServicePort, type DiscoSlice,
} from './model.ts';
import { show } from '../util/show.ts';

type Obj = Record<string, any>;

export type ResourceKind = 'service' | 'slice' | 'pod';

/** What one object became: its key ("ns/name"), its record (null: nothing to send, delete any earlier one) and what was wrong. */
export interface Converted<T> {
  key: string;
  record: T | null;
  problems: string[];
  /** A pod whose own annotations set no skip-inbound ports: its record follows its namespace's. */
  followsNamespace?: true;
}

type Annotations = Record<string, string> | undefined;

/** The label that ties an EndpointSlice to its Service. */
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

const MAX_ANNOTATION_VALUE = 4096;
const MAX_APP_PROTOCOL = 256;
/** A Service port's name: a DNS label (up to 63 characters, checked apart). */
const PORT_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
/** IANA service name, what a named targetPort must be: a container port's name (annotations.ts). */
const isIanaName = (s: string) => IANA_PORT_NAME.test(s);

function keyOfObject(o: Obj): { namespace: string; name: string; key: string } {
  const { namespace, name } = objectName(o);
  return { namespace, name, key: `${namespace}/${name}` };
}

/** Runs the model's parser over a finished record: what an agent would refuse is refused here, as a problem. */
function gate<T>(key: string, record: T, parse: (v: unknown) => T, problems: string[]): Converted<T> {
  try {
    return { key, record: parse(record), problems };
  } catch (e) {
    return { key, record: null, problems: [...problems, `left out: ${(e as Error).message}`] };
  }
}

const isTcp = (p: Obj) => p?.protocol === undefined || p?.protocol === null || p.protocol === 'TCP';

/**
 * core/v1 Service. IPv4 ClusterIPs only (a dual-stack Service keeps its IPv4 one); headless
 * (clusterIP None) and ExternalName Services have none: connections to them go to the original
 * destination. A headless one is marked so, as a route backend balances over its endpoints.
 * Only TCP ports: the mesh proxies TCP, and kube-dns's UDP and TCP ports share a number.
 */
export function serviceFromK8s(o: Obj): Converted<DiscoService> {
  const { namespace, name, key } = keyOfObject(o);
  const problems: string[] = [];
  const spec: Obj = o?.spec ?? {};
  const clusterIPs: string[] = [];
  let headless = false;
  if (spec.type !== 'ExternalName') {
    const ips: unknown[] = Array.isArray(spec.clusterIPs) && spec.clusterIPs.length > 0 ? spec.clusterIPs : spec.clusterIP !== undefined && spec.clusterIP !== null ? [spec.clusterIP] : [];
    headless = ips.includes('None');
    for (const ip of ips) {
      if (ip === 'None' || ip === '') continue;
      if (isIPv4(ip)) {
        if (!clusterIPs.includes(ip)) clusterIPs.push(ip);
      } else if (typeof ip !== 'string' || isIP(ip) !== 6) problems.push(`clusterIP ${show(ip)} is not an IP address; ignored`);
    }
  }
  const ports: DiscoServicePort[] = [];
  const rawPorts: Obj[] = Array.isArray(spec.ports) ? spec.ports : [];
  for (const [i, p] of rawPorts.entries()) {
    if (!isTcp(p)) continue;
    const pname = p?.name === undefined || p?.name === null ? '' : p.name;
    const where = `port ${pname ? `"${pname}"` : `#${i}`}`;
    if (!isPort(p?.port)) {
      problems.push(`${where}: port ${show(p?.port)} is out of range 1-65535; port ignored`);
      continue;
    }
    if (typeof pname !== 'string' || (pname !== '' && (pname.length > 63 || !PORT_NAME.test(pname)))) {
      problems.push(`${where}: name ${show(pname)} is not a port name; port ignored`);
      continue;
    }
    const tp = p.targetPort;
    let targetPort: number | string;
    if (tp === undefined || tp === null) targetPort = p.port; // the API's default
    else if (typeof tp === 'number') {
      if (!isPort(tp)) {
        problems.push(`${where}: targetPort ${tp} is out of range 1-65535; port ignored`);
        continue;
      }
      targetPort = tp;
    } else if (typeof tp === 'string' && /^\d+$/.test(tp) && isPort(Number(tp))) targetPort = Number(tp);
    else if (typeof tp === 'string' && isIanaName(tp)) targetPort = tp;
    else {
      problems.push(`${where}: targetPort ${show(tp)} is neither a port number nor a container port name; port ignored`);
      continue;
    }
    if (ports.some((q) => q.port === p.port)) {
      problems.push(`${where}: port ${p.port} appears twice; the second is ignored`);
      continue;
    }
    if (ports.some((q) => q.name === pname)) {
      problems.push(`${where}: two ports named ${show(pname)} (a Service with several ports names each); the second is ignored`);
      continue;
    }
    if (ports.length === MAX_PORTS) {
      problems.push(`more than ${MAX_PORTS} ports; the rest are ignored`);
      break;
    }
    const out: DiscoServicePort = { name: pname, port: p.port, targetPort };
    if (p.appProtocol !== undefined && p.appProtocol !== null) {
      if (typeof p.appProtocol === 'string' && p.appProtocol.length <= MAX_APP_PROTOCOL) out.appProtocol = p.appProtocol;
      else problems.push(`${where}: appProtocol ${show(p.appProtocol)} is not a short string; ignored`);
    }
    ports.push(out);
  }
  const annotations: Record<string, string> = {};
  let kept = 0;
  for (const [k, v] of Object.entries((o?.metadata?.annotations ?? {}) as Obj)) {
    if (!ROUTING_ANNOTATION_PREFIXES.some((pre) => k.startsWith(pre))) continue;
    if (typeof v !== 'string' || v.length > MAX_ANNOTATION_VALUE) {
      problems.push(`annotation ${k}: value is not a string of at most ${MAX_ANNOTATION_VALUE} characters; ignored`);
      continue;
    }
    if (kept === MAX_ANNOTATIONS) {
      problems.push(`more than ${MAX_ANNOTATIONS} routing annotations; the rest are ignored`);
      break;
    }
    annotations[k] = v;
    kept++;
  }
  const svc: DiscoService = { namespace, name, clusterIPs, ports, annotations };
  if (headless && clusterIPs.length === 0) svc.headless = true;
  if (spec.internalTrafficPolicy === 'Local') svc.nodeLocal = true;
  return gate(key, svc, parseService, problems);
}

/**
 * discovery.k8s.io/v1 EndpointSlice. IPv4 slices only (an IPv6 or FQDN slice yields no
 * record, and no problem: it is valid, just not ours). One endpoint per address.
 */
export function sliceFromK8s(o: Obj): Converted<DiscoSlice> {
  const { namespace, name, key } = keyOfObject(o);
  const problems: string[] = [];
  if (o?.addressType !== undefined && o.addressType !== 'IPv4') return { key, record: null, problems };
  const service = o?.metadata?.labels?.[SERVICE_NAME_LABEL];
  if (typeof service !== 'string' || service === '') {
    return { key, record: null, problems: [`no ${SERVICE_NAME_LABEL} label: not tied to a Service; ignored`] };
  }
  const ports: Array<{ name: string; port: number }> = [];
  const rawPorts: Obj[] = Array.isArray(o.ports) ? o.ports : [];
  for (const [i, p] of rawPorts.entries()) {
    if (!isTcp(p)) continue;
    const pname = p?.name === undefined || p?.name === null ? '' : p.name;
    const where = `port ${pname ? `"${pname}"` : `#${i}`}`;
    if (p?.port === undefined || p?.port === null) continue; // "all ports": nothing to resolve a Service port to
    if (!isPort(p.port)) {
      problems.push(`${where}: port ${show(p.port)} is out of range 1-65535; port ignored`);
      continue;
    }
    if (typeof pname !== 'string' || (pname !== '' && (pname.length > 63 || !PORT_NAME.test(pname)))) {
      problems.push(`${where}: name ${show(pname)} is not a port name; port ignored`);
      continue;
    }
    if (ports.some((q) => q.name === pname)) {
      problems.push(`${where}: two ports named ${show(pname)}; the second is ignored`);
      continue;
    }
    if (ports.length === MAX_PORTS) {
      problems.push(`more than ${MAX_PORTS} ports; the rest are ignored`);
      break;
    }
    ports.push({ name: pname, port: p.port });
  }
  const endpoints: DiscoEndpoint[] = [];
  const rawEps: Obj[] = Array.isArray(o.endpoints) ? o.endpoints : [];
  let truncated = false;
  for (const [i, e] of rawEps.entries()) {
    const addrs: unknown[] = Array.isArray(e?.addresses) ? e.addresses : [];
    for (const a of addrs) {
      if (!isIPv4(a)) {
        problems.push(`endpoint #${i}: address ${show(a)} is not an IPv4 address; ignored`);
        continue;
      }
      if (endpoints.length === MAX_SLICE_ENDPOINTS) {
        truncated = true;
        break;
      }
      const ready = e.conditions?.ready;
      const ep: DiscoEndpoint = { ip: a, ready: ready === undefined || ready === null ? true : ready === true };
      // Draining but still answering: kube-proxy's fallback when a Service has no ready endpoint.
      if (!ep.ready && e.conditions?.terminating === true && e.conditions?.serving === true) ep.terminating = true;
      if (e.targetRef?.kind === 'Pod') {
        if (isName(e.targetRef.name)) ep.pod = e.targetRef.name;
        else problems.push(`endpoint #${i}: targetRef name ${show(e.targetRef.name)} is not a pod name; ignored`);
      }
      if (e.nodeName !== undefined && e.nodeName !== null && e.nodeName !== '') {
        if (isName(e.nodeName)) ep.node = e.nodeName;
        else problems.push(`endpoint #${i}: nodeName ${show(e.nodeName)} is not a node name; ignored`);
      }
      if (e.zone !== undefined && e.zone !== null && e.zone !== '') {
        if (typeof e.zone === 'string' && e.zone.length <= MAX_NAME) ep.zone = e.zone;
        else problems.push(`endpoint #${i}: zone ${show(e.zone)} is not a short string; ignored`);
      }
      hintsOf(ep, e.hints, `endpoint #${i}`, problems);
      endpoints.push(ep);
    }
  }
  if (truncated) problems.push(`more than ${MAX_SLICE_ENDPOINTS} addresses; the rest are ignored`);
  return gate(key, { namespace, name, service, ports, endpoints }, parseSlice, problems);
}

/**
 * An endpoint's topology hints (hints.forZones, hints.forNodes: written by the EndpointSlice
 * controller for trafficDistribution PreferClose or topology-mode Auto). A bad entry is left
 * out and named; an endpoint left with none counts as unhinted, which makes every client use
 * every endpoint (src/discovery/topology.ts), the safe side.
 */
function hintsOf(ep: DiscoEndpoint, hints: unknown, where: string, problems: string[]): void {
  if (hints === undefined || hints === null) return;
  const h = hints as Obj;
  const read = (field: 'forZones' | 'forNodes', ok: (s: string) => boolean): string[] | undefined => {
    const raw = h[field];
    if (raw === undefined || raw === null) return undefined;
    if (!Array.isArray(raw)) {
      problems.push(`${where}: hints.${field} is not a list; ignored`);
      return undefined;
    }
    const out: string[] = [];
    for (const x of raw) {
      const n = x?.name;
      if (typeof n !== 'string' || !ok(n)) problems.push(`${where}: hints.${field} entry ${show(n)} is not a ${field === 'forZones' ? 'zone' : 'node'} name; ignored`);
      else if (out.length === MAX_HINTS) {
        problems.push(`${where}: hints.${field} has more than ${MAX_HINTS} entries; the rest are ignored`);
        break;
      } else if (!out.includes(n)) out.push(n);
    }
    return out.length > 0 ? out : undefined;
  };
  const forZones = read('forZones', (s) => s !== '' && s.length <= MAX_NAME);
  const forNodes = read('forNodes', isName);
  if (forZones) ep.forZones = forZones;
  if (forNodes) ep.forNodes = forNodes;
}

const TERMINAL_PHASES = new Set(['Succeeded', 'Failed']);

/**
 * core/v1 Pod: its IPv4 address and workload. No record (and no problem) for a pod without an
 * IPv4 address yet, a host-network pod (its address is the node's, shared with others), or a
 * finished one (its address may already belong to a new pod). `nsAnnotations`: its namespace's
 * annotations (skip-inbound ports set there apply to a pod without its own).
 */
export function podFromK8s(o: Obj, nsAnnotations?: Annotations): Converted<DiscoPod> {
  const { namespace, name, key } = keyOfObject(o);
  const problems: string[] = [];
  if (o?.spec?.hostNetwork === true || TERMINAL_PHASES.has(o?.status?.phase)) return { key, record: null, problems };
  const candidates: unknown[] = [o?.status?.podIP, ...(Array.isArray(o?.status?.podIPs) ? o.status.podIPs.map((x: Obj) => x?.ip) : [])];
  const ip = candidates.find(isIPv4);
  if (ip === undefined) {
    const bad = candidates.find((c) => c !== undefined && c !== null && c !== '' && (typeof c !== 'string' || isIP(c) === 0));
    return { key, record: null, problems: bad === undefined ? [] : [`podIP ${show(bad)} is not an IP address; ignored`] };
  }
  const w = workloadOf({ namespace, name, owner: ownerOf(o?.metadata), labels: o?.metadata?.labels ?? {} });
  let kind = w.kind;
  let owner = w.name;
  if (!/^[a-z]{1,40}$/.test(kind)) {
    problems.push(`owner kind ${show(kind)} is not a plain kind name; the pod is named as its own workload`);
    kind = 'pod';
    owner = name;
  }
  const sa = o?.spec?.serviceAccountName;
  const pod: DiscoPod = { namespace, name, ip, kind, owner, serviceAccount: typeof sa === 'string' && sa !== '' ? sa : 'default' };
  const node = o?.spec?.nodeName;
  if (isName(node)) pod.node = node;
  else if (node !== undefined && node !== null && node !== '') problems.push(`nodeName ${show(node)} is not a node name; ignored`);
  const inject = o?.metadata?.annotations?.[ANNOTATIONS.inject];
  if (inject === 'enabled' || inject === 'disabled') pod.inject = inject;
  else if (inject !== undefined) problems.push(`annotation ${ANNOTATIONS.inject} ${show(inject)} is not enabled or disabled; the namespace's decides`);
  const hostIp = o?.status?.hostIP;
  if (isIPv4(hostIp)) pod.hostIp = hostIp;
  else if (hostIp !== undefined && hostIp !== null && hostIp !== '') problems.push(`hostIP ${show(hostIp)} is not an IPv4 address; ignored (no tunnel to this pod)`);
  skipInboundOf(pod, o?.metadata?.annotations, nsAnnotations, problems);
  const c = gate(key, pod, parsePod, problems);
  if (portsAnnotation(ANNOTATIONS.skipInbound, o?.metadata?.annotations) === undefined) c.followsNamespace = true;
  return c;
}

/**
 * A pod's skip-inbound ranges, read as its agent reads them (portsAnnotation: ours, else Linkerd's,
 * on the pod, else on its namespace). A value that does not parse is left out: the pod's own is
 * named in problems, a namespace's is said once for the namespace (namespaceProblem), not per pod.
 */
export function skipInboundOf(pod: DiscoPod, own: Annotations, namespace: Annotations, problems: string[]): void {
  const skip = portsAnnotation(ANNOTATIONS.skipInbound, own, namespace);
  if (skip === undefined) return;
  try {
    const ranges = parsePorts(String(skip[1]), skip[0]).ranges();
    if (ranges.length > 0) pod.skipInbound = ranges;
  } catch (e) {
    if (own?.[skip[0]] !== undefined) problems.push(`annotation ${skip[0]} ${show(skip[1])}: ${(e as Error).message}; ignored (clients of other nodes reach every port through the tunnel)`);
  }
}

/** What is wrong with a Namespace's skip-inbound annotation, or null (its pods' records leave a bad one out). */
export function namespaceProblem(name: string, annotations: Annotations): string | null {
  const problems: string[] = [];
  skipInboundOf({} as DiscoPod, annotations, undefined, problems);
  return problems.length === 0 ? null : `Namespace ${name}: ${problems[0]}`;
}


/** The record kind of a Kubernetes object, or null for kinds discovery does not read. */
export function kindOf(o: Obj): ResourceKind | null {
  switch (o?.kind) {
    case 'Service':
      return 'service';
    case 'EndpointSlice':
      return 'slice';
    case 'Pod':
      return 'pod';
    default:
      return null;
  }
}

export function convert(kind: ResourceKind, o: Obj, namespace?: Annotations): Converted<DiscoService | DiscoSlice | DiscoPod> {
  return kind === 'service' ? serviceFromK8s(o) : kind === 'slice' ? sliceFromK8s(o) : podFromK8s(o, namespace);
}

/** For log lines: "Service shop/web". */
export function describeObject(kind: ResourceKind, key: string): string {
  return `${kind === 'service' ? 'Service' : kind === 'slice' ? 'EndpointSlice' : 'Pod'} ${key}`;
}
