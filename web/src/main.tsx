// The dashboard page: namespaces, a namespace (workloads and topology), a workload (edges,
// pods, charts, tap), nodes. Routes live in the URL's fragment; data comes from /api and is
// refetched when the controller says a report arrived.
import type { ComponentChildren } from 'preact';
import { render } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { formatLatency, formatRps, formatSuccess } from '../../src/controller/format.ts';
import type { StatRow } from '../../src/controller/stat.ts';
import type { EdgeRow, NamespacesView, NodeRow, WorkloadRef, WorkloadRow, WorkloadView } from '../../src/dashboard/views.ts';
import { useApi, useLive, type ApiState } from './api.ts';
import { goldenColumns, LatencyHistogram, Sparkline, Table, Topology, type Column } from './components.tsx';
import { refKey } from '../../src/dashboard/workload-ref.ts';
import { graphOf } from './lib/graph.ts';
import { href, parseRoute, type Route } from './lib/route.ts';
import { TapPanel } from './tap.tsx';

const WINDOWS = ['10s', '1m', '10m', '1h'];
const SHORT: Record<string, string> = { deployment: 'deploy', statefulset: 'sts', daemonset: 'ds', job: 'job', replicaset: 'rs', pod: 'po' };

function useRoute(): Route {
  const [r, setR] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    const on = () => setR(parseRoute(location.hash));
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return r;
}

/** The page's heading, focused when the route changes so keyboard and screen-reader users land on it. */
function Title(p: { children: ComponentChildren }) {
  const ref = useRef<HTMLHeadingElement>(null);
  useEffect(() => ref.current?.focus(), []);
  return <h1 tabIndex={-1} ref={ref}>{p.children}</h1>;
}

function Loading<T>(p: { state: ApiState<T>; children: (data: T) => ComponentChildren }) {
  if (p.state.error) return <p class="error" role="alert">{p.state.error}</p>;
  if (!p.state.data) return <p class="loading">Loading…</p>;
  return <>{p.children(p.state.data)}</>;
}

function NoTraffic(p: { children: ComponentChildren }) {
  return <div class="empty" data-testid="no-traffic"><strong>No traffic yet.</strong> {p.children}</div>;
}

const meshedCol = <T extends { meshedPods: number; totalPods: number }>(): Column<T> => ({ key: 'meshed', label: 'Meshed', numeric: true, value: (r) => r.meshedPods, render: (r) => `${r.meshedPods}/${r.totalPods}` });

function NamespacesPage(p: { window: string }) {
  const s = useApi<NamespacesView>(`/api/namespaces?window=${p.window}`);
  return (
    <>
      <Title>Namespaces</Title>
      <Loading state={s}>
        {(d) =>
          d.rows.length === 0 ? (
            <NoTraffic>
              {d.nodes.total === 0
                ? 'No agent has reported to this controller yet. Agents report every few seconds once started with --controller (the install sets it).'
                : `${d.nodes.live} agent${d.nodes.live === 1 ? '' : 's'} reporting, but no pods and no requests in the last ${p.window}.`}
            </NoTraffic>
          ) : (
            <Table<StatRow>
              caption={`Traffic received per namespace, last ${p.window}`}
              testId="namespaces"
              rowKey={(r) => r.name}
              columns={[
                { key: 'name', label: 'Namespace', value: (r) => r.name, render: (r) => <a href={href.namespace(r.name)}>{r.name}</a> },
                meshedCol<StatRow>(),
                ...goldenColumns<StatRow>(),
              ]}
              rows={d.rows}
            />
          )}
      </Loading>
    </>
  );
}

