// What the plugin and the node's agent say to each other over the agent's unix socket (HTTP/1.1,
// JSON): the plugin asks the agent to admit a pod at its sandbox's ADD; the agent answers once
// the pod's capture and policy are in the kernel, or that it is not meshed. Pure.
import { show } from '../util/show.ts';

export const ADMIT_PATH = '/v1/cni/add';
export const RELEASE_PATH = '/v1/cni/del';
/** Either way a message is a few hundred bytes; a peer sending more is refused, not buffered. */
export const MAX_MESSAGE_BYTES = 16 * 1024;

/**
 * A message read as it arrives, both ends of the socket: bounded in bytes (text counted in
 * characters passed three times the bound with multi-byte names), decoded once whole so a
 * character split between two reads stays whole.
 */
export class MessageReader {
  #chunks: Buffer[] = [];
  #bytes = 0;

  /** Takes a read; false once the message is over MAX_MESSAGE_BYTES (stop reading it). */
  add(chunk: Buffer): boolean {
    this.#bytes += chunk.length;
    if (this.#bytes > MAX_MESSAGE_BYTES) return false;
    this.#chunks.push(chunk);
    return true;
  }

  text(): string {
    return Buffer.concat(this.#chunks, this.#bytes).toString('utf8');
  }
}

export interface AdmitRequest {
  namespace: string;
  name: string;
  /** K8S_POD_UID when the runtime passes it (containerd and CRI-O do). */
  uid?: string;
  /** The pod's addresses from the network plugin's result (the Pod object has none yet). */
  ips: string[];
  containerId: string;
}

export type AdmitAnswer =
  /** The pod's redirection and inbound policy are in the kernel. */
  | { result: 'meshed'; policy: string; failsClosed: boolean }
  | { result: 'not-meshed'; reason: string }
  /**
   * Not admitted yet (the agent starting, stopping, its pod list or the pod's policy not there
   * in time); meshed: whether the agent knows the pod to be meshed (null: it does not know the pod).
   */
  | { result: 'retry'; meshed: boolean | null; message: string };

const NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;
const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

function isIpv4(s: string): boolean {
  const m = IPV4.exec(s);
  return m !== null && m.slice(1).every((x) => Number(x) <= 255);
}

/** The agent's check of a request (a peer's input: never trusted, every problem named). */
export function parseAdmitRequest(body: string): AdmitRequest {
  let o: any;
  try {
    o = JSON.parse(body);
  } catch (e) {
    throw new Error(`the admission request is not JSON: ${(e as Error).message}`);
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new Error('the admission request is not a JSON object');
  for (const k of ['namespace', 'name'] as const) {
    if (typeof o[k] !== 'string' || o[k].length > 253 || !NAME.test(o[k])) throw new Error(`${k}: ${show(o[k])} is not a Kubernetes object name`);
  }
  if (o.uid !== undefined && (typeof o.uid !== 'string' || o.uid.length > 64 || o.uid === '')) throw new Error(`uid: ${show(o.uid)} is not a pod UID`);
  if (o.ips !== undefined && (!Array.isArray(o.ips) || o.ips.length > 8 || !o.ips.every((ip: unknown) => typeof ip === 'string' && ip.length <= 45))) {
    throw new Error('ips: not a list of at most 8 addresses');
  }
  if (typeof o.containerId !== 'string' || o.containerId.length > 256) throw new Error('containerId: not a string of at most 256 characters');
  return { namespace: o.namespace, name: o.name, ...(o.uid !== undefined ? { uid: o.uid } : {}), ips: (o.ips ?? []) as string[], containerId: o.containerId };
}

/** The IPv4 address the capture and the policy table key the pod by (IPv6 is not captured: docs/policy.md). */
export function ipv4Of(ips: readonly string[]): string | null {
  return ips.find(isIpv4) ?? null;
}

/** The plugin's check of the agent's answer. */
export function parseAdmitAnswer(body: string): AdmitAnswer {
  let o: any;
  try {
    o = JSON.parse(body);
  } catch {
    throw new Error(`the agent's answer is not JSON: ${JSON.stringify(body.slice(0, 200))}`);
  }
  if (o?.result === 'meshed' && typeof o.policy === 'string' && typeof o.failsClosed === 'boolean') return { result: 'meshed', policy: o.policy, failsClosed: o.failsClosed };
  if (o?.result === 'not-meshed' && typeof o.reason === 'string') return { result: 'not-meshed', reason: o.reason };
  if (o?.result === 'retry' && typeof o.message === 'string' && (o.meshed === null || typeof o.meshed === 'boolean')) return { result: 'retry', meshed: o.meshed, message: o.message };
  throw new Error(`the agent's answer is not one the plugin knows: ${JSON.stringify(body.slice(0, 200))}; the plugin and the agent are of different versions: upgrade them together`);
}
