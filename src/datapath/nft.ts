// Running nft and ip (iproute2) from the agent, in its own network namespace (the node's).
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';

// By absolute path: under npm scripts, node_modules/.bin/nft is @vercel/nft, a file tracer.
const NFT_PATHS = ['/usr/sbin/nft', '/sbin/nft', '/usr/bin/nft'];
const IP_PATHS = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'];

function find(paths: string[], what: string): string {
  const found = paths.find((p) => fs.existsSync(p));
  if (!found) throw new Error(`${what} is not installed (looked for ${paths.join(', ')}); install it (Debian packages nftables and iproute2; the mesh-agent image has both)`);
  return found;
}

export function nftBinary(): string {
  return find(NFT_PATHS, 'nft');
}

export function ipBinary(): string {
  return find(IP_PATHS, 'ip');
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command with optional stdin; never throws for a non-zero exit (the caller reads code). */
export function run(cmd: string, args: string[], input?: string, timeoutMs = 10_000): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { timeout: timeoutMs, encoding: 'utf8', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as NodeJS.ErrnoException & { code?: unknown }).code === 'number' ? (err as unknown as { code: number }).code : 1;
      resolve({ code, stdout, stderr: stderr || (err && code !== 0 && !stderr ? err.message : '') });
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}
