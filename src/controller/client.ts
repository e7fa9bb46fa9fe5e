// The CLI's side of the controller API: one HTTP/2 request, JSON or a stream of JSON lines.
import * as http2 from 'node:http2';
import * as readline from 'node:readline';

export class UnreachableError extends Error {}

/** The session, once the controller's SETTINGS came; null when `signal` aborted first. */
function open(url: string, timeoutMs: number, signal?: AbortSignal): Promise<http2.ClientHttp2Session | null> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return resolve(null);
    const s = http2.connect(url);
    // Ctrl-C during the connect ends it: tap's handler runs once, and the stream would not see it.
    const abort = () => {
      clearTimeout(timer);
      s.destroy();
      resolve(null);
    };
    signal?.addEventListener('abort', abort, { once: true });
    s.once('close', () => signal?.removeEventListener('abort', abort));
    const timer = setTimeout(() => {
      s.destroy();
      reject(new UnreachableError(`the controller at ${url} did not answer within ${timeoutMs}ms; is it running? kubectl -n mesh-agent port-forward svc/mesh-agent-controller 8086, or pass --controller HOST:PORT`));
    }, timeoutMs);
    // Its SETTINGS, not the TCP connect: a wedged controller (or a port-forward to something
    // else) accepts the connection and never answers; a tap would wait on it forever.
    s.once('remoteSettings', () => {
      clearTimeout(timer);
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      reject(new UnreachableError(`the controller at ${url} is unreachable (${(e as NodeJS.ErrnoException).code ?? e.message}); is it running? kubectl -n mesh-agent port-forward svc/mesh-agent-controller 8086, or pass --controller HOST:PORT`));
    });
  });
}

/** A request with a JSON answer; non-2xx answers throw with the controller's error text. */
export async function requestJson(url: string, method: 'GET' | 'POST', path: string, body?: unknown, timeoutMs = 5000): Promise<any> {
  const s = (await open(url, timeoutMs))!;
  try {
    return await new Promise((resolve, reject) => {
      const req = s.request({ ':method': method, ':path': path, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) });
      req.setTimeout(timeoutMs, () => {
        req.close();
        reject(new Error(`the controller did not answer ${path} within ${timeoutMs}ms`));
      });
      let status = 0;
      let text = '';
      req.on('response', (h) => (status = Number(h[':status'])));
      req.setEncoding('utf8');
      req.on('data', (d: string) => (text += d));
      req.on('error', reject);
      req.on('end', () => {
        let doc: any;
        try {
          doc = JSON.parse(text);
        } catch {
          return reject(new Error(`the controller answered HTTP ${status} with a body that is not JSON: ${text.slice(0, 200)}`));
        }
        if (status < 200 || status >= 300) return reject(new Error(doc?.error ?? `HTTP ${status}`));
        resolve(doc);
      });
      req.end(body !== undefined ? JSON.stringify(body) : undefined);
    });
  } finally {
    s.close();
  }
}

/** POSTs body and calls onLine for each JSON line until the controller ends the stream or `signal` aborts. */
export async function streamJson(url: string, path: string, body: unknown, onLine: (o: any) => void, signal: AbortSignal, timeoutMs = 5000): Promise<void> {
  const s = await open(url, timeoutMs, signal);
  if (s === null) return;
  if (signal.aborted) return void s.destroy();
  try {
    await new Promise<void>((resolve, reject) => {
      const req = s.request({ ':method': 'POST', ':path': path, 'content-type': 'application/json' });
      const abort = () => {
        req.close();
        resolve();
      };
      signal.addEventListener('abort', abort, { once: true });
      let status = 0;
      req.on('response', (h) => (status = Number(h[':status'])));
      req.setEncoding('utf8');
      const lines = readline.createInterface({ input: req, crlfDelay: Infinity });
      let failure: Error | undefined;
      lines.on('line', (l) => {
        if (status !== 200) {
          try {
            failure = new Error(JSON.parse(l).error ?? `HTTP ${status}`);
          } catch {
            failure = new Error(`HTTP ${status}: ${l.slice(0, 200)}`);
          }
          return;
        }
        try {
          onLine(JSON.parse(l));
        } catch (e) {
          failure = e as Error;
          req.close();
        }
      });
      req.on('error', (e) => reject(e));
      req.on('close', () => {
        signal.removeEventListener('abort', abort);
        if (failure) reject(failure);
        else if (status !== 200 && !signal.aborted) reject(new Error(`the controller answered HTTP ${status}`));
        else resolve();
      });
      req.end(JSON.stringify(body));
    });
  } finally {
    s.destroy();
  }
}
