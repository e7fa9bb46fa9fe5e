// Standalone pod source: Pod and Namespace objects from a file, reloaded when it changes,
// including when an editor replaces it by rename or a ConfigMap volume swaps its ..data (so watch
// the directory, not the inode).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseObjects } from './documents.ts';
import type { Snapshot } from './objects.ts';

export class PodFileSource {
  private watcher?: fs.FSWatcher;
  private timer?: NodeJS.Timeout;
  private lastText?: string;
  readonly file: string;
  private onSnapshot: (s: Snapshot) => void;
  private onError: (e: Error) => void;

  constructor(file: string, onSnapshot: (s: Snapshot) => void, onError: (e: Error) => void) {
    this.file = path.resolve(file);
    this.onSnapshot = onSnapshot;
    this.onError = onError;
  }

  /** Reads once (throws on a missing or invalid file at start), then watches. */
  start(): Snapshot {
    const text = fs.readFileSync(this.file, 'utf8');
    const snap = parseObjects(text, this.file);
    this.lastText = text;
    // Any event in the directory: a ConfigMap volume's file is a symlink through ..data, and
    // kubelet's update swaps ..data, never the file's own name (reload skips an unchanged text).
    this.watcher = fs.watch(path.dirname(this.file), () => this.schedule());
    this.watcher.on('error', (e) => this.onError(e));
    return snap;
  }

  private schedule() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.reload(), 100);
  }

  private reload() {
    let text: string;
    try {
      text = fs.readFileSync(this.file, 'utf8');
    } catch (e) {
      // Mid-rename the file may be briefly absent; the next event brings it back.
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') this.onError(e as Error);
      return;
    }
    if (text === this.lastText) return;
    try {
      const snap = parseObjects(text, this.file);
      this.lastText = text;
      this.onSnapshot(snap);
    } catch (e) {
      // Keep the last good pods; report the bad file.
      this.onError(e as Error);
    }
  }

  stop() {
    clearTimeout(this.timer);
    this.watcher?.close();
  }
}
