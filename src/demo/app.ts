// The demo application as Kubernetes would hold it (pure): one Deployment per service, each
// pod owned by a ReplicaSet named <deployment>-<pod-template-hash>, so the agent's telemetry
// names them deployment/web, deployment/emoji, ... exactly as on a cluster.
import { randomBytes, randomUUID } from 'node:crypto';

export const NAMESPACE = 'emojivoto';

export interface Deployment {
  name: string;
  /** The `app` label, as emojivoto's manifests spell it. */
  app: string;
  /** Module under src/demo/ that is the pod's process. */
  script: string;
  /** Port the service listens on; none for the bot. */
  port?: number;
  /** What it is, for the progress lines. */
  what: string;
}

export const DEPLOYMENTS: readonly Deployment[] = [
  { name: 'emoji', app: 'emoji-svc', script: 'emoji-svc.ts', port: 8080, what: 'gRPC' },
  { name: 'voting', app: 'voting-svc', script: 'voting-svc.ts', port: 8080, what: 'gRPC, votes for :doughnut: fail' },
  { name: 'mailer', app: 'mailer', script: 'mailer-svc.ts', port: 2525, what: 'SMTP, the server speaks first' },
  { name: 'web', app: 'web-svc', script: 'web.ts', port: 8080, what: 'HTTP/1 front end, calls emoji, voting, mailer' },
  { name: 'vote-bot', app: 'vote-bot', script: 'vote-bot.ts', what: 'drives the web' },
];

// Kubernetes' rand.SafeEncodeString alphabet: no vowels, no 0/1/3, so names never spell words.
const SAFE = 'bcdfghjklmnpqrstvwxz2456789';

function safeString(n: number): string {
  return [...randomBytes(n)].map((b) => SAFE[b % SAFE.length]).join('');
}

export interface PodMeta {
  name: string;
  labels: Record<string, string>;
  ownerReferences: object[];
}

/** A pod of the deployment's current ReplicaSet, named and labelled as the controllers do. */
export function podMeta(d: Deployment, hash = safeString(10)): PodMeta {
  return {
    name: `${d.name}-${hash}-${safeString(5)}`,
    labels: { app: d.app, 'app.kubernetes.io/name': d.name, 'app.kubernetes.io/part-of': 'emojivoto', 'pod-template-hash': hash },
    ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: `${d.name}-${hash}`, uid: randomUUID(), controller: true, blockOwnerDeletion: true }],
  };
}

/** The namespace carries the inject annotation, as `kubectl annotate ns` would: every pod in it is meshed. */
export function namespaceObject(): object {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NAMESPACE, annotations: { 'mesh-agent.io/inject': 'enabled' } } };
}
