// `mesh-agent run --config DIR|FILE`: the settings `mesh-agent install` puts in the
// mesh-agent-config ConfigMap. Precedence: a flag given on the command line, then the config,
// then the environment (NODE_IP), then the built-in default.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { PortSet } from '../proxy/ports.ts';
import { parseHostPort } from './addr.ts';

/** The ConfigMap's keys, as src/k8s/manifests.ts writes them. */
export const CONFIG_KEYS = ['proxy-port', 'admin-port', 'controller-addr', 'skip-outbound-ports', 'cgroup-root'] as const;
export type ConfigKey = (typeof CONFIG_KEYS)[number];

export interface AgentConfig {
  proxyPort?: number;
  adminPort?: number;
  /** http(s) URL of the controller; the ConfigMap's host:port becomes http://host:port. */
  controllerUrl?: string;
  skipOutboundPorts?: string;
  cgroupRoot?: string;
}

export const DEFAULT_PROXY_PORT = 15001;
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
    doc = parseYaml(fs.readFileSync(file, 'utf8'));
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

/** host:port (the ConfigMap's form) or an http(s) URL; returns a URL. */
export function controllerUrlOf(value: string, what: string): string {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(value)) {
    let u: URL;
    try {
      u = new URL(value);
    } catch {
      throw new Error(`${what}: "${value}" is not a URL; use http://HOST:PORT`);
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`${what}: "${value}": use an http:// or https:// URL`);
    return value;
  }
  const i = value.lastIndexOf(':');
  const host = i > 0 ? value.slice(0, i).replace(/^\[(.*)\]$/, '$1') : '';
  const p = i > 0 ? value.slice(i + 1) : '';
  const hostOk = net.isIP(host) !== 0 || /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/i.test(host);
  const portOk = /^\d+$/.test(p) && Number(p) >= 1 && Number(p) <= 65535;
  if (!hostOk || !portOk) throw new Error(`${what}: "${value}" is not HOST:PORT (e.g. mesh-agent-controller.mesh-agent.svc:8086) or an http:// URL`);
  return `http://${net.isIP(host) === 6 ? `[${host}]` : host}:${p}`;
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
        if (value !== '') config.controllerUrl = controllerUrlOf(value, `${origin}: key ${key}`);
        break;
      case 'skip-outbound-ports':
        try {
          config.skipOutboundPorts = PortSet.parse(value).toString();
        } catch (e) {
          throw new Error(`${origin}: key ${key}: "${value}": ${(e as Error).message}`);
        }
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

/** The flags `run` reads here, as commander parsed them. */
export interface RunFlags {
  proxyAddr?: string;
  admin?: string;
  cgroupRoot?: string;
  skipOutboundPorts?: string;
  /** --controller HOST:PORT or URL. */
  controller?: string;
}

export interface RunSettings {
  proxy: { host: string; port: number };
  admin: { host: string; port: number };
  /** undefined: the host's cgroup2 mount. */
  cgroupRoot?: string;
  skipOutboundPorts: string;
  controllerUrl?: string;
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
    skipOutboundPorts: given('skipOutboundPorts') ? flags.skipOutboundPorts! : (config.skipOutboundPorts ?? ''),
    controllerUrl: given('controller') ? controllerUrlOf(flags.controller!, '--controller') : config.controllerUrl,
  };
}
