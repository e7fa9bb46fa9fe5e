// `mesh-agent controller`: the service agents report to and `stat` and `tap` ask, and the
// source of Service discovery for the agents (from the API server, or from --resources files).
import type { Command } from 'commander';
import { jsonLogger } from '../agent/log.ts';
import { ControllerServer } from '../controller/server.ts';
import { parseWindow } from '../controller/stat.ts';
import { DiscoveryHub } from '../discovery/hub.ts';
import { RouteIndex, type DesiredStatus } from '../routing/route-index.ts';
import { AccessIndex } from '../policy/access-index.ts';
import { MeshObjects } from '../discovery/mesh-objects.ts';
import { parseHostPort } from './addr.ts';
import { DEFAULT_DASHBOARD_PORT } from '../controller/addr.ts';
import { AgentAuth, CONTROLLER_AUDIENCE, parseAgentAuthMode, type AgentAuthMode } from '../controller/agent-auth.ts';
import { IDENTITY_DEFAULTS, parseServiceAccount } from './identity-flags.ts';
import { LoopbackAccess, parseAccessMode, type AccessMode } from '../util/loopback-access.ts';
import { podNamespace } from './pod-namespace.ts';

export type DiscoveryMode = { kind: 'files'; path: string } | { kind: 'kubernetes'; kubeconfig?: string } | { kind: 'off' };

/** --resources wins nothing over --kubeconfig: both at once is a mistake. In a pod (KUBERNETES_SERVICE_HOST) the API server is the default. */
export function discoveryMode(o: { resources?: string; kubeconfig?: string }, env: NodeJS.ProcessEnv = process.env): DiscoveryMode {
  if (o.resources !== undefined && o.kubeconfig !== undefined) throw new Error('--resources and --kubeconfig are two sources of the same discovery; pass one');
  if (o.resources !== undefined) return { kind: 'files', path: o.resources };
  if (o.kubeconfig !== undefined) return { kind: 'kubernetes', kubeconfig: o.kubeconfig };
  if (env.KUBERNETES_SERVICE_HOST) return { kind: 'kubernetes' };
  return { kind: 'off' };
}

/** --agent-auth: token by default when there is an API server to ask (TokenReview), none without one (--resources, or nothing). */
export function agentAuthMode(flag: string | undefined, mode: DiscoveryMode): AgentAuthMode {
  const m = flag === undefined ? (mode.kind === 'kubernetes' ? 'token' : 'none') : parseAgentAuthMode(flag, '--agent-auth');
  if (m === 'token' && mode.kind !== 'kubernetes') throw new Error('--agent-auth token asks the API server (TokenReview) about each agent\'s token: run the controller in a cluster or with --kubeconfig FILE, or pass --agent-auth none');
  return m;
}

export const CONTROLLER_RBAC_HINT = 'the controller\'s ServiceAccount needs create on tokenreviews (authentication.k8s.io) for --agent-auth token; apply the ClusterRole from mesh-agent install';