function NamespacePage(p: { namespace: string; window: string }) {
  const q = `namespace=${encodeURIComponent(p.namespace)}&window=${p.window}`;
  const wl = useApi<{ rows: WorkloadRow[] }>(`/api/workloads?${q}`);
  const ed = useApi<{ edges: EdgeRow[] }>(`/api/edges?${q}`);
  return (
    <>
      <nav class="crumbs" aria-label="breadcrumbs"><a href={href.namespaces()}>Namespaces</a> › {p.namespace}</nav>
      <Title>Namespace {p.namespace}</Title>
      <Loading state={wl}>
        {(d) => (
          <Table<WorkloadRow>
            caption={`Workloads and the traffic they received, last ${p.window}`}
            testId="workloads"
            rowKey={(r) => `${r.kind}/${r.name}`}
            columns={[
              { key: 'name', label: 'Name', value: (r) => r.name, render: (r) => <a href={href.workload(r.namespace, r.kind, r.name)}>{r.name}</a> },
              { key: 'kind', label: 'Kind', value: (r) => r.kind },
              meshedCol<WorkloadRow>(),
              ...goldenColumns<WorkloadRow>(),
              { key: 'tcp', label: 'TCP', numeric: true, value: (r) => r.tcpOpenConnections },
            ]}
            rows={d.rows}
          />
        )}
      </Loading>
      <section aria-labelledby="topo-h">
        <h2 id="topo-h">Topology</h2>
        <Loading state={ed}>
          {(d) => {
            if (d.edges.length === 0) return <NoTraffic>No workload of {p.namespace} sent or received requests in the last {p.window}.</NoTraffic>;
            const g = graphOf(p.namespace, wl.data?.rows ?? [], d.edges);
            return <div class="graph-scroll"><Topology nodes={g.nodes} edges={g.edges} /></div>;
          }}
        </Loading>
      </section>
    </>
  );
}

function edgeColumns(peer: 'src' | 'dst', ns: string): Column<EdgeRow>[] {
  const label = (w: WorkloadRef) => (w.kind === 'external' ? w.name : `${w.namespace === ns ? '' : `${w.namespace}/`}${SHORT[w.kind] ?? w.kind}/${w.name}`);
  return [
    {
      key: 'peer', label: peer === 'src' ? 'From' : 'To', value: (e) => label(e[peer]),
      render: (e) => (e[peer].kind === 'external' ? label(e[peer]) : <a href={href.workload(e[peer].namespace, e[peer].kind, e[peer].name)}>{label(e[peer])}</a>),
    },
    ...goldenColumns<EdgeRow>(),
    { key: 'tcp', label: 'TCP', numeric: true, value: (e) => e.tcpOpenConnections },
  ];
}

