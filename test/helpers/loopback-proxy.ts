// The proxy on loopback as the proxy-level tests build it: on HOST at a port the kernel picks,
// HTTP detected within 5 s, no known-HTTP/1 shortcut (every connection is detected), nothing
// opaque by port, quiet, its telemetry recorded. The caller says where connections go (lookup)
// and what else it tests (a router, an authorizer, a log); closed at the test's end.
import type { ExecutionContext } from 'ava';
import { PortSet, Proxy, type ProxyOptions } from '../../src/proxy/index.ts';
import { RecordingSink } from '../../src/telemetry/events.ts';
import { HOST } from './backends.ts';
import { nativeIo } from './native-io.ts';

export async function loopbackProxy(t: ExecutionContext, o: Pick<ProxyOptions, 'lookup'> & Partial<Omit<ProxyOptions, 'telemetry'>>) {
  const sink = new RecordingSink();
  const proxy = new Proxy({ listen: { host: HOST, port: 0 }, telemetry: sink, opaquePorts: PortSet.empty(), detectTimeoutMs: 5000, knownHttp1Max: 0, log: () => {}, nativeIo: nativeIo(), ...o });
  const { port } = await proxy.listen();
  t.teardown(() => proxy.close(0));
  return { proxy, port, sink };
}
