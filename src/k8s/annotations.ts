// Annotations -> a pod's mesh policy. Pure: the agent applies the result.
import { MAX_PORT_RANGES, PortSet } from '../proxy/ports.ts';
import { DEFAULT_INBOUND_POLICY, LINKERD_POLICY_ANNOTATION, parseDefaultPolicy, POLICY_ANNOTATION, type DefaultPolicy } from '../policy/model.ts';

export const ANNOTATIONS = {
  inject: 'mesh-agent.io/inject',
  skipOutbound: 'mesh-agent.io/skip-outbound-ports',
  skipInbound: 'mesh-agent.io/skip-inbound-ports',
  opaque: 'mesh-agent.io/opaque-ports',
  inboundPolicy: POLICY_ANNOTATION,
} as const;

/** Linkerd's names for the same port lists: a workload moving from Linkerd keeps its annotations. */
export const LINKERD_PORT_ANNOTATIONS: Readonly<Record<string, string>> = {
  [ANNOTATIONS.skipOutbound]: 'config.linkerd.io/skip-outbound-ports',
  [ANNOTATIONS.skipInbound]: 'config.linkerd.io/skip-inbound-ports',
  [ANNOTATIONS.opaque]: 'config.linkerd.io/opaque-ports',
};

export interface PodPolicy {
  meshed: boolean;
  /** Why not meshed, for status: 'not-injected', 'host-network', 'not-running'. */
  reason?: string;
  skipOutbound: PortSet;
  skipInbound: PortSet;
  /** null: the agent's default opaque list applies. */
  opaquePorts: PortSet | null;
  /** Who may connect (docs/policy.md): its default inbound policy, and where that came from. */
  inboundPolicy: DefaultPolicy;
  inboundPolicyFrom: string;
  /** Invalid annotation values; the field kept its last good value. */
  errors: string[];
}

type Annotations = Record<string, string> | undefined;

/** A port list annotation's value, at most MAX_PORT_RANGES ranges; throws naming the annotation. */
export function parsePorts(value: string, name: string): PortSet {
  const set = PortSet.parse(value);
  if (set.ranges().length > MAX_PORT_RANGES) {
    throw new Error(`${name}: ${set.ranges().length} separate ranges, the datapath holds ${MAX_PORT_RANGES}; merge ports into ranges`);
  }
  return set;
}

