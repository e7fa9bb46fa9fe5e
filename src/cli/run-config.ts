// `mesh-agent run --config DIR|FILE`: the settings `mesh-agent install` puts in the
// mesh-agent-config ConfigMap. Precedence: a flag given on the command line, then the config,
// then the environment (NODE_IP), then the built-in default.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { lazyYaml } from '../k8s/lazy-yaml.ts';
import { controllerUrl } from '../controller/addr.ts';
import { parsePorts } from '../k8s/annotations.ts';
import { parseHostPort } from './addr.ts';
import { parseProxyWorkers } from '../workers/cpus.ts';
import { DEFAULT_CLUSTER_NETWORKS, DEFAULT_INBOUND_POLICY, parseDefaultPolicy, parseNetworks, type DefaultPolicy } from '../policy/model.ts';
import { MAX_TIMER_MS } from '../util/timer-bound.ts';
import { parseDuration } from '../routing/duration.ts';

/** The ConfigMap's keys, as src/k8s/manifests.ts writes them. */
export const CONFIG_KEYS = ['proxy-port', 'admin-port', 'controller-addr', 'skip-outbound-ports', 'cgroup-root', 'identity-addr', 'inbound-port', 'default-inbound-policy', 'cluster-networks', 'proxy-workers'] as const;
export type ConfigKey = (typeof CONFIG_KEYS)[number];

export interface AgentConfig {
  proxyPort?: number;
  adminPort?: number;
  /** http://host:port of the controller (cleartext h2c; see controller/addr.ts). */
  controllerUrl?: string;
  skipOutboundPorts?: string;
  cgroupRoot?: string;
  /** HOST:PORT of the identity service: mTLS between nodes (docs/identity.md). */
  identityAddr?: string;
  /** The inbound listener's port; 0: no inbound capture. */
  inboundPort?: number;
  defaultInboundPolicy?: DefaultPolicy;
  clusterNetworks?: string;
  /** Proxies (main thread and workers); undefined or 'auto': from the agent's CPUs. */
  proxyWorkers?: number | 'auto';
}

export const DEFAULT_PROXY_PORT = 15001;
/** Where captured inbound connections are handed (Istio's inbound port). */
export const DEFAULT_INBOUND_PORT = 15006;
export const DEFAULT_ADMIN = '0.0.0.0:4191';

/**
 * Reads a config: a directory with one file per key (a mounted ConfigMap; kubelet's "..data"
 * bookkeeping entries are skipped), or a YAML/JSON file holding either a ConfigMap object or a
 * plain map of keys.
 */
export function readConfigSource(file: string): Record<string, string> {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    throw new Error(`--config ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file or directory' : (e as Error).message}; pass the directory the mesh-agent-config ConfigMap is mounted at, or a YAML file`);
  }
  if (st.isDirectory()) {
    const raw: Record<string, string> = {};
    for (const name of fs.readdirSync(file)) {
      if (name.startsWith('.')) continue;
      const p = path.join(file, name);
      if (!fs.statSync(p).isFile()) continue;
      raw[name] = fs.readFileSync(p, 'utf8');
    }
    return raw;
  }
  let doc: unknown;
  try {
    doc = lazyYaml().parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`--config ${file}: not valid YAML or JSON: ${(e as Error).message.split('\n')[0]}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new Error(`--config ${file}: expected a map of keys (${CONFIG_KEYS.join(', ')}) or a ConfigMap`);
  const o = doc as Record<string, unknown>;
  const data = o.kind === 'ConfigMap' ? (o.data ?? {}) : o;
  if (typeof data !== 'object' || data === null || Array.isArray(data)) throw new Error(`--config ${file}: the ConfigMap's data must be a map`);
  const raw: Record<string, string> = {};
  for (const [k, v] of Object.entries(data)) {
    if (v === null || typeof v === 'object') throw new Error(`--config ${file}: key ${k}: expected a string or number, got ${JSON.stringify(v)}`);
    raw[k] = String(v);
  }
  return raw;
}

function port(origin: string, key: string, value: string): number {
  const n = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!(n >= 1 && n <= 65535)) throw new Error(`${origin}: key ${key}: "${value}" is not a port (1-65535)`);
  return n;
}

