// Just enough SMTP (RFC 5321) for the demo's server-first service: the server greets
// before the client says anything, which is what mesh proxies used to need skip ports for.
import * as net from 'node:net';

/** Splits buffered input into complete CRLF (or LF) lines; returns the remainder. */
export function takeLines(buf: string): { lines: string[]; rest: string } {
  const parts = buf.split(/\r?\n/);
  return { lines: parts.slice(0, -1), rest: parts.at(-1)! };
}

/** A reply is complete at a line "NNN text" (continuation lines are "NNN-text"). */
export function replyCode(line: string): { code: number; last: boolean } | null {
  const m = /^(\d{3})([ -]|$)/.exec(line);
  return m ? { code: Number(m[1]), last: m[2] !== '-' } : null;
}

/**
 * Delivers one message and resolves with the server's final reply to DATA.
 * Waits for the greeting first: a client that spoke first would not be speaking SMTP.
 */
export function sendMail(host: string, port: number, msg: { from: string; to: string; subject: string; body: string }, timeoutMs = 5000): Promise<string> {
  const steps: Array<{ send?: string; expect: number }> = [
    { expect: 220 },
    { send: 'HELO web.emojivoto', expect: 250 },
    { send: `MAIL FROM:<${msg.from}>`, expect: 250 },
    { send: `RCPT TO:<${msg.to}>`, expect: 250 },
    { send: 'DATA', expect: 354 },
    // Dot-stuffing: a body line starting with '.' gets another.
    { send: `Subject: ${msg.subject}\r\n\r\n${msg.body.replace(/^\./gm, '..')}\r\n.`, expect: 250 },
    { send: 'QUIT', expect: 221 },
  ];
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host, port });
    let buf = '';
    let step = 0;
    let accepted = '';
    const fail = (why: string) => {
      sock.destroy();
      reject(new Error(`SMTP to ${host}:${port}: ${why}`));
    };
    sock.setTimeout(timeoutMs, () => fail(`no reply within ${timeoutMs} ms (step ${step})`));
    sock.setEncoding('utf8');
    sock.on('error', (e) => fail(e.message));
    sock.on('close', () => (step === steps.length ? resolve(accepted) : fail(`connection closed at step ${step}`)));
    sock.on('data', (d: string) => {
      const { lines, rest } = takeLines(buf + d);
      buf = rest;
      for (const line of lines) {
        // After 221 the exchange is over: whatever else the server says is not ours to parse.
        if (step >= steps.length) return;
        const r = replyCode(line);
        if (!r) return fail(`not an SMTP reply: ${JSON.stringify(line.slice(0, 80))}`);
        if (!r.last) continue;
        if (r.code !== steps[step].expect) return fail(`expected ${steps[step].expect}, got ${JSON.stringify(line)}`);
        if (step === 5) accepted = line;
        step++;
        if (step < steps.length) sock.write(steps[step].send + '\r\n');
        else sock.end();
      }
    });
  });
}
