// The stand-in API server's resource table (pure): each kind's group, version, plural and scope,
// the field selectors it supports, and the defaults and checks the real API server applies to
// the fields we use. A new kind (HTTPRoute, TrafficSplit, a TokenReview) is one more entry.
import { isIPv4 } from 'node:net';

export interface ObjectMeta {
  name: string;
  namespace?: string;
  generateName?: string;
  uid?: string;
  resourceVersion?: string;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  /** Set for kinds with a status subresource: moves with each spec change. */
  generation?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: { apiVersion: string; kind: string; name: string; uid: string; controller?: boolean; blockOwnerDeletion?: boolean }[];
}

/** Any object the stand-in API server holds; kinds read their own fields. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  [field: string]: any;
}

/** An API error as the real server reports it: a v1 Status with code and reason. */
export class ApiError extends Error {
  readonly code: number;
  readonly reason: string;
  constructor(code: number, reason: string, message: string) {
    super(message);
    this.code = code;
    this.reason = reason;
  }
}

export interface AdmitContext {
  /** A free ClusterIP from the service CIDR, or `requested` if it is in the CIDR and free. */
  allocateClusterIP(requested?: string): string;
  releaseClusterIP(ip: string): void;
}

export interface ResourceType {
  /** '' for the core group. */
  group: string;
  version: string;
  kind: string;
  plural: string;
  namespaced: boolean;
  /** Field selectors beyond metadata.name and metadata.namespace (which every kind has). */
  fields?: Record<string, (o: KubeObject) => string | undefined>;
  /** Defaults and validation on create (old undefined) and update; throws ApiError 422. May mutate o. */
  admit?: (o: KubeObject, old: KubeObject | undefined, ctx: AdmitContext) => void;
  /** After a delete (e.g. the ClusterIP goes back to the pool). */
  released?: (o: KubeObject, ctx: AdmitContext) => void;
  /** Create-only kinds (TokenReview, SubjectAccessReview): POST answers with this; nothing is stored. */
  review?: (o: KubeObject) => KubeObject;
  /**
   * A status subresource (as CRDs declare with subresources.status): PUT .../NAME/status replaces
   * only .status, and metadata.generation counts spec changes (status writes leave it).
   */
  statusSubresource?: boolean;
}

export function apiVersionOf(t: ResourceType): string {
  return t.group ? `${t.group}/${t.version}` : t.version;
}

