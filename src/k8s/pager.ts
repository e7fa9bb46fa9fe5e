// A list in pages (limit/continue), as client-go's tools/pager: each page's items are handed to
// `keep` before the next page is fetched, so a cluster-wide list never sits whole in memory as
// objects. A continue token that expired (410: the list took longer than the API server keeps
// the first page's version) is not retried from the top, which on a big, busy cluster would
// never finish: the list is done again in one unpaged request (client-go's FullListIfExpired).
import { statusOf } from './watch-errors.ts';

type Obj = Record<string, any>;

/** One page as the API clients give it (client-node names the token `_continue`). */
export interface Page {
  items?: Obj[];
  metadata?: { resourceVersion?: string; _continue?: string };
}

export interface PagedListOptions {
  /** Fetches one page: `limit` undefined means the whole list in one answer. */
  page: (limit: number | undefined, cont: string | undefined) => Promise<Page>;
  limit: number;
  /** What is kept of each item. */
  keep: (o: Obj) => Obj;
  /** Told when a page's continue token expired and the list falls back to one request. */
  onExpired: (pagesRead: number) => void;
  /** A stopping reflector: no further page is fetched. */
  signal?: AbortSignal;
}

export async function listPaged(o: PagedListOptions): Promise<{ items: Obj[]; resourceVersion: string }> {
  const items: Obj[] = [];
  let cont: string | undefined;
  let resourceVersion = '';
  let pages = 0;
  do {
    o.signal?.throwIfAborted();
    let l: Page;
    try {
      l = await o.page(o.limit, cont);
    } catch (e) {
      // Only a later page's expiry: a 410 on the first page is not about a continue token.
      if (cont === undefined || statusOf(e) !== 410) throw e;
      o.signal?.throwIfAborted();
      o.onExpired(pages);
      const full = await o.page(undefined, undefined);
      return { items: (full.items ?? []).map(o.keep), resourceVersion: full.metadata?.resourceVersion ?? '' };
    }
    pages++;
    for (const i of l.items ?? []) items.push(o.keep(i));
    if (!resourceVersion) resourceVersion = l.metadata?.resourceVersion ?? '';
    cont = l.metadata?._continue || undefined;
  } while (cont);
  return { items, resourceVersion };
}

/** The log line for onExpired. */
export function expiredListMessage(what: string, pagesRead: number): string {
  return `list ${what}: the continue token expired after ${pagesRead} page${pagesRead === 1 ? '' : 's'} (410: the list took longer than the API server keeps its history); listing again in one request without paging`;
}
