// mailer service: a tiny SMTP server, the demo's server-first protocol. The web sends it a
// receipt per vote. Its port is not in any opaque-ports list: the proxy must notice on its own
// that the server spoke first and forward the connection as opaque TCP.
//   node src/demo/mailer-svc.ts --port 2525
import * as net from 'node:net';
import { emit, flags, port } from './service-main.ts';
import { takeLines } from './smtp.ts';

const o = flags({ port: { type: 'string', default: '2525' } }, 'mailer-svc.ts --port P');
let delivered = 0;

const server = net.createServer((sock) => {
  sock.setEncoding('utf8');
  sock.on('error', () => {});
  const reply = (line: string) => sock.write(line + '\r\n');
  reply('220 mailer.emojivoto ESMTP mesh-agent demo');
  let buf = '';
  let inData = false;
  sock.on('data', (d: string) => {
    const { lines, rest } = takeLines(buf + d);
    buf = rest;
    for (const line of lines) {
      if (inData) {
        if (line === '.') {
          inData = false;
          delivered++;
          reply(`250 2.0.0 Ok: queued as ${delivered}`);
          emit({ delivered });
        }
        continue;
      }
      const verb = line.slice(0, 4).toUpperCase();
      if (verb === 'HELO' || verb === 'EHLO') reply('250 mailer.emojivoto');
      else if (verb === 'MAIL' || verb === 'RCPT' || verb === 'RSET' || verb === 'NOOP') reply('250 2.1.0 Ok');
      else if (verb === 'DATA') {
        inData = true;
        reply('354 End data with <CR><LF>.<CR><LF>');
      } else if (verb === 'QUIT') {
        reply('221 2.0.0 Bye');
        sock.end();
      } else reply('502 5.5.2 Command not recognized');
    }
  });
});
server.on('error', (e) => {
  process.stderr.write(JSON.stringify({ error: `mailer on port ${o.port}: ${e.message}` }) + '\n');
  process.exit(1);
});
server.listen(port(o.port, 'port'), '0.0.0.0', () => emit({ listening: Number(o.port) }));
