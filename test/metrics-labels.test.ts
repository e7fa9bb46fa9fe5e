import test from 'ava';
import {
  baseLabels, errnoLabel, latencyLabels, normalizeAuthority, overflowLabels, readWriteBytes, requestLabels, responseLabels,
  tcpCloseLabels, tcpLabels, viewsOf, workloadLabels, MAX_AUTHORITY,
} from '../src/telemetry/labels.ts';
import type { ConnCloseEvent, Endpoints, RequestEvent } from '../src/telemetry/events.ts';
import type { Workload } from '../src/telemetry/workload.ts';

const web: Workload = { namespace: 'shop', pod: 'web-7d9f8-abcde', kind: 'deployment', name: 'web' };
const db: Workload = { namespace: 'data', pod: 'db-0', kind: 'statefulset', name: 'db' };
const bare: Workload = { namespace: 'shop', pod: 'debug', kind: 'pod', name: 'debug' };
const odd: Workload = { namespace: 'shop', pod: 'roll-x', kind: 'rollout', name: 'roll' };
const ep: Endpoints = { direction: 'outbound', sourceIp: '10.244.1.2', sourcePort: 40000, sourcePodKey: 1n, destIp: '10.244.1.3', destPort: 5432 };
const on = { podLabels: true };
const off = { podLabels: false };

const req = (over: Partial<RequestEvent> = {}): RequestEvent => ({
  ...ep, connId: 1, protocol: 'http1', authority: 'DB.data.svc:5432', method: 'GET', path: '/x?id=1', status: 200,
  success: true, latencyMs: 12, durationMs: 13, requestBytes: 10, responseBytes: 20, startedAt: 0, ...over,
});

test('an outbound connection to a known pod is seen from both ends, as two Linkerd sidecars would', (t) => {
  const v = viewsOf(ep, web, db);
  t.deepEqual(v, [
    { direction: 'outbound', self: web, dst: db, service: null, targetAddr: '10.244.1.3:5432', tls: null },
    { direction: 'inbound', clientId: null, self: db, dst: null, service: null, targetAddr: '10.244.1.3:5432', tls: null },
  ]);
  t.is(viewsOf(ep, web, db, null, false, false).length, 1, 'a pod of another node, not tunnelled: its own agent captures it and records the inbound side (docs/policy.md)');
});

test('a request to a Service: dst_service beside the chosen endpoint\'s workload; a connection to its ClusterIP: the Service alone', (t) => {
  const svc = { namespace: 'data', name: 'db-svc' };
  const [out, inb] = viewsOf({ ...ep, dstService: svc }, web, db);
  t.deepEqual(requestLabels(out!, req({ dstService: svc, authority: 'db-svc.data.svc.cluster.local:5432' }), on), {
    direction: 'outbound', target_addr: '10.244.1.3:5432', namespace: 'shop', deployment: 'web', pod: 'web-7d9f8-abcde',
    dst_namespace: 'data', dst_statefulset: 'db', dst_pod: 'db-0', dst_service: 'db-svc', authority: 'db-svc.data.svc.cluster.local:5432',
  });
  t.false('dst_service' in requestLabels(inb!, req(), on), 'the server side has no dst_ labels');
  const [conn] = viewsOf({ ...ep, destIp: '10.96.0.12', dstService: svc }, web, null);
  t.deepEqual(tcpLabels(conn!, on), {
    direction: 'outbound', target_addr: '10.96.0.12:5432', namespace: 'shop', deployment: 'web', pod: 'web-7d9f8-abcde',
    dst_service: 'db-svc', dst_namespace: 'data', peer: 'dst',
  });
});

test('a destination outside the mesh has no inbound side; an unknown source has no workload labels', (t) => {
  const v = viewsOf(ep, null, null);
  t.is(v.length, 1);
  t.deepEqual(tcpLabels(v[0]!, on), { direction: 'outbound', target_addr: '10.244.1.3:5432', peer: 'dst' });
});

test('an inbound event (a future node-to-node hop) counts only for the server', (t) => {
  const v = viewsOf({ ...ep, direction: 'inbound' }, web, db);
  t.deepEqual(v.map((x) => [x.direction, x.self?.name]), [['inbound', 'db']]);
});

test('workload labels: namespace, <kind>=name, pod; dst_ for the destination', (t) => {
  t.deepEqual(workloadLabels('', web, on), { namespace: 'shop', deployment: 'web', pod: 'web-7d9f8-abcde' });
  t.deepEqual(workloadLabels('dst_', db, on), { dst_namespace: 'data', dst_statefulset: 'db', dst_pod: 'db-0' });
  t.deepEqual(workloadLabels('', null, on), {});
});

test('with pod labels off, workloads keep their labels; an ownerless pod is its own workload and keeps pod', (t) => {
  t.deepEqual(workloadLabels('dst_', web, off), { dst_namespace: 'shop', dst_deployment: 'web' });
  t.deepEqual(workloadLabels('', bare, off), { namespace: 'shop', pod: 'debug' });
  t.deepEqual(workloadLabels('', odd, off), { namespace: 'shop' }, 'an owner kind Linkerd has no label for adds none');
  t.deepEqual(workloadLabels('', odd, on), { namespace: 'shop', pod: 'roll-x' });
});