function WorkloadPage(p: { namespace: string; kind: string; name: string; window: string }) {
  const s = useApi<WorkloadView>(`/api/workload?namespace=${encodeURIComponent(p.namespace)}&kind=${encodeURIComponent(p.kind)}&name=${encodeURIComponent(p.name)}&window=${p.window}`);
  const resource = `${SHORT[p.kind] ?? p.kind}/${p.name}`;
  return (
    <>
      <nav class="crumbs" aria-label="breadcrumbs"><a href={href.namespaces()}>Namespaces</a> › <a href={href.namespace(p.namespace)}>{p.namespace}</a> › {resource}</nav>
      <Title>{p.kind} {p.name}</Title>
      <Loading state={s}>
        {(d) => (
          <>
            <dl class="stats" data-testid="workload-stats">
              <div><dt>Success</dt><dd title={d.workload.requests ? `${d.workload.successes} of ${d.workload.requests} requests` : undefined}>{formatSuccess(d.workload.successRate)}</dd></div>
              <div><dt>RPS</dt><dd>{formatRps(d.workload.rps)}</dd></div>
              <div><dt>P50</dt><dd>{formatLatency(d.workload.latencyMsP50)}</dd></div>
              <div><dt>P95</dt><dd>{formatLatency(d.workload.latencyMsP95)}</dd></div>
              <div><dt>P99</dt><dd>{formatLatency(d.workload.latencyMsP99)}</dd></div>
              <div><dt>Meshed</dt><dd>{d.workload.meshedPods}/{d.workload.totalPods}</dd></div>
            </dl>
            <div class="charts">
              <Sparkline label="Success rate" points={d.series} value={(x) => x.successRate} max={1} format={(v) => `${(100 * v).toFixed(1)}%`} />
              <Sparkline label="Requests/s" points={d.series} value={(x) => x.rps} format={(v) => `${v.toFixed(1)}rps`} />
            </div>
            <LatencyHistogram bounds={d.latency.bounds} counts={d.latency.counts} p50={d.workload.latencyMsP50} p95={d.workload.latencyMsP95} p99={d.workload.latencyMsP99} />
            <h2>Inbound</h2>
            {d.inbound.length ? <Table<EdgeRow> caption={`Who sent ${resource} requests, last ${p.window}`} testId="inbound" rowKey={(e) => refKey(e.src)} columns={edgeColumns('src', p.namespace)} rows={d.inbound} /> : <p class="empty">No meshed client sent {resource} traffic in the last {p.window}.</p>}
            <h2>Outbound</h2>
            {d.outbound.length ? <Table<EdgeRow> caption={`What ${resource} called, last ${p.window}`} testId="outbound" rowKey={(e) => refKey(e.dst)} columns={edgeColumns('dst', p.namespace)} rows={d.outbound} /> : <p class="empty">{resource} called nothing through the mesh in the last {p.window}.</p>}
            <h2>Pods</h2>
            {d.pods.length ? (
              <Table<WorkloadView['pods'][number]>
                caption="Pods and the node each runs on"
                testId="pods"
                rowKey={(r) => r.name}
                columns={[
                  { key: 'name', label: 'Pod', value: (r) => r.name },
                  { key: 'ip', label: 'IP', value: (r) => r.ip },
                  { key: 'node', label: 'Node', value: (r) => r.node },
                  { key: 'meshed', label: 'Meshed', value: (r) => (r.meshed ? 'yes' : 'no') },
                ]}
                rows={d.pods}
              />
            ) : <p class="empty">No live agent reports a pod of {resource}.</p>}
          </>
        )}
      </Loading>
      <TapPanel namespace={p.namespace} resource={resource} />
    </>
  );
}