/** A port name as Kubernetes allows one (IANA_SVC_NAME): lowercase letters, digits and dashes, with a letter, no "--". */
export const PORT_NAME = /^(?=.*[a-z])(?!.*--)[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$/;

/**
 * Why a port list entry is neither a number, a range nor a valid port name, or null (numbers and
 * ranges are PortSet.parse's to judge). PortSet's "bad token (want PORT or LO-HI)" would leave an
 * upper-case or over-long name unexplained.
 */
export function portNameProblem(token: string): string | null {
  const t = token.trim();
  if (/^[\d\s-]*$/.test(t) || PORT_NAME.test(t)) return null;
  const hint = PORT_NAME.test(t.toLowerCase()) ? `; did you mean ${JSON.stringify(t.toLowerCase())}?` : '';
  return `${JSON.stringify(t)} is not a port number, range or container port name: port names are lowercase IANA_SVC_NAME (at most 15 characters of a-z, 0-9 and -, with at least one letter, no -- and no - at either end)${hint}`;
}

/**
 * A port list with each container port name replaced by its number. A name the pod does not have
 * is an error when the pod's own annotation says it, and is left out when the namespace's does
 * (there each pod's own ports are named). Anything else is left for PortSet.parse to judge.
 */
export function withNamedPorts(value: string, named: Record<string, number>, onPod: boolean): string {
  const out: string[] = [];
  for (const raw of value.split(',')) {
    const token = raw.trim();
    const port = Object.hasOwn(named, token) ? named[token] : undefined;
    if (port !== undefined) out.push(String(port));
    else if (!PORT_NAME.test(token)) {
      const bad = portNameProblem(token);
      if (bad !== null) throw new Error(bad);
      out.push(raw);
    }
    else if (onPod) {
      const names = Object.keys(named);
      throw new Error(`no TCP container port named ${JSON.stringify(token)} on the pod (${names.length > 0 ? `its named ports: ${names.join(', ')}` : 'it names none'}); name one of them or give the number`);
    }
  }
  return out.join(',');
}

/**
 * Where a port list comes from: ours, then Linkerd's (LINKERD_PORT_ANNOTATIONS), on the pod, then
 * the same two on its namespace. [annotation, value], or undefined when none is set.
 */
export function portsAnnotation(ours: string, pod: Annotations, namespace?: Annotations): [string, string] | undefined {
  const theirs = LINKERD_PORT_ANNOTATIONS[ours]!;
  for (const ann of [pod, namespace]) {
    for (const key of [ours, theirs]) if (ann?.[key] !== undefined) return [key, ann[key]!];
  }
  return undefined;
}

/**
 * Resolves a pod's policy from its annotations and its namespace's (the pod's win).
 * A bad value keeps the previous policy's field (or the default when there is none) and is
 * reported in errors, naming the annotation and the value.
 */
export function resolvePolicy(
  pod: { annotations?: Annotations; hostNetwork?: boolean; phase?: string; namedPorts?: Record<string, number> },
  namespace: { annotations?: Annotations } | undefined,
  previous?: PodPolicy,
  clusterDefault: DefaultPolicy = DEFAULT_INBOUND_POLICY,
): PodPolicy {
  const get = (key: string): string | undefined => pod.annotations?.[key] ?? namespace?.annotations?.[key];
  const errors: string[] = [];

  const injectValue = get(ANNOTATIONS.inject);
  let injected = false;
  if (injectValue === 'enabled') injected = true;
  else if (injectValue !== undefined && injectValue !== 'disabled') {
    errors.push(`${ANNOTATIONS.inject}: "${injectValue}" is not enabled or disabled`);
    injected = previous?.meshed ?? false;
  }

  // inDatapath: the list goes to the kernel (skip ports), which holds MAX_PORT_RANGES ranges; the
  // opaque list stays in the proxy (a PortSet of any size), so it has no such limit.
  // The opaque list may also name container ports (Linkerd's ParseContainerOpaquePorts): the kernel's lists may not.
  const ports = (ours: string, prev: PortSet | null | undefined, dflt: PortSet | null, inDatapath = true): PortSet | null => {
    const found = portsAnnotation(ours, pod.annotations, namespace?.annotations);
    if (found === undefined) return dflt;
    const [key, v] = found;
    try {
      // String(): an unquoted `7002` in a --pods file is a YAML number; taken as its text, as the controller does.
      if (inDatapath) return parsePorts(String(v), key);
      return PortSet.parse(withNamedPorts(String(v), pod.namedPorts ?? {}, pod.annotations?.[key] !== undefined));
    } catch (e) {
      errors.push(`${key}: ${(e as Error).message}`);
      return prev === undefined ? dflt : prev;
    }
  };
  const skipOutbound = ports(ANNOTATIONS.skipOutbound, previous?.skipOutbound, PortSet.empty())!;
  const skipInbound = ports(ANNOTATIONS.skipInbound, previous?.skipInbound, PortSet.empty())!;
  const opaquePorts = ports(ANNOTATIONS.opaque, previous?.opaquePorts, null, false);

  const inbound = inboundPolicyOf(pod, namespace, clusterDefault, previous, errors);

  let reason: string | undefined;
  if (pod.hostNetwork) reason = 'host-network';
  else if (!injected) reason = 'not-injected';
  else if (pod.phase === 'Succeeded' || pod.phase === 'Failed') reason = 'not-running';
  return { meshed: reason === undefined, reason, skipOutbound, skipInbound, opaquePorts, inboundPolicy: inbound.policy, inboundPolicyFrom: inbound.from, errors };
}

/**
 * The default inbound policy: the pod's annotation, else its namespace's (ours before Linkerd's on
 * each), else the cluster's. A value that does not parse keeps the last good policy; a pod with
 * none gets `deny`: a mistyped restriction must never open the pod to everyone (docs/policy.md).
 */
function inboundPolicyOf(
  pod: { annotations?: Annotations },
  namespace: { annotations?: Annotations } | undefined,
  clusterDefault: DefaultPolicy,
  previous: PodPolicy | undefined,
  errors: string[],
): { policy: DefaultPolicy; from: string } {
  const sources: Array<[Annotations, string, string]> = [
    [pod.annotations, POLICY_ANNOTATION, 'pod'],
    [pod.annotations, LINKERD_POLICY_ANNOTATION, 'pod'],
    [namespace?.annotations, POLICY_ANNOTATION, 'namespace'],
    [namespace?.annotations, LINKERD_POLICY_ANNOTATION, 'namespace'],
  ];
  for (const [ann, key, on] of sources) {
    const v = ann?.[key];
    if (v === undefined) continue;
    try {
      return { policy: parseDefaultPolicy(v, `${key} on the ${on}`), from: `${on} annotation ${key}` };
    } catch (e) {
      errors.push((e as Error).message);
      if (previous) return { policy: previous.inboundPolicy, from: `${previous.inboundPolicyFrom} (last good value)` };
      return { policy: 'deny', from: `${on} annotation ${key} is invalid: denying until it is fixed` };
    }
  }
  return { policy: clusterDefault, from: 'cluster default' };
}

export function samePolicy(a: PodPolicy, b: PodPolicy): boolean {
  return (
    a.meshed === b.meshed &&
    a.skipOutbound.toString() === b.skipOutbound.toString() &&
    a.skipInbound.toString() === b.skipInbound.toString() &&
    String(a.opaquePorts) === String(b.opaquePorts) &&
    a.inboundPolicy === b.inboundPolicy
  );
}
