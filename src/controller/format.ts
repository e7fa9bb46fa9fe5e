// How the CLI and the dashboard print the golden metrics, so both show the same numbers. Pure.

const dash = '-';

/** Latency as Linkerd prints it (whole ms), with a decimal below 10ms where whole ms would hide everything. */
export function formatLatency(ms: number | null): string {
  if (ms === null) return dash;
  if (ms < 1) return `${ms.toFixed(2)}ms`;
  if (ms < 10) return `${ms.toFixed(1)}ms`;
  return `${Math.round(ms)}ms`;
}

export const formatSuccess = (rate: number | null): string => (rate === null ? dash : `${(100 * rate).toFixed(2)}%`);
export const formatRps = (rps: number | null): string => (rps === null ? dash : `${rps.toFixed(1)}rps`);

/** gRPC status names by code, as Linkerd's tap prints grpc-status. */
export const GRPC_CODES = ['OK', 'Canceled', 'Unknown', 'InvalidArgument', 'DeadlineExceeded', 'NotFound', 'AlreadyExists', 'PermissionDenied', 'ResourceExhausted', 'FailedPrecondition', 'Aborted', 'OutOfRange', 'Unimplemented', 'Internal', 'Unavailable', 'DataLoss', 'Unauthenticated'];
