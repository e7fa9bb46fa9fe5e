// The kernel's BPF features the datapath needs, probed once at agent start and shown by
// `mesh-agent status`. The addon reports raw probe results; which ones are required, and what
// to tell the operator when one is missing, is decided here.
import * as fs from 'node:fs';
import { loadAddon, type RawFeatureProbe } from './addon.ts';
import { parseCgroup2Mount } from './cgroup2.ts';

export type FeatureStatus = 'ok' | 'missing' | 'unknown';

export interface Feature {
  kind: 'program' | 'attach' | 'map' | 'helper' | 'btf' | 'fs';
  name: string;
  required: boolean;
  status: FeatureStatus;
  /** What it is for, or, when unknown, why it could not be probed. */
  note: string;
  /** When missing or unknown: what to do. */
  fix?: string;
}

interface Need {
  /** 'kernel-splice': required only when the agent runs with --kernel-splice, which loads it. */
  required: boolean | 'kernel-splice';
  /** First Linux release with it, where that is one well-known release. */
  since?: string;
  for: string;
}

/** Everything native/bpf/mesh.bpf.c uses; the kernel-splice entries only with --kernel-splice. */
export const NEEDS: Record<string, Need> = {
  'program:cgroup_sock_addr': { required: true, since: '4.17', for: 'the connect and getpeername hooks' },
  'program:sock_ops': { required: true, since: '4.13', for: 'recording the proxy-side tuple when a redirected connection is established' },
  'attach:connect4': { required: true, since: '4.17', for: 'redirecting IPv4 connect()' },
  'attach:connect6': { required: true, since: '4.17', for: 'redirecting IPv4-mapped connect() on dual-stack sockets' },
  'attach:getpeername4': { required: true, since: '5.8', for: 'giving the app its original peer back' },
  'attach:getpeername6': { required: true, since: '5.8', for: 'the same for dual-stack sockets' },
  'attach:sock_release': { required: false, for: 'deleting the record of a redirected connect() that failed before its SYN (without it, left to the LRU)' },
  'map:hash': { required: true, for: 'pods and skip-inbound ports' },
  'map:array': { required: true, for: 'the global config' },
  'map:lru_hash': { required: true, since: '4.10', for: 'original destinations (LRU: a backstop when a close is missed)' },
  'map:percpu_array': { required: true, since: '4.6', for: 'datapath counters' },
  'program:sk_skb': { required: 'kernel-splice', since: '4.14', for: '--kernel-splice: the stream verdict that moves spliced sockets\' bytes in the kernel' },
  'map:sockhash': { required: 'kernel-splice', since: '4.18', for: '--kernel-splice: the spliced proxy sockets, keyed by cookie' },
  'helper:sk_redirect_hash': { required: 'kernel-splice', since: '4.18', for: '--kernel-splice: redirecting a segment to its peer socket' },
  'helper:get_current_ancestor_cgroup_id': { required: true, since: '5.7', for: 'finding the pod of a socket under any kubelet cgroup layout' },
  'helper:get_socket_cookie': { required: true, for: 'keying the original destination by socket' },
  'helper:sock_ops_cb_flags_set': { required: true, for: 'deleting records when a connection closes' },
};

const KERNEL_FIX = 'run a kernel of Linux 5.8 or newer built with CONFIG_BPF_SYSCALL and CONFIG_CGROUP_BPF';
const ERRNO_NAMES: Record<number, string> = { 1: 'EPERM', 13: 'EACCES', 22: 'EINVAL', 38: 'ENOSYS', 95: 'EOPNOTSUPP' };

export interface ProbeEnv {
  /** os.release() */
  kernel: string;
  /** /sys/kernel/btf/vmlinux exists */
  btf: boolean;
  /** the cgroup2 mount, if any */
  cgroup2: string | null;
}

/** What the agent was started with that changes what it needs. */
export interface FeatureOptions {
  kernelSplice?: boolean;
}

function isRequired(need: Need, opts: FeatureOptions): boolean {
  return need.required === 'kernel-splice' ? Boolean(opts.kernelSplice) : need.required;
}

