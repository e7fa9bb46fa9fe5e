// Responses the proxy itself writes. All close the connection: after an error we cannot trust
// where the client's next message starts.

const REASONS: Record<number, string> = {
  400: 'Bad Request',
  408: 'Request Timeout',
  431: 'Request Header Fields Too Large',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

const cache = new Map<number, Buffer>();

/** The reply for a status; `detail` (ASCII, says what failed) becomes the body instead of the reason phrase. */
export function errorReply(status: number, detail?: string): Buffer {
  if (detail !== undefined) return build(status, detail.replace(/[^\x20-\x7e]/g, '?'));
  let b = cache.get(status);
  if (b === undefined) {
    b = build(status, REASONS[status] ?? 'Error');
    cache.set(status, b);
  }
  return b;
}

function build(status: number, text: string): Buffer {
  const body = text + '\n';
  return Buffer.from(
    `HTTP/1.1 ${status} ${REASONS[status] ?? 'Error'}\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\n` +
      `connection: close\r\n\r\n${body}`,
    'latin1',
  );
}
