// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* mesh-agent datapath: redirect meshed pods' TCP connect() to the node proxy.
 * Attached to the pods' cgroup root, never the machine's root cgroup. */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/socket.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "mesh_shared.h"

#ifndef SOCK_STREAM
#define SOCK_STREAM 1
#endif
#define AF_INET 2
#define AF_INET6 10

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mesh_global);
} mesh_global SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MESH_MAX_PODS);
	__type(key, __u64); /* pod cgroup id */
	__type(value, struct mesh_pod);
} mesh_pods SEC(".maps");

/* Destination pods' skip-inbound ports, keyed by pod IP (network order). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MESH_MAX_SKIP_DSTS);
	__type(key, __u32);
	__type(value, struct mesh_port_ranges);
} mesh_skip_in SEC(".maps");

/* Deleted explicitly at close; LRU only as a backstop against leaks. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MESH_MAX_CONNS);
	__type(key, __u64); /* socket cookie */
	__type(value, struct mesh_orig);
} mesh_orig_by_cookie SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MESH_MAX_CONNS);
	__type(key, struct mesh_tuple);
	__type(value, struct mesh_orig);
} mesh_orig_by_tuple SEC(".maps");

/* The tuple records the proxy has not taken yet (established, not yet looked up). Whoever
 * deletes the entry first, the proxy's take or the client's close after its FIN, wins: the
 * delete is atomic, so a close can never be lost between the proxy's read and its claim, which a
 * flag in the record (read, then written back from user space) could not promise. Entries live
 * from the handshake to the accept, so few exist at once: no preallocation. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, MESH_MAX_PENDING);
	__type(key, struct mesh_tuple);
	__type(value, __u8);
} mesh_orig_pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MESH_C__COUNT);
	__type(key, __u32);
	__type(value, __u64);
} mesh_counters SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&mesh_counters, &idx);
	if (v)
		*v += 1;
}

/* Bounded loops: kernels since 5.3 verify them without unrolling. */
static __always_inline int in_ranges(const struct mesh_port_ranges *r, __u16 port)
{
	__u32 n = r->n;
	for (int i = 0; i < MESH_MAX_PORT_RANGES; i++) {
		if (i >= n)
			break;
		if (port >= r->lo[i] && port <= r->hi[i])
			return 1;
	}
	return 0;
}

/* The pod entry of the calling task: walk its ancestor cgroups from the root down, so the
 * pod may sit at any depth (cgroupfs or systemd driver, any QoS class) and the process in
 * any container cgroup below it. */
static __always_inline struct mesh_pod *find_pod(__u64 *key)
{
	for (int level = 1; level < MESH_MAX_CGROUP_DEPTH; level++) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(level);
		if (id == 0)
			break;
		struct mesh_pod *pod = bpf_map_lookup_elem(&mesh_pods, &id);
		if (pod) {
			*key = id;
			return pod;
		}
	}
	return 0;
}

/* Decides for one TCP connect() to dst (network order ip, host order port); on redirect
 * stores the original destination under the socket cookie. Returns 1 to redirect. */
static __always_inline int decide(void *ctx, __u32 dst_ip, __u16 dst_port, const struct mesh_global **gout)
{
	__u32 zero = 0;
	const struct mesh_global *g = bpf_map_lookup_elem(&mesh_global, &zero);
	if (!g || g->proxy_ip == 0)
		return 0;
	*gout = g;

	/* 0.0.0.0 is this host to connect(): the pod itself. Redirected, the proxy would dial it
	 * on the node, reaching services bound to the node's loopback. Link-local 169.254/16 is
	 * the pod's own link (a CNI's gateway, a metadata service): from the node, the connection
	 * would leave with the node's address and hop count, which metadata services trust. */
	__u32 host = bpf_ntohl(dst_ip);
	if (dst_ip == 0 || (host >> 24) == 127 || (host >> 16) == 0xa9fe ||
	    (dst_ip == g->proxy_ip && dst_port == g->proxy_port)) {
		count(MESH_C_PASSED_LOCAL);
		return 0;
	}
	__u64 pod_key = 0;
	struct mesh_pod *pod = find_pod(&pod_key);
	if (!pod) {
		count(MESH_C_UNMESHED);
		return 0;
	}
	if (in_ranges(&pod->skip_out, dst_port) || in_ranges(&g->skip_out, dst_port)) {
		count(MESH_C_SKIPPED_PORT);
		return 0;
	}
	struct mesh_port_ranges *in = bpf_map_lookup_elem(&mesh_skip_in, &dst_ip);
	if (in && in_ranges(in, dst_port)) {
		count(MESH_C_SKIPPED_INBOUND);
		return 0;
	}

	struct mesh_orig orig = {
		.dst_ip = dst_ip,
		.dst_port = dst_port,
		.pod_key = pod_key,
	};
	__u64 cookie = bpf_get_socket_cookie(ctx);
	if (bpf_map_update_elem(&mesh_orig_by_cookie, &cookie, &orig, BPF_ANY)) {
		/* Without a record the proxy would refuse it: connect directly instead. */
		count(MESH_C_MAP_FULL);
		return 0;
	}
	count(MESH_C_REDIRECTED);
	return 1;
}

