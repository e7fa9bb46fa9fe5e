// The agent's answers to `mesh-agent diagnostics` questions the controller relays over its
// link: what its balancer holds for a Service (endpoints), what routes, retries and timeouts
// apply to the Service's requests for clients of a namespace (policy), and what inbound policy
// applies to one of its node's pods (authz, docs/policy.md).
import type { AgentQuery } from '../controller/protocol.ts';
import type { DiscoveryStore } from '../discovery/store.ts';
import type { Router } from '../routing/router.ts';
import type { InboundPolicies } from './inbound.ts';

export function answerQuery(router: Router, discovery: DiscoveryStore, q: AgentQuery, inbound?: InboundPolicies): unknown {
  if ((q?.kind !== 'endpoints' && q?.kind !== 'policy' && q?.kind !== 'authz') || typeof q.namespace !== 'string' || typeof q.name !== 'string') {
    throw new Error('unknown query; run agent and controller of the same release');
  }
  if (q.kind === 'authz') {
    const d = inbound?.describe(q.namespace, q.name) ?? null;
    if (d === null) throw new Error(`pod ${q.namespace}/${q.name} is not a meshed pod of this node`);
    return d;
  }
  const unknown = () => new Error(`Service ${q.namespace}/${q.name} is not in this agent's discovery (${discovery.synced ? `${discovery.counts().services} Services known` : 'not synced with the controller yet'})`);
  if (q.kind === 'policy') {
    if (typeof q.fromNamespace !== 'string') throw new Error('policy query without fromNamespace; run agent and controller of the same release');
    const ports = router.describePolicy(q.namespace, q.name, q.fromNamespace);
    if (ports === null) throw unknown();
    return { ports };
  }
  const ports = router.describe(q.namespace, q.name);
  if (ports === null) throw unknown();
  return { ports };
}
