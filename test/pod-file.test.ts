// The agent's --pods FILE source (src/k8s/pod-file.ts): reloads when the file changes, also when
// it comes from a ConfigMap volume, whose update swaps ..data and never touches the file's name.
import test from 'ava';
import * as path from 'node:path';
import { PodFileSource } from '../src/k8s/pod-file.ts';
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