/* A connect() that is not redirected drops any record the socket still holds: an earlier
 * connect() of the same socket was redirected and failed before its SYN (no route to the proxy,
 * no local port), so no close deleted it. Kept, getpeername would answer the first destination
 * and sockops would copy it under this direct connection's local port, where a redirected
 * connection from the same port could read it, or lose its own at this one's close. */
static __always_inline void forget_stale(void *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	if (bpf_map_lookup_elem(&mesh_orig_by_cookie, &cookie))
		bpf_map_delete_elem(&mesh_orig_by_cookie, &cookie);
}

static __always_inline int is_tcp(struct bpf_sock_addr *ctx)
{
	if (ctx->type == SOCK_STREAM && (ctx->protocol == IPPROTO_TCP || ctx->protocol == 0))
		return 1;
	count(MESH_C_NOT_TCP);
	return 0;
}

SEC("cgroup/connect4")
int mesh_connect4(struct bpf_sock_addr *ctx)
{
	if (!is_tcp(ctx))
		return 1;
	const struct mesh_global *g = 0;
	if (decide(ctx, ctx->user_ip4, bpf_ntohs(ctx->user_port), &g) && g) {
		ctx->user_ip4 = g->proxy_ip;
		ctx->user_port = bpf_htons(g->proxy_port);
	} else {
		forget_stale(ctx);
	}
	return 1;
}

/* IPv4-mapped IPv6 (::ffff:a.b.c.d) gets the IPv4 treatment; native IPv6 passes. */
static __always_inline int is_v4_mapped(const __u32 *ip6)
{
	return ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0x0000ffff);
}

SEC("cgroup/connect6")
int mesh_connect6(struct bpf_sock_addr *ctx)
{
	if (!is_tcp(ctx))
		return 1;
	__u32 ip6[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
	if (!is_v4_mapped(ip6)) {
		forget_stale(ctx);
		return 1;
	}
	const struct mesh_global *g = 0;
	if (decide(ctx, ip6[3], bpf_ntohs(ctx->user_port), &g) && g) {
		ctx->user_ip6[3] = g->proxy_ip;
		ctx->user_port = bpf_htons(g->proxy_port);
	} else {
		forget_stale(ctx);
	}
	return 1;
}

#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif

/* The record of the socket asking for its peer (now the proxy's address). A Multipath TCP
 * socket's connect() runs on its first subflow, a TCP socket of its own cookie, so the record
 * is the subflow's; getpeername runs on the MPTCP socket, which shares the subflow's addresses:
 * its record is the one sockops stored under that local address. */
static __always_inline struct mesh_orig *orig_of(struct bpf_sock_addr *ctx, __u32 peer_ip)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct mesh_orig *o = bpf_map_lookup_elem(&mesh_orig_by_cookie, &cookie);
	if (o || ctx->protocol != IPPROTO_MPTCP)
		return o;
	__u32 zero = 0;
	const struct mesh_global *g = bpf_map_lookup_elem(&mesh_global, &zero);
	struct bpf_sock *sk = ctx->sk;
	if (!g || !sk || peer_ip != g->proxy_ip || bpf_ntohs(ctx->user_port) != g->proxy_port)
		return 0;
	struct mesh_tuple key = {.ip = sk->src_ip4, .port = (__u16)sk->src_port};
	return bpf_map_lookup_elem(&mesh_orig_by_tuple, &key);
}

SEC("cgroup/getpeername4")
int mesh_getpeername4(struct bpf_sock_addr *ctx)
{
	struct mesh_orig *o = orig_of(ctx, ctx->user_ip4);
	if (o) {
		ctx->user_ip4 = o->dst_ip;
		ctx->user_port = bpf_htons(o->dst_port);
		count(MESH_C_GETPEERNAME);
	}
	return 1;
}

SEC("cgroup/getpeername6")
int mesh_getpeername6(struct bpf_sock_addr *ctx)
{
	__u32 ip6[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
	struct mesh_orig *o = orig_of(ctx, is_v4_mapped(ip6) ? ip6[3] : 0);
	if (o) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0x0000ffff);
		ctx->user_ip6[3] = o->dst_ip;
		ctx->user_port = bpf_htons(o->dst_port);
		count(MESH_C_GETPEERNAME);
	}
	return 1;
}