test('request and response labels follow linkerd2-proxy; the path is never a label', (t) => {
  const [out] = viewsOf(ep, web, db);
  const r = requestLabels(out!, req(), on);
  t.deepEqual(r, {
    direction: 'outbound', target_addr: '10.244.1.3:5432', namespace: 'shop', deployment: 'web', pod: 'web-7d9f8-abcde',
    dst_namespace: 'data', dst_statefulset: 'db', dst_pod: 'db-0', authority: 'db.data.svc:5432',
  });
  t.false(Object.values(r).some((v) => v.includes('/x')));
  t.like(responseLabels(out!, req({ status: 503, success: false }), on), { classification: 'failure', status_code: '503' });
  t.false('grpc_status' in responseLabels(out!, req(), on));
  t.like(responseLabels(out!, req({ protocol: 'http2', status: 200, grpcStatus: 14, success: false }), on), { classification: 'failure', status_code: '200', grpc_status: '14' });
  t.like(responseLabels(out!, req({ protocol: 'http2', grpcStatus: 0 }), on), { classification: 'success', grpc_status: '0' });
  const noResponse = responseLabels(out!, req({ status: 0, success: false, error: 'upstream: ECONNRESET' }), on);
  t.is(noResponse.classification, 'failure');
  t.false('status_code' in noResponse);
  t.is(latencyLabels(out!, req({ status: 404 }), on).status_code, '404');
  t.false('classification' in latencyLabels(out!, req(), on));
});

test('authority: case folded, control characters and excess length cut', (t) => {
  t.is(normalizeAuthority(' Web.Shop.SVC:8080 '), 'web.shop.svc:8080');
  t.is(normalizeAuthority('a\r\nb\u0000c'), 'abc');
  t.is(normalizeAuthority('x'.repeat(5000)).length, MAX_AUTHORITY);
});

test('tcp labels: peer dst on the outbound side, src on the inbound side; close adds protocol, classification, errno', (t) => {
  const [out, inb] = viewsOf(ep, web, db);
  t.is(tcpLabels(out!, on).peer, 'dst');
  t.is(tcpLabels(inb!, on).peer, 'src');
  const close = (error?: string): ConnCloseEvent => ({ ...ep, connId: 1, protocol: 'opaque', detectedBy: 'server-first', detectMs: 1, bytesIn: 1, bytesOut: 2, durationMs: 3, ...(error ? { error } : {}) });
  t.like(tcpCloseLabels(tcpLabels(inb!, on), close()), { protocol: 'opaque', classification: 'success', errno: '', namespace: 'data' });
  t.like(tcpCloseLabels(tcpLabels(out!, on), close('upstream connect: ECONNREFUSED')), { classification: 'failure', errno: 'ECONNREFUSED' });
});

test('errno label is bounded: an errno name, timeout or other, never free text', (t) => {
  t.is(errnoLabel(undefined), '');
  t.is(errnoLabel('client: ECONNRESET'), 'ECONNRESET');
  t.is(errnoLabel('upstream connect: EHOSTUNREACH'), 'EHOSTUNREACH');
  t.is(errnoLabel('idle timeout'), 'timeout');
  t.is(errnoLabel('upstream connect: timeout'), 'timeout');
  t.is(errnoLabel('client reset (code 8)'), 'other');
  t.is(errnoLabel('Evil header value from a peer'), 'other');
});

test('bytes are read and written as each side\'s proxy would count them', (t) => {
  const [out, inb] = viewsOf(ep, web, db);
  t.deepEqual(readWriteBytes(out!, { bytesIn: 100, bytesOut: 7 }), { read: 7, write: 100 });
  t.deepEqual(readWriteBytes(inb!, { bytesIn: 100, bytesOut: 7 }), { read: 100, write: 7 });
});

test('overflow keeps direction and outcome labels, drops identity', (t) => {
  const [out] = viewsOf(ep, web, db);
  const l = responseLabels(out!, req({ status: 500, success: false }), on);
  t.deepEqual(overflowLabels(l, ['direction', 'classification', 'status_code', 'grpc_status']), {
    overflow: 'true', direction: 'outbound', classification: 'failure', status_code: '500',
  });
});

test('a tunnelled connection: tls="true" with server_id outbound and client_id inbound; its inbound TCP side is the destination agent\'s to count', (t) => {
  const tls = { clientId: 'spiffe://cluster.local/ns/shop/sa/web', serverId: 'spiffe://cluster.local/ns/data/sa/db' };
  const [out, inb] = viewsOf(ep, web, db, tls);
  t.like(baseLabels(out!, on), { direction: 'outbound', tls: 'true', server_id: tls.serverId });
  t.false('client_id' in baseLabels(out!, on));
  t.like(baseLabels(inb!, on), { direction: 'inbound', tls: 'true', client_id: tls.clientId });
  t.false('server_id' in baseLabels(inb!, on));
  t.is(viewsOf(ep, web, db, tls, true).length, 1, 'the connection: outbound only here');
  t.is(viewsOf(ep, web, db, null, true).length, 2, 'not tunnelled: both sides here, as before');
  const [destEnd] = viewsOf({ ...ep, direction: 'inbound', tls }, null, db, tls, true);
  t.like(baseLabels(destEnd!, on), { direction: 'inbound', tls: 'true', client_id: tls.clientId, namespace: 'data', statefulset: 'db' });
});
