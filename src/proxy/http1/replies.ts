// Responses the proxy itself writes. All close the connection: after an error we cannot trust
// where the client's next message starts.

const REASONS: Record<number, string> = {
  400: 'Bad Request',
  408: 'Request Timeout',
  431: 'Request Header Fields Too Large',
  502: 'Bad Gateway',
  504: 'Gateway Timeout',
};

const cache = new Map<number, Buffer>();

export function errorReply(status: number): Buffer {
  let b = cache.get(status);
  if (b === undefined) {
    const reason = REASONS[status] ?? 'Error';
    const body = reason + '\n';
    b = Buffer.from(
      `HTTP/1.1 ${status} ${reason}\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\n` +
        `connection: close\r\n\r\n${body}`,
      'latin1',
    );
    cache.set(status, b);
  }
  return b;
}
