// The connection cap against the open-file limit (src/agent/open-files.ts): /proc/PID/limits
// parsed, the cap lowered to what the limit holds (with a warning that names the fix), refused
// when it holds none.
import test from 'ava';
import { capForOpenFiles, fdsPerConnection, parseOpenFilesLimit, RESERVED_FDS } from '../src/agent/open-files.ts';

const LIMITS = `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            4096                 524288               files
Max locked memory         8388608              8388608              bytes
`;

test('the soft open-file limit from /proc/PID/limits; unlimited is Infinity; absent or garbled is null', (t) => {
  t.is(parseOpenFilesLimit(LIMITS), 4096);
  t.is(parseOpenFilesLimit(LIMITS.replace('4096 ', 'unlimited')), Infinity);
  t.is(parseOpenFilesLimit('Max cpu time unlimited unlimited seconds\n'), null);
  t.is(parseOpenFilesLimit(LIMITS.replace('4096 ', 'lots ')), null);
});

test('a limit that holds the cap leaves it as asked, without a word', (t) => {
  t.deepEqual(capForOpenFiles(10_000, 1_048_576, true), { maxConnections: 10_000, warning: null });
  t.deepEqual(capForOpenFiles(10_000, 10_000 * 3 + RESERVED_FDS, true), { maxConnections: 10_000, warning: null });
  t.deepEqual(capForOpenFiles(10_000, null, true), { maxConnections: 10_000, warning: null });
  t.deepEqual(capForOpenFiles(10_000, Infinity, false), { maxConnections: 10_000, warning: null });
});

test('a limit too small for the cap lowers it to what fits, and the warning says how much to raise the limit to', (t) => {
  t.is(fdsPerConnection(true), 3);
  t.is(fdsPerConnection(false), 2);
  const c = capForOpenFiles(10_000, 1024, true);
  t.is(c.maxConnections, Math.floor((1024 - RESERVED_FDS) / 3));
  t.regex(c.warning!, /^the open-file limit 1024 holds 256 proxied connections \(up to 3 fds each, 256 kept for the agent\), fewer than --max-connections 10000: capping at 256,.* raise the agent's open-file limit to at least 30256 .* or lower --max-connections$/);
  // Without --native-io a connection holds one fd fewer.
  t.is(capForOpenFiles(10_000, 1024, false).maxConnections, 384);
});

test('a limit that holds no connection at all is refused with the reason and the fix', (t) => {
  const e = t.throws(() => capForOpenFiles(100, RESERVED_FDS + 2, true));
  t.regex(e.message, /^the open-file limit is 258, which holds no proxied connection .*; raise the agent's open-file limit to at least 556 /);
});
