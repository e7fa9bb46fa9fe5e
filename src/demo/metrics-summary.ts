// Success rate per deployment from the agent's Prometheus text (pure): what `stat` shows,
// computed from inbound response_total since the agent started. The demo falls back to it
// when no controller answers.
export interface DeploymentTotals { deployment: string; success: number; failure: number }

const LINE = /^response_total\{(.*)\} ([0-9.e+]+)$/;
const LABEL = /(\w+)="((?:[^"\\]|\\.)*)"/g;

export function successByDeployment(text: string, namespace: string): DeploymentTotals[] {
  const byDeploy = new Map<string, DeploymentTotals>();
  for (const line of text.split('\n')) {
    const m = LINE.exec(line);
    if (!m) continue;
    const labels = Object.fromEntries([...m[1].matchAll(LABEL)].map((l) => [l[1], l[2]]));
    if (labels.direction !== 'inbound' || labels.namespace !== namespace || !labels.deployment) continue;
    const t = byDeploy.get(labels.deployment) ?? { deployment: labels.deployment, success: 0, failure: 0 };
    if (labels.classification === 'success') t.success += Number(m[2]);
    else t.failure += Number(m[2]);
    byDeploy.set(labels.deployment, t);
  }
  return [...byDeploy.values()].sort((a, b) => a.deployment.localeCompare(b.deployment));
}
