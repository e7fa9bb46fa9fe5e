import test from 'ava';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { parseServiceHostPort } from '../src/util/host-port.ts';
import { identityOptions } from '../src/cli/run.ts';
import { controllerUrl } from '../src/controller/addr.ts';
import { sniOf } from '../src/identity/client.ts';
import { testTempDir } from './helpers/temp-dir.ts';

test('a service HOST:PORT: a name, IPv4 or bracketed IPv6; an unbracketed IPv6 is refused with the bracket hint', (t) => {
  t.deepEqual(parseServiceHostPort('mesh-agent-identity.mesh-agent.svc:8080', 'x', 8080), { host: 'mesh-agent-identity.mesh-agent.svc', port: 8080 });
  t.deepEqual(parseServiceHostPort('10.0.0.1:9', 'x', 8080), { host: '10.0.0.1', port: 9 });
  t.deepEqual(parseServiceHostPort('[fd00::1]:8080', 'x', 8080), { host: 'fd00::1', port: 8080 });
  t.throws(() => parseServiceHostPort('fd00::1:8080', '--identity-addr fd00::1:8080', 8080), { message: '--identity-addr fd00::1:8080: put an IPv6 address in brackets, e.g. [::1]:8080' });
  t.throws(() => parseServiceHostPort('[10.0.0.1]:8080', 'x', 8080), { message: 'x: "10.0.0.1" is not an IPv6 address' });
  t.throws(() => parseServiceHostPort('identity.svc', 'x', 8080), { message: 'x: no port; expected HOST:PORT, e.g. identity.svc:8080' });
  t.deepEqual(parseServiceHostPort('ctl', 'x', 8086, 8086), { host: 'ctl', port: 8086 }, 'a default port when the caller has one');
  t.throws(() => parseServiceHostPort('a b:1', 'x', 8080), { message: 'x: "a b" is not a host name or IPv4 address' });
  t.throws(() => parseServiceHostPort('h:70000', 'x', 8080), { message: 'x: the port must be 1-65535' });
});

test('--identity-addr takes a bracketed IPv6 address and refuses an unbracketed one, as --controller does', (t) => {
  const dir = testTempDir(t);
  const anchors = path.join(dir, 'ca.pem');
  writeFileSync(anchors, '-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n');
  const o = { identityTrustAnchorsFile: anchors, identityTokenFile: path.join(dir, 'token'), identityServiceAccount: 'mesh-agent/mesh-agent-identity', trustDomain: 'cluster.local', tunnelPort: '15008', firstSyncWait: '5s' };
  t.is(identityOptions(o, '[fd00::1]:8080')?.addr, '[fd00::1]:8080');
  t.is(identityOptions(o, 'mesh-agent-identity.mesh-agent.svc:8080')?.addr, 'mesh-agent-identity.mesh-agent.svc:8080');
  t.throws(() => identityOptions(o, 'fd00::1:8080'), { message: '--identity-addr fd00::1:8080: put an IPv6 address in brackets, e.g. [::1]:8080' });
  t.throws(() => identityOptions(o, 'identity.svc'), { message: /--identity-addr identity\.svc: no port/ });
  t.is(controllerUrl('[::1]:9000', '--controller'), 'http://[::1]:9000');
  t.throws(() => controllerUrl('fd00::1:9000', '--controller'), { message: '--controller fd00::1:9000: put an IPv6 address in brackets, e.g. [::1]:8086' });
});

test('--identity-addr given as a URL (https://HOST:PORT, or with a path) is told to drop the scheme and path, not to bracket an IPv6 address', (t) => {
  t.throws(() => parseServiceHostPort('https://mesh-agent-identity.mesh-agent.svc:8080', '--identity-addr https://mesh-agent-identity.mesh-agent.svc:8080', 8080), {
    message: '--identity-addr https://mesh-agent-identity.mesh-agent.svc:8080: expected HOST:PORT, without a scheme or a path, e.g. mesh-agent-identity.mesh-agent.svc:8080',
  });
  t.throws(() => parseServiceHostPort('identity.svc:8080/certify', 'x', 8080), { message: 'x: expected HOST:PORT, without a scheme or a path, e.g. identity.svc:8080' });
  t.throws(() => parseServiceHostPort('[fd00::1]:8080/', 'x', 8080), { message: 'x: expected HOST:PORT, without a scheme or a path, e.g. [fd00::1]:8080' });
});

test('a fully qualified name with its trailing dot (mesh-agent-identity.mesh-agent.svc.cluster.local., which skips the resolver\'s search list) is a host name, as --identity-addr took it before the shared parser; its TLS server name goes without the dot', (t) => {
  t.deepEqual(parseServiceHostPort('mesh-agent-identity.mesh-agent.svc.cluster.local.:8080', 'x', 8080), { host: 'mesh-agent-identity.mesh-agent.svc.cluster.local.', port: 8080 });
  t.is(controllerUrl('mesh-agent-controller.mesh-agent.svc.cluster.local.:8086', '--controller'), 'http://mesh-agent-controller.mesh-agent.svc.cluster.local.:8086');
  t.is(sniOf('mesh-agent-identity.mesh-agent.svc.cluster.local.'), 'mesh-agent-identity.mesh-agent.svc.cluster.local');
  t.throws(() => parseServiceHostPort('a..:8080', 'x', 8080), { message: 'x: "a.." is not a host name or IPv4 address' });
  t.throws(() => parseServiceHostPort('.:8080', 'x', 8080), { message: 'x: "." is not a host name or IPv4 address' });
});
