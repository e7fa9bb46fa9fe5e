// Users' regular expressions (routes' matches, access rules' pathRegex): what is refused, and that
// no request can make the proxy's thread backtrack on one for ever (src/util/regex-check.ts).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { regexProblem } from '../src/util/regex-check.ts';

test('accepted: what RE2 runs with counts up to 16', (t) => {
  for (const re of ['/api/v[0-9]+/users/[^/]+', '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '[0-9a-f]{16}[0-9a-f]{16}', '(?:GET|HEAD)', '.*\\.js', '\\bfoo\\b', '(a+)+', 'x{2,}']) {
    t.is(regexProblem(re), null, re);
  }
});

test('refused with the reason and the fix: backreferences, lookaheads, counted repetition over 16', (t) => {
  for (const re of ['(a)\\1', '/api(?!/admin)', '(?=a)a', '[0-9a-f]{32}', 'a{1,17}']) {
    const p = regexProblem(re);
    t.regex(p ?? '', /cannot be matched in linear time: it uses a backreference, a lookahead, or counted repetition over 16.*write it without them.*\{16\}/, re);
  }
  t.regex(regexProblem('(a') ?? '', /^not a regular expression/);
  t.regex(regexProblem('a'.repeat(1025)) ?? '', /longer than 1024/);
});

// Fails on a proxy that matched with the backtracking engine alone: the child never finishes.
test('a path that would backtrack for ever against a route and an access rule is decided (no match, denied)', (t) => {
  const fixture = fileURLToPath(new URL('fixtures/regex-stall.ts', import.meta.url));
  const r = spawnSync(process.execPath, [fixture], { encoding: 'utf8', timeout: 60_000 });
  t.is(r.signal, null, `the matches did not finish within 60 s (killed by ${r.signal}): the proxy's thread would have stalled`);
  t.is(r.status, 0, r.stderr);
  t.is(r.stdout, 'route: no match\npolicy: denied\n');
});
