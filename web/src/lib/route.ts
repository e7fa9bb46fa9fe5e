// The page's routes live in the URL's fragment, so the controller serves one page for every path. Pure.

export type Route =
  | { page: 'namespaces' }
  | { page: 'namespace'; namespace: string }
  | { page: 'workload'; namespace: string; kind: string; name: string }
  | { page: 'nodes' }
  | { page: 'unknown'; hash: string };

export function parseRoute(hash: string): Route {
  const parts = hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  if (parts.length === 0 || (parts.length === 1 && parts[0] === 'namespaces')) return { page: 'namespaces' };
  if (parts[0] === 'nodes' && parts.length === 1) return { page: 'nodes' };
  if (parts[0] === 'namespaces' && parts.length === 2) return { page: 'namespace', namespace: parts[1]! };
  if (parts[0] === 'namespaces' && parts.length === 4) return { page: 'workload', namespace: parts[1]!, kind: parts[2]!, name: parts[3]! };
  return { page: 'unknown', hash };
}

export const href = {
  namespaces: () => '#/namespaces',
  namespace: (ns: string) => `#/namespaces/${encodeURIComponent(ns)}`,
  workload: (ns: string, kind: string, name: string) => `#/namespaces/${encodeURIComponent(ns)}/${encodeURIComponent(kind)}/${encodeURIComponent(name)}`,
  nodes: () => '#/nodes',
};
