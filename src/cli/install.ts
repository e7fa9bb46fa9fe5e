// `mesh-agent install`: print the manifests that run the mesh (pipe them to kubectl apply -f -).
import type { Command } from 'commander';
import { stringify } from 'yaml';
import { installManifests, INSTALL_DEFAULTS } from '../k8s/manifests.ts';
import type { IdentityInstall } from '../k8s/identity-manifests.ts';
import { DEFAULT_TRUST_DOMAIN, isTrustDomain } from '../identity/spiffe.ts';
import { parseDuration } from '../routing/duration.ts';
import { readFileFor } from './identity-flags.ts';
import { parseBool } from './run-config.ts';

/** What install generates when no trust anchor is given: Linkerd's CLI defaults (anchor 10 years, issuer 1 year). */
export const GENERATED_ANCHOR_DAYS = 3650;
export const GENERATED_ISSUER_DAYS = 365;

/**
 * The identity install gets: the files given (all three, checked to chain), or a trust anchor and
 * an issuer made now. The issuer's key goes only into the Secret install prints.
 */
export async function identityForInstall(o: { trustDomain: string; anchorsFile?: string; issuerCertFile?: string; issuerKeyFile?: string; certificateLifetime: string }, now = Date.now()): Promise<IdentityInstall> {
  if (!isTrustDomain(o.trustDomain)) throw new Error(`--trust-domain ${JSON.stringify(o.trustDomain)} is not a DNS-like name, e.g. cluster.local`);
  const life = parseDuration(o.certificateLifetime, '--identity-certificate-lifetime');
  if (life < 10_000) throw new Error(`--identity-certificate-lifetime ${o.certificateLifetime}: at least 10s (agents renew at half the lifetime)`);
  const given = [o.anchorsFile, o.issuerCertFile, o.issuerKeyFile].filter((f) => f !== undefined).length;
  const x509 = await import('../identity/x509.ts');
  if (given === 0) {
    const day = 86_400_000;
    const anchor = await x509.createTrustAnchor({ trustDomain: o.trustDomain, notBefore: new Date(now - 3_600_000), notAfter: new Date(now + GENERATED_ANCHOR_DAYS * day) });
    const issuer = await x509.createIssuer(anchor, { trustDomain: o.trustDomain, notBefore: new Date(now - 3_600_000), notAfter: new Date(now + GENERATED_ISSUER_DAYS * day) });
    // The anchor's key is not kept: rotating the issuer then means a new anchor too (docs/identity.md); bring your own to keep it.
    return { trustDomain: o.trustDomain, anchorsPem: anchor.certPem, issuerCertPem: issuer.certPem, issuerKeyPem: issuer.keyPem, certificateLifetime: o.certificateLifetime };
  }
  if (given !== 3) throw new Error('pass all three of --identity-trust-anchors-file, --identity-issuer-certificate-file and --identity-issuer-key-file, or none (install then makes a trust anchor and an issuer)');
  const anchorsPem = readFileFor('--identity-trust-anchors-file', o.anchorsFile!);
  const issuerCertPem = readFileFor('--identity-issuer-certificate-file', o.issuerCertFile!);
  const issuerKeyPem = readFileFor('--identity-issuer-key-file', o.issuerKeyFile!);
  await x509.loadIssuer(issuerCertPem, issuerKeyPem, anchorsPem, new Date(now)); // chains to an anchor, key matches, valid now
  return { trustDomain: o.trustDomain, anchorsPem, issuerCertPem, issuerKeyPem, certificateLifetime: o.certificateLifetime };
}

/**
 * Multi-document YAML, one object per document. Strings YAML 1.1 reads otherwise are quoted:
 * kubectl reads with go-yaml v2, where a plain `off` (--inbound-port off) or `on` is a bool.
 */
export function manifestsToYaml(objects: object[]): string {
  return objects.map((o) => `---\n${stringify(o, { lineWidth: 0, compat: 'yaml-1.1' })}`).join('');
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
    .option('--trust-domain <name>', 'the SPIFFE trust domain of workload identities', DEFAULT_TRUST_DOMAIN)
    .option('--identity-trust-anchors-file <file>', 'PEM trust anchor(s) (bring your own; with the issuer files). Default: made now')
    .option('--identity-issuer-certificate-file <file>', 'PEM issuer (intermediate CA) certificate, signed by a trust anchor')
    .option('--identity-issuer-key-file <file>', 'PEM (PKCS#8) key of the issuer; it goes only into the Secret')
    .option('--identity-certificate-lifetime <duration>', 'workload certificates\' lifetime', '24h')
    .option('--default-inbound-policy <policy>', 'who may connect to a meshed pod without its own annotation: all-unauthenticated, all-authenticated, cluster-authenticated, cluster-unauthenticated, deny, audit (Linkerd\'s values; audit allows all, counted as authz audit)', INSTALL_DEFAULTS.defaultInboundPolicy)
    .option('--cluster-networks <cidrs>', 'the cluster\'s networks, for the cluster-* policies', INSTALL_DEFAULTS.clusterNetworks)
    .option('--inbound-port <port|off>', 'where the node\'s kernel hands captured connections to meshed pods (on the node IP); off: no inbound capture', String(INSTALL_DEFAULTS.inboundPort))
    .option('--cni <bool>', 'the chained CNI plugin: a meshed pod waits for its node\'s agent to start (true) or starts open while none runs (false)', 'true')
    .option('--proxy-workers <n|auto>', 'proxies per agent, each on its own thread; auto: one per CPU the agent\'s container may use (its CPU limit)', INSTALL_DEFAULTS.proxyWorkers)
    .action(async (o) => {
      const identity = await identityForInstall({
        trustDomain: o.trustDomain, anchorsFile: o.identityTrustAnchorsFile, issuerCertFile: o.identityIssuerCertificateFile,
        issuerKeyFile: o.identityIssuerKeyFile, certificateLifetime: o.identityCertificateLifetime,
      });
      const objects = installManifests({
        namespace: o.namespace,
        image: o.image,
        proxyPort: o.proxyPort,
        adminPort: o.adminPort,
        controllerPort: o.controllerPort,
        dashboardPort: o.dashboardPort,
        skipOutboundPorts: o.skipOutboundPorts,
        cgroupRoot: o.cgroupRoot,
        identity,
        defaultInboundPolicy: o.defaultInboundPolicy,
        clusterNetworks: o.clusterNetworks,
        inboundPort: o.inboundPort === 'off' ? 0 : port('--inbound-port')(o.inboundPort),
        proxyWorkers: o.proxyWorkers,
        cni: parseBool(o.cni, '--cni'),
      });
      process.stdout.write(manifestsToYaml(objects));
    });
}