// ---- validation helpers (the rules of k8s.io/apimachinery/pkg/util/validation) -------------------

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const QUALIFIED_NAME = /^([a-z0-9]([-a-z0-9.]*[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/;
/** Container port names and named targetPorts: at most 15, lowercase, a letter somewhere, no "--". */
const IANA_SVC_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

export class Invalid {
  readonly #errors: string[] = [];
  readonly o: KubeObject;
  constructor(o: KubeObject) {
    this.o = o;
  }

  check(ok: boolean, field: string, value: unknown, why: string): void {
    if (!ok) this.#errors.push(`${field}: Invalid value: ${JSON.stringify(value)}: ${why}`);
  }

  required(v: unknown, field: string): boolean {
    if (v === undefined || v === null || v === '') {
      this.#errors.push(`${field}: Required value`);
      return false;
    }
    return true;
  }

  throwIfAny(): void {
    if (this.#errors.length) {
      throw new ApiError(422, 'Invalid', `${this.o.kind} "${this.o.metadata?.name ?? ''}" is invalid: ${this.#errors.join(', ')}`);
    }
  }
}

export function isDnsLabel(s: unknown): boolean {
  return typeof s === 'string' && s.length <= 63 && DNS1123_LABEL.test(s);
}

export function isIanaSvcName(s: unknown): boolean {
  return typeof s === 'string' && s.length <= 15 && IANA_SVC_NAME.test(s) && /[a-z]/.test(s) && !s.includes('--');
}

function isPort(p: unknown): boolean {
  return Number.isInteger(p) && (p as number) >= 1 && (p as number) <= 65535;
}

const PROTOCOLS = ['TCP', 'UDP', 'SCTP'];

/** Checks common to every kind: names, labels, annotations. `nameRule` is the kind's name format. */
export function checkMeta(o: KubeObject, v: Invalid, nameRule: 'subdomain' | 'label' | 'dns1035'): void {
  const m = o.metadata;
  const name = m.name;
  const ok =
    nameRule === 'label' ? isDnsLabel(name) : nameRule === 'dns1035' ? typeof name === 'string' && name.length <= 63 && DNS1035_LABEL.test(name) : typeof name === 'string' && name.length <= 253 && DNS1123_SUBDOMAIN.test(name);
  v.check(ok, 'metadata.name', name, `a lowercase RFC 1123 ${nameRule === 'subdomain' ? 'subdomain' : 'label'} must consist of lower case alphanumeric characters or '-'${nameRule === 'subdomain' ? " or '.'" : ''}`);
  for (const [k, val] of Object.entries(m.labels ?? {})) {
    v.check(QUALIFIED_NAME.test(k) && k.split('/').at(-1)!.length <= 63, 'metadata.labels', k, 'name part must consist of alphanumeric characters, \'-\', \'_\' or \'.\'');
    v.check(typeof val === 'string' && val.length <= 63 && LABEL_VALUE.test(val), 'metadata.labels', val, 'a valid label must be an empty string or consist of alphanumeric characters, \'-\', \'_\' or \'.\'');
  }
  for (const [k, val] of Object.entries(m.annotations ?? {})) {
    v.check(QUALIFIED_NAME.test(k), 'metadata.annotations', k, 'name part must consist of alphanumeric characters, \'-\', \'_\' or \'.\'');
    v.check(typeof val === 'string', `metadata.annotations[${k}]`, val, 'must be a string');
  }
}

// ---- kinds ------------------------------------------------------------------------------------------

function admitPod(o: KubeObject): void {
  const v = new Invalid(o);
  checkMeta(o, v, 'subdomain');
  const spec = (o.spec ??= {});
  spec.serviceAccountName ??= spec.serviceAccount ?? 'default';
  if (v.required(spec.containers?.length ? spec.containers : undefined, 'spec.containers')) {
    spec.containers.forEach((c: any, i: number) => {
      v.check(isDnsLabel(c.name), `spec.containers[${i}].name`, c.name, 'must be a DNS label');
      v.required(c.image, `spec.containers[${i}].image`);
      (c.ports ?? []).forEach((p: any, j: number) => {
        const f = `spec.containers[${i}].ports[${j}]`;
        v.check(isPort(p.containerPort), `${f}.containerPort`, p.containerPort, 'must be between 1 and 65535, inclusive');
        if (p.name !== undefined) v.check(isIanaSvcName(p.name), `${f}.name`, p.name, 'must be no more than 15 characters, lowercase alphanumeric or \'-\', with at least one letter');
        p.protocol ??= 'TCP';
        v.check(PROTOCOLS.includes(p.protocol), `${f}.protocol`, p.protocol, 'supported values: "SCTP", "TCP", "UDP"');
      });
    });
  }
  const ip = o.status?.podIP;
  if (ip !== undefined) v.check(isIPv4(ip), 'status.podIP', ip, 'must be a valid IP address');
  v.throwIfAny();
}

function admitService(o: KubeObject, old: KubeObject | undefined, ctx: AdmitContext): void {
  const v = new Invalid(o);
  checkMeta(o, v, 'dns1035');
  const spec = (o.spec ??= {});
  spec.type ??= 'ClusterIP';
  v.check(spec.type === 'ClusterIP', 'spec.type', spec.type, 'the simulated cluster has ClusterIP Services only');
  spec.sessionAffinity ??= 'None';
  spec.internalTrafficPolicy ??= 'Cluster';
  v.check(['Cluster', 'Local'].includes(spec.internalTrafficPolicy), 'spec.internalTrafficPolicy', spec.internalTrafficPolicy, 'supported values: "Cluster", "Local"');
  if (spec.trafficDistribution !== undefined) v.check(['PreferClose', 'PreferSameZone', 'PreferSameNode'].includes(spec.trafficDistribution), 'spec.trafficDistribution', spec.trafficDistribution, 'supported values: "PreferClose", "PreferSameNode", "PreferSameZone"');
  const ports: any[] = spec.ports ?? [];
  v.check(Array.isArray(ports) && (ports.length > 0 || spec.clusterIP === 'None'), 'spec.ports', ports, 'a Service with a ClusterIP needs at least one port');
  const names = new Set<string>();
  ports.forEach((p, i) => {
    const f = `spec.ports[${i}]`;
    if (ports.length > 1 || p.name) {
      if (v.required(p.name, `${f}.name`)) v.check(isDnsLabel(p.name), `${f}.name`, p.name, 'must be a DNS label');
      v.check(!names.has(p.name), `${f}.name`, p.name, 'Duplicate value');
      names.add(p.name);
    }
    v.check(isPort(p.port), `${f}.port`, p.port, 'must be between 1 and 65535, inclusive');
    p.protocol ??= 'TCP';
    v.check(PROTOCOLS.includes(p.protocol), `${f}.protocol`, p.protocol, 'supported values: "SCTP", "TCP", "UDP"');
    p.targetPort ??= p.port;
    const tp = p.targetPort;
    v.check(typeof tp === 'string' ? isIanaSvcName(tp) : isPort(tp), `${f}.targetPort`, tp, 'must be a port number between 1 and 65535 or an IANA service name of at most 15 characters');
  });
  if (old) {
    // ClusterIP is immutable; an update that leaves it out keeps it (as kubectl apply does).
    spec.clusterIP ??= old.spec.clusterIP;
    v.check(spec.clusterIP === old.spec.clusterIP, 'spec.clusterIP', spec.clusterIP, 'field is immutable');
    v.throwIfAny();
  } else {
    v.throwIfAny();
    if (spec.clusterIP !== 'None') {
      try {
        spec.clusterIP = ctx.allocateClusterIP(spec.clusterIP || undefined);
      } catch (e) {
        throw new ApiError(422, 'Invalid', `Service "${o.metadata.name}" is invalid: spec.clusterIPs: Invalid value: ${JSON.stringify(spec.clusterIP ?? '')}: ${(e as Error).message}`);
      }
    }
  }
  spec.clusterIPs = [spec.clusterIP];
  spec.ipFamilies ??= ['IPv4'];
  spec.ipFamilyPolicy ??= 'SingleStack';
}

function admitEndpointSlice(o: KubeObject): void {
  const v = new Invalid(o);
  checkMeta(o, v, 'subdomain');
  v.check(['IPv4', 'IPv6', 'FQDN'].includes(o.addressType), 'addressType', o.addressType, 'supported values: "FQDN", "IPv4", "IPv6"');
  o.endpoints ??= [];
  v.check(Array.isArray(o.endpoints) && o.endpoints.length <= 1000, 'endpoints', o.endpoints?.length, 'must have at most 1000 items');
  (o.endpoints as any[]).forEach((e, i) => {
    const a = e.addresses;
    v.check(Array.isArray(a) && a.length >= 1 && a.length <= 100, `endpoints[${i}].addresses`, a, 'must have between 1 and 100 items');
    if (o.addressType === 'IPv4' && Array.isArray(a)) for (const ip of a) v.check(isIPv4(ip), `endpoints[${i}].addresses`, ip, 'must be a valid IPv4 address');
  });
  ((o.ports ?? []) as any[]).forEach((p, i) => {
    if (p.port !== undefined) v.check(isPort(p.port), `ports[${i}].port`, p.port, 'must be between 1 and 65535, inclusive');
    if (p.name) v.check(isDnsLabel(p.name), `ports[${i}].name`, p.name, 'must be a DNS label');
  });
  v.throwIfAny();
}

function admitNamespace(o: KubeObject): void {
  const v = new Invalid(o);
  checkMeta(o, v, 'label');
  v.throwIfAny();
  o.status ??= { phase: 'Active' };
}

function admitNode(o: KubeObject): void {
  const v = new Invalid(o);
  checkMeta(o, v, 'subdomain');
  v.throwIfAny();
}

/** The kinds the controller watches (issue 12). Later issues register theirs with SimApiServer.register(). */
export const CORE_RESOURCES: ResourceType[] = [
  {
    group: '',
    version: 'v1',
    kind: 'Pod',
    plural: 'pods',
    namespaced: true,
    fields: {
      'spec.nodeName': (o) => o.spec?.nodeName,
      'spec.serviceAccountName': (o) => o.spec?.serviceAccountName,
      'status.phase': (o) => o.status?.phase,
      'status.podIP': (o) => o.status?.podIP,
    },
    admit: admitPod,
  },
  { group: '', version: 'v1', kind: 'Namespace', plural: 'namespaces', namespaced: false, fields: { 'status.phase': (o) => o.status?.phase }, admit: admitNamespace },
  { group: '', version: 'v1', kind: 'Node', plural: 'nodes', namespaced: false, admit: admitNode },
  {
    group: '',
    version: 'v1',
    kind: 'Service',
    plural: 'services',
    namespaced: true,
    fields: { 'spec.clusterIP': (o) => o.spec?.clusterIP, 'spec.type': (o) => o.spec?.type },
    admit: admitService,
    released: (o, ctx) => {
      if (o.spec?.clusterIP && o.spec.clusterIP !== 'None') ctx.releaseClusterIP(o.spec.clusterIP);
    },
  },
  { group: 'discovery.k8s.io', version: 'v1', kind: 'EndpointSlice', plural: 'endpointslices', namespaced: true, fields: { addressType: (o) => o.addressType }, admit: admitEndpointSlice },
];

/**
 * ServiceAccounts: what a TokenRequest is for (404 without one, as kube-apiserver answers);
 * Secrets, what a test shows a token may not read; and the workloads' kind for a test that runs a
 * DaemonSet's container (cni-install reads its own at SIGTERM). The stand-in runs no controller
 * for DaemonSets: they are objects only.
 */
export const ACCOUNT_RESOURCES: ResourceType[] = [
  { group: '', version: 'v1', kind: 'ServiceAccount', plural: 'serviceaccounts', namespaced: true, admit: admitCustom },
  { group: '', version: 'v1', kind: 'Secret', plural: 'secrets', namespaced: true, admit: admitCustom },
  { group: 'apps', version: 'v1', kind: 'DaemonSet', plural: 'daemonsets', namespaced: true, admit: admitCustom },
];

/**
 * The route kinds of issue 13, as their CRDs serve them (status subresource included; SMI's
 * TrafficSplit CRD has none upstream, here it has one so the controller's write is seen). Not in
 * CORE_RESOURCES: a cluster serves them once a test registers them, as installing CRDs would.
 */
export const ROUTE_RESOURCES: ResourceType[] = [
  { group: 'gateway.networking.k8s.io', version: 'v1', kind: 'HTTPRoute', plural: 'httproutes', namespaced: true, statusSubresource: true, admit: admitCustom },
  { group: 'gateway.networking.k8s.io', version: 'v1', kind: 'GRPCRoute', plural: 'grpcroutes', namespaced: true, statusSubresource: true, admit: admitCustom },
  { group: 'split.smi-spec.io', version: 'v1alpha4', kind: 'TrafficSplit', plural: 'trafficsplits', namespaced: true, statusSubresource: true, admit: admitCustom },
  { group: 'specs.smi-spec.io', version: 'v1alpha4', kind: 'HTTPRouteGroup', plural: 'httproutegroups', namespaced: true, admit: admitCustom },
];

/** SMI access control's kinds (HTTPRouteGroup is in ROUTE_RESOURCES: both read it). */
export const ACCESS_RESOURCES: ResourceType[] = [
  { group: 'access.smi-spec.io', version: 'v1alpha3', kind: 'TrafficTarget', plural: 'traffictargets', namespaced: true, admit: admitCustom },
  { group: 'specs.smi-spec.io', version: 'v1alpha4', kind: 'TCPRoute', plural: 'tcproutes', namespaced: true, admit: admitCustom },
];

/**
 * Linkerd's policy kinds, as its CRDs serve them (Server at v1beta3, the newest version the controller
 * lists). Its HTTPRoute is LINKERD_HTTPROUTE_RESOURCE, registered by the tests that want it: with
 * both groups' HTTPRoute served, `HTTPRoute` alone no longer names one kind (patch, delete and get
 * then take `HTTPRoute.gateway.networking.k8s.io` or `HTTPRoute.policy.linkerd.io`).
 */
export const LINKERD_POLICY_RESOURCES: ResourceType[] = [
  { group: 'policy.linkerd.io', version: 'v1beta3', kind: 'Server', plural: 'servers', namespaced: true, admit: admitCustom },
  { group: 'policy.linkerd.io', version: 'v1alpha1', kind: 'AuthorizationPolicy', plural: 'authorizationpolicies', namespaced: true, admit: admitCustom },
  { group: 'policy.linkerd.io', version: 'v1beta1', kind: 'ServerAuthorization', plural: 'serverauthorizations', namespaced: true, admit: admitCustom },
  { group: 'policy.linkerd.io', version: 'v1alpha1', kind: 'MeshTLSAuthentication', plural: 'meshtlsauthentications', namespaced: true, admit: admitCustom },
  { group: 'policy.linkerd.io', version: 'v1alpha1', kind: 'NetworkAuthentication', plural: 'networkauthentications', namespaced: true, admit: admitCustom },
];

/** Linkerd's own HTTPRoute (policy.linkerd.io v1beta3), beside the Gateway API's of the same kind name. */
export const LINKERD_HTTPROUTE_RESOURCE: ResourceType = { group: 'policy.linkerd.io', version: 'v1beta3', kind: 'HTTPRoute', plural: 'httproutes', namespaced: true, statusSubresource: true, admit: admitCustom };

/**
 * Linkerd's policy kinds as an older release's CRDs serve them: Server at `serverVersion` only
 * (Linkerd 2.12-2.14 serve v1beta1, 2.15 v1beta1 and v1beta2; the stand-in serves one version of
 * a kind), the rest as LINKERD_POLICY_RESOURCES.
 */
export function linkerdPolicyResourcesAt(serverVersion: 'v1beta1' | 'v1beta2' | 'v1beta3'): ResourceType[] {
  return LINKERD_POLICY_RESOURCES.map((t) => (t.kind === 'Server' ? { ...t, version: serverVersion } : t));
}

/** What the API server checks of any custom object: its metadata (the CRDs' own schemas are the routing code's to check). */
function admitCustom(o: KubeObject): void {
  const v = new Invalid(o);
  checkMeta(o, v, 'subdomain');
  v.throwIfAny();
}
