// plainIp (src/util/ip.ts): the one strip of the IPv4-mapped prefix, which the proxy listener,
// the tunnel server, the review gate, policy networks and the CLI's loopback check key on.
import test from 'ava';
import { plainIp } from '../src/util/ip.ts';

test('plainIp strips ::ffff: in either case from a dotted address; anything else is kept as given', (t) => {
  t.is(plainIp('::ffff:10.0.0.5'), '10.0.0.5');
  t.is(plainIp('::FFFF:10.0.0.5'), '10.0.0.5', 'hex digits in either case are the same address');
  t.is(plainIp('::Ffff:127.0.0.1'), '127.0.0.1');
  t.is(plainIp('10.0.0.5'), '10.0.0.5');
  t.is(plainIp('::1'), '::1');
  t.is(plainIp('fe80::1'), 'fe80::1');
  t.is(plainIp('::ffff:7f00:1'), '::ffff:7f00:1', 'the hex form is not rewritten');
  t.is(plainIp(''), '');
});
