// ServiceAccount tokens of the stand-in API server and its TokenReview (authentication.k8s.io/v1),
// as a real API server issues and reviews bound tokens: a JWT with the ServiceAccount as subject,
// the audiences asked for, an expiry, and the node (and pod) it is bound to, which a review
// reports under user.extra (authentication.kubernetes.io/node-name, Kubernetes 1.30+). What
// kubelet's projected token volume would give the agent, the simulated cluster writes to a file.
import { createHmac, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { KubeObject } from './api-resources.ts';

/** The API server's own audience: a token with no audiences asked for gets this one. */
export const API_AUDIENCE = 'https://kubernetes.default.svc.cluster.local';

export interface MintOptions {
  namespace: string;
  serviceAccount: string;
  /** The node the token is bound to (kubelet binds projected tokens to the pod, and so its node). */
  node?: string;
  pod?: string;
  audiences?: string[];
  /** Default 3600, as a projected token's default. */
  expirationSeconds?: number;
  now?: number;
}

const b64 = (b: Buffer | string): string => Buffer.from(b).toString('base64url');

export class SimTokens {
  readonly #key = randomBytes(32);
  /** ServiceAccount uids, stable per ServiceAccount for the server's life, as real objects' are. */
  readonly #uids = new Map<string, string>();
  /** Reviews answered, for tests: how often the identity service asked. */
  reviews = 0;
  /** Pods deleted ("namespace/name"): the tokens bound to them are refused, as a real API server refuses them. */
  readonly #deletedPods = new Set<string>();

  /** Refuses every token bound to this pod from now on (the pod deleted: a rolling update). */
  revokePod(namespace: string, pod: string): void {
    this.#deletedPods.add(`${namespace}/${pod}`);
  }

  #uid(key: string): string {
    let u = this.#uids.get(key);
    if (u === undefined) this.#uids.set(key, (u = randomUUID()));
    return u;
  }

  mint(o: MintOptions): string {
    const now = Math.floor((o.now ?? Date.now()) / 1000);
    const claims = {
      aud: o.audiences ?? [API_AUDIENCE],
      exp: now + (o.expirationSeconds ?? 3600),
      iat: now,
      nbf: now,
      iss: API_AUDIENCE,
      jti: randomUUID(),
      sub: `system:serviceaccount:${o.namespace}:${o.serviceAccount}`,
      'kubernetes.io': {
        namespace: o.namespace,
        serviceaccount: { name: o.serviceAccount, uid: this.#uid(`${o.namespace}/${o.serviceAccount}`) },
        ...(o.node ? { node: { name: o.node, uid: this.#uid(`node/${o.node}`) } } : {}),
        ...(o.pod ? { pod: { name: o.pod, uid: this.#uid(`pod/${o.namespace}/${o.pod}`) } } : {}),
      },
    };
    const head = `${b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${b64(JSON.stringify(claims))}`;
    return `${head}.${this.#sign(head)}`;
  }

  #sign(head: string): string {
    return createHmac('sha256', this.#key).update(head).digest('base64url');
  }

  /** The TokenReview answer: authenticated with the user and its extra, or not with the reason. */
  review(o: KubeObject, now = Date.now()): KubeObject {
    this.reviews++;
    const wanted: string[] = Array.isArray(o?.spec?.audiences) && o.spec.audiences.length > 0 ? o.spec.audiences : [API_AUDIENCE];
    const out = (status: object): KubeObject => ({ apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', metadata: { name: '' }, spec: { ...o?.spec }, status });
    return out(this.authenticate(o?.spec?.token, wanted, now));
  }

  /** Whether the token is one this server minted (a JWT), so a request with it is authorized as its ServiceAccount. */
  static isMinted(token: string): boolean {
    return token.split('.').length === 3;
  }

  /** A TokenReview's status for this token and audiences: the user, or why not. */
  authenticate(token: unknown, wanted: string[] = [API_AUDIENCE], now = Date.now()): { authenticated: true; user: { username: string; uid: string; groups: string[]; extra: Record<string, string[]> }; audiences: string[] } | { authenticated: false; error: string } {
    const refuse = (error: string) => ({ authenticated: false as const, error });
    if (typeof token !== 'string') return refuse('spec.token is empty');
    const parts = token.split('.');
    if (parts.length !== 3) return refuse('invalid bearer token');
    const sig = Buffer.from(parts[2]!);
    const good = Buffer.from(this.#sign(`${parts[0]}.${parts[1]}`));
    if (sig.length !== good.length || !timingSafeEqual(sig, good)) return refuse('invalid bearer token, token could not be validated');
    let c: any;
    try {
      c = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8'));
    } catch {
      return refuse('invalid bearer token');
    }
    if (typeof c.exp !== 'number' || c.exp * 1000 <= now) return refuse('invalid bearer token, service account token has expired');
    const audiences = (c.aud as string[]).filter((a) => wanted.includes(a));
    if (audiences.length === 0) return refuse('invalid bearer token, token audiences ["' + (c.aud as string[]).join('","') + '"] is invalid for the target audiences ["' + wanted.join('","') + '"]');
    const k = c['kubernetes.io'];
    if (k.pod && this.#deletedPods.has(`${k.namespace}/${k.pod.name}`)) return refuse(`invalid bearer token, pods "${k.pod.name}" not found`);
    const extra: Record<string, string[]> = { 'authentication.kubernetes.io/credential-id': [`JTI=${c.jti}`] };
    if (k.node) {
      extra['authentication.kubernetes.io/node-name'] = [k.node.name];
      extra['authentication.kubernetes.io/node-uid'] = [k.node.uid];
    }
    if (k.pod) {
      extra['authentication.kubernetes.io/pod-name'] = [k.pod.name];
      extra['authentication.kubernetes.io/pod-uid'] = [k.pod.uid];
    }
    return {
      authenticated: true,
      user: {
        username: c.sub,
        uid: k.serviceaccount.uid,
        groups: ['system:serviceaccounts', `system:serviceaccounts:${k.namespace}`, 'system:authenticated'],
        extra,
      },
      audiences,
    };
  }
}
