// The kubeconfig the plugin reads the pod with when no agent answers (as istio-cni's
// ZZZ-istio-cni-kubeconfig): written by the install container from its ServiceAccount (the API
// server's in-cluster address, the token, the CA), read by the plugin. JSON, which kubectl reads
// too, so the plugin needs no YAML parser. Pure.

/** Where the plugin finds the API server, and how it authenticates. */
export interface ApiAccess {
  /** https://HOST:PORT (http:// only for a stand-in API server). */
  server: string;
  token: string;
  /** The CA's PEM; none with insecure (a stand-in API server). */
  caPem?: string;
  insecure?: boolean;
}

export const DEFAULT_PLUGIN_KUBECONFIG = '/etc/cni/net.d/mesh-agent-cni-kubeconfig';

/** The API server as a pod sees it (kubelet sets these in every container). */
export function inClusterServer(env: Record<string, string | undefined>): string | null {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (!host || !port) return null;
  return `https://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/**
 * The URL of API path `p` ("/api/v1/...") on `server`, under the server's own path: a kubeconfig
 * may name a proxy in front of the API server (Rancher's https://HOST/k8s/clusters/ID), and
 * `new URL(p, server)` would drop that prefix.
 */
export function apiUrl(server: string, p: string): URL {
  const u = new URL(server);
  u.pathname = `${u.pathname.replace(/\/+$/, '')}${p}`;
  return u;
}

export function renderKubeconfig(a: ApiAccess): string {
  const cluster: Record<string, unknown> = { server: a.server };
  if (a.caPem) cluster['certificate-authority-data'] = Buffer.from(a.caPem).toString('base64');
  if (a.insecure) cluster['insecure-skip-tls-verify'] = true;
  return JSON.stringify({
    apiVersion: 'v1',
    kind: 'Config',
    'current-context': 'mesh-agent-cni',
    clusters: [{ name: 'mesh-agent-cni', cluster }],
    users: [{ name: 'mesh-agent-cni', user: { token: a.token } }],
    contexts: [{ name: 'mesh-agent-cni', context: { cluster: 'mesh-agent-cni', user: 'mesh-agent-cni' } }],
  }, null, 2) + '\n';
}

/** The current context's server, token and CA; throws naming the file and what is wrong. */
export function parseKubeconfig(text: string, file: string): ApiAccess {
  const fix = `${file} is written by the mesh-agent DaemonSet's install-cni container; restart it (kubectl -n mesh-agent rollout restart ds/mesh-agent-agent)`;
  let o: any;
  try {
    o = JSON.parse(text);
  } catch (e) {
    throw new Error(`${file} is not JSON (${(e as Error).message}); ${fix}`);
  }
  const named = (list: unknown, name: unknown) => (Array.isArray(list) ? list.find((x) => x?.name === name) : undefined);
  const ctx = named(o?.contexts, o?.['current-context'])?.context;
  const cluster = named(o?.clusters, ctx?.cluster)?.cluster;
  const user = named(o?.users, ctx?.user)?.user;
  if (typeof cluster?.server !== 'string' || !/^https?:\/\//.test(cluster.server)) throw new Error(`${file}: the current context has no http(s) server; ${fix}`);
  if (typeof user?.token !== 'string' || user.token === '') throw new Error(`${file}: the current context's user has no token; ${fix}`);
  const caData = cluster['certificate-authority-data'];
  return {
    server: cluster.server,
    token: user.token,
    ...(typeof caData === 'string' ? { caPem: Buffer.from(caData, 'base64').toString('utf8') } : {}),
    ...(cluster['insecure-skip-tls-verify'] === true ? { insecure: true } : {}),
  };
}
