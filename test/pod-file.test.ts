// The agent's --pods FILE source (src/k8s/pod-file.ts): reloads when the file changes, also when
// it comes from a ConfigMap volume, whose update swaps ..data and never touches the file's name.
import test from 'ava';
import * as path from 'node:path';
import { PodFileSource } from '../src/k8s/pod-file.ts';
import { parseDocuments, parseObjects } from '../src/k8s/documents.ts';
import type { Snapshot } from '../src/k8s/objects.ts';
import { mountConfigMap, updateConfigMap } from './helpers/configmap-volume.ts';
import { testTempDir } from './helpers/temp-dir.ts';
import { waitFor } from './helpers/until.ts';

const podsYaml = (names: string[]) => names.map((n) => `---
apiVersion: v1
kind: Pod
metadata: {name: ${n}, namespace: shop, uid: uid-${n}}
spec: {nodeName: n1}
status: {phase: Running, podIP: 10.1.0.5}
`).join('');

test('a pods file from a ConfigMap volume (a symlink through ..data): kubelet\'s update is followed', async (t) => {
  const dir = mountConfigMap(testTempDir(t), { 'pods.yaml': podsYaml(['web-0']) });
  const snaps: Snapshot[] = [];
  const errors: Error[] = [];
  const src = new PodFileSource(path.join(dir, 'pods.yaml'), (s) => snaps.push(s), (e) => errors.push(e));
  t.teardown(() => src.stop());
  t.deepEqual(src.start().pods.map((p) => p.name), ['web-0']);
  updateConfigMap(dir, { 'pods.yaml': podsYaml(['web-0', 'web-1']) }, '2025_01_01_00_01_00.000000001');
  await waitFor(() => snaps.at(-1)?.pods.length === 2);
  t.deepEqual(errors, []);
});

test('pods and resource files are read as kubectl reads YAML (1.1): `yes`/`on` are booleans, 0644 octal; go-yaml\'s strings stay strings', (t) => {
  // A host-network pod written by hand as kubectl would take it: never meshed.
  const snap = parseObjects(`apiVersion: v1
kind: Pod
metadata: {name: agent-0, namespace: kube-system, uid: uid-1, annotations: {mesh-agent.io/inject: enabled}}
spec: {nodeName: n1, hostNetwork: yes}
status: {phase: Running, podIP: 10.1.0.9}
`);
  t.is(snap.pods[0]!.hostNetwork, true);
  const [slice] = parseDocuments(`kind: EndpointSlice
endpoints:
- addresses: [10.1.0.5]
  conditions: {ready: on, serving: yes, terminating: off}
mode: 0644
port: 8080:80
when: 2001-12-14
big: 12345678901234567890
`);
  t.deepEqual(slice!.endpoints[0].conditions, { ready: true, serving: true, terminating: false });
  t.is(slice!.mode, 0o644);
  t.is(slice!.port, '8080:80', 'go-yaml has no base-60 numbers');
  t.is(slice!.when, '2001-12-14', 'nor timestamps');
  t.is(typeof slice!.big, 'number', 'numbers stay numbers (JSON\'s, as the objects are used)');
});
