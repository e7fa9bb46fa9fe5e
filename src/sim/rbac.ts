// The stand-in API server's authorization, for requests with a ServiceAccount token it minted:
// RBAC as the install manifests grant it (Roles and ClusterRoles, bound to ServiceAccounts), so a
// test can show what a token may do and what it may not. Only what the manifests use: apiGroups,
// resources (with subresources, "*"), verbs, resourceNames; no aggregation, no groups as subjects.

export interface PolicyRule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
  resourceNames?: string[];
}

/** What a request asks to do, as the real authorizer sees it. */
export interface RequestAttributes {
  verb: string;
  group: string;
  /** The plural, with its subresource: "pods", "serviceaccounts/token". */
  resource: string;
  namespace?: string;
  name?: string;
}

interface Grant {
  user: string;
  /** A RoleBinding's namespace; none for a ClusterRoleBinding. */
  namespace?: string;
  rule: PolicyRule;
}

const has = (list: string[] | undefined, v: string) => list === undefined || list.includes('*') || list.includes(v);

export class SimRbac {
  readonly #grants: Grant[] = [];

  /** Each binding's ServiceAccount subjects get its role's rules; objects of other kinds are ignored. */
  apply(objects: readonly any[]): void {
    const role = (kind: string, name: string, ns?: string) => objects.find((o) => o?.kind === kind && o.metadata?.name === name && (kind === 'ClusterRole' || o.metadata?.namespace === ns));
    for (const b of objects) {
      if (b?.kind !== 'RoleBinding' && b?.kind !== 'ClusterRoleBinding') continue;
      const ns = b.kind === 'RoleBinding' ? b.metadata.namespace : undefined;
      const r = role(b.roleRef.kind, b.roleRef.name, ns);
      if (!r) throw new Error(`${b.kind} ${b.metadata.name}: no ${b.roleRef.kind} ${b.roleRef.name} among the objects given`);
      for (const s of b.subjects ?? []) {
        if (s.kind !== 'ServiceAccount') continue;
        for (const rule of r.rules ?? []) this.#grants.push({ user: `system:serviceaccount:${s.namespace}:${s.name}`, ...(ns ? { namespace: ns } : {}), rule });
      }
    }
  }

  /** Undefined when allowed; else the real API server's Forbidden message. */
  check(user: string, a: RequestAttributes): string | undefined {
    const ok = this.#grants.some((g) => g.user === user
      && (g.namespace === undefined || g.namespace === a.namespace)
      && g.rule.apiGroups.includes(a.group) && has(g.rule.resources, a.resource) && has(g.rule.verbs, a.verb)
      && (g.rule.resourceNames === undefined || (a.name !== undefined && g.rule.resourceNames.includes(a.name))));
    if (ok) return undefined;
    const what = a.name === undefined ? a.resource.split('/')[0] : `${a.resource.split('/')[0]} "${a.name}"`;
    return `${what} is forbidden: User "${user}" cannot ${a.verb} resource "${a.resource}" in API group "${a.group}" ${a.namespace ? `in the namespace "${a.namespace}"` : 'at the cluster scope'}`;
  }
}
