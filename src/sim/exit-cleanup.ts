// Last-chance cleanup: nodes still alive when the process exits or is interrupted are torn
// down synchronously (nothing can be awaited there). SIGKILL skips all of this; that is
// what cleanupLeftovers() is for.

export interface SyncDestroyable {
  destroySync(): void;
}

const live = new Set<SyncDestroyable>();
let installed = false;

function sweep(): void {
  for (const n of [...live]) {
    try {
      n.destroySync();
    } catch {
      // best effort: keep going with the others
    }
    live.delete(n);
  }
}

function onSignal(signal: NodeJS.Signals): void {
  sweep();
  // If we are the only listener, our presence suppressed the default action: restore it,
  // so the process still dies of the signal (exit status and parent's view stay honest).
  if (process.listenerCount(signal) === 1) {
    process.removeListener(signal, onSignal);
    process.kill(process.pid, signal);
  }
}

function install(): void {
  if (installed) return;
  installed = true;
  process.on('exit', sweep);
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, onSignal);
}

export function trackLive(n: SyncDestroyable): void {
  install();
  live.add(n);
}

export function untrackLive(n: SyncDestroyable): void {
  live.delete(n);
}
