// The agent's certificates (docs/identity.md): for every ServiceAccount of this node's meshed
// pods, a key made here (it never leaves the node) and a certificate from the identity service,
// fetched as soon as a pod of it appears so a first connection does not wait, renewed at half
// its life; a failed fetch is retried with backoff (at most 150 s apart, ztunnel's cap), and the
// certificate in hand serves until it expires. Near the issuer's end, where the service cuts
// certificates to that end, renewals stay at least a minute apart and the agent says to rotate
// the issuer (renewalAt). Everything it learns goes out as
// CredentialUpdates (credentials.ts): to the main thread's store and to the proxy workers'.
import { X509Certificate } from 'node:crypto';
import type { CertifyClient } from './client.ts';
import { createCsr } from './csr.ts';
import type { CredentialMaterial, CredentialUpdate } from './credentials.ts';
import { parseSpiffeId, spiffeId, type WorkloadId } from './spiffe.ts';
import type { Clock } from '../util/clock.ts';
import { LogLimit } from '../util/log-limit.ts';
import { MAX_TIMER_MS } from '../util/timer-bound.ts';

export const MAX_BACKOFF_MS = 150_000;
export const FIRST_BACKOFF_MS = 1_000;

/** When to renew: half way through the certificate's life. */
export function refreshAt(notBefore: number, notAfter: number): number {
  return notBefore + (notAfter - notBefore) / 2;
}

/** A renewal is never due sooner than this after a certificate came: half the shortest lifetime the service allows (10 s). */
export const MIN_RENEWAL_MS = 5_000;
/** Nor, for a certificate cut to its issuer's end, sooner than this (a renewal gets no later end until the issuer is rotated). */
export const ISSUER_END_RENEWAL_MS = 60_000;
/** The agent's warning that the issuer ends is logged at most this often. */
export const ISSUER_END_LOG_INTERVAL_MS = 10 * 60_000;

/** Whether a certificate ends with its issuer (X.509 times have whole seconds): the service cut its life to the issuer's end. */
export function cutByIssuer(notAfter: number, issuerNotAfter: number): boolean {
  return notAfter >= issuerNotAfter - 1000;
}

/**
 * When to renew a certificate that came `now`: half way through its life. Two floors, so
 * renewals cannot come back to back. Backdated 30 s, a certificate of a lifetime under 30 s is
 * past half at once: not sooner than MIN_RENEWAL_MS. Near the issuer's end the service cuts each
 * certificate to that end, so each half life is shorter, down to nothing: a storm of requests,
 * each for the same end. Such a certificate is renewed not sooner than a minute after it came, and
 * at its end at the latest, when a rotated issuer gives a full one (an expired one, a 503).
 */
export function renewalAt(c: { notBefore: number; notAfter: number; issuerNotAfter: number }, now: number): number {
  const half = refreshAt(c.notBefore, c.notAfter);
  const floor = cutByIssuer(c.notAfter, c.issuerNotAfter) ? Math.min(now + ISSUER_END_RENEWAL_MS, c.notAfter) : now + MIN_RENEWAL_MS;
  return Math.max(half, floor);
}

/** The wait before retry n (1-based): doubling from 1 s, at most 150 s, with +-20% jitter so a node's agents do not ask in step. */
export function backoffMs(failures: number, rand: () => number = Math.random): number {
  const base = Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** Math.max(0, failures - 1));
  return Math.min(MAX_BACKOFF_MS, Math.round(base * (0.8 + 0.4 * rand())));
}

// Wall-clock time: certificates' notBefore and notAfter are wall-clock dates.
const realClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, Math.min(ms, MAX_TIMER_MS));
    t.unref();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface IdentityManagerOptions {
  client: CertifyClient;
  /** Gets every update, in order. */
  publish: (u: CredentialUpdate) => void;
  log: (level: 'info' | 'warn', msg: string, fields?: object) => void;
  clock?: Clock;
  /** Key and CSR for an identity (default: csr.ts). */
  makeCsr?: (id: WorkloadId) => Promise<{ keyPem: string; csrPem: string }> | { keyPem: string; csrPem: string };
}

/** One identity's certificate as `status` shows it. */
export interface IdentityState {
  identity: string;
  /** ready: a valid certificate; pending: the first one is on its way; failing: none, and the last fetch failed. */
  state: 'ready' | 'pending' | 'failing';
  serial: string | null;
  notBefore: string | null;
  notAfter: string | null;
  /** When it is renewed next (or retried, after a failure). */
  nextRenewal: string | null;
  /** Fetches failed in a row (0 after a success). */
  failures: number;
  lastError: string | null;
  /** The current certificate's remaining life, s (null: none). */
  remainingSeconds: number | null;
  /** The end of its issuer, or of its trust anchor when sooner (what the service cuts certificates to; null: none). */
  issuerNotAfter: string | null;
  /** Its life was cut to the issuer's end: the issuer must be rotated (docs/identity.md). */
  cutByIssuer: boolean;
}

