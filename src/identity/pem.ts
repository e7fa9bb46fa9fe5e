// PEM bundles, without the X.509 library (the agent reads anchors with node:crypto alone).

/** The PEM certificates in a bundle, each with its armour and a final newline. */
export function splitPemCertificates(bundle: string): string[] {
  return (bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((p) => `${p}\n`);
}
