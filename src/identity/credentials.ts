// The agent's certificates as the proxies use them (docs/identity.md): per workload identity, a
// TLS SecureContext holding its key, certificate chain and the trust anchors, or the reason
// there is none yet. One writer (the identity manager on the main thread, or in a proxy worker
// the messages it sends); readers take a context per handshake and never see a half-made one
// (linkerd's meshtls: a store that publishes, a stack that only reads).
import type * as tls from 'node:tls';
import { nodeTls } from '../util/builtins.ts';
import { parseSpiffeId, serverNameOf } from './spiffe.ts';

/** What the manager publishes for one identity: PEMs (they cross to worker threads as strings). */
export interface CredentialMaterial {
  uri: string;
  keyPem: string;
  /** The leaf, then the issuer(s). */
  certChainPem: string;
  serial: string;
  notBefore: number;
  notAfter: number;
}

export type CredentialUpdate =
  | { uri: string; state: 'ready'; material: CredentialMaterial }
  /** Asked for, not there yet: a connection waits for it (the first certificate of a new pod). */
  | { uri: string; state: 'pending' }
  /** None, and the identity service did not give one: connections needing it are refused with the reason. */
  | { uri: string; state: 'unavailable'; reason: string }
  /** No pod of this node has it any more. */
  | { uri: string; state: 'gone' };

export interface Credential {
  uri: string;
  context: tls.SecureContext;
  serial: string;
  notAfter: number;
}

type Entry =
  | { state: 'ready'; cred: Credential }
  | { state: 'pending' }
  | { state: 'unavailable'; reason: string };

export class CredentialStore {
  readonly anchorsPem: string;
  private readonly entries = new Map<string, Entry>();
  /** server name (SNI) -> SPIFFE ID, for every identity held. */
  private readonly sni = new Map<string, string>();
  private readonly waiters = new Map<string, Set<(e: Entry | undefined) => void>>();
  /** Handshakes waiting for this store's first identity (an agent starting: docs/policy.md, fail-closed). */
  private readonly primeWaiters = new Set<() => void>();

  constructor(anchorsPem: string) {
    this.anchorsPem = anchorsPem;
  }

  apply(u: CredentialUpdate): void {
    let e: Entry | undefined;
    if (u.state === 'ready') {
      const m = u.material;
      // One context serves both ends: as client it presents the workload's certificate; as
      // server too; either way the peer is verified against the anchors (ca).
      const context = nodeTls().createSecureContext({ key: m.keyPem, cert: m.certChainPem, ca: this.anchorsPem, minVersion: 'TLSv1.3' });
      e = { state: 'ready', cred: { uri: m.uri, context, serial: m.serial, notAfter: m.notAfter } };
    } else if (u.state === 'pending') {
      e = { state: 'pending' };
    } else if (u.state === 'unavailable') {
      // Sent only when there is no valid certificate (never during a renewal that fails while the current one serves).
      e = { state: 'unavailable', reason: u.reason };
    }
    if (e === undefined) {
      this.entries.delete(u.uri);
      const id = parseSpiffeId(u.uri);
      if (id !== null) this.sni.delete(serverNameOf(id));
    } else {
      this.entries.set(u.uri, e);
      const id = parseSpiffeId(u.uri);
      if (id !== null) this.sni.set(serverNameOf(id), u.uri);
    }
    if (this.primeWaiters.size > 0 && this.entries.size > 0) {
      const ps = [...this.primeWaiters];
      this.primeWaiters.clear();
      for (const p of ps) p();
    }
    if (e?.state === 'pending') return;
    const ws = this.waiters.get(u.uri);
    if (ws === undefined) return;
    this.waiters.delete(u.uri);
    for (const w of ws) w(e);
  }

  /** The credential now, or null (absent, pending, or unavailable). */
  get(uri: string): Credential | null {
    const e = this.entries.get(uri);
    return e?.state === 'ready' ? e.cred : null;
  }

  /**
   * The credential, waiting up to timeoutMs while it is pending or unknown (a pod whose first
   * certificate is on its way); rejects at once when the identity service could not give one.
   */
  wait(uri: string, timeoutMs: number): Promise<Credential> {
    const e = this.entries.get(uri);
    if (e?.state === 'ready') return Promise.resolve(e.cred);
    if (e?.state === 'unavailable') return Promise.reject(new Error(`no certificate for ${uri}: ${e.reason}`));
    return new Promise((resolve, reject) => {
      let set = this.waiters.get(uri);
      if (set === undefined) this.waiters.set(uri, (set = new Set()));
      const done = (x: Entry | undefined): void => {
        clearTimeout(timer);
        if (x?.state === 'ready') resolve(x.cred);
        else reject(new Error(`no certificate for ${uri}: ${x?.state === 'unavailable' ? x.reason : 'its pods left this node'}`));
      };
      const timer = setTimeout(() => {
        set!.delete(done);
        reject(new Error(`no certificate for ${uri} within ${timeoutMs} ms (the identity service has not answered yet)`));
      }, timeoutMs);
      set.add(done);
    });
  }

  /** Why there is no credential for uri (for the error a refused connection carries). */
  reason(uri: string): string {
    const e = this.entries.get(uri);
    if (e === undefined) return 'it is not an identity of this node\'s meshed pods';
    if (e.state === 'unavailable') return e.reason;
    if (e.state === 'pending') return 'its first certificate is not here yet';
    return 'it has one';
  }

  /** The credential a TLS server presents for this SNI (one agent serves every identity of its node). */
  bySni(serverName: string): Credential | null {
    const uri = this.sni.get(serverName);
    return uri === undefined ? null : this.get(uri);
  }

  /**
   * The credential a TLS server presents for this SNI, waiting up to timeoutMs while it may still
   * come: its first certificate is on its way, or this store has heard of no identity yet (an
   * agent starting, before it knows its pods: a tunnelled client's handshake waits rather than
   * fails). Null at once for a name that is not one of this node's identities; rejects for one
   * whose certificate could not be had.
   */
  async waitSni(serverName: string, timeoutMs: number, maxWaiting = 1024): Promise<Credential | null> {
    const end = Date.now() + timeoutMs;
    if (this.entries.size === 0 && !this.sni.has(serverName)) {
      if (this.primeWaiters.size >= maxWaiting) return null;
      const primed = await new Promise<boolean>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          resolve(true);
        };
        const timer = setTimeout(() => {
          this.primeWaiters.delete(done);
          resolve(false);
        }, timeoutMs);
        this.primeWaiters.add(done);
      });
      if (!primed) return null;
    }
    const uri = this.sni.get(serverName);
    if (uri === undefined) return null;
    return this.wait(uri, Math.max(0, end - Date.now()));
  }

  /** The identity a server name stands for (null: none of this node's). */
  uriOfSni(serverName: string): string | null {
    return this.sni.get(serverName) ?? null;
  }

  /** The identities held and their state, for status. */
  states(): Array<{ uri: string; state: Entry['state'] }> {
    return [...this.entries].map(([uri, e]) => ({ uri, state: e.state }));
  }
}