SEC("sockops")
int mesh_sockops(struct bpf_sock_ops *skops)
{
	__u32 op = skops->op;
	if (op != BPF_SOCK_OPS_TCP_CONNECT_CB && op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB &&
	    op != BPF_SOCK_OPS_STATE_CB)
		return 1;
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct mesh_orig *o = bpf_map_lookup_elem(&mesh_orig_by_cookie, &cookie);

	switch (op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		/* Ask for state changes from the SYN on, so a connect that never establishes
		 * still has its cookie record deleted at close. */
		if (o)
			bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: {
		if (!o) {
			/* Most sockets in a pod were never redirected: only count real misses. */
			__u32 dport = bpf_ntohl(skops->remote_port);
			__u32 zero = 0;
			const struct mesh_global *g = bpf_map_lookup_elem(&mesh_global, &zero);
			if (g && skops->remote_ip4 == g->proxy_ip && dport == g->proxy_port)
				count(MESH_C_ESTABLISHED_MISS);
			break;
		}
		struct mesh_tuple key = {
			.ip = skops->local_ip4, /* for v4-mapped v6 sockets the kernel fills local_ip4 too */
			.port = (__u16)skops->local_port,
		};
		if (skops->family == AF_INET6)
			key.ip = skops->local_ip6[3];
		o->src_ip = key.ip;
		o->src_port = key.port;
		__u8 one = 1;
		if (bpf_map_update_elem(&mesh_orig_by_tuple, &key, o, BPF_ANY))
			count(MESH_C_MAP_FULL);
		else if (bpf_map_update_elem(&mesh_orig_pending, &key, &one, BPF_ANY))
			count(MESH_C_MAP_FULL); /* the record works; a close before the proxy's take deletes it */
		else
			count(MESH_C_ESTABLISHED);
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
		break;
	}
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] != BPF_TCP_CLOSE || !o)
			break;
		if (o->src_port) {
			struct mesh_tuple key = {.ip = o->src_ip, .port = o->src_port};
			/* The client closed first (its FIN, acked by the proxy's kernel) and the proxy has
			 * not taken the record yet (this delete of its pending entry wins): the connection
			 * still waits in the accept queue with the bytes it sent, so the record is left to
			 * the proxy's take, which finds its pending entry gone and deletes it. Any other
			 * close (taken already, a reset either way, the proxy's FIN first) needs it no more. */
			__u32 from = skops->args[0];
			int fin_first = from == BPF_TCP_FIN_WAIT1 || from == BPF_TCP_FIN_WAIT2 || from == BPF_TCP_CLOSING;
			if (bpf_map_delete_elem(&mesh_orig_pending, &key) != 0 || !fin_first)
				bpf_map_delete_elem(&mesh_orig_by_tuple, &key);
		}
		bpf_map_delete_elem(&mesh_orig_by_cookie, &cookie);
		count(MESH_C_CLOSED);
		break;
	}
	return 1;
}

/* A redirected connect() that fails before its SYN (no local port left, no route to the proxy)
 * never reaches sockops, whose close deletes the record: delete it when the socket is released.
 * Loaded only where the kernel has this hook and the cookie helper in it (the addon probes);
 * elsewhere such records wait for the LRU. */
SEC("cgroup/sock_release")
int mesh_sock_release(struct bpf_sock *sk)
{
	if (sk->type != SOCK_STREAM)
		return 1;
	__u64 cookie = bpf_get_socket_cookie(sk);
	struct mesh_orig *o = bpf_map_lookup_elem(&mesh_orig_by_cookie, &cookie);
	/* Established ones (src_port set) are sockops' to delete at close, tuple record included. */
	if (o && !o->src_port) {
		bpf_map_delete_elem(&mesh_orig_by_cookie, &cookie);
		count(MESH_C_CLOSED);
	}
	return 1;
}

/* Kernel splice: the proxy's two sockets of an opaque connection, keyed by socket cookie.
 * What one receives goes straight to the other's egress (no copy through the agent). */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, MESH_MAX_SPLICED);
	__type(key, __u64);
	__type(value, __u64);
} mesh_splice SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MESH_MAX_SPLICED);
	__type(key, __u64);
	__type(value, struct mesh_splice_link);
} mesh_splice_links SEC(".maps");

SEC("sk_skb/stream_verdict")
int mesh_splice_verdict(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct mesh_splice_link *l = bpf_map_lookup_elem(&mesh_splice_links, &cookie);
	if (!l)
		return SK_DROP; /* never inserted without its link: the addon writes the links first */
	__u32 len = skb->len;
	/* A bare FIN arrives as an empty skb. Redirected, it would reach the peer's send path
	 * after the proxy has shut that down (EPIPE, reported on the peer as an error): the FIN
	 * itself travels through the proxy (EOF on this socket, then shutdown of the peer). */
	if (len == 0)
		return SK_DROP;
	int verdict = bpf_sk_redirect_hash(skb, &mesh_splice, &l->peer, 0);
	if (verdict == SK_PASS)
		__sync_fetch_and_add(&l->bytes, len);
	else
		__sync_fetch_and_add(&l->drops, 1);
	return verdict;
}
