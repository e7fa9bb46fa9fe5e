// What every demo service shares: flags, JSON lines on stdout, a clear death on bad input.
import { parseArgs } from 'node:util';

export function flags<T extends Record<string, { type: 'string' | 'boolean'; default?: string | boolean }>>(options: T, usage: string) {
  try {
    return parseArgs({ options, strict: true, allowPositionals: false }).values;
  } catch (e) {
    die(`${(e as Error).message}; usage: ${usage}`);
  }
}

export function port(value: unknown, name: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 65535) die(`--${name} ${String(value)}: expected a port number 1-65535`);
  return n;
}

/** host:port of a peer service. */
export function peer(value: unknown, name: string): { host: string; port: number } {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d+)$/.exec(String(value ?? ''));
  if (!m) die(`--${name} ${String(value)}: expected IPv4:PORT, e.g. 10.244.1.2:8080`);
  return { host: m[1], port: port(m[2], name) };
}

export function emit(o: object): void {
  process.stdout.write(JSON.stringify(o) + '\n');
}

export function die(msg: string): never {
  process.stderr.write(JSON.stringify({ error: msg }) + '\n');
  process.exit(1);
}