export function registerController(program: Command) {
  program
    .command('controller')
    .description('run the controller: receive the agents\' reports, serve stat, relay tap, stream Service discovery to the agents')
    .option('--listen <ip:port>', 'address for agents and the CLI (HTTP/2 cleartext)', '0.0.0.0:8086')
    .option('--dashboard-listen <ip:port>', 'address of the web dashboard (HTTP/1.1, read-only); off to serve none', `0.0.0.0:${DEFAULT_DASHBOARD_PORT}`)
    .option('--retention <window>', 'how long reports are kept: the longest stat window', '1h')
    .option('--resources <file|dir>', 'discovery from Service, EndpointSlice and Pod objects in YAML or JSON files (a directory: its *.yaml, *.yml, *.json), reloaded on change; no API server needed')
    .option('--kubeconfig <file>', 'discovery from this cluster\'s API server (default in a pod: its in-cluster config)')
    .option('--agent-auth <mode>', 'token: reports, discovery and the agents\' tap stream need the agent\'s ServiceAccount token, checked with TokenReview and bound to the node it speaks for; none: served to whatever reaches the port (default: token with an API server, none with --resources)')
    .option('--agent-service-account <ns/name>', 'with --agent-auth token: only tokens of this ServiceAccount (the agents\') are let in', IDENTITY_DEFAULTS.agentServiceAccount)
    .option('--agent-token-audience <aud>', 'with --agent-auth token: the audience of the agents\' tokens for the controller', CONTROLLER_AUDIENCE)
    .option('--cli-access <mode>', 'loopback: stat, tap, diagnostics and /v1/status are served only to loopback peers (kubectl port-forward; what install runs), 403 to others; any: to whatever reaches the port', 'any')
    .option('-q, --quiet', 'log warnings and errors only')
    .action(async function (this: Command, o) {
      let listen: { host: string; port: number };
      let dashboardListen: { host: string; port: number } | null;
      let retentionMs: number;
      let mode: DiscoveryMode;
      let authMode: AgentAuthMode;
      let agentSa: { namespace: string; name: string };
      let cliMode: AccessMode;
      try {
        listen = parseHostPort(o.listen, '--listen', '0.0.0.0', 8086);
        dashboardListen = o.dashboardListen === 'off' ? null : parseHostPort(o.dashboardListen, '--dashboard-listen', '0.0.0.0', DEFAULT_DASHBOARD_PORT);
        retentionMs = parseWindow(o.retention, 7 * 24 * 3_600_000);
        mode = discoveryMode(o);
        authMode = agentAuthMode(o.agentAuth, mode);
        agentSa = parseServiceAccount(o.agentServiceAccount, '--agent-service-account');
        cliMode = parseAccessMode(o.cliAccess, '--cli-access');
      } catch (e) {
        this.error(`error: ${(e as Error).message}`);
      }
      const log = jsonLogger({ quiet: o.quiet });
      const logTo = (level: 'info' | 'warn', msg: string, fields?: Record<string, unknown>) => log[level](msg, fields);
      let discovery: ConstructorParameters<typeof ControllerServer>[0]['discovery'];
      let stopSource = () => {};
      let kubeConfig: import('@kubernetes/client-node').KubeConfig | undefined;
      if (mode.kind !== 'off') {
        const hub = new DiscoveryHub({ log: logTo });
        // Routes (HTTPRoute, GRPCRoute, TrafficSplit) become route records the hub streams; in a
        // cluster their status is written back (routing/route-status.ts).
        let writeStatus: ((want: DesiredStatus, obj: Record<string, any>) => void) | undefined;
        const routes = new RouteIndex({
          sink: { put: (key, line) => hub.put('route', { key, line, endpoints: 0, problems: [] }), remove: (key) => hub.remove('route', key) },
          log: logTo,
          onStatus: (want, obj) => writeStatus?.(want, obj),
        });
        hub.onService = (key, ports, addressing) => routes.setService(key, ports, addressing);
        // SMI TrafficTargets become access records the destination's agents enforce (docs/policy.md).
        const access = new AccessIndex({
          sink: { put: (key, line) => hub.put('access', { key, line, endpoints: 0, problems: [] }), remove: (key) => hub.remove('access', key) },
          log: logTo,
        });
        const objects = new MeshObjects(routes, access);
        try {
          if (mode.kind === 'files') {
            const { ResourceFiles } = await import('../discovery/resource-files.ts');
            const files = new ResourceFiles(mode.path, hub, (e) => log.warn(`discovery: ${e.message}`), objects);
            files.start();
            stopSource = () => files.stop();
            discovery = { hub, source: files, routes, access };
          } else {
            // Loaded only here: @kubernetes/client-node alone costs ~110 MB of RSS.
            const { DiscoveryKubeSource } = await import('../discovery/kube-source.ts');
            const { RouteStatusWriter } = await import('../routing/route-status.ts');
            const { statusApi } = await import('../routing/route-kube-source.ts');
            const { loadKubeConfig } = await import('../k8s/client-node-api.ts');
            const kc = loadKubeConfig(mode.kubeconfig);
            kubeConfig = kc;
            const writer = new RouteStatusWriter(statusApi(kc), logTo);
            writeStatus = (want, obj) => writer.write(want, obj);
            const kube = new DiscoveryKubeSource({ hub, kubeConfig: kc, routes: objects, onError: (e) => log.warn(`discovery: ${e.message}`), log: (m) => log.info(`discovery: ${m}`) });
            kube.start();
            stopSource = () => {
              kube.stop();
              writer.stop();
            };
            discovery = { hub, source: kube, routes, access };
          }
        } catch (e) {
          // Not a usage error: the files or the kubeconfig need fixing (exit 1, no help text).
          throw new Error(`discovery: ${(e as Error).message}`);
        }
      }
      let agentAuth: AgentAuth | undefined;
      if (authMode === 'token' && kubeConfig) {
        const { tokenReviewer } = await import('../identity/kube.ts');
        agentAuth = new AgentAuth({ review: tokenReviewer(kubeConfig, CONTROLLER_RBAC_HINT), agent: agentSa, audience: o.agentTokenAudience, log: logTo });
      }
      const cliAccess = cliMode === 'loopback' ? new LoopbackAccess(cliMode, { flag: '--cli-access', server: 'the controller', reach: `kubectl -n ${podNamespace()} port-forward svc/mesh-agent-controller 8086 (stat and tap ask 127.0.0.1:8086 by default)` }) : undefined;
      const server = new ControllerServer({ retentionMs, discovery, log: logTo, agentAuth, cliAccess });
      const addr = await server.listen(listen.host, listen.port);
      log.info('controller listening', { listen: `${addr.host}:${addr.port}`, retention: o.retention, discovery: mode.kind === 'files' ? `files ${mode.path}` : mode.kind, agentAuth: agentAuth ? `token (${o.agentServiceAccount}, audience ${agentAuth.audience})` : 'none', cliAccess: cliMode });
      let dashboard: { close(): Promise<void> } | undefined;
      if (dashboardListen) {
        // Loaded only when served: `--dashboard-listen off` keeps the controller as small as before.
        const { DashboardServer } = await import('../dashboard/server.ts');
        const d = new DashboardServer(server, { log: logTo });
        try {
          const at = await d.listen(dashboardListen.host, dashboardListen.port);
          dashboard = d;
          log.info('dashboard listening', { listen: `${at.host}:${at.port}` });
        } catch (e) {
          // An address asked for is a promise to keep; the default port being taken (another
          // controller on this machine, a test) must not stop reports, stat and tap.
          await d.close();
          if (this.getOptionValueSource('dashboardListen') === 'cli') throw e;
          log.warn(`${(e as Error).message}; the controller runs without its dashboard`);
        }
      }
      const stop = (sig: string) => {
        log.info(`${sig}: stopping`);
        stopSource();
        void Promise.all([server.close(), dashboard?.close()]).then(() => process.exit(0));
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
    });
}
