// The page's side of the dashboard API: JSON requests whose 4xx messages are shown as they
// are, one EventSource for "a report arrived", and the tap stream.
import { useEffect, useState } from 'preact/hooks';
import { SseParser } from './lib/sse.ts';

export async function getJson<T>(path: string, signal?: AbortSignal): Promise<T> {
  const res = await fetch(path, { signal, headers: { accept: 'application/json' } });
  let body: any;
  try {
    body = await res.json();
  } catch {
    throw new Error(`the controller answered ${path} with HTTP ${res.status} and no JSON; is it a mesh-agent controller?`);
  }
  if (!res.ok) throw new Error(body?.error ?? `HTTP ${res.status}`);
  return body as T;
}

type Listener = () => void;
const listeners = new Set<Listener>();
let source: EventSource | null = null;
let live: boolean = false;
const liveListeners = new Set<(v: boolean) => void>();

/** One stream per page: every view refetches when a report arrives. */
function ensureEvents(): void {
  if (source) return;
  source = new EventSource('/api/events');
  const setLive = (v: boolean) => {
    live = v;
    for (const l of liveListeners) l(v);
  };
  source.addEventListener('hello', () => setLive(true));
  source.addEventListener('report', () => {
    for (const l of listeners) l();
  });
  // EventSource reconnects on its own (retry: 2000); the indicator says so meanwhile.
  source.onerror = () => setLive(false);
}

export function useLive(): boolean {
  const [v, setV] = useState(live);
  useEffect(() => {
    ensureEvents();
    liveListeners.add(setV);
    return () => void liveListeners.delete(setV);
  }, []);
  return v;
}

export interface ApiState<T> {
  data: T | null;
  error: string | null;
  updatedAt: number | null;
}

/** GETs path now, again after every report (coalesced) and every 15 s (nodes go stale without reports). */
export function useApi<T>(path: string): ApiState<T> {
  const [state, setState] = useState<ApiState<T>>({ data: null, error: null, updatedAt: null });
  useEffect(() => {
    let ac: AbortController | null = null;
    let timer: number | undefined;
    let closed = false;
    setState({ data: null, error: null, updatedAt: null });
    const load = () => {
      ac?.abort();
      ac = new AbortController();
      getJson<T>(path, ac.signal).then(
        (data) => !closed && setState({ data, error: null, updatedAt: Date.now() }),
        (e: Error) => !closed && e.name !== 'AbortError' && setState((s) => ({ data: s.data, error: e.message, updatedAt: s.updatedAt })),
      );
    };
    const soon = () => {
      clearTimeout(timer);
      timer = window.setTimeout(load, 100);
    };
    ensureEvents();
    listeners.add(soon);
    load();
    const every = window.setInterval(load, 15_000);
    return () => {
      closed = true;
      listeners.delete(soon);
      clearTimeout(timer);
      clearInterval(every);
      ac?.abort();
    };
  }, [path]);
  return state;
}

/** Streams a tap's events until `signal` aborts or the controller ends it; a refused tap throws its message. */
export async function tapStream(query: URLSearchParams, onEvent: (event: string, data: any) => void, signal: AbortSignal): Promise<void> {
  const res = await fetch(`/api/tap?${query}`, { signal });
  if (!res.ok || !res.body) {
    let msg = `HTTP ${res.status}`;
    try {
      msg = (await res.json()).error ?? msg;
    } catch {}
    throw new Error(msg);
  }
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new SseParser();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    for (const e of parser.push(value)) onEvent(e.event, JSON.parse(e.data));
  }
}
