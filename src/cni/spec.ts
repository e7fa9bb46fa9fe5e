// The CNI protocol as our chained plugin speaks it (CNI spec 1.0: the command and the pod from the
// environment, the network configuration with the previous plugin's result on stdin, a result or
// an error object on stdout). Pure: src/cni/plugin.ts does the I/O.

/** The versions whose result format we read and hand back unchanged. */
export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
/** The plugin's type in a conflist, and the executable's name in the CNI bin directory. */
export const PLUGIN_TYPE = 'mesh-agent-cni';
export const DEFAULT_AGENT_SOCKET = '/var/run/mesh-agent-cni/cni.sock';
export const DEFAULT_STATE_FILE = '/var/lib/mesh-agent/cni-state.json';
/** How long ADD waits for the agent's answer (it waits for the pod's policy in the kernel first). */
export const DEFAULT_ADD_TIMEOUT_MS = 15_000;

/** CNI spec error codes we use (1-99 are the spec's; 100+ are the plugin's). */
export const CNI_ERRORS = {
  incompatibleVersion: 1,
  invalidEnvironment: 4,
  decodeFailure: 6,
  invalidConfig: 7,
  /** Transient: the runtime retries the ADD (the agent is not up, or the pod's policy not yet in the kernel). */
  tryAgainLater: 11,
  /** The agent's state file cannot be read (ours). */
  badStateFile: 100,
} as const;

export class CniError extends Error {
  readonly code: number;
  readonly details: string;
  constructor(code: number, msg: string, details = '') {
    super(msg);
    this.code = code;
    this.details = details;
  }
}

export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'VERSION' | 'GC' | 'STATUS';

export interface PluginConfig {
  cniVersion: string;
  /** The network's name (the conflist's). */
  name: string;
  /** Where the node's agent answers admissions (its hostPath socket). */
  agentSocket: string;
  /** The agent's record of what is meshed on this node, for when it does not answer. */
  stateFile: string;
  addTimeoutMs: number;
  /** The kubeconfig the plugin reads its pod with when no agent answers (null: an entry without one, by the namespace only). */
  kubeconfig: string | null;
  /** The previous plugin's result (chained), handed back unchanged. */
  prevResult: Record<string, unknown> | null;
}

export interface PodRef {
  namespace: string;
  name: string;
  uid?: string;
}

export interface Invocation {
  command: CniCommand;
  containerId: string;
  netns: string;
  ifname: string;
  /** null: not a Kubernetes pod (no K8S_POD_NAME in CNI_ARGS): nothing for us to do. */
  pod: PodRef | null;
  config: PluginConfig;
}

const COMMANDS: readonly string[] = ['ADD', 'DEL', 'CHECK', 'VERSION', 'GC', 'STATUS'];

