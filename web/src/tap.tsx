// The live tap of one workload, as Linkerd's tap page: start, stop, filter by method and path;
// requests newest first. The controller holds it to the same --max-rps bound as `mesh-agent tap`.
import { useEffect, useRef, useState } from 'preact/hooks';
import { formatLatency, GRPC_CODES } from '../../src/controller/format.ts';
import type { TapOutput } from '../../src/controller/protocol.ts';
import { tapStream } from './api.ts';

type Req = Extract<TapOutput, { type: 'request' }>;
const MAX_ROWS = 100;
const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'];

const who = (e: Req['source']) => (e.resource ? `${e.namespace}/${e.resource}` : `${e.ip}:${e.port}`);

export function TapPanel(p: { namespace: string; resource: string }) {
  const [method, setMethod] = useState('');
  const [path, setPath] = useState('');
  const [maxRps, setMaxRps] = useState('100');
  const [rows, setRows] = useState<Req[]>([]);
  const [seen, setSeen] = useState(0);
  const [status, setStatus] = useState('Not running.');
  const [error, setError] = useState<string | null>(null);
  const running = useRef<AbortController | null>(null);
  const [isRunning, setIsRunning] = useState(false);

  useEffect(() => () => running.current?.abort(), [p.namespace, p.resource]);

  const stop = () => {
    running.current?.abort();
    running.current = null;
    setIsRunning(false);
    setStatus('Stopped.');
  };

  const start = (ev: Event) => {
    ev.preventDefault();
    running.current?.abort();
    const ac = new AbortController();
    running.current = ac;
    setIsRunning(true);
    setError(null);
    setRows([]);
    setSeen(0);
    setStatus('Starting…');
    const q = new URLSearchParams({ namespace: p.namespace, resource: p.resource, maxRps });
    if (method) q.set('method', method);
    if (path) q.set('path', path);
    tapStream(q, (event, data) => {
      if (event === 'started') setStatus(`Tapping ${p.resource}: ${data.pods} pod${data.pods === 1 ? '' : 's'}, ${data.agents} agent${data.agents === 1 ? '' : 's'}, at most ${maxRps} requests/s.`);
      else if (event === 'request') {
        setSeen((n) => n + 1);
        setRows((r) => [data as Req, ...r].slice(0, MAX_ROWS));
      }
    }, ac.signal).then(
      () => {
        if (running.current !== ac) return;
        running.current = null;
        setIsRunning(false);
        setStatus('The controller ended the tap (it stopped or restarted); start it again.');
      },
      (e: Error) => {
        if (ac.signal.aborted) return;
        running.current = null;
        setIsRunning(false);
        setStatus('Not running.');
        setError(e.message);
      },
    );
  };

  return (
    <section class="tap" aria-labelledby="tap-h">
      <h2 id="tap-h">Live requests (tap)</h2>
      <form class="tap-form" onSubmit={start}>
        <label>
          Method
          <select value={method} onChange={(e) => setMethod((e.target as HTMLSelectElement).value)} disabled={isRunning}>
            <option value="">any</option>
            {METHODS.map((m) => <option value={m}>{m}</option>)}
          </select>
        </label>
        <label>
          Path prefix
          <input type="text" value={path} placeholder="/api" onInput={(e) => setPath((e.target as HTMLInputElement).value)} disabled={isRunning} />
        </label>
        <label>
          Max requests/s
          <input type="number" min="1" max="10000" step="any" value={maxRps} onInput={(e) => setMaxRps((e.target as HTMLInputElement).value)} disabled={isRunning} />
        </label>
        <button type="submit" disabled={isRunning}>Start</button>
        <button type="button" onClick={stop} disabled={!isRunning}>Stop</button>
      </form>
      <p class="tap-status" role="status">{status}{seen ? ` ${seen} request${seen === 1 ? '' : 's'} seen.` : ''}</p>
      {error && <p class="error" role="alert">{error}</p>}
      <table class="tap-table" data-testid="tap-table">
        <caption>Newest first, up to {MAX_ROWS}</caption>
        <thead>
          <tr>
            <th scope="col">Time</th><th scope="col">Direction</th><th scope="col">Peer</th><th scope="col">Method</th><th scope="col">Path</th>
            <th scope="col">Status</th><th scope="col" class="num">Latency</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => {
            const inbound = r.direction === 'inbound';
            const rec = r.record;
            const failed = !rec.success;
            return (
              <tr key={`${r.node}/${r.id}`} class={failed ? 'failed' : undefined} data-tap-row>
                <td>{new Date(rec.startedAt).toLocaleTimeString()}</td>
                <td>{inbound ? 'inbound' : 'outbound'}</td>
                <td>{inbound ? `from ${who(r.source)}` : `to ${who(r.destination)}`}</td>
                <td>{rec.method}</td>
                <td class="path">{rec.path}</td>
                <td>{rec.status || (rec.error ?? 'no response')}{rec.grpcStatus !== undefined ? ` · grpc-status ${GRPC_CODES[rec.grpcStatus] ?? rec.grpcStatus}` : ''}</td>
                <td class="num">{formatLatency(rec.latencyUs / 1000)}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </section>
  );
}
