// A request answered before its body is read (test/controller-early-reply.test.ts,
// test/http2-early-reply.test.ts): the client holds its body until the answer is in and two PING
// round trips after it, so a reset the server sent after its answer has arrived by then.
import { once } from 'node:events';
import * as http2 from 'node:http2';

export interface HeldAnswer {
  /** The request stream, its body not sent yet: end it, or see that the server closed it. */
  req: http2.ClientHttp2Stream;
  head: http2.IncomingHttpHeaders;
  status: number;
  text: string;
}

/** post(path, contentLength?): a POST whose body (of this declared length, if any) is not sent yet. */
export function heldPost(session: http2.ClientHttp2Session, contentType: string) {
  const ping = () => new Promise<void>((resolve, reject) => session.ping((e) => (e ? reject(e) : resolve())));
  return async (path: string, contentLength?: number): Promise<HeldAnswer> => {
    const h: http2.OutgoingHttpHeaders = { ':method': 'POST', ':path': path, 'content-type': contentType };
    if (contentLength !== undefined) h['content-length'] = contentLength;
    const req = session.request(h, { endStream: false });
    req.on('error', () => {});
    const [head] = (await once(req, 'response')) as [http2.IncomingHttpHeaders];
    let text = '';
    req.setEncoding('utf8').on('data', (d: string) => (text += d));
    await once(req, 'end');
    await ping();
    await ping();
    return { req, head, status: Number(head[':status']), text };
  };
}
