// `mesh-agent identity` (docs/identity.md): the certificate authority of the mesh, as
// linkerd-identity. It holds the issuer (a CA under the trust anchor) and signs the CSRs agents
// send for the workloads of their node, after checking the agent's token with a TokenReview and
// that each identity has a pod on that node (authorize.ts). It serves TLS 1.3 with a certificate
// of its own identity, issued from the same issuer, so agents verify it against the anchor
// before they send their token. A token that is no JWT is refused without asking the API server,
// and the API calls of one request (the review, the node's pods) run within the review gate's
// bounds (review-gate.ts), so whoever reaches the port cannot make the API server do unbounded work.
// An issuer near its end is said in status (issuerWarning) and in the log: certificates are cut
// to its end, so it must be rotated before (agents keep their renewals a minute apart meanwhile).
import * as https from 'node:https';
import type * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { X509Certificate } from 'node:crypto';
import { CERTIFY_PATH, DEFAULT_AUDIENCE, DEFAULT_CERT_LIFETIME_MS, MAX_REQUEST_BYTES, parseCertifyRequest, type CertifyResponse } from './api.ts';
import { authenticateAgent, authorizeForNode, bearerToken, junkTokenRefusal, type NodePod, type ReviewStatus } from './authorize.ts';
import { ReviewBusyError, ReviewGate } from './review-gate.ts';
import { LogLimit, suppressedField } from '../util/log-limit.ts';
import type { LoopbackAccess } from '../util/loopback-access.ts';
import { spiffeId, type WorkloadId } from './spiffe.ts';
import { createCsr, CsrError, signWorkloadCsr, type Issuer } from './x509.ts';
import { MAX_TIMER_MS } from '../util/timer-bound.ts';

/** What the service asks the API server. */
export interface IdentityKube {
  reviewToken(token: string, audiences: string[]): Promise<ReviewStatus>;
  podsOnNode(node: string): Promise<NodePod[]>;
}

/** Certificates start this long before they are issued: clocks of nodes differ (Linkerd's allowance). */
export const CLOCK_SKEW_MS = 30_000;

export interface IdentityServiceOptions {
  issuer: Issuer;
  trustDomain: string;
  kube: IdentityKube;
  /** The agents' ServiceAccount: only its tokens may ask. */
  agent: { namespace: string; name: string };
  /** The audience agents' projected tokens carry. */
  audience?: string;
  /** The service's own identity (its serving certificate). */
  self: WorkloadId;
  /** Workload certificates' lifetime (default 24 h); the service's own certificate lives as long. */
  lifetimeMs?: number;
  log: (level: 'info' | 'warn', msg: string, fields?: object) => void;
  now?: () => number;
  /** Bounds the API calls in flight (default: review-gate.ts's bounds). */
  gate?: ReviewGate;
  /** --status-access loopback: /v1/status only for loopback peers (port-forward); absent: for anyone. */
  statusAccess?: LoopbackAccess;
}

/** The issuer's end is named in status this long before it (as the trust anchors' in the agent's). */
export const ISSUER_WARN_DAYS = 30;
/** The log line that the issuer ends is repeated at most this often while certificates are cut to it. */
export const ISSUER_WARN_LOG_INTERVAL_MS = 10 * 60_000;

function within(ms: number): string {
  if (ms >= 2 * 86_400_000) return `${Math.floor(ms / 86_400_000)} days`;
  if (ms >= 3_600_000) return `${Math.floor(ms / 3_600_000)} h ${Math.floor((ms % 3_600_000) / 60_000)} min`;
  return `${Math.max(0, Math.round(ms / 1000))} s`;
}

function hours(ms: number): string {
  return ms % 3_600_000 === 0 ? `${ms / 3_600_000} h` : `${Math.round(ms / 1000)} s`;
}

/**
 * What status says of the issuer's end, or null: expired (nothing can be issued); sooner than the
 * certificate lifetime (certificates are cut to it: Linkerd's `linkerd check` warns alike); within
 * 30 days.
 */
export function issuerWarning(notAfter: Date, lifetimeMs: number, now: number): string | null {
  const end = notAfter.toISOString();
  const left = notAfter.getTime() - now;
  if (left <= 0) return `the issuer certificate expired at ${end}: no certificate can be issued under it; issue a new one from a valid trust anchor and restart the identity service (docs/identity.md, rotating the issuer)`;
  if (left < lifetimeMs) return `the issuer certificate ends at ${end} (in ${within(left)}), sooner than the certificate lifetime (${hours(lifetimeMs)}): certificates are cut to its end and agents renew them more often (at most once a minute each); rotate the issuer now (docs/identity.md, rotating the issuer)`;
  if (left < ISSUER_WARN_DAYS * 86_400_000) return `the issuer certificate ends at ${end} (in ${within(left)}); rotate it before then (docs/identity.md, rotating the issuer)`;
  return null;
}

/** A refusal is logged once per peer address and cause in this long (stats count them all). */
export const REFUSAL_LOG_INTERVAL_MS = 60_000;