/** CNI_ARGS: "K=V;K=V" (IgnoreUnknown=1, K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID, ...). */
export function parseCniArgs(s: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of (s ?? '').split(';')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    if (eq <= 0) throw new CniError(CNI_ERRORS.invalidEnvironment, `CNI_ARGS: "${part}" is not KEY=VALUE; the container runtime sets CNI_ARGS as K8S_POD_NAMESPACE=NS;K8S_POD_NAME=NAME`);
    out.set(part.slice(0, eq), part.slice(eq + 1));
  }
  return out;
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/** The network configuration on stdin (the runtime adds cniVersion, name and prevResult to our conflist entry). */
export function parseConfig(stdin: string): PluginConfig {
  let doc: unknown;
  try {
    doc = JSON.parse(stdin);
  } catch (e) {
    throw new CniError(CNI_ERRORS.decodeFailure, `the network configuration on stdin is not JSON: ${(e as Error).message}; the container runtime passes the conflist entry with its cniVersion and name`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new CniError(CNI_ERRORS.decodeFailure, 'the network configuration on stdin is not a JSON object; the container runtime passes the conflist entry');
  const o = doc as Record<string, unknown>;
  const cniVersion = str(o.cniVersion) ?? '0.3.1';
  if (!(SUPPORTED_VERSIONS as readonly string[]).includes(cniVersion)) {
    throw new CniError(CNI_ERRORS.incompatibleVersion, `cniVersion ${cniVersion} is not supported; set the conflist's cniVersion to one of ${SUPPORTED_VERSIONS.join(', ')}`);
  }
  const timeout = o.addTimeoutMs;
  if (timeout !== undefined && (typeof timeout !== 'number' || !Number.isInteger(timeout) || timeout <= 0)) {
    throw new CniError(CNI_ERRORS.invalidConfig, `addTimeoutMs: ${JSON.stringify(timeout)} is not a positive whole number of milliseconds; fix the ${PLUGIN_TYPE} entry of the conflist`);
  }
  const prev = o.prevResult;
  if (prev !== undefined && (typeof prev !== 'object' || prev === null || Array.isArray(prev))) {
    throw new CniError(CNI_ERRORS.invalidConfig, 'prevResult is not a JSON object; the container runtime passes the previous plugin\'s result');
  }
  for (const key of ['agentSocket', 'stateFile', 'kubeconfig'] as const) {
    if (o[key] !== undefined && (typeof o[key] !== 'string' || !(o[key] as string).startsWith('/'))) {
      throw new CniError(CNI_ERRORS.invalidConfig, `${key}: ${JSON.stringify(o[key])} is not an absolute path; fix the ${PLUGIN_TYPE} entry of the conflist (mesh-agent install writes it)`);
    }
  }
  return {
    cniVersion,
    name: str(o.name) ?? '',
    agentSocket: str(o.agentSocket) ?? DEFAULT_AGENT_SOCKET,
    stateFile: str(o.stateFile) ?? DEFAULT_STATE_FILE,
    addTimeoutMs: (timeout as number | undefined) ?? DEFAULT_ADD_TIMEOUT_MS,
    kubeconfig: str(o.kubeconfig) ?? null,
    prevResult: (prev as Record<string, unknown> | undefined) ?? null,
  };
}

/** The command, the pod and the configuration of one run of the plugin. */
export function parseInvocation(env: Record<string, string | undefined>, stdin: string): Invocation {
  const command = env.CNI_COMMAND;
  if (command === undefined || !COMMANDS.includes(command)) {
    throw new CniError(CNI_ERRORS.invalidEnvironment, `CNI_COMMAND ${command === undefined ? 'is not set' : `"${command}" is not one of ${COMMANDS.join(', ')}`}; ${PLUGIN_TYPE} is a CNI plugin, run by the container runtime from the node's conflist`);
  }
  const config = parseConfig(stdin);
  const args = parseCniArgs(env.CNI_ARGS);
  const namespace = str(args.get('K8S_POD_NAMESPACE'));
  const name = str(args.get('K8S_POD_NAME'));
  const uid = str(args.get('K8S_POD_UID'));
  const cmd = command as CniCommand;
  const containerId = env.CNI_CONTAINERID ?? '';
  if ((cmd === 'ADD' || cmd === 'DEL' || cmd === 'CHECK') && containerId === '') {
    throw new CniError(CNI_ERRORS.invalidEnvironment, `CNI_CONTAINERID is not set for ${cmd}; the container runtime sets it`);
  }
  return {
    command: cmd,
    containerId,
    netns: env.CNI_NETNS ?? '',
    ifname: env.CNI_IFNAME ?? '',
    pod: namespace !== undefined && name !== undefined ? { namespace, name, ...(uid ? { uid } : {}) } : null,
    config,
  };
}

/** The pod's addresses from the previous plugin's result ("10.244.1.5/32" and 0.3.x's "version" alike). */
export function resultIps(prev: Record<string, unknown> | null): string[] {
  const ips = prev?.ips;
  if (!Array.isArray(ips)) return [];
  const out: string[] = [];
  for (const ip of ips) {
    const addr = typeof ip === 'object' && ip !== null ? (ip as Record<string, unknown>).address : undefined;
    if (typeof addr === 'string' && addr.includes('/')) out.push(addr.slice(0, addr.indexOf('/')));
  }
  return out;
}

/** What ADD prints: the previous result, unchanged (a chained plugin that adds no interface), in the config's version. */
export function renderAddResult(config: PluginConfig): string {
  return JSON.stringify({ ...(config.prevResult ?? {}), cniVersion: config.cniVersion });
}

/**
 * VERSION's result. The spec's `cniVersion` is the request's (the runtime's probe sends its own,
 * libcni's `{"cniVersion":"1.1.0"}`); one the plugin does not speak, or stdin it cannot read, gets
 * the newest it does, as libcni's skel answers its own: VERSION never fails.
 */
export function renderVersion(stdin = ''): string {
  let asked: unknown;
  try {
    asked = (JSON.parse(stdin) as { cniVersion?: unknown } | null)?.cniVersion;
  } catch {
    asked = undefined;
  }
  const cniVersion = (SUPPORTED_VERSIONS as readonly unknown[]).includes(asked) ? asked : SUPPORTED_VERSIONS.at(-1);
  return JSON.stringify({ cniVersion, supportedVersions: SUPPORTED_VERSIONS });
}

/**
 * The request's cniVersion for an error raised before the configuration parses (the spec's error
 * object carries the request's version): read as parseConfig reads it (absent: 0.3.1), whether or
 * not we speak it; undefined when stdin is not a JSON object or the value is not a version.
 */
export function requestVersion(stdin: string): string | undefined {
  let o: unknown;
  try {
    o = JSON.parse(stdin);
  } catch {
    return undefined;
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o)) return undefined;
  const v = (o as Record<string, unknown>).cniVersion ?? '0.3.1';
  return typeof v === 'string' && /^\d{1,4}\.\d{1,4}\.\d{1,4}$/.test(v) ? v : undefined;
}

/** The spec's error object, printed on stdout with a non-zero exit. */
export function renderError(e: CniError, cniVersion = '1.0.0'): string {
  return JSON.stringify({ cniVersion, code: e.code, msg: e.message, ...(e.details ? { details: e.details } : {}) });
}
