// The demo application as Kubernetes would hold it (pure): one Deployment per service, with
// its replicas, and the Service in front of each; the cluster's ReplicaSet stand-in names and
// labels the pods, so the agents' telemetry names them deployment/web, deployment/emoji, ...
// exactly as on a cluster.

export const NAMESPACE = 'emojivoto';
/** Nodes the demo's cluster has; every service's replicas sit on different nodes. */
export const DEMO_NODES = 3;

export interface Deployment {
  name: string;
  /** The `app` label, as emojivoto's manifests spell it; the Service selects on it. */
  app: string;
  /** Module under src/demo/ that is the pod's process. */
  script: string;
  /** Port the service listens on; none for the bot. */
  port?: number;
  replicas: number;
  /** The Service in front of it, and the port clients dial (its targetPort is `port`). */
  service?: { name: string; port: number };
  /** What it is, for the progress lines. */
  what: string;
}

export const DEPLOYMENTS: readonly Deployment[] = [
  { name: 'emoji', app: 'emoji-svc', script: 'emoji-svc.ts', port: 8080, replicas: 2, service: { name: 'emoji-svc', port: 8080 }, what: 'gRPC' },
  { name: 'voting', app: 'voting-svc', script: 'voting-svc.ts', port: 8080, replicas: 2, service: { name: 'voting-svc', port: 8080 }, what: 'gRPC, votes for :doughnut: fail' },
  { name: 'mailer', app: 'mailer', script: 'mailer-svc.ts', port: 2525, replicas: 2, service: { name: 'mailer', port: 2525 }, what: 'SMTP, the server speaks first' },
  { name: 'web', app: 'web-svc', script: 'web.ts', port: 8080, replicas: 2, service: { name: 'web-svc', port: 80 }, what: 'HTTP/1 front end, calls emoji, voting, mailer through their Services' },
  { name: 'vote-bot', app: 'vote-bot', script: 'vote-bot.ts', replicas: 1, what: 'drives the web through its Service' },
];

/** Which node replica r of deployment number i runs on: consecutive nodes, started at a different one per deployment. */
export function nodeOf(deploymentIndex: number, replica: number, nodes = DEMO_NODES): number {
  return (deploymentIndex + replica) % nodes;
}

/** The labels a pod of the deployment carries (its Service selects on `app`). */
export function podLabels(d: Deployment): Record<string, string> {
  return { app: d.app, 'app.kubernetes.io/name': d.name, 'app.kubernetes.io/part-of': 'emojivoto' };
}
