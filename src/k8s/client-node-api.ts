// @kubernetes/client-node behind the agent's KubeApi, for the configs the lean client
// (kube-api.ts) leaves to it: exec and auth-provider credential plugins, proxies. Imported only
// then (and by the controller): it costs ~60 MB of RSS.
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { abortable, abortableWatch } from './client-node-signal.ts';
import type { KubeApi } from './kube-api.ts';

/** A kubeconfig file when given; else in-cluster config when KUBERNETES_SERVICE_HOST is set; else $KUBECONFIG / ~/.kube/config. */
export function loadKubeConfig(kubeconfig?: string): KubeConfig {
  const kc = new KubeConfig();
  if (kubeconfig) kc.loadFromFile(kubeconfig);
  else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
  else kc.loadFromDefault();
  return kc;
}

/** The agent's two lists and its watches through client-node. */
export function clientNodeApi(kc: KubeConfig, watchdogMs: number): KubeApi {
  const server = kc.getCurrentCluster()?.server;
  if (!server) throw new Error('kubeconfig has no current cluster; pass --kubeconfig or run in-cluster');
  const core = kc.makeApiClient(CoreV1Api);
  // The library aborts a watch silent for 30 s by itself; on a quiet cluster bookmarks may be a
  // minute apart, so leave silence to the reflector's watchdog, which also counts and reports it.
  // stop() aborts a watch not answered yet too (client-node-signal.ts).
  const watch = abortableWatch(kc, watchdogMs + 1_000);
  return {
    server,
    watch: (path, query, onEvent, onDone, signal) => watch.watch(path, query, onEvent, onDone, signal),
    async get(path, signal) {
      // The agent's own Node (its zone label); nothing else is read one at a time through here.
      const node = /^\/api\/v1\/nodes\/([^/]+)$/.exec(path)?.[1];
      if (node === undefined) throw new Error(`the client-node adapter gets nodes only, not ${path}`);
      try {
        return (await core.readNode({ name: decodeURIComponent(node) }, abortable(signal))) as unknown as Record<string, any>;
      } catch (e) {
        // client-node's ApiException carries the status as `code`; the agent reads `statusCode`, as the lean client's errors.
        const code = (e as { code?: number }).code;
        throw typeof code === 'number' ? Object.assign(new Error(`get ${path}: HTTP ${code}: ${(e as Error).message}`), { statusCode: code }) : e;
      }
    },
    async list(path, query, signal) {
      const o = abortable(signal);
      // One namespace's pods: KubeSource.getPod, a pod read ahead of the watch for a CNI ADD.
      const ns = /^\/api\/v1\/namespaces\/([^/]+)\/pods$/.exec(path)?.[1];
      const l = path === '/api/v1/pods' ? await core.listPodForAllNamespaces({ fieldSelector: query.fieldSelector }, o)
        : path === '/api/v1/namespaces' ? await core.listNamespace({}, o)
        : ns !== undefined ? await core.listNamespacedPod({ namespace: decodeURIComponent(ns), fieldSelector: query.fieldSelector }, o)
        : null;
      if (l === null) throw new Error(`the client-node adapter lists pods and namespaces only, not ${path}`);
      return { items: l.items as unknown as Array<Record<string, any>>, resourceVersion: l.metadata?.resourceVersion ?? '' };
    },
  };
}