/** Validates every key; unknown keys are warnings (a newer install may add keys an older agent ignores). */
export function parseAgentConfig(raw: Record<string, string>, origin: string): { config: AgentConfig; warnings: string[] } {
  const config: AgentConfig = {};
  const warnings: string[] = [];
  for (const [key, rawValue] of Object.entries(raw)) {
    const value = rawValue.trim();
    switch (key) {
      case 'proxy-port':
        if (value !== '') config.proxyPort = port(origin, key, value);
        break;
      case 'admin-port':
        if (value !== '') config.adminPort = port(origin, key, value);
        break;
      case 'controller-addr':
        if (value !== '') config.controllerUrl = controllerUrl(value, `${origin}: key ${key}`);
        break;
      case 'skip-outbound-ports':
        try {
          config.skipOutboundPorts = parsePorts(value, `${origin}: key ${key}`).toString();
        } catch (e) {
          const m = (e as Error).message;
          throw new Error(m.startsWith(origin) ? m : `${origin}: key ${key}: "${value}": ${m}`);
        }
        break;
      case 'identity-addr':
        if (value === '') break;
        if (!/^[^\s:]+:\d{1,5}$/.test(value)) throw new Error(`${origin}: key ${key}: "${value}" is not HOST:PORT, e.g. mesh-agent-identity.mesh-agent.svc:8080`);
        config.identityAddr = value;
        break;
      case 'inbound-port':
        if (value === 'off') config.inboundPort = 0;
        else if (value !== '') config.inboundPort = port(origin, key, value);
        break;
      case 'default-inbound-policy':
        if (value === '') break;
        try {
          config.defaultInboundPolicy = parseDefaultPolicy(value, `${origin}: key ${key}`);
        } catch (e) {
          throw new Error((e as Error).message);
        }
        break;
      case 'cluster-networks':
        if (value === '') break;
        parseNetworks(value, `${origin}: key ${key}`);
        config.clusterNetworks = value;
        break;
      case 'proxy-workers':
        config.proxyWorkers = parseProxyWorkers(value, `${origin}: key ${key}`);
        break;
      case 'cgroup-root':
        if (value === '') break;
        if (!path.isAbsolute(value)) throw new Error(`${origin}: key ${key}: "${value}" is not an absolute path; use the pods' cgroup directory, e.g. /sys/fs/cgroup/kubepods.slice`);
        config.cgroupRoot = value;
        break;
      default:
        warnings.push(`${origin}: unknown key ${key} ignored; known keys: ${CONFIG_KEYS.join(', ')}`);
    }
  }
  return { config, warnings };
}

/** kubectl and linkerd spell booleans --flag=true|false. */
export function parseBool(v: string, flag: string): boolean {
  if (v === 'true') return true;
  if (v === 'false') return false;
  throw new Error(`${flag} must be true or false, not ${JSON.stringify(v)}; e.g. ${flag}=false`);
}

export function parseCount(v: string, flag: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < 1) throw new Error(`${flag} must be a whole number of at least 1, not ${JSON.stringify(v)}`);
  return n;
}


/**
 * A duration flag: whole milliseconds (what these flags always took, so `--drain 10000` keeps its
 * meaning) or a duration as kubectl and linkerd take one (`500ms`, `10s`, `1m30s`). Number()
 * alone took "" and "1e3" and let "-5", "10s" (NaN) or a delay past Node's timer limit through,
 * each of which became a wait of ~1 ms.
 */
export function parseMs(v: string, flag: string, example: string, min = 0): number {
  let n = Number.NaN;
  if (/^\d+$/.test(v)) n = Number(v);
  else if (/^(\d+(\.\d+)?(ms|s|m|h|d))+$/.test(v)) n = parseDuration(v, flag);
  if (!(n >= min && n <= MAX_TIMER_MS)) {
    throw new Error(`${flag} must be a duration from ${min === 0 ? '0' : `${min}ms`} to 24d (milliseconds, or 500ms, 10s, 1m), not ${JSON.stringify(v)}; e.g. ${flag} ${example}`);
  }
  return n;
}

