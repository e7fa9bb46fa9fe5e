// Label and field selectors in their query-string form, as the API server parses them (pure).
// Labels: `a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`, `a notin (x,y)`, comma-separated (AND).
// Fields: `path=v`, `path==v`, `path!=v`, comma-separated; which paths exist is the resource's business.

export type Selector = (get: (key: string) => string | undefined) => boolean;

export class SelectorError extends Error {}

/** Splits on commas outside parentheses. */
function requirements(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of s) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      out.push(cur.trim());
      cur = '';
    } else cur += ch;
  }
  out.push(cur.trim());
  return out.filter((r) => r !== '');
}

const LABEL_KEY = /^([a-z0-9]([-a-z0-9.]*[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/;

function key(k: string, whole: string): string {
  if (!LABEL_KEY.test(k)) throw new SelectorError(`unable to parse requirement: invalid label key "${k}" in "${whole}"`);
  return k;
}

function value(v: string, whole: string): string {
  if (!LABEL_VALUE.test(v) || v.length > 63) throw new SelectorError(`unable to parse requirement: invalid label value "${v}" in "${whole}"`);
  return v;
}

export function parseLabelSelector(s: string): Selector {
  const preds: Selector[] = [];
  for (const r of requirements(s)) {
    let m: RegExpExecArray | null;
    if ((m = /^(\S+?)\s+(in|notin)\s*\(([^)]*)\)$/.exec(r))) {
      const k = key(m[1], r);
      const set = new Set(m[3].split(',').map((v) => value(v.trim(), r)));
      const neg = m[2] === 'notin';
      preds.push((get) => {
        const v = get(k);
        return neg ? v === undefined || !set.has(v) : v !== undefined && set.has(v);
      });
    } else if ((m = /^([^!=\s]+)\s*(==|=|!=)\s*(\S*)$/.exec(r))) {
      const k = key(m[1], r);
      const v = value(m[3], r);
      preds.push(m[2] === '!=' ? (get) => get(k) !== v : (get) => get(k) === v);
    } else if ((m = /^!\s*(\S+)$/.exec(r))) {
      const k = key(m[1], r);
      preds.push((get) => get(k) === undefined);
    } else if (/^\S+$/.test(r)) {
      const k = key(r, r);
      preds.push((get) => get(k) !== undefined);
    } else {
      throw new SelectorError(`unable to parse requirement: "${r}"`);
    }
  }
  return (get) => preds.every((p) => p(get));
}

/** Field selectors name a path the resource supports; anything else is "field label not supported". */
export function parseFieldSelector(s: string, supported: (path: string) => boolean): Selector {
  const preds: Selector[] = [];
  for (const r of requirements(s)) {
    const m = /^([^!=\s]+)\s*(==|=|!=)\s*(.*)$/.exec(r);
    if (!m) throw new SelectorError(`invalid selector: '${s}'; can't understand '${r}'`);
    const [, path, op, v] = m;
    if (!supported(path)) throw new SelectorError(`field label not supported: ${path}`);
    preds.push(op === '!=' ? (get) => (get(path) ?? '') !== v : (get) => (get(path) ?? '') === v);
  }
  return (get) => preds.every((p) => p(get));
}

/** A Service's spec.selector (a plain map) as a selector; an empty map selects nothing here, as Services do. */
export function mapSelector(m: Record<string, string> | undefined): Selector | undefined {
  if (!m || Object.keys(m).length === 0) return undefined;
  const entries = Object.entries(m);
  return (get) => entries.every(([k, v]) => get(k) === v);
}
