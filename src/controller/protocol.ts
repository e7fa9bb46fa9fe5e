// The controller's HTTP/2 (h2c) API, shared by the server, the agents and the CLI.
// JSON bodies; streams are newline-delimited JSON. See docs/controller.md.

/** Agent -> controller, one request per report: body a Report, answer 200 {result}. */
export const PATH_REPORTS = '/v1/reports';
/** Agent -> controller, one long-lived stream per agent: controller writes TapCommand lines, the agent writes TapEventLine lines. */
export const PATH_AGENT_TAP = '/v1/agents/tap';
/** CLI: GET with query kind, namespace, name, window; answer a StatResult. */
export const PATH_STAT = '/v1/stat';
/** CLI: POST a TapRequest; answer a stream of TapOutput lines until the CLI closes it. */
export const PATH_TAP = '/v1/tap';
/** Anyone: the controller's view of its agents. */
export const PATH_STATUS = '/v1/status';
/**
 * Agent -> controller, one long-lived GET per agent (headers mesh-node, mesh-agent-id): the
 * controller writes discovery lines (src/discovery/model.ts): reset, the world, synced, then
 * deltas. 404 when the controller runs without discovery. See docs/discovery.md.
 */
export const PATH_DISCOVERY = '/v1/discovery';

export const HEADER_NODE = 'mesh-node';
export const HEADER_AGENT_ID = 'mesh-agent-id';

/** Largest body the controller reads (a report of MAX_PAIRS pairs fits). */
export const MAX_BODY = 16 * 1024 * 1024;

/** CLI: GET with query namespace, name and optionally node; answer a DiagnosticsResult (an agent's balancer). */
export const PATH_DIAG_ENDPOINTS = '/v1/diagnostics/endpoints';
/** CLI: GET with query namespace, name, fromNamespace and optionally node; answer an agent's routes, retries and timeouts for the Service. */
export const PATH_DIAG_POLICY = '/v1/diagnostics/policy';

/** CLI: GET with query namespace, name (a pod) and optionally node; answer the inbound policy that applies to the pod, from its node's agent. */
export const PATH_DIAG_AUTHZ = '/v1/diagnostics/authz';

/** Controller -> agent over the agent's tap stream; the agent answers with one AgentReply line. */
export type AgentQuery =
  | { kind: 'endpoints'; namespace: string; name: string }
  | { kind: 'policy'; namespace: string; name: string; fromNamespace: string }
  | { kind: 'authz'; namespace: string; name: string };
export interface AgentReply {
  reply: string;
  result?: unknown;
  error?: string;
}

export type TapCommand =
  | { op: 'start'; filter: import('../telemetry/tap.ts').TapFilter }
  | { op: 'stop'; id: string }
  | { op: 'query'; id: string; query: AgentQuery };

/** One agent's answer to a diagnostics query. */
export interface AgentAnswer {
  node: string;
  result?: unknown;
  error?: string;
}
export interface TapEventLine {
  tap: string;
  record: import('../telemetry/tap.ts').TapRecord;
}

/** What `mesh-agent tap` asks for. */
export interface TapRequest {
  /** TYPE/NAME, e.g. deploy/web. */
  resource: string;
  namespace: string;
  /** TYPE/NAME of the destination; only requests from resource to it. */
  to?: string;
  toNamespace?: string;
  method?: string;
  path?: string;
  maxRps: number;
}

export interface TapEndpoint {
  ip: string;
  port: number;
  /** e.g. deploy/web, when the controller knows the pod. */
  resource?: string;
  namespace?: string;
  pod?: string;
}

/** One line of the tap stream to the CLI: a started line, then one per request. */
export type TapOutput =
  | { type: 'started'; agents: number; pods: number }
  | {
      type: 'request';
      /** Linkerd's id=BASE:STREAM: the agent's index in this tap, and the request's number on that agent. */
      id: string;
      node: string;
      /**
       * As Linkerd's proxy=out|in, from the tapped resource's side: outbound when one of its pods
       * sent the request (always with --to), inbound when it received it from elsewhere.
       */
      direction: 'outbound' | 'inbound';
      source: TapEndpoint;
      destination: TapEndpoint;
      record: import('../telemetry/tap.ts').TapRecord;
    };
