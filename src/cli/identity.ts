// `mesh-agent identity`: the mesh's certificate authority (src/identity/service.ts, docs/identity.md).
import type { Command } from 'commander';
import { jsonLogger } from '../agent/log.ts';
import { parseHostPort } from './addr.ts';
import { parseDuration } from '../routing/duration.ts';
import { DEFAULT_TRUST_DOMAIN, isTrustDomain, workloadId } from '../identity/spiffe.ts';
import { DEFAULT_AUDIENCE, DEFAULT_CERT_LIFETIME_MS, DEFAULT_IDENTITY_PORT } from '../identity/api.ts';
import { IDENTITY_DEFAULTS, parseServiceAccount, readFileFor } from './identity-flags.ts';
import { LoopbackAccess, parseAccessMode } from '../util/loopback-access.ts';
import { podNamespace } from './pod-namespace.ts';

export function registerIdentity(program: Command) {
  program
    .command('identity')
    .description('run the identity service: signs the workload certificates agents ask for (TokenReview + node authorization)')
    .option('--listen <ip:port>', 'address to serve on (TLS 1.3)', `0.0.0.0:${DEFAULT_IDENTITY_PORT}`)
    .option('--trust-domain <name>', 'the SPIFFE trust domain', DEFAULT_TRUST_DOMAIN)
    .option('--identity-trust-anchors-file <file>', 'PEM trust anchor(s) the issuer chains to', IDENTITY_DEFAULTS.trustAnchorsFile)
    .option('--identity-issuer-certificate-file <file>', 'PEM issuer (intermediate CA) certificate', IDENTITY_DEFAULTS.issuerCertificateFile)
    .option('--identity-issuer-key-file <file>', 'PEM (PKCS#8) issuer key', IDENTITY_DEFAULTS.issuerKeyFile)
    .option('--certificate-lifetime <duration>', 'workload certificates\' lifetime, e.g. 24h, 2m', '24h')
    .option('--agent-service-account <ns/name>', 'only tokens of this ServiceAccount (the agents\') may ask', IDENTITY_DEFAULTS.agentServiceAccount)
    .option('--service-account <ns/name>', 'this service\'s own ServiceAccount: the identity in its serving certificate', IDENTITY_DEFAULTS.serviceAccount)
    .option('--token-audience <aud>', 'the audience of the agents\' projected tokens', DEFAULT_AUDIENCE)
    .option('--status-access <mode>', 'loopback: /v1/status is served only to loopback peers (kubectl port-forward; what install runs), 403 to others; any: to whatever reaches the port', 'any')
    .option('--kubeconfig <file>', 'kubeconfig for the API server (default: in-cluster, else $KUBECONFIG or ~/.kube/config)')
    .option('-q, --quiet', 'log warnings and errors only')
    .action(async (o) => {
      const log = jsonLogger({ quiet: o.quiet });
      if (!isTrustDomain(o.trustDomain)) throw new Error(`--trust-domain ${JSON.stringify(o.trustDomain)} is not a DNS-like name, e.g. cluster.local`);
      const lifetimeMs = parseDuration(o.certificateLifetime, '--certificate-lifetime');
      if (lifetimeMs < 10_000) throw new Error(`--certificate-lifetime ${o.certificateLifetime}: at least 10s (agents renew at half the lifetime); the default is ${DEFAULT_CERT_LIFETIME_MS / 3_600_000}h`);
      const listen = parseHostPort(o.listen, '--listen', '0.0.0.0', DEFAULT_IDENTITY_PORT);
      const agent = parseServiceAccount(o.agentServiceAccount, '--agent-service-account');
      const self = parseServiceAccount(o.serviceAccount, '--service-account');
      const statusMode = parseAccessMode(o.statusAccess, '--status-access');
      const statusAccess = statusMode === 'loopback'
        ? new LoopbackAccess(statusMode, { flag: '--status-access', server: 'the identity service', reach: `kubectl -n ${podNamespace()} port-forward svc/mesh-agent-identity ${listen.port}, then GET https://127.0.0.1:${listen.port}/v1/status` })
        : undefined;
      const { loadIssuer } = await import('../identity/x509.ts');
      const issuer = await loadIssuer(
        readFileFor('--identity-issuer-certificate-file', o.identityIssuerCertificateFile),
        readFileFor('--identity-issuer-key-file', o.identityIssuerKeyFile),
        readFileFor('--identity-trust-anchors-file', o.identityTrustAnchorsFile),
      );
      const { loadKubeConfig } = await import('../k8s/client-node-api.ts');
      const { kubeIdentity } = await import('../identity/kube.ts');
      const { IdentityService } = await import('../identity/service.ts');
      const service = new IdentityService({
        issuer,
        trustDomain: o.trustDomain,
        kube: kubeIdentity(loadKubeConfig(o.kubeconfig)),
        agent,
        audience: o.tokenAudience,
        self: workloadId(o.trustDomain, self.namespace, self.name),
        lifetimeMs,
        log: (level, msg, fields) => log[level](msg, fields),
        statusAccess,
      });
      const addr = await service.listen(listen.host, listen.port);
      const stop = () => void service.close().then(() => process.exit(0));
      process.on('SIGTERM', stop);
      process.on('SIGINT', stop);
      log.info('identity service listening', { listen: `${addr.host}:${addr.port}`, trustDomain: o.trustDomain, issuerNotAfter: issuer.notAfter.toISOString(), certificateLifetime: o.certificateLifetime, statusAccess: statusMode });
    });
}
