// The `yaml` package, loaded on first use: it costs the agent ~8 MB of RSS, and the agent as
// installed reads no YAML (its ConfigMap is a directory of plain values, its API client speaks
// JSON). Synchronous, for the synchronous parsers that need it.
import { createRequire } from 'node:module';

let yaml: typeof import('yaml') | undefined;

export function lazyYaml(): typeof import('yaml') {
  yaml ??= createRequire(import.meta.url)('yaml') as typeof import('yaml');
  return yaml;
}
