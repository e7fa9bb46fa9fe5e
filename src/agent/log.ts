// JSON-lines logging to stderr, one object per event, as log collectors expect from a DaemonSet.
export interface Logger {
  info(msg: string, fields?: object): void;
  warn(msg: string, fields?: object): void;
  error(msg: string, fields?: object): void;
}

export function jsonLogger(opts: { quiet?: boolean } = {}): Logger {
  const write = (level: string, msg: string, fields?: object) =>
    process.stderr.write(JSON.stringify({ ts: new Date().toISOString(), level, msg, ...fields }, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)) + '\n');
  return {
    info: (m, f) => { if (!opts.quiet) write('info', m, f); },
    warn: (m, f) => write('warn', m, f),
    error: (m, f) => write('error', m, f),
  };
}