export interface IdentityServiceStats {
  issued: number;
  /** Refusals by cause: unauthenticated (401), forbidden (403), bad-request (400), unavailable (503), busy (503: the review gate's bound, the API server not asked). */
  refused: Record<string, number>;
  lastRefusal: { at: string; reason: string } | null;
  issuerNotAfter: string;
  listen: string;
}

class HttpError extends Error {
  readonly status: number;
  readonly retryAfterS: number | undefined;
  constructor(status: number, message: string, retryAfterS?: number) {
    super(message);
    this.status = status;
    this.retryAfterS = retryAfterS;
  }
}

const CAUSE: Record<number, string> = { 400: 'bad-request', 401: 'unauthenticated', 403: 'forbidden', 503: 'unavailable' };

export class IdentityService {
  private readonly o: IdentityServiceOptions;
  private readonly now: () => number;
  private server: https.Server | null = null;
  private renewTimer: NodeJS.Timeout | null = null;
  private addr = '';
  private readonly gate: ReviewGate;
  private readonly logLimit: LogLimit;
  readonly stats: IdentityServiceStats;

  constructor(o: IdentityServiceOptions) {
    this.o = o;
    this.now = o.now ?? Date.now;
    this.gate = o.gate ?? new ReviewGate();
    this.logLimit = new LogLimit(this.now);
    this.stats = { issued: 0, refused: {}, lastRefusal: null, issuerNotAfter: o.issuer.notAfter.toISOString(), listen: '' };
  }

  get lifetimeMs(): number {
    return this.o.lifetimeMs ?? DEFAULT_CERT_LIFETIME_MS;
  }

  /** A certificate for the identity, valid from now minus the skew allowance for the lifetime, never past the issuer's own end. */
  async issue(id: WorkloadId, csrPem: string): Promise<CertifyResponse> {
    const now = this.now();
    const notBefore = new Date(now - CLOCK_SKEW_MS);
    const end = Math.min(now + this.lifetimeMs, this.o.issuer.notAfter.getTime());
    // Past the issuer's end a certificate would end before it starts (and not verify anyway):
    // the agent would take it and ask again at once, forever.
    if (end <= now) throw new HttpError(503, `the issuer certificate (or the trust anchor above it) expired at ${this.o.issuer.notAfter.toISOString()}: no certificate can be issued under it; issue a new one from a valid trust anchor and restart the identity service (docs/identity.md, rotating the issuer)`);
    if (end < now + this.lifetimeMs) this.warnIssuerEnd();
    const pem = await signWorkloadCsr(this.o.issuer, csrPem, { id, notBefore, notAfter: new Date(end) });
    const c = new X509Certificate(pem);
    return { certificate: pem, chain: [this.o.issuer.certPem], notBefore: notBefore.toISOString(), notAfter: new Date(end).toISOString(), serial: c.serialNumber, issuerNotAfter: this.o.issuer.notAfter.toISOString() };
  }

  /** The issuer's warning in the log, at most every 10 minutes (the cut certificates call it each time). */
  private warnIssuerEnd(): void {
    const w = issuerWarning(this.o.issuer.notAfter, this.lifetimeMs, this.now());
    if (w === null || this.logLimit.hit('issuer-end', ISSUER_WARN_LOG_INTERVAL_MS) === null) return;
    this.o.log('warn', w, { issuerNotAfter: this.o.issuer.notAfter.toISOString() });
  }