interface Slot {
  id: WorkloadId;
  uri: string;
  material: CredentialMaterial | null;
  issuerNotAfter: number | null;
  fetching: boolean;
  failures: number;
  lastError: string | null;
  nextAt: number | null;
  timer: unknown;
  expiryTimer: unknown;
  wanted: boolean;
}

export class IdentityManager {
  private readonly o: IdentityManagerOptions;
  private readonly clock: Clock;
  private readonly slots = new Map<string, Slot>();
  private readonly makeCsr: (id: WorkloadId) => Promise<{ keyPem: string; csrPem: string }> | { keyPem: string; csrPem: string };
  private stopped = false;
  private readonly logLimit: LogLimit;
  issued = 0;
  failed = 0;

  constructor(o: IdentityManagerOptions) {
    this.o = o;
    this.clock = o.clock ?? realClock;
    this.makeCsr = o.makeCsr ?? createCsr;
    this.logLimit = new LogLimit(() => this.clock.now());
  }

  /** The identities this node's meshed pods have now (SPIFFE IDs): new ones are fetched at once, gone ones dropped. */
  want(uris: Iterable<string>): void {
    if (this.stopped) return;
    const next = new Set(uris);
    for (const [uri, s] of this.slots) {
      if (next.has(uri)) continue;
      s.wanted = false;
      this.clock.clearTimeout(s.timer);
      this.clock.clearTimeout(s.expiryTimer);
      this.slots.delete(uri);
      this.o.publish({ uri, state: 'gone' });
    }
    for (const uri of next) {
      if (this.slots.has(uri)) continue;
      const id = parseSpiffeId(uri);
      if (id === null) {
        this.o.log('warn', `not a workload identity: ${uri}; skipped`);
        continue;
      }
      const s: Slot = { id, uri, material: null, issuerNotAfter: null, fetching: false, failures: 0, lastError: null, nextAt: null, timer: null, expiryTimer: null, wanted: true };
      this.slots.set(uri, s);
      this.o.publish({ uri, state: 'pending' });
      this.fetch(s);
    }
  }

  private schedule(s: Slot, at: number): void {
    this.clock.clearTimeout(s.timer);
    s.nextAt = at;
    s.timer = this.clock.setTimeout(() => this.fetch(s), Math.max(0, at - this.clock.now()));
  }

  private fetch(s: Slot): void {
    if (s.fetching || !s.wanted || this.stopped) return;
    s.fetching = true;
    s.nextAt = null;
    void this.certify(s).then(
      ({ m, issuerNotAfter }) => {
        s.fetching = false;
        if (!s.wanted) return;
        s.material = m;
        s.issuerNotAfter = issuerNotAfter;
        s.failures = 0;
        s.lastError = null;
        this.issued++;
        this.o.publish({ uri: s.uri, state: 'ready', material: m });
        this.o.log('info', 'certificate issued', { identity: s.uri, serial: m.serial, notAfter: new Date(m.notAfter).toISOString() });
        this.schedule(s, renewalAt({ notBefore: m.notBefore, notAfter: m.notAfter, issuerNotAfter }, this.clock.now()));
        if (cutByIssuer(m.notAfter, issuerNotAfter)) this.warnIssuerEnd(s.uri, issuerNotAfter);
        this.clock.clearTimeout(s.expiryTimer);
        s.expiryTimer = this.clock.setTimeout(() => this.expire(s, m), Math.max(0, m.notAfter - this.clock.now()));
      },
      (e: Error) => {
        s.fetching = false;
        if (!s.wanted) return;
        s.failures++;
        this.failed++;
        s.lastError = e.message;
        const wait = backoffMs(s.failures);
        const left = s.material ? `; the current certificate serves until ${new Date(s.material.notAfter).toISOString()}` : '; connections that need it are refused until one comes';
        this.o.log('warn', `certificate for ${s.uri}: ${e.message}; retrying in ${Math.round(wait / 1000)} s${left}`, { identity: s.uri, failures: s.failures });
        if (!s.material) this.o.publish({ uri: s.uri, state: 'unavailable', reason: e.message });
        this.schedule(s, this.clock.now() + wait);
      },
    );
  }

  /** Logged at most every 10 minutes for all identities: every certificate of the node is cut alike. */
  private warnIssuerEnd(uri: string, issuerNotAfter: number): void {
    if (this.logLimit.hit('issuer-end', ISSUER_END_LOG_INTERVAL_MS) === null) return;
    const left = Math.max(0, Math.round((issuerNotAfter - this.clock.now()) / 1000));
    this.o.log('warn', `the identity service's issuer ends at ${new Date(issuerNotAfter).toISOString()} (in ${left} s): certificates are cut to its end, renewed at most once a minute each, and none can be issued after it; rotate the issuer now (docs/identity.md, rotating the issuer)`, { identity: uri });
  }

