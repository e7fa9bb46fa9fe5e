// web: the HTTP/1 front end. /api/list and /api/leaderboard call the emoji and voting
// services over gRPC; /api/vote records a vote (a gRPC error becomes a 500, as in emojivoto)
// and mails a receipt through the server-first mailer.
//   node src/demo/web.ts --port 8080 --emoji IP:8080 --voting IP:8080 --mailer IP:2525
import * as grpc from '@grpc/grpc-js';
import * as http from 'node:http';
import { loadServices, type Emoji, type VotingResult } from './proto.ts';
import { emit, flags, peer, port } from './service-main.ts';
import { sendMail } from './smtp.ts';

const o = flags({
  port: { type: 'string', default: '8080' },
  emoji: { type: 'string' },
  voting: { type: 'string' },
  mailer: { type: 'string' },
}, 'web.ts --port P --emoji IP:PORT --voting IP:PORT --mailer IP:PORT');
const emojiAddr = peer(o.emoji, 'emoji');
const votingAddr = peer(o.voting, 'voting');
const mailer = peer(o.mailer, 'mailer');

const { EmojiService, VotingService } = loadServices();
const insecure = grpc.credentials.createInsecure();
type Unary = (req: object, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: any) => void) => void;
const emojiClient = new EmojiService(`${emojiAddr.host}:${emojiAddr.port}`, insecure) as grpc.Client & Record<string, Unary>;
const votingClient = new VotingService(`${votingAddr.host}:${votingAddr.port}`, insecure) as grpc.Client & Record<string, Unary>;

function call<T>(client: grpc.Client & Record<string, Unary>, method: string, req: object): Promise<T> {
  return new Promise((resolve, reject) =>
    client[method](req, { deadline: Date.now() + 5000 }, (err, res) => (err ? reject(err) : resolve(res as T))));
}

class HttpError extends Error {
  readonly status: number;
  constructor(status: number, msg: string) {
    super(msg);
    this.status = status;
  }
}

async function route(url: URL): Promise<unknown> {
  switch (url.pathname) {
    case '/api/list':
      return (await call<{ list: Emoji[] }>(emojiClient, 'ListAll', {})).list;
    case '/api/vote': {
      const choice = url.searchParams.get('choice') ?? '';
      const { emoji } = await call<{ emoji: Emoji | null }>(emojiClient, 'FindByShortcode', { shortcode: choice });
      if (!emoji) throw new HttpError(400, `unknown emoji ${JSON.stringify(choice)}; GET /api/list for the choices`);
      await call(votingClient, 'Vote', { shortcode: emoji.shortcode });
      const receipt = await sendMail(mailer.host, mailer.port, { from: 'web@emojivoto', to: 'votes@emojivoto', subject: `vote ${emoji.shortcode}`, body: `one vote for ${emoji.unicode}` });
      return { voted: emoji.shortcode, receipt };
    }
    case '/api/leaderboard': {
      const [{ results }, { list }] = await Promise.all([
        call<{ results: VotingResult[] }>(votingClient, 'Results', {}),
        call<{ list: Emoji[] }>(emojiClient, 'ListAll', {}),
      ]);
      const byCode = new Map(list.map((e) => [e.shortcode, e.unicode]));
      return results.map((r) => ({ ...r, unicode: byCode.get(r.shortcode) ?? '?' }));
    }
    default:
      throw new HttpError(404, 'not found; try /api/list, /api/vote?choice=:joy:, /api/leaderboard');
  }
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://web');
  route(url).then(
    (body) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body)),
    (e: Error & { code?: number; details?: string }) => {
      // A failed gRPC call (it has a numeric code) is the back end's failure: 500, as emojivoto.
      const status = e instanceof HttpError ? e.status : 500;
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ error: e.details ?? e.message }));
    },
  );
});
server.keepAliveTimeout = 60_000;
server.on('error', (e) => {
  process.stderr.write(JSON.stringify({ error: `web on port ${o.port}: ${e.message}` }) + '\n');
  process.exit(1);
});
server.listen(port(o.port, 'port'), '0.0.0.0', () => emit({ listening: Number(o.port) }));
