// `mesh-agent run`: the node agent.
import { CONTROLLER_TOKEN_FILE } from '../controller/agent-token.ts';
import { DEFAULT_STATE_FILE } from '../cni/spec.ts';
import type { Command } from 'commander';
import { Agent } from '../agent/agent.ts';
import { StopSignals } from './stop-signals.ts';
import { jsonLogger } from '../agent/log.ts';
import { findCgroup2Mount } from '../datapath/cgroup2.ts';
import { PortSet, DEFAULT_OPAQUE_PORTS } from '../proxy/ports.ts';
import { parseAgentConfig, parseBool, parseCount, parseMs, readConfigSource, resolveRunSettings, type AgentConfig } from './run-config.ts';
import { DEFAULT_MAX_SERIES } from '../telemetry/metrics.ts';
import { defaultProxyWorkers } from '../workers/cpus.ts';
import { capForOpenFiles, openFilesLimit } from '../agent/open-files.ts';
import { shrinkHeap } from '../util/shrink-heap.ts';
import type { AgentIdentityOptions } from '../agent/agent.ts';
import { DEFAULT_TRUST_DOMAIN, isTrustDomain, workloadId } from '../identity/spiffe.ts';
import { TUNNEL_PORT } from '../tunnel/path.ts';
import { DEFAULT_FIRST_SYNC_WAIT_MS } from '../discovery/first-sync.ts';
import { parseServiceHostPort } from '../util/host-port.ts';
import { DEFAULT_IDENTITY_PORT } from '../identity/api.ts';
import { IDENTITY_DEFAULTS, IDENTITY_RUN_DEFAULTS, parseServiceAccount, readFileFor } from './identity-flags.ts';

/** mTLS settings when an identity service is named (flag or config), else undefined: identity off. */
export function identityOptions(o: { identityTrustAnchorsFile: string; identityTokenFile: string; identityServiceAccount: string; trustDomain: string; tunnelPort: string; firstSyncWait: string }, addr: string | undefined): AgentIdentityOptions | undefined {
  if (addr === undefined || addr === '') return undefined;
  parseServiceHostPort(addr, `--identity-addr ${addr}`, DEFAULT_IDENTITY_PORT);
  if (!isTrustDomain(o.trustDomain)) throw new Error(`--trust-domain ${JSON.stringify(o.trustDomain)} is not a DNS-like name, e.g. cluster.local`);
  const anchorsPem = readFileFor('--identity-trust-anchors-file', o.identityTrustAnchorsFile);
  if (!anchorsPem.includes('BEGIN CERTIFICATE')) throw new Error(`--identity-trust-anchors-file ${o.identityTrustAnchorsFile}: no PEM certificate in it`);
  const sa = parseServiceAccount(o.identityServiceAccount, '--identity-service-account');
  const port = Number(o.tunnelPort);
  if (!/^\d+$/.test(o.tunnelPort) || port < 1 || port > 65535) throw new Error(`--tunnel-port ${o.tunnelPort}: not a port (1-65535)`);
  const firstSyncWaitMs = parseMs(o.firstSyncWait, '--first-sync-wait', '5s');
  return { addr, trustDomain: o.trustDomain, anchorsPem, tokenFile: o.identityTokenFile, serverId: workloadId(o.trustDomain, sa.namespace, sa.name), tunnelPort: port, firstSyncWaitMs };
}