function duration(s: number): string {
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

/** A node's certificates in brief: how many are ready, the soonest end, the trust anchor's days left. */
function certificates(r: NodeRow): string {
  const id = r.agent?.identity;
  if (!id) return r.agent ? 'identity off' : '-';
  const ready = id.certificates.filter((c) => c.state === 'ready');
  const soonest = ready.map((c) => c.notAfter!).sort()[0];
  const failing = id.certificates.length - ready.length;
  return `${ready.length} ready${failing ? `, ${failing} without one` : ''}${soonest ? `; next ends ${soonest.replace('T', ' ').slice(0, 16)}` : ''}; anchor ${id.anchorDaysLeft}d left`;
}

function NodesPage() {
  const s = useApi<{ nodes: NodeRow[] }>('/api/nodes');
  return (
    <>
      <Title>Nodes</Title>
      <Loading state={s}>
        {(d) =>
          d.nodes.length === 0 ? (
            <NoTraffic>No agent has reported to this controller yet.</NoTraffic>
          ) : (
            <>
              <Table<NodeRow>
                caption="Each node's agent, from its reports and its link to the controller"
                testId="nodes"
                rowKey={(r) => r.node}
                columns={[
                  { key: 'node', label: 'Node', value: (r) => r.node },
                  { key: 'live', label: 'Reporting', value: (r) => (r.live ? 'yes' : 'no'), render: (r) => (r.live ? `yes (${duration(Math.round(r.lastSeenMsAgo / 1000))} ago)` : `no: last ${duration(Math.round(r.lastSeenMsAgo / 1000))} ago`), cellClass: (r) => (r.live ? undefined : 'sr-bad') },
                  { key: 'health', label: 'Health', value: (r) => (r.agent ? (r.agent.healthy ? 'healthy' : 'degraded') : null), render: (r) => (r.agent ? (r.agent.healthy ? 'healthy' : `degraded: ${r.agent.reasons.join('; ')}`) : 'unknown (agent sends no summary)'), cellClass: (r) => (r.agent && !r.agent.healthy ? 'sr-bad' : undefined) },
                  { key: 'version', label: 'Version', value: (r) => r.agent?.version ?? null },
                  { key: 'uptime', label: 'Uptime', numeric: true, value: (r) => r.agent?.uptimeSeconds ?? null, render: (r) => (r.agent ? duration(r.agent.uptimeSeconds) : '-') },
                  { key: 'programs', label: 'Programs', numeric: true, value: (r) => r.agent?.programs.filter((x) => x.attached).length ?? null, render: (r) => (r.agent ? `${r.agent.programs.filter((x) => x.attached).length}/${r.agent.programs.length} attached` : '-'), title: (r) => r.agent?.programs.map((x) => `${x.section}${x.attached ? '' : ' (detached)'}`).join(', ') },
                  { key: 'meshed', label: 'Meshed pods', numeric: true, value: (r) => r.meshedPods, render: (r) => `${r.meshedPods}/${r.pods}` },
                  { key: 'certs', label: 'Certificates', value: (r) => r.agent?.identity?.certificates.length ?? null, render: (r) => certificates(r), title: (r) => r.agent?.identity?.certificates.map((c) => `${c.identity}: ${c.state}${c.notAfter ? `, until ${c.notAfter}` : ''}`).join('\n'), cellClass: (r) => (r.agent?.identity?.certificates.some((c) => c.state === 'failing') ? 'sr-bad' : undefined) },
                  { key: 'link', label: 'Controller link', value: (r) => r.received, render: (r) => `${r.received} reports${r.duplicates ? `, ${r.duplicates} resent` : ''}${r.dropped ? `, ${r.dropped} dropped` : ''}; tap ${r.tapLink ? 'connected' : 'not connected'}${r.agent ? `; backlog ${r.agent.link.backlog}/${r.agent.link.backlogLimit}` : ''}` },
                ]}
                rows={d.nodes}
              />
              <p class="note">Certificates: the workload identities (SPIFFE IDs of the ServiceAccounts of the node's meshed pods) its agent holds for mTLS between nodes; hover for each one's end.</p>
            </>
          )}
      </Loading>
    </>
  );
}

function App() {
  const route = useRoute();
  const live = useLive();
  const [win, setWin] = useState('1m');
  let page: ComponentChildren;
  switch (route.page) {
    case 'namespaces': page = <NamespacesPage window={win} />; break;
    case 'namespace': page = <NamespacePage key={route.namespace} namespace={route.namespace} window={win} />; break;
    case 'workload': page = <WorkloadPage key={`${route.namespace}/${route.kind}/${route.name}`} {...route} window={win} />; break;
    case 'nodes': page = <NodesPage />; break;
    default: page = <><Title>Not found</Title><p class="error" role="alert">No page at {route.hash}; start from <a href={href.namespaces()}>Namespaces</a>.</p></>;
  }
  const section = route.page === 'nodes' ? 'nodes' : 'namespaces';
  return (
    <>
      <header>
        <a class="brand" href={href.namespaces()}>mesh-agent</a>
        <nav aria-label="sections">
          <a href={href.namespaces()} aria-current={section === 'namespaces' ? 'page' : undefined}>Namespaces</a>
          <a href={href.nodes()} aria-current={section === 'nodes' ? 'page' : undefined}>Nodes</a>
        </nav>
        <label class="window">
          Time window
          <select value={win} onChange={(e) => setWin((e.target as HTMLSelectElement).value)}>
            {WINDOWS.map((w) => <option value={w}>{w}</option>)}
          </select>
        </label>
        <span class={live ? 'live on' : 'live'} role="status">{live ? 'live' : 'reconnecting…'}</span>
      </header>
      <main>{page}</main>
    </>
  );
}

const root = document.getElementById('app')!;
root.textContent = ''; // the "Loading" placeholder: render() adds to what is there
render(<App />, root);