  /** The certificate ran out before a new one came: it is withdrawn (no expired certificate is ever presented). */
  private expire(s: Slot, m: CredentialMaterial): void {
    if (s.material !== m || !s.wanted) return;
    // A timer fires at most 2^31-1 ms (24.8 days) ahead (realClock): a longer-lived certificate is not over yet.
    const left = m.notAfter - this.clock.now();
    if (left > 0) {
      s.expiryTimer = this.clock.setTimeout(() => this.expire(s, m), left);
      return;
    }
    s.material = null;
    const reason = `its certificate expired at ${new Date(m.notAfter).toISOString()} and the identity service has not given a new one (${s.lastError ?? 'no answer yet'})`;
    this.o.publish({ uri: s.uri, state: 'unavailable', reason });
    this.o.log('warn', `certificate for ${s.uri} expired; ${reason}`, { identity: s.uri });
  }

  private async certify(s: Slot): Promise<{ m: CredentialMaterial; issuerNotAfter: number }> {
    const { keyPem, csrPem } = await this.makeCsr(s.id);
    const r = await this.o.client.certify(s.id, csrPem);
    const leaf = new X509Certificate(r.certificate);
    const p = leaf.subjectAltName;
    if (p !== `URI:${spiffeId(s.id)}`) throw new Error(`the identity service issued a certificate for ${p ?? 'nothing'}, not ${s.uri}`);
    if (!leaf.checkPrivateKey((await import('node:crypto')).createPrivateKey(keyPem))) throw new Error('the certificate issued is not for the key sent');
    const notBefore = Date.parse(leaf.validFrom);
    const notAfter = Date.parse(leaf.validTo);
    // An expired one (a service whose clock or issuer is off) would be presented and refused by
    // every peer, and its renewal, due half way through a life already over, asked at once, forever.
    const now = this.clock.now();
    if (!(notAfter > now && notBefore < notAfter)) throw new Error(`the identity service issued a certificate that is not valid now (${leaf.validFrom} to ${leaf.validTo}); check its issuer's end and the clocks of its node and this one`);
    // The end the service cuts to, as it says: the issuer's or, when sooner, its trust anchor's,
    // which the chain does not hold. From an older service, the chain's earliest end (Infinity: none).
    const issuerNotAfter = r.issuerNotAfter !== undefined ? Date.parse(r.issuerNotAfter) : Math.min(...r.chain.map((p) => Date.parse(new X509Certificate(p).validTo)));
    return { m: { uri: s.uri, keyPem, certChainPem: r.certificate + r.chain.join(''), serial: leaf.serialNumber, notBefore, notAfter }, issuerNotAfter };
  }

  states(): IdentityState[] {
    const now = this.clock.now();
    return [...this.slots.values()].map((s) => {
      const m = s.material;
      return {
        identity: s.uri,
        state: m ? 'ready' : s.failures > 0 ? 'failing' : 'pending',
        serial: m?.serial ?? null,
        notBefore: m ? new Date(m.notBefore).toISOString() : null,
        notAfter: m ? new Date(m.notAfter).toISOString() : null,
        nextRenewal: s.nextAt === null ? null : new Date(s.nextAt).toISOString(),
        failures: s.failures,
        lastError: s.lastError,
        remainingSeconds: m ? Math.max(0, Math.round((m.notAfter - now) / 1000)) : null,
        issuerNotAfter: m && s.issuerNotAfter !== null && Number.isFinite(s.issuerNotAfter) ? new Date(s.issuerNotAfter).toISOString() : null,
        cutByIssuer: m !== null && s.issuerNotAfter !== null && cutByIssuer(m.notAfter, s.issuerNotAfter),
      };
    });
  }

  /** Every credential ready now, for a proxy worker that starts (or restarts). */
  snapshot(): CredentialUpdate[] {
    const out: CredentialUpdate[] = [];
    for (const s of this.slots.values()) {
      if (s.material) out.push({ uri: s.uri, state: 'ready', material: s.material });
      else if (s.failures > 0) out.push({ uri: s.uri, state: 'unavailable', reason: s.lastError ?? 'unknown' });
      else out.push({ uri: s.uri, state: 'pending' });
    }
    return out;
  }

  stop(): void {
    this.stopped = true;
    for (const s of this.slots.values()) {
      this.clock.clearTimeout(s.timer);
      this.clock.clearTimeout(s.expiryTimer);
    }
  }
}
