// A ConfigMap volume laid out as kubelet mounts it: a timestamped directory, the ..data symlink
// to it, and one symlink per key, so `run --config DIR` is tested against the real layout.
import * as fs from 'node:fs';
import * as path from 'node:path';

export function mountConfigMap(dir: string, data: Record<string, string>): string {
  const ts = path.join(dir, '..2025_01_01_00_00_00.000000001');
  fs.mkdirSync(ts, { recursive: true });
  for (const [k, v] of Object.entries(data)) fs.writeFileSync(path.join(ts, k), v);
  fs.symlinkSync(path.basename(ts), path.join(dir, '..data'));
  for (const k of Object.keys(data)) fs.symlinkSync(path.join('..data', k), path.join(dir, k));
  return dir;
}

/**
 * An edit of the ConfigMap as kubelet applies it (its AtomicWriter): a new timestamped directory,
 * `..data_tmp` pointing at it renamed over `..data`, the old directory removed. The per-key
 * symlinks themselves never change.
 */
export function updateConfigMap(dir: string, data: Record<string, string>, stamp: string): void {
  const old = fs.readlinkSync(path.join(dir, '..data'));
  const ts = path.join(dir, `..${stamp}`);
  fs.mkdirSync(ts);
  for (const [k, v] of Object.entries(data)) fs.writeFileSync(path.join(ts, k), v);
  fs.symlinkSync(path.basename(ts), path.join(dir, '..data_tmp'));
  fs.renameSync(path.join(dir, '..data_tmp'), path.join(dir, '..data'));
  fs.rmSync(path.join(dir, old), { recursive: true });
}
