// ADD's decision: whether the pod's sandbox may come up. Pure. The agent's answer decides when it
// has one; when it has none, the state file it keeps on the node says whether the pod's namespace
// is meshed, and the pod read from the API server whether its own annotations mesh it: such a pod
// fails (the runtime retries it) rather than start without its policy, others start as if the mesh
// were not there (docs/install.md, "The CNI plugin").
import { CNI_ERRORS, CniError, type PodRef } from './spec.ts';
import type { AdmitAnswer } from './protocol.ts';
import type { StateRead } from './state.ts';

export type AgentOutcome = { kind: 'answer'; answer: AdmitAnswer } | { kind: 'unreachable'; error: string };

/** The pod read from the API server (src/cni/pod-read.ts), when the decision needs it. */
export type PodRead =
  | { kind: 'read'; meshed: boolean; inboundPolicy: string }
  | { kind: 'failed'; error: string }
  /** No kubeconfig in the conflist entry (an older install). */
  | { kind: 'not-configured' };

export type AddDecision = { ok: true; why: string } | { ok: false; error: CniError };

const FIX = 'the runtime retries the ADD, and the pod starts once the agent has its policy in the kernel; check the mesh-agent pod of this node (kubectl -n mesh-agent get pods -o wide)';

/** Whether the decision needs the pod's own annotations: only when the agent has not decided and the namespace does not already make the pod wait. */
export function needsPodRead(pod: PodRef, agent: AgentOutcome, state: StateRead): boolean {
  if (agent.kind === 'answer' && (agent.answer.result !== 'retry' || agent.answer.meshed === true)) return false;
  return !(state.kind === 'ok' && state.state.meshedNamespaces.includes(pod.namespace));
}

export function decideAdd(pod: PodRef, agent: AgentOutcome, stateFile: string, state: StateRead, read: PodRead = { kind: 'not-configured' }): AddDecision {
  const who = `pod ${pod.namespace}/${pod.name}`;
  let agentSays = agent.kind === 'unreachable' ? `no mesh-agent answers on this node (${agent.error})` : '';
  if (agent.kind === 'answer') {
    const a = agent.answer;
    if (a.result === 'meshed') return { ok: true, why: `meshed (${a.policy}${a.failsClosed ? ', fails closed' : ''})` };
    if (a.result === 'not-meshed') return { ok: true, why: `not meshed: ${a.reason}` };
    if (a.meshed === true) {
      return { ok: false, error: new CniError(CNI_ERRORS.tryAgainLater, `${who} is meshed and mesh-agent has not yet put its policy in the kernel: ${a.message}; ${FIX}`) };
    }
    agentSays = `mesh-agent could not decide (${a.message})`;
  }
  const nsMeshed = state.kind === 'ok' && state.state.meshedNamespaces.includes(pod.namespace);
  if (!nsMeshed && read.kind === 'read' && read.meshed) {
    return {
      ok: false,
      error: new CniError(CNI_ERRORS.tryAgainLater, `${agentSays}, and ${who} is meshed by its own annotation mesh-agent.io/inject (read from the API server; inbound policy ${read.inboundPolicy}): it would start without its inbound policy; ${FIX}, or remove mesh-agent.io/inject from the pod to start it unmeshed`),
    };
  }
  // What the pod read adds to a decision by the namespace alone.
  const byPod = read.kind === 'read' ? '; the pod\'s own annotations (read from the API server) do not mesh it' : read.kind === 'failed' ? `; decided by the namespace only: the pod could not be read from ${read.error}` : '';
  if (state.kind === 'missing') return { ok: true, why: `${agentSays}; no state file ${stateFile}: no agent has run on this node, nothing is meshed yet${byPod}` };
  if (state.kind === 'invalid') {
    return {
      ok: false,
      error: new CniError(CNI_ERRORS.badStateFile, `${agentSays}, and its state file ${stateFile} cannot be read (${state.error}), so the plugin cannot tell whether ${who} is meshed${byPod}; the agent rewrites the file when it starts, or delete it to let pods start without waiting for the agent`),
    };
  }
  if (!state.state.meshedNamespaces.includes(pod.namespace)) return { ok: true, why: `${agentSays}; namespace ${pod.namespace} is not meshed${byPod}` };
  return {
    ok: false,
    error: new CniError(CNI_ERRORS.tryAgainLater, `${agentSays}, and namespace ${pod.namespace} is meshed: ${who} would start without its inbound policy; ${FIX}, or remove mesh-agent.io/inject from the namespace to start its pods unmeshed`),
  };
}
