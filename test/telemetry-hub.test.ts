import test from 'ava';
import { TelemetryHub } from '../src/telemetry/hub.ts';
import { RecordingSink, type RequestEvent } from '../src/telemetry/events.ts';
import { workloadOf } from '../src/telemetry/workload.ts';
import type { PodInfo } from '../src/k8s/objects.ts';

const pod = (over: Partial<PodInfo>): PodInfo => ({ uid: 'u', name: 'web-7d9f8-abcde', namespace: 'emojivoto', hostNetwork: false, labels: {}, annotations: {}, ...over });

test('a ReplicaSet with pod-template-hash resolves to its Deployment', (t) => {
  const w = workloadOf(pod({ labels: { 'pod-template-hash': '7d9f8' }, owner: { kind: 'ReplicaSet', name: 'web-7d9f8' } }));
  t.deepEqual(w, { namespace: 'emojivoto', pod: 'web-7d9f8-abcde', kind: 'deployment', name: 'web' });
});

test('a bare ReplicaSet, a StatefulSet and an ownerless pod keep their own kind', (t) => {
  t.is(workloadOf(pod({ owner: { kind: 'ReplicaSet', name: 'rs1' } })).kind, 'replicaset');
  t.deepEqual(workloadOf(pod({ owner: { kind: 'StatefulSet', name: 'db' } })), { namespace: 'emojivoto', pod: 'web-7d9f8-abcde', kind: 'statefulset', name: 'db' });
  t.deepEqual(workloadOf(pod({})), { namespace: 'emojivoto', pod: 'web-7d9f8-abcde', kind: 'pod', name: 'web-7d9f8-abcde' });
});

test('the hub fans out to every sink and isolates one that throws', (t) => {
  const errors: string[] = [];
  const hub = new TelemetryHub({ onError: (m) => errors.push(m) });
  const a = new RecordingSink();
  const b = new RecordingSink();
  const bad = { ...new RecordingSink(), connOpen() {}, connBytes() {}, connClose() {}, request() { throw new Error('boom'); } };
  hub.add(a);
  hub.add(bad);
  const remove = hub.add(b);
  const ev = { connId: 1, protocol: 'http1', status: 200 } as unknown as RequestEvent;
  hub.request(ev);
  hub.request(ev);
  t.is(a.requests.length, 2);
  t.is(b.requests.length, 2);
  t.is(errors.length, 1, 'a failing consumer is reported once');
  t.regex(errors[0]!, /boom/);
  remove();
  hub.request(ev);
  t.is(b.requests.length, 2);
  t.is(a.requests.length, 3);
});
