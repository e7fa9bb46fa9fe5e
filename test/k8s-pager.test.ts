// listPaged (src/k8s/pager.ts): the controller's paged lists, as client-go's pager.
import test from 'ava';
import { listPaged, type Page } from '../src/k8s/pager.ts';

const pageOf = (n: number, cont?: string): Page => ({ items: [{ metadata: { name: `o${n}` } }], metadata: { resourceVersion: '7', _continue: cont } });

test('a stopping reflector\'s list fetches no further page', async (t) => {
  const stop = new AbortController();
  const asked: Array<string | undefined> = [];
  const listed = listPaged({
    page: async (_limit, cont) => {
      asked.push(cont);
      if (cont === undefined) stop.abort(); // stop() while the first page is on its way
      return pageOf(asked.length, asked.length < 3 ? `c${asked.length}` : undefined);
    },
    limit: 1, keep: (o) => o, onExpired: () => t.fail('not expired'), signal: stop.signal,
  });
  await t.throwsAsync(listed, { name: 'AbortError' });
  t.deepEqual(asked, [undefined]);
});

test('pages are joined; a 410 on a later page is one unpaged list', async (t) => {
  const asked: Array<[number | undefined, string | undefined]> = [];
  const expired: number[] = [];
  const l = await listPaged({
    page: async (limit, cont) => {
      asked.push([limit, cont]);
      if (cont === 'c2') throw Object.assign(new Error('Expired'), { code: 410 });
      return limit === undefined ? { items: [1, 2, 3].map((n) => ({ metadata: { name: `o${n}` } })), metadata: { resourceVersion: '9' } } : pageOf(asked.length, `c${asked.length}`);
    },
    limit: 1, keep: (o) => ({ name: o.metadata.name }), onExpired: (n) => expired.push(n),
  });
  t.deepEqual(asked, [[1, undefined], [1, 'c1'], [1, 'c2'], [undefined, undefined]], 'two pages, the third expired, then one unpaged list');
  t.deepEqual(expired, [2]);
  t.deepEqual(l, { items: [{ name: 'o1' }, { name: 'o2' }, { name: 'o3' }], resourceVersion: '9' });
});
