// Identity flags shared by `mesh-agent identity`, `run` and `install` (docs/identity.md); light, so
// the agent loads nothing of the identity service.
import * as fs from 'node:fs';

export const IDENTITY_DEFAULTS = {
  trustAnchorsFile: '/var/run/mesh-agent/identity/trust-roots/ca-bundle.crt',
  issuerCertificateFile: '/var/run/mesh-agent/identity/issuer/tls.crt',
  issuerKeyFile: '/var/run/mesh-agent/identity/issuer/tls.key',
  agentServiceAccount: 'mesh-agent/mesh-agent-agent',
  serviceAccount: 'mesh-agent/mesh-agent-identity',
};

/** The agent's identity files, where install mounts them (src/k8s/identity-manifests.ts). */
export const IDENTITY_RUN_DEFAULTS = {
  trustAnchorsFile: '/var/run/mesh-agent/identity/trust-roots/ca-bundle.crt',
  tokenFile: '/var/run/secrets/tokens/mesh-agent-identity',
};

/** NAMESPACE/NAME of a ServiceAccount. */
export function parseServiceAccount(v: string, flag: string): { namespace: string; name: string } {
  const m = /^([a-z0-9][-a-z0-9]*)\/([a-z0-9][-a-z0-9.]*)$/.exec(v);
  if (m === null) throw new Error(`${flag}: "${v}" is not NAMESPACE/NAME of a ServiceAccount, e.g. mesh-agent/mesh-agent`);
  return { namespace: m[1]!, name: m[2]! };
}

export function readFileFor(flag: string, file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`${flag} ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}; mesh-agent install puts it in the identity Secret (docs/identity.md)`);
  }
}

