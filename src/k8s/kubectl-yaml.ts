// YAML as kubectl reads it (sigs.k8s.io/yaml, go-yaml v2), for every reader of Kubernetes YAML:
// `inject`, and the pods and resource files, which stand in for what the API server holds (what
// kubectl sent it). Type-only import: the agent loads the yaml package only when it reads YAML.
import type { DocumentOptions, ParseOptions, SchemaOptions } from 'yaml';

/**
 * 1.1, so `defaultMode: 0644` is octal (read as 1.2 it was 644, which the API server refuses, and
 * 0400 a wrong mode) and `yes`, `on`, `off` are booleans (`hostNetwork: yes` is a host-network
 * pod). go-yaml has no base-60 numbers (`8080:80` is a string) and gives timestamps as strings:
 * those stay strings. Without omap, pairs and set, whose implicit forms go-yaml lacks too (and
 * omap would claim the maps inject's setIn makes).
 */
const NOT_READ_BY_KUBECTL = new Set(['tag:yaml.org,2002:timestamp', 'tag:yaml.org,2002:omap', 'tag:yaml.org,2002:pairs', 'tag:yaml.org,2002:set']);
export const KUBECTL_YAML: ParseOptions & DocumentOptions & SchemaOptions = {
  version: '1.1',
  customTags: (tags) => tags.filter((t) => typeof t === 'string' || !(NOT_READ_BY_KUBECTL.has(t.tag) || t.format === 'TIME')),
};
