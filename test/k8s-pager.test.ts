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
