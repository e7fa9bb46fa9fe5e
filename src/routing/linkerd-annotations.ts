// Linkerd 2.16's retry and timeout annotations, so Linkerd users' manifests work unchanged.
// They go on a Service (its every request, unless a route says otherwise) or on an HTTPRoute or
// GRPCRoute (that route's rules; they win over the Service's). Semantics as Linkerd's policy
// controller reads them (linkerd2 policy-controller outbound index):
//   retry.linkerd.io/http     5xx | gateway-error | NNN | NNN-MMM, comma-separated (not on a GRPCRoute)
//   retry.linkerd.io/grpc     cancelled | deadline-exceeded | internal | resource-exhausted | unavailable (not on an HTTPRoute)
//   retry.linkerd.io/limit    retries per request; absent or 0: 1
//   retry.linkerd.io/timeout  an attempt without a response for this long is cancelled and retried
//   timeout.linkerd.io/request | response | idle
// Any retry annotation turns retries on (and one that cannot be read turns them off). Without a condition list, HTTP retries 5xx (Linkerd's
// default) and gRPC retries UNAVAILABLE (ours: the one code gRPC calls safe to retry).
// Pure: returns what it understood and an error per annotation it could not.
import { parseDuration } from './duration.ts';
import { MAX_MS, MAX_RETRY_LIMIT, type RetryPolicy, type Source, type Timeouts } from './route-model.ts';

export const RETRY_HTTP = 'retry.linkerd.io/http';
export const RETRY_GRPC = 'retry.linkerd.io/grpc';
export const RETRY_LIMIT = 'retry.linkerd.io/limit';
export const RETRY_TIMEOUT = 'retry.linkerd.io/timeout';
export const TIMEOUT_REQUEST = 'timeout.linkerd.io/request';
export const TIMEOUT_RESPONSE = 'timeout.linkerd.io/response';
export const TIMEOUT_IDLE = 'timeout.linkerd.io/idle';

/** gRPC status names Linkerd accepts in retry.linkerd.io/grpc, and their codes. */
export const GRPC_RETRY_CODES: Record<string, number> = {
  cancelled: 1,
  'deadline-exceeded': 4,
  internal: 13,
  'resource-exhausted': 8,
  unavailable: 14,
};
export const DEFAULT_HTTP_RETRY: Array<[number, number]> = [[500, 599]];
export const DEFAULT_GRPC_RETRY = [14];

export interface AnnotationPolicy {
  timeouts?: Timeouts;
  timeoutSources: Source[];
  /** Retries for HTTP requests (and gRPC responses by their HTTP status). */
  httpRetry?: RetryPolicy;
  /** Retries for gRPC requests. */
  grpcRetry?: RetryPolicy;
  retrySources: Source[];
  /** One per annotation that could not be read, naming it, its value and what is accepted. */
  errors: string[];
}

export type AnnotatedKind = 'Service' | 'HTTPRoute' | 'GRPCRoute';

/** HTTP status ranges from retry.linkerd.io/http's value; throws naming the bad element. */
export function parseHttpConditions(value: string): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  const code = (s: string) => (/^\d{3}$/.test(s) && Number(s) >= 100 && Number(s) <= 599 ? Number(s) : null);
  for (const raw of value.split(',')) {
    const c = raw.trim();
    if (c.toLowerCase() === '5xx') out.push([500, 599]);
    else if (c.toLowerCase() === 'gateway-error') out.push([502, 504]);
    else if (code(c) !== null) out.push([code(c)!, code(c)!]);
    else {
      const m = /^(\d{3})-(\d{3})$/.exec(c);
      const lo = m ? code(m[1]!) : null;
      const hi = m ? code(m[2]!) : null;
      if (lo === null || hi === null || lo > hi) {
        throw new Error(`${RETRY_HTTP}: ${JSON.stringify(c.slice(0, 40))} is not a retry condition; write 5xx, gateway-error, a status code such as 503, or a range such as 500-504`);
      }
      out.push([lo, hi]);
    }
  }
  return out;
}

export function parseGrpcConditions(value: string): number[] {
  const out: number[] = [];
  for (const raw of value.split(',')) {
    const c = raw.trim().toLowerCase();
    const code = GRPC_RETRY_CODES[c];
    if (code === undefined) throw new Error(`${RETRY_GRPC}: ${JSON.stringify(raw.trim().slice(0, 40))} is not a retryable gRPC status; use ${Object.keys(GRPC_RETRY_CODES).join(', ')}`);
    if (!out.includes(code)) out.push(code);
  }
  return out;
}