export function registerRun(program: Command) {
  program
    .command('run')
    .description('run the node agent: load the datapath, proxy meshed pods\' connections, serve the admin API')
    .option('--config <dir|file>', 'settings from the mesh-agent-config ConfigMap: its mounted directory, or a YAML file (flags given here win)')
    .option('--node <name>', 'this node\'s name (default $NODE_NAME)')
    .option('--kubeconfig <file>', 'kubeconfig for the API server (default: in-cluster, else $KUBECONFIG or ~/.kube/config)')
    .option('--pods <file>', 'standalone mode: Pod and Namespace objects from a YAML or JSON file, reloaded on change')
    .option('--cgroup-root <dir>', 'the pods\' cgroup directory (default: the host\'s cgroup2 mount, which needs --allow-root-cgroup; on Kubernetes pass its kubepods cgroup)')
    .option('--proxy-addr <ip:port>', 'address pods are redirected to (default $NODE_IP:15001)')
    .option('--admin <ip:port>', 'admin API address (/status, /metrics, /ready, /live)', '0.0.0.0:4191')
    .option('--skip-outbound-ports <ports>', 'ports every pod connects to directly, e.g. 3306,5000-5010', '')
    .option('--opaque-ports <ports>', 'destination ports forwarded without protocol detection', DEFAULT_OPAQUE_PORTS)
    .option('--detect-timeout <duration>', 'go opaque when neither side spoke within this (milliseconds, or 500ms, 1s)', '1s')
    .option('--max-connections <n>', 'cap on open proxied connections, all proxies together; lowered to what the open-file limit holds', '10000')
    .option('--drain <duration>', 'on SIGTERM, wait this long for open connections (milliseconds, or 10s, 1m; 0 closes them at once; a second SIGTERM or Ctrl-C ends the wait)', '10s')
    .option('--metrics-pod-labels <bool>', 'label metrics with pod and dst_pod (false on big nodes: workload labels stay)', 'true')
    .option('--metrics-max-series <n>', 'label sets per metric before new ones fold into an overflow series', String(DEFAULT_MAX_SERIES))
    .option('--controller <addr>', 'report to the controller at HOST:PORT or http://HOST:PORT (default: the config\'s controller-addr; none: no reports)')
    .option('--controller-token-file <file>', 'the agent\'s projected ServiceAccount token for the controller (audience mesh-agent-controller), sent on its links; no such file: none sent', CONTROLLER_TOKEN_FILE)
    .option('--report-interval <duration>', 'how often to report to the controller (milliseconds, or 5s, 1m)', '5s')
    .option('--report-backlog <n>', 'reports kept while the controller is unreachable; older ones are dropped and counted', '120')
    .option('--inbound-addr <ip:port|off>', 'where the kernel hands connections captured on their way to this node\'s meshed pods (default the proxy IP, port 15006); off: no inbound capture or policy for unmeshed clients')
    .option('--default-inbound-policy <policy>', 'who may connect to a meshed pod without its own annotation: all-unauthenticated (default), all-authenticated, cluster-authenticated, cluster-unauthenticated, deny, audit (allows all, counted as authz audit)')
    .option('--cluster-networks <cidrs>', 'the cluster\'s networks for the cluster-* policies (default Linkerd\'s: 10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16)')
    .option('--proxy-workers <n|auto>', 'proxies on their own threads, each listening on the proxy address (default: the config\'s proxy-workers; auto: the CPUs the agent may use, from its cgroup CPU limit or the CPU count)')
    .option('--identity-addr <host:port>', 'the identity service: turns on mTLS between nodes (default: the config\'s identity-addr; none: off)')
    .option('--identity-trust-anchors-file <file>', 'PEM trust anchor(s) of the mesh', IDENTITY_RUN_DEFAULTS.trustAnchorsFile)
    .option('--identity-token-file <file>', 'the agent\'s projected ServiceAccount token (audience mesh-agent-identity)', IDENTITY_RUN_DEFAULTS.tokenFile)
    .option('--identity-service-account <ns/name>', 'the identity service\'s ServiceAccount: the SPIFFE ID its certificate must carry', IDENTITY_DEFAULTS.serviceAccount)
    .option('--trust-domain <name>', 'the SPIFFE trust domain', DEFAULT_TRUST_DOMAIN)
    .option('--tunnel-port <port>', 'port of the mTLS tunnel listener on the node IP', String(TUNNEL_PORT))
    .option('--first-sync-wait <duration>', 'with identity on and a controller: how long meshed pods\' connections wait for discovery\'s first sync, which tells which destinations get mTLS, before going directly (plaintext between nodes)', String(DEFAULT_FIRST_SYNC_WAIT_MS))
    .option('--cni-socket <path>', 'answer the chained CNI plugin here (install: /var/run/mesh-agent-cni/cni.sock): a meshed pod\'s sandbox comes up once its policy is in the kernel (default: off)')
    .option('--cni-state <file>', 'with --cni-socket: the meshed namespaces, for the plugin when no agent answers', DEFAULT_STATE_FILE)
    .option('--kernel-splice', 'experimental: opaque tunnels\' bytes are moved by the kernel (BPF sockhash), not copied by the proxy')
    .option('--native-io', 'HTTP/1 connections\' plain TCP sockets are read and written from C++ on the proxy\'s loop, not through Node\'s streams (the default)')
    .option('--no-native-io', 'HTTP/1 connections\' sockets stay on Node\'s streams (the path before --native-io became the default)')
    .option('--allow-root-cgroup', 'allow attaching to the machine\'s root cgroup (redirects every process on the host)')
    .option('-q, --quiet', 'log warnings and errors only')
    .action(async (o, cmd: Command) => {
      if (!o.cniSocket && cmd.getOptionValueSource('cniState') === 'cli') throw new Error('--cni-state is read with --cni-socket only: pass both (install does)');
      const log = jsonLogger({ quiet: o.quiet });
      let config: AgentConfig = {};
      if (o.config) {
        const parsed = parseAgentConfig(readConfigSource(o.config), `--config ${o.config}`);
        for (const w of parsed.warnings) log.warn(w);
        config = parsed.config;
      }
      const settings = resolveRunSettings(o, (flag) => cmd.getOptionValueSource(flag) === 'cli', config, process.env);
      // Checked now, not at SIGTERM: a bad --drain would otherwise show only as a drain that does not wait.
      const drainMs = parseMs(o.drain, '--drain', '10s');
      // parseMs: past 2^31-1 ms a Node timer fires every millisecond.
      const reportIntervalMs = parseMs(o.reportInterval, '--report-interval', '5s', 1);
      const proxyWorkers = settings.proxyWorkers === 'auto' ? defaultProxyWorkers() : settings.proxyWorkers;
      const { proxy, admin } = settings;
      const nativeIo = o.nativeIo ?? true;
      const cap = capForOpenFiles(parseCount(o.maxConnections, '--max-connections'), openFilesLimit(), nativeIo);
      if (cap.warning) log.warn(cap.warning, { maxConnections: cap.maxConnections });
      const proxyAddr = `${proxy.host}:${proxy.port}`;
      const agent = new Agent({
        nodeName: o.node ?? process.env.NODE_NAME,
        cgroupRoot: settings.cgroupRoot ?? findCgroup2Mount(),
        proxy: { ip: proxy.host, port: proxy.port },
        inbound: settings.inbound === null ? null : { ip: settings.inbound.host, port: settings.inbound.port },
        defaultInboundPolicy: settings.defaultInboundPolicy,
        clusterNetworks: settings.clusterNetworks,
        podsFile: o.pods,
        kubeconfig: o.kubeconfig,
        admin,
        controllerUrl: settings.controllerUrl,
        controllerTokenFile: o.controllerTokenFile,
        report: { intervalMs: reportIntervalMs, backlog: parseCount(o.reportBacklog, '--report-backlog') },
        skipOutbound: PortSet.parse(settings.skipOutboundPorts).ranges(),
        opaquePorts: PortSet.parse(o.opaquePorts),
        detectTimeoutMs: parseMs(o.detectTimeout, '--detect-timeout', '1s', 1),
        maxConnections: cap.maxConnections,
        allowRootCgroup: o.allowRootCgroup,
        kernelSplice: o.kernelSplice ?? false,
        nativeIo,
        proxyWorkers,
        metrics: { podLabels: parseBool(o.metricsPodLabels, '--metrics-pod-labels'), maxSeries: parseCount(o.metricsMaxSeries, '--metrics-max-series') },
        identity: identityOptions(o, settings.identityAddr),
        ...(o.cniSocket ? { cni: { socket: absolute(o.cniSocket, '--cni-socket'), stateFile: absolute(o.cniState, '--cni-state') } } : {}),
        log,
      });
      const started = agent.start();
      const signals = new StopSignals({ agent, drainMs, started, log, exit: (code) => process.exit(code) });
      process.on('SIGTERM', () => void signals.signal('SIGTERM'));
      process.on('SIGINT', () => void signals.signal('SIGINT'));
      try {
        await started;
      } catch (e) {
        await agent.stop(0).catch(() => {});
        throw e;
      }
      log.info('agent ready', { proxy: proxyAddr, admin: `${admin.host}:${admin.port}`, pods: agent.pods.states().length, proxyWorkers });
      // Start-up grew the main thread's young generation to 8 MB (5 MB resident) that an idle agent
      // does not use; in the bench V8's memory reducer had not given it back 42 s after start (docs/benchmarks.md).
      const notShrunk = shrinkHeap();
      if (notShrunk) log.info('the agent kept its start-up heap (no effect on traffic; it idles a few MB larger)', { error: notShrunk.message });
    });
}

function absolute(p: string, flag: string): string {
  if (!p.startsWith('/')) throw new Error(`${flag} ${p}: expected an absolute path (the plugin on the host reads the same path)`);
  return p;
}
