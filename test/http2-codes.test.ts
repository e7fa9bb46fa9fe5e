// The forwarder's own HTTP/2 codes (src/proxy/http2/codes.ts) are node:http2's: a wrong one
// would reset streams with the wrong error or misread END_STREAM.
import test from 'ava';
import * as http2 from 'node:http2';
import * as codes from '../src/proxy/http2/codes.ts';

test('each HTTP/2 code of ours equals node:http2\'s constant of the same name', (t) => {
  const ours = Object.entries(codes);
  t.true(ours.length >= 6);
  for (const [name, value] of ours) t.is(value, (http2.constants as unknown as Record<string, number>)[name], name);
});
