// Annotations -> a pod's mesh policy. Pure: the agent applies the result.
import { PortSet } from '../proxy/ports.ts';

export const ANNOTATIONS = {
  inject: 'mesh-agent.io/inject',
  skipOutbound: 'mesh-agent.io/skip-outbound-ports',
  skipInbound: 'mesh-agent.io/skip-inbound-ports',
  opaque: 'mesh-agent.io/opaque-ports',
} as const;

/** The datapath holds at most this many ranges per list (native/bpf/mesh_shared.h). */
export const MAX_PORT_RANGES = 16;

export interface PodPolicy {
  meshed: boolean;
  /** Why not meshed, for status: 'not-injected', 'host-network', 'not-running'. */
  reason?: string;
  skipOutbound: PortSet;
  skipInbound: PortSet;
  /** null: the agent's default opaque list applies. */
  opaquePorts: PortSet | null;
  /** Invalid annotation values; the field kept its last good value. */
  errors: string[];
}

type Annotations = Record<string, string> | undefined;

function parsePorts(value: string, name: string): PortSet {
  const set = PortSet.parse(value);
  if (set.ranges().length > MAX_PORT_RANGES) {
    throw new Error(`${name}: ${set.ranges().length} separate ranges, the datapath holds ${MAX_PORT_RANGES}; merge ports into ranges`);
  }
  return set;
}

/**
 * Resolves a pod's policy from its annotations and its namespace's (the pod's win).
 * A bad value keeps the previous policy's field (or the default when there is none) and is
 * reported in errors, naming the annotation and the value.
 */
export function resolvePolicy(
  pod: { annotations?: Annotations; hostNetwork?: boolean; phase?: string },
  namespace: { annotations?: Annotations } | undefined,
  previous?: PodPolicy,
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

  const ports = (key: string, prev: PortSet | null | undefined, dflt: PortSet | null): PortSet | null => {
    const v = get(key);
    if (v === undefined) return dflt;
    try {
      return parsePorts(v, key);
    } catch (e) {
      errors.push(`${key}: ${(e as Error).message}`);
      return prev === undefined ? dflt : prev;
    }
  };
  const skipOutbound = ports(ANNOTATIONS.skipOutbound, previous?.skipOutbound, PortSet.empty())!;
  const skipInbound = ports(ANNOTATIONS.skipInbound, previous?.skipInbound, PortSet.empty())!;
  const opaquePorts = ports(ANNOTATIONS.opaque, previous?.opaquePorts, null);

  let reason: string | undefined;
  if (pod.hostNetwork) reason = 'host-network';
  else if (!injected) reason = 'not-injected';
  else if (pod.phase === 'Succeeded' || pod.phase === 'Failed') reason = 'not-running';
  return { meshed: reason === undefined, reason, skipOutbound, skipInbound, opaquePorts, errors };
}

export function samePolicy(a: PodPolicy, b: PodPolicy): boolean {
  return (
    a.meshed === b.meshed &&
    a.skipOutbound.toString() === b.skipOutbound.toString() &&
    a.skipInbound.toString() === b.skipInbound.toString() &&
    String(a.opaquePorts) === String(b.opaquePorts)
  );
}