/** The flags `run` reads here, as commander parsed them. */
export interface RunFlags {
  proxyAddr?: string;
  admin?: string;
  cgroupRoot?: string;
  skipOutboundPorts?: string;
  /** --controller HOST:PORT or URL. */
  controller?: string;
  identityAddr?: string;
  /** --inbound-addr IP:PORT, or off. */
  inboundAddr?: string;
  defaultInboundPolicy?: string;
  clusterNetworks?: string;
  /** --proxy-workers N or auto. */
  proxyWorkers?: string;
}

export interface RunSettings {
  proxy: { host: string; port: number };
  admin: { host: string; port: number };
  /** undefined: the host's cgroup2 mount. */
  cgroupRoot?: string;
  skipOutboundPorts: string;
  controllerUrl?: string;
  identityAddr?: string;
  /** The inbound listener; null: no inbound capture (docs/policy.md). */
  inbound: { host: string; port: number } | null;
  defaultInboundPolicy: DefaultPolicy;
  clusterNetworks: string;
  /** The proxies to run; 'auto': as many as the CPUs the agent may use (the caller counts them). */
  proxyWorkers: number | 'auto';
}

/**
 * Merges flags, config and environment. `fromCli(name)` says whether a flag was given on the
 * command line, so a flag's built-in default never hides the config's value.
 */
export function resolveRunSettings(flags: RunFlags, fromCli: (flag: keyof RunFlags) => boolean, config: AgentConfig, env: { NODE_IP?: string }): RunSettings {
  const given = (k: keyof RunFlags) => fromCli(k) && flags[k] !== undefined;
  let proxy: { host: string; port: number };
  if (given('proxyAddr')) {
    proxy = parseHostPort(flags.proxyAddr!, '--proxy-addr', undefined, DEFAULT_PROXY_PORT);
  } else {
    if (!env.NODE_IP) throw new Error('no proxy address: pass --proxy-addr IP:PORT or set NODE_IP (the DaemonSet sets it from status.hostIP)');
    proxy = parseHostPort(`${env.NODE_IP}:${config.proxyPort ?? DEFAULT_PROXY_PORT}`, 'NODE_IP');
  }
  const admin = given('admin')
    ? parseHostPort(flags.admin!, '--admin', '0.0.0.0', 4191)
    : config.adminPort !== undefined
      ? { host: '0.0.0.0', port: config.adminPort }
      : parseHostPort(DEFAULT_ADMIN, '--admin');
  return {
    proxy,
    admin,
    cgroupRoot: given('cgroupRoot') ? flags.cgroupRoot : config.cgroupRoot,
    // Checked now: the datapath holds MAX_PORT_RANGES, and would refuse more only after the proxy listens.
    skipOutboundPorts: given('skipOutboundPorts') ? parsePorts(flags.skipOutboundPorts!, '--skip-outbound-ports').toString() : (config.skipOutboundPorts ?? ''),
    controllerUrl: given('controller') ? controllerUrl(flags.controller!, '--controller') : config.controllerUrl,
    ...(given('identityAddr') || config.identityAddr !== undefined ? { identityAddr: given('identityAddr') ? flags.identityAddr : config.identityAddr } : {}),
    inbound: given('inboundAddr')
      ? flags.inboundAddr === 'off' ? null : parseHostPort(flags.inboundAddr!, '--inbound-addr', proxy.host, DEFAULT_INBOUND_PORT)
      : config.inboundPort === 0 ? null : { host: proxy.host, port: config.inboundPort ?? DEFAULT_INBOUND_PORT },
    defaultInboundPolicy: given('defaultInboundPolicy') ? parseDefaultPolicy(flags.defaultInboundPolicy!, '--default-inbound-policy') : (config.defaultInboundPolicy ?? DEFAULT_INBOUND_POLICY),
    clusterNetworks: given('clusterNetworks') ? (parseNetworks(flags.clusterNetworks!, '--cluster-networks'), flags.clusterNetworks!) : (config.clusterNetworks ?? DEFAULT_CLUSTER_NETWORKS),
    proxyWorkers: given('proxyWorkers') ? parseProxyWorkers(flags.proxyWorkers!, '--proxy-workers') : (config.proxyWorkers ?? 'auto'),
  };
}
