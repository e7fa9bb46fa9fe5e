// The namespace of the pod this process runs in, for the port-forward a refusal names
// (src/util/loopback-access.ts); install's default outside a pod.
import { readFileSync } from 'node:fs';
import { INSTALL_DEFAULTS } from '../k8s/manifests.ts';

export function podNamespace(): string {
  try {
    return readFileSync('/var/run/secrets/kubernetes.io/serviceaccount/namespace', 'utf8').trim() || INSTALL_DEFAULTS.namespace;
  } catch {
    return INSTALL_DEFAULTS.namespace;
  }
}
