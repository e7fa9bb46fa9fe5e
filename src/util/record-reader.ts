// The checks every record the controller streams is read with (Services, routes, access
// records): each failure names the field's path and what was expected, thrown as the caller's
// own error class so a bad route is a RouteError and a bad Service a DiscoveryError.
import { show } from './show.ts';

/** The longest Kubernetes object name (a DNS subdomain). */
export const MAX_NAME = 253;
export const DNS_LABELISH = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

export const isName = (s: unknown): s is string => typeof s === 'string' && s.length > 0 && s.length <= MAX_NAME && DNS_LABELISH.test(s);
export const isPort = (n: unknown): n is number => typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= 65535;

/** Declare the destructured `fail` with this type: TypeScript narrows after a call only then. */
export type Fail = (where: string, what: string) => never;

export interface RecordReader {
  fail: Fail;
  obj(v: unknown, where: string): Record<string, unknown>;
  name(v: unknown, where: string): string;
  list(v: unknown, where: string, max: number): unknown[];
}

export function recordReader(error: (message: string) => Error): RecordReader {
  const fail: Fail = (where, what) => {
    throw error(`${where}: ${what}`);
  };
  return {
    fail,
    obj(v, where) {
      if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(where, 'expected an object');
      return v as Record<string, unknown>;
    },
    name(v, where) {
      if (!isName(v)) fail(where, `expected a Kubernetes name, got ${show(v)}`);
      return v;
    },
    list(v, where, max) {
      if (!Array.isArray(v)) fail(where, 'expected a list');
      if (v.length > max) fail(where, `more than ${max} entries`);
      return v;
    },
  };
}
