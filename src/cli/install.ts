// `mesh-agent install`: print the manifests that run the mesh (pipe them to kubectl apply -f -).
import type { Command } from 'commander';
import { stringify } from 'yaml';
import { installManifests, INSTALL_DEFAULTS } from '../k8s/manifests.ts';

/** Multi-document YAML, one object per document. */
export function manifestsToYaml(objects: object[]): string {
  return objects.map((o) => `---\n${stringify(o, { lineWidth: 0 })}`).join('');
}

function port(flag: string) {
  return (v: string): number => {
    if (!/^\d+$/.test(v)) throw new Error(`${flag}: "${v}" is not a port number`);
    return Number(v);
  };
}

export function registerInstall(program: Command) {
  program
    .command('install')
    .description('print the Kubernetes manifests for the agent DaemonSet and the controller')
    .option('--namespace <ns>', 'namespace to install into', INSTALL_DEFAULTS.namespace)
    .option('--image <ref>', 'container image of agent and controller', INSTALL_DEFAULTS.image)
    .option('--proxy-port <port>', 'port pods are redirected to on the node IP', port('--proxy-port'), INSTALL_DEFAULTS.proxyPort)
    .option('--admin-port <port>', 'agent admin API (probes, /metrics)', port('--admin-port'), INSTALL_DEFAULTS.adminPort)
    .option('--controller-port <port>', 'controller service port', port('--controller-port'), INSTALL_DEFAULTS.controllerPort)
    .option('--dashboard-port <port>', 'the controller\'s web dashboard, a second port of its Service', port('--dashboard-port'), INSTALL_DEFAULTS.dashboardPort)
    .option('--skip-outbound-ports <ports>', 'ports every pod connects to directly, e.g. 3306,5000-5010', '')
    .option('--cgroup-root <dir>', 'pods\' cgroup directory on the nodes (cgroupfs kubelet driver: /sys/fs/cgroup/kubepods)', INSTALL_DEFAULTS.cgroupRoot)
    .action((o) => {
      const objects = installManifests({
        namespace: o.namespace,
        image: o.image,
        proxyPort: o.proxyPort,
        adminPort: o.adminPort,
        controllerPort: o.controllerPort,
        dashboardPort: o.dashboardPort,
        skipOutboundPorts: o.skipOutboundPorts,
        cgroupRoot: o.cgroupRoot,
      });
      process.stdout.write(manifestsToYaml(objects));
    });
}