  async listen(host: string, port: number): Promise<{ host: string; port: number }> {
    const creds = await this.selfCredentials();
    const server = https.createServer({ ...creds, minVersion: 'TLSv1.3' }, (req, res) => void this.handle(req, res));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.removeListener('error', reject);
        resolve();
      });
    });
    const a = server.address() as AddressInfo;
    this.addr = `${a.address}:${a.port}`;
    this.stats.listen = this.addr;
    this.scheduleSelfRenewal();
    // Within 30 days (a cut own certificate has said it already, within the interval).
    this.warnIssuerEnd();
    return { host: a.address, port: a.port };
  }

  /** Its own key never leaves the process: a CSR signed here, as any workload's. */
  private async selfCredentials(): Promise<{ key: string; cert: string }> {
    const { keyPem, csrPem } = await createCsr(this.o.self);
    const r = await this.issue(this.o.self, csrPem);
    return { key: keyPem, cert: r.certificate + r.chain.join('') };
  }

  private scheduleSelfRenewal(): void {
    // Node fires a delay past 2^31-1 ms (a lifetime over 49.7 days) after 1 ms: renewing then is early, not a loop.
    this.renewTimer = setTimeout(() => {
      this.selfCredentials().then(
        (c) => this.server?.setSecureContext({ ...c, minVersion: 'TLSv1.3' }),
        (e) => this.o.log('warn', `renewing the identity service's own certificate failed: ${(e as Error).message}`),
      ).finally(() => this.scheduleSelfRenewal());
    }, Math.min(MAX_TIMER_MS, Math.max(1000, this.lifetimeMs / 2)));
    this.renewTimer.unref();
  }

  async close(): Promise<void> {
    if (this.renewTimer) clearTimeout(this.renewTimer);
    const s = this.server;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }

  /** The stats with the review gate's and the status' own gate's (what /v1/status answers). */
  state() {
    return { ...this.stats, issuerWarning: issuerWarning(this.o.issuer.notAfter, this.lifetimeMs, this.now()), reviewGate: this.gate.state(), statusAccess: this.o.statusAccess?.state() ?? { mode: 'any' } };
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const send = (status: number, body: object, headers: http.OutgoingHttpHeaders = {}) => {
      res.writeHead(status, { 'content-type': 'application/json', ...headers });
      res.end(JSON.stringify(body));
    };
    const url = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && (url === '/ready' || url === '/live')) return send(200, { ok: true });
    if (req.method === 'GET' && url === '/v1/status') {
      // The status names peers and token subjects; the probes above and certify stay open.
      const refusal = this.o.statusAccess?.refusal(req.socket.remoteAddress, `GET ${url}`);
      return refusal ? send(403, { error: refusal }) : send(200, this.state());
    }
    if (req.method !== 'POST' || url !== CERTIFY_PATH) return send(404, { error: `not found: ${req.method} ${url}; the identity service answers POST ${CERTIFY_PATH}` });
    try {
      const r = await this.certify(req);
      this.stats.issued++;
      send(200, r);
    } catch (e) {
      const status = e instanceof HttpError ? e.status : e instanceof CsrError ? 400 : 503;
      const reason = e instanceof HttpError || e instanceof CsrError ? e.message : `the identity service could not complete the request: ${(e as Error).message}`;
      const retryAfterS = e instanceof HttpError ? e.retryAfterS : undefined;
      const cause = retryAfterS !== undefined ? 'busy' : CAUSE[status] ?? 'unavailable';
      this.stats.refused[cause] = (this.stats.refused[cause] ?? 0) + 1;
      this.stats.lastRefusal = { at: new Date(this.now()).toISOString(), reason };
      const from = req.socket.remoteAddress ?? 'unknown';
      const held = this.logLimit.hit(`${from}\n${cause}`, REFUSAL_LOG_INTERVAL_MS);
      if (held !== null) this.o.log('warn', 'certificate request refused (logged once a minute per peer address and cause, suppressed: how many since the last line; /v1/status counts them all)', { status, reason, from, ...suppressedField(held) });
      send(status, { error: reason }, retryAfterS !== undefined ? { 'retry-after': String(retryAfterS) } : {});
    }
  }

  private async certify(req: http.IncomingMessage): Promise<CertifyResponse> {
    const token = bearerToken(req.headers.authorization);
    if (!token) throw new HttpError(401, 'no bearer token: send the agent\'s ServiceAccount token in the Authorization header');
    const junk = junkTokenRefusal(token);
    if (junk !== null) throw new HttpError(401, `${junk}: send the agent's projected ServiceAccount token (audience ${this.o.audience ?? DEFAULT_AUDIENCE}) in the Authorization header`);
    let body: unknown;
    try {
      body = JSON.parse(await readBody(req));
    } catch (e) {
      throw new HttpError(400, `the body is not JSON: ${(e as Error).message}`);
    }
    let request;
    try {
      request = parseCertifyRequest(body);
    } catch (e) {
      throw new HttpError(400, (e as Error).message);
    }
    const { identity } = request;
    if (identity.trustDomain !== this.o.trustDomain) throw new HttpError(403, `identity ${request.uri} is not in this mesh's trust domain (${this.o.trustDomain})`);
    const audience = this.o.audience ?? DEFAULT_AUDIENCE;
    const peer = req.socket.remoteAddress;
    let who: ReturnType<typeof authenticateAgent>;
    let pods: NodePod[] = [];
    try {
      // Both API calls within one slot: the pod list is the dearer of the two.
      who = await this.gate.run(peer, async () => {
        const w = authenticateAgent(await this.o.kube.reviewToken(token, [audience]), this.o.agent, audience);
        if (w.ok) pods = await this.o.kube.podsOnNode(w.node);
        return w;
      });
    } catch (e) {
      if (e instanceof ReviewBusyError) throw new HttpError(503, e.answer('the identity service'), e.retryAfterS);
      throw e;
    }
    if (!who.ok) throw new HttpError(who.status, who.reason);
    // A valid agent token from this address: a flood from others cannot hold its requests back.
    this.gate.trust(peer);
    const allowed = authorizeForNode(who.node, pods, identity.namespace, identity.serviceAccount);
    if (!allowed.ok) throw new HttpError(allowed.status, allowed.reason);
    const r = await this.issue(identity, request.csr);
    this.o.log('info', 'certificate issued', { identity: spiffeId(identity), node: who.node, serial: r.serial, notAfter: r.notAfter });
    return r;
  }
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let size = 0;
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => {
      size += d.length;
      if (size > MAX_REQUEST_BYTES) {
        reject(new HttpError(400, `the request is larger than ${MAX_REQUEST_BYTES} bytes`));
        req.destroy();
        return;
      }
      parts.push(d);
    });
    req.on('end', () => resolve(Buffer.concat(parts).toString('utf8')));
    req.on('error', reject);
  });
}
