// An HTTPRouteGroup header match on `host` (docs/policy.md): HTTP/2 carries Host as :authority
// (RFC 9113 8.3.1) and a client such as Node's, curl or grpc-go sends no host field, so the
// inbound policy must read :authority for it, as the routes do (routed-stream.ts), and the same
// request allowed over HTTP/1 is allowed over HTTP/2. Through the real proxy on loopback, with a real h2c pod.
import test, { type ExecutionContext } from 'ava';
import { once } from 'node:events';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import type { Authorize } from '../src/proxy/listener.ts';
import { ServerPolicy } from '../src/policy/authorize.ts';
import { PolicyConnAuthz } from '../src/policy/conn-authz.ts';
import { PodPolicy } from '../src/policy/pod-policy.ts';
import { backend, HOST } from './helpers/backends.ts';
import { loopbackProxy } from './helpers/loopback-proxy.ts';

const web = { namespace: 'shop', serviceAccount: 'web' };

/** The pod lets web send requests for host api.shop (any port) only. */
async function hostPolicyPod(t: ExecutionContext, h2: boolean) {
  const be = await backend('api', { h2 });
  t.teardown(() => be.close());
  const pod = new PodPolicy(new ServerPolicy({
    namespace: 'shop', pod: 'api-1', serviceAccount: 'api', defaultPolicy: 'deny', defaultFrom: 'test',
    targets: [{
      namespace: 'shop', name: 'web-to-api', destination: { namespace: 'shop', serviceAccount: 'api' }, sources: [web],
      rules: [{ kind: 'HTTPRouteGroup', name: 'routes', matches: [{ name: 'by-host', headers: [{ name: 'host', regex: 'api\\.shop(:\\d+)?' }] }] }],
    }],
  }, []));
  const authorize: Authorize = (c) => ({ authz: new PolicyConnAuthz(pod, { ip: c.sourceIp, identity: web }, c.destPort, () => {}) });
  const { port } = await loopbackProxy(t, { lookup: () => ({ ip: HOST, port: be.port, podKey: 7n }), authorize });
  return { port, be };
}

async function h2Status(t: ExecutionContext, port: number, authority: string): Promise<number> {
  const session = http2.connect(`http://${HOST}:${port}`);
  session.on('error', () => {});
  t.teardown(() => session.destroy());
  const req = session.request({ ':path': '/', ':authority': authority });
  req.on('error', () => {});
  req.end();
  const [headers] = (await once(req, 'response')) as [http2.IncomingHttpHeaders];
  req.resume();
  return Number(headers[':status']);
}

async function h1Status(t: ExecutionContext, port: number, host: string): Promise<number> {
  const sock = net.connect(port, HOST);
  sock.on('error', () => {});
  t.teardown(() => sock.destroy());
  sock.write(`GET / HTTP/1.1\r\nhost: ${host}\r\n\r\n`);
  let got = '';
  while (!got.includes('\r\n')) got += String((await once(sock, 'data'))[0]);
  return Number(/^HTTP\/1\.1 (\d{3})/.exec(got)?.[1]);
}

test('HTTP/1: a host header match allows the host it names, denies another', async (t) => {
  const { port } = await hostPolicyPod(t, false);
  t.is(await h1Status(t, port, 'api.shop:8080'), 200);
  t.is(await h1Status(t, port, 'evil.shop'), 403);
});

test('HTTP/2: a host header match reads :authority (no host field sent): allows the host it names, denies another', async (t) => {
  const { port, be } = await hostPolicyPod(t, true);
  t.is(await h2Status(t, port, 'api.shop:8080'), 200, 'the same request as over HTTP/1 is allowed');
  t.is(be.hits, 1);
  t.is(await h2Status(t, port, 'evil.shop'), 403);
  t.is(be.hits, 1, 'the denied request never reached the pod');
});

test('HTTP/2: a host field that differs from :authority does not get a request past a host match', async (t) => {
  const { port, be } = await hostPolicyPod(t, true);
  const session = http2.connect(`http://${HOST}:${port}`);
  session.on('error', () => {});
  t.teardown(() => session.destroy());
  const req = session.request({ ':path': '/', ':authority': 'evil.shop', host: 'api.shop' });
  req.on('error', () => {});
  req.end();
  const [headers] = (await once(req, 'response')) as [http2.IncomingHttpHeaders];
  req.resume();
  t.is(Number(headers[':status']), 403);
  t.is(be.hits, 0);
});
