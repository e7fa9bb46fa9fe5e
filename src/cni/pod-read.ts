// The plugin's read of its pod from the API server when no agent answers (docs/install.md, "The
// CNI plugin"): a pod annotated meshed in a namespace that is not must wait for the agent too.
// One GET with the install container's kubeconfig, bounded in time and size; whether the pod is
// meshed is the agent's own rule (src/k8s/annotations.ts), loaded only on this path so the
// agent's path stays as small as before.
import * as fs from 'node:fs';
import type * as http from 'node:http';
// node:https by an ES import is fine: only node:http's exports load undici (src/util/builtins.ts).
import * as https from 'node:https';
import { nodeHttp } from '../util/builtins.ts';
import { apiUrl, parseKubeconfig } from './kubeconfig.ts';
import type { PodRead } from './decide.ts';
import type { PodRef } from './spec.ts';

export const POD_READ_TIMEOUT_MS = 5_000;
/** A pod object is a few KiB; its annotations are capped at 256 KiB by the API server. */
const MAX_BODY = 1 << 20;

function get(url: URL, token: string, ca: string | undefined, insecure: boolean, timeoutMs: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const opts = { method: 'GET', headers: { authorization: `Bearer ${token}`, accept: 'application/json' }, signal: AbortSignal.timeout(timeoutMs) };
    const onRes = (res: http.IncomingMessage) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
        if (body.length > MAX_BODY) res.destroy(new Error(`the answer is over ${MAX_BODY} bytes`));
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    };
    const req = url.protocol === 'https:' ? https.request(url, { ...opts, ...(ca ? { ca } : {}), rejectUnauthorized: !insecure }, onRes) : nodeHttp().request(url, opts, onRes);
    req.on('error', reject);
    req.end();
  });
}

function statusMessage(status: number, body: string): string {
  let msg = '';
  try {
    msg = String(JSON.parse(body)?.message ?? '');
  } catch {
    msg = body.slice(0, 200);
  }
  const hint = status === 401 ? ' (the token in the kubeconfig is no longer valid: install-cni rewrites it when it rotates; check that container)' : status === 403 ? ' (the plugin\'s ServiceAccount mesh-agent-cni needs get on pods: re-apply mesh-agent install)' : '';
  return `HTTP ${status}${msg ? `: ${msg}` : ''}${hint}`;
}

/** The pod as the API server has it, and whether the agent's rule meshes it by its own annotations; a failure is returned, never thrown. */
export async function readPod(kubeconfigFile: string | null, pod: PodRef, timeoutMs = POD_READ_TIMEOUT_MS): Promise<PodRead> {
  if (kubeconfigFile === null) return { kind: 'not-configured' };
  const where = `the API server (kubeconfig ${kubeconfigFile})`;
  try {
    const access = parseKubeconfig(fs.readFileSync(kubeconfigFile, 'utf8'), kubeconfigFile);
    const url = apiUrl(access.server, `/api/v1/namespaces/${encodeURIComponent(pod.namespace)}/pods/${encodeURIComponent(pod.name)}`);
    const res = await get(url, access.token, access.caPem, access.insecure === true, timeoutMs);
    if (res.status !== 200) return { kind: 'failed', error: `${where}: ${statusMessage(res.status, res.body)}` };
    const obj = JSON.parse(res.body);
    if (pod.uid && obj?.metadata?.uid !== pod.uid) return { kind: 'failed', error: `${where} has pod ${pod.namespace}/${pod.name} with uid ${obj?.metadata?.uid}, not this sandbox's ${pod.uid}` };
    const { resolvePolicy } = await import('../k8s/annotations.ts');
    const policy = resolvePolicy({ annotations: obj?.metadata?.annotations, hostNetwork: obj?.spec?.hostNetwork === true, phase: obj?.status?.phase }, undefined);
    return { kind: 'read', meshed: policy.meshed, inboundPolicy: policy.inboundPolicy };
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const what = err.name === 'TimeoutError' || err.name === 'AbortError' ? `no answer within ${timeoutMs} ms` : err.code ? `${err.code} ${err.message}` : err.message;
    return { kind: 'failed', error: `${where}: ${what}` };
  }
}