function positiveDuration(a: Record<string, string>, key: string, errors: string[]): number | undefined {
  const v = a[key];
  if (v === undefined) return undefined;
  try {
    const ms = parseDuration(v, key);
    // 0 means none, as Linkerd reads it; past what a timer holds (24.8 days), held as that.
    return ms === 0 ? undefined : Math.min(ms, MAX_MS);
  } catch (e) {
    errors.push((e as Error).message);
    return undefined;
  }
}

/** The retry and timeout annotations of one object. */
export function policyFromAnnotations(a: Record<string, string>, object: { kind: AnnotatedKind; namespace: string; name: string }): AnnotationPolicy {
  const errors: string[] = [];
  const src = (annotation: string): Source => ({ kind: object.kind, namespace: object.namespace, name: object.name, annotation });
  const out: AnnotationPolicy = { timeoutSources: [], retrySources: [], errors };

  const timeouts: Timeouts = {};
  const req = positiveDuration(a, TIMEOUT_REQUEST, errors);
  const res = positiveDuration(a, TIMEOUT_RESPONSE, errors);
  const idle = positiveDuration(a, TIMEOUT_IDLE, errors);
  if (req !== undefined) (timeouts.requestMs = req), out.timeoutSources.push(src(TIMEOUT_REQUEST));
  if (res !== undefined) (timeouts.backendRequestMs = res), out.timeoutSources.push(src(TIMEOUT_RESPONSE));
  if (idle !== undefined) (timeouts.idleMs = idle), out.timeoutSources.push(src(TIMEOUT_IDLE));
  if (out.timeoutSources.length > 0) out.timeouts = timeouts;

  let limit = 1;
  let any = false;
  const l = a[RETRY_LIMIT];
  if (l !== undefined) {
    any = true;
    const n = Number(l.trim());
    if (!/^\d+$/.test(l.trim()) || n > MAX_RETRY_LIMIT) errors.push(`${RETRY_LIMIT}: ${JSON.stringify(l.slice(0, 40))} is not a retry count; write a whole number from 0 to ${MAX_RETRY_LIMIT}`);
    else if (n > 0) limit = n; // 0 means the default, as Linkerd reads it
    out.retrySources.push(src(RETRY_LIMIT));
  }
  const timeoutMs = positiveDuration(a, RETRY_TIMEOUT, errors);
  if (a[RETRY_TIMEOUT] !== undefined) {
    any = true;
    out.retrySources.push(src(RETRY_TIMEOUT));
  }
  let http: Array<[number, number]> | undefined;
  let grpc: number[] | undefined;
  if (a[RETRY_HTTP] !== undefined) {
    any = true;
    if (object.kind === 'GRPCRoute') errors.push(`${RETRY_HTTP} is not valid on a GRPCRoute; use ${RETRY_GRPC}`);
    else {
      try {
        http = parseHttpConditions(a[RETRY_HTTP]!);
        out.retrySources.push(src(RETRY_HTTP));
      } catch (e) {
        errors.push((e as Error).message);
      }
    }
  }
  if (a[RETRY_GRPC] !== undefined) {
    any = true;
    if (object.kind === 'HTTPRoute') errors.push(`${RETRY_GRPC} is not valid on an HTTPRoute; use ${RETRY_HTTP}`);
    else {
      try {
        grpc = parseGrpcConditions(a[RETRY_GRPC]!);
        out.retrySources.push(src(RETRY_GRPC));
      } catch (e) {
        errors.push((e as Error).message);
      }
    }
  }
  // A retry annotation that could not be read turns retries off rather than guessing: a typo in
  // "503" must not become "every 5xx". The error says so.
  const retryErrors = errors.some((e) => e.startsWith('retry.linkerd.io/'));
  if (any && retryErrors) errors.push('retries are off for this object until the retry annotations above are fixed');
  if (any && !retryErrors) {
    const base = (): RetryPolicy => (timeoutMs !== undefined ? { limit, timeoutMs } : { limit });
    if (object.kind !== 'GRPCRoute') out.httpRetry = { ...base(), httpStatuses: http ?? DEFAULT_HTTP_RETRY };
    if (object.kind !== 'HTTPRoute') out.grpcRetry = { ...base(), grpcCodes: grpc ?? DEFAULT_GRPC_RETRY };
  }
  return out;
}
