// Where cgroup v2 lives on this host, and cgroup ids. Hybrid hosts mount it at
// /sys/fs/cgroup/unified, pure v2 hosts at /sys/fs/cgroup: never assume, read mountinfo.
import * as fs from 'node:fs';
import * as path from 'node:path';

/** mountinfo escapes space, tab, newline and backslash as \ooo. */
function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** The first cgroup2 mount whose root is the hierarchy root, from /proc/self/mountinfo text. */
export function parseCgroup2Mount(mountinfo: string): string | undefined {
  for (const line of mountinfo.split('\n')) {
    // "id parent maj:min root mountpoint opts [optional...] - fstype source superopts"
    const f = line.split(' ');
    const sep = f.indexOf('-', 6);
    if (sep < 0 || f[sep + 1] !== 'cgroup2') continue;
    // A mount of a sub-tree (root != '/') would shift every path in /proc/<pid>/cgroup.
    if (f[3] !== '/') continue;
    return unescapeMountField(f[4]!);
  }
  return undefined;
}

export function findCgroup2Mount(): string {
  const mount = parseCgroup2Mount(fs.readFileSync('/proc/self/mountinfo', 'utf8'));
  if (!mount) {
    throw new Error('no cgroup2 mount found; mount one with: mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 none /sys/fs/cgroup/unified');
  }
  return mount;
}

/** The kernel's cgroup id (what bpf_get_current_ancestor_cgroup_id returns) is the directory's inode on cgroup2. */
export function cgroupId(dir: string): bigint {
  try {
    return fs.statSync(dir, { bigint: true }).ino;
  } catch (e) {
    throw new Error(`reading the cgroup id of ${dir} failed: ${(e as Error).message}; is the pod's cgroup gone?`);
  }
}

/**
 * Guards the host: attaching to the cgroup2 mount's root would redirect every process on
 * the machine. Throws unless explicitly allowed.
 */
export function checkAttachTarget(cgroupRoot: string, opts: { allowRootCgroup?: boolean; mount?: string } = {}): string {
  const mount = opts.mount ?? findCgroup2Mount();
  const resolved = path.resolve(cgroupRoot);
  const rel = path.relative(mount, resolved);
  if (rel.startsWith('..') || path.isAbsolute(rel)) {
    throw new Error(`cgroup root ${resolved} is not inside the cgroup2 mount ${mount}; pass --cgroup-root with a directory under ${mount}`);
  }
  if (rel === '' && !opts.allowRootCgroup) {
    throw new Error(`refusing to attach to the machine's root cgroup ${mount}: every process on the host would be redirected; pass the pods' cgroup (e.g. ${mount}/kubepods.slice) or --allow-root-cgroup`);
  }
  if (!fs.existsSync(resolved)) {
    throw new Error(`cgroup root ${resolved} does not exist; pass --cgroup-root with the pods' cgroup directory`);
  }
  return resolved;
}
