// The agent's answers to `mesh-agent diagnostics` questions the controller relays over its
// link: what its balancer holds for a Service (endpoints), and what routes, retries and
// timeouts apply to the Service's requests for clients of a namespace (policy).
import type { AgentQuery } from '../controller/protocol.ts';
import type { DiscoveryStore } from '../discovery/store.ts';
import type { Router } from '../routing/router.ts';

export function answerQuery(router: Router, discovery: DiscoveryStore, q: AgentQuery): unknown {
  if ((q?.kind !== 'endpoints' && q?.kind !== 'policy') || typeof q.namespace !== 'string' || typeof q.name !== 'string') {
    throw new Error('unknown query; run agent and controller of the same release');
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