function fixForMissing(need: Need, required: boolean): string {
  if (need.required !== 'kernel-splice') return required ? KERNEL_FIX : 'none needed';
  return required
    ? `run without --kernel-splice (the proxy then copies the bytes), or a kernel of Linux ${need.since ?? '4.18'} or newer built with CONFIG_BPF_STREAM_PARSER`
    : 'none needed without --kernel-splice';
}

/** Raw probe results plus the host facts, as the operator reads them. Pure. */
export function assessFeatures(raw: RawFeatureProbe[], env: ProbeEnv, opts: FeatureOptions = {}): Feature[] {
  const out: Feature[] = [];
  for (const r of raw) {
    const need = NEEDS[`${r.kind}:${r.name}`] ?? { required: false, for: '' };
    const required = isRequired(need, opts);
    const f: Feature = { kind: r.kind, name: r.name, required, status: r.result === 1 ? 'ok' : r.result === 0 ? 'missing' : 'unknown', note: need.for };
    if (f.status === 'missing') {
      f.note = `${need.for}; not in kernel ${env.kernel}${need.since ? ` (Linux ${need.since}+)` : ''}`;
      f.fix = fixForMissing(need, required);
    } else if (f.status === 'unknown') {
      const errno = ERRNO_NAMES[-r.result] ?? `errno ${-r.result}`;
      f.note = `could not probe: ${errno}`;
      f.fix = r.result === -1 || r.result === -13 ? 'run the agent as root or with CAP_BPF and CAP_NET_ADMIN' : KERNEL_FIX;
    }
    out.push(f);
  }
  for (const key of Object.keys(NEEDS)) {
    const [kind, name] = key.split(':') as [Feature['kind'], string];
    if (!raw.some((r) => r.kind === kind && r.name === name)) {
      out.push({ kind, name, required: isRequired(NEEDS[key]!, opts), status: 'unknown', note: 'not probed by this addon build', fix: 'rebuild the addon: ./dev setup' });
    }
  }
  out.push(env.btf
    ? { kind: 'btf', name: 'vmlinux', required: false, status: 'ok', note: 'kernel type information (bpftool; not needed by the datapath, which uses no CO-RE)' }
    : { kind: 'btf', name: 'vmlinux', required: false, status: 'missing', note: 'no /sys/kernel/btf/vmlinux; the datapath does not need it', fix: 'none needed; CONFIG_DEBUG_INFO_BTF=y gives bpftool kernel types' });
  out.push(env.cgroup2
    ? { kind: 'fs', name: 'cgroup2', required: true, status: 'ok', note: `mounted at ${env.cgroup2}` }
    : { kind: 'fs', name: 'cgroup2', required: true, status: 'missing', note: 'no cgroup2 mount: the programs attach to a cgroup v2 directory', fix: 'boot with systemd.unified_cgroup_hierarchy=1, or mount -t cgroup2 none /sys/fs/cgroup/unified' });
  return out;
}

/** One line per required feature that is missing, for errors and health reasons. */
export function missingRequired(features: Feature[]): string[] {
  return features.filter((f) => f.required && f.status === 'missing').map((f) => `${f.kind} ${f.name} (${f.note}): ${f.fix}`);
}

/** Probes this host. Needs the privileges the agent runs with; without them features are 'unknown'. */
export function probeFeatures(kernel: string, opts: FeatureOptions = {}): Feature[] {
  let cgroup2: string | null = null;
  try {
    cgroup2 = parseCgroup2Mount(fs.readFileSync('/proc/self/mountinfo', 'utf8')) ?? null;
  } catch {
    // no /proc: reported as a missing cgroup2 mount
  }
  // An addon built before probeFeatures existed still runs the datapath: its features read as unknown, "rebuild the addon".
  const addon: { probeFeatures?: () => RawFeatureProbe[] } = loadAddon();
  const raw = typeof addon.probeFeatures === 'function' ? addon.probeFeatures() : [];
  return assessFeatures(raw, { kernel, btf: fs.existsSync('/sys/kernel/btf/vmlinux'), cgroup2 }, opts);
}
