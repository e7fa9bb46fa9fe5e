// Thin Node-API layer over libbpf: load the embedded BPF object, attach it to a cgroup with
// links this process owns (they detach when it exits: fail-open), and read/write its maps.
// No policy lives here; src/datapath decides what to write.
#include <napi.h>

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <algorithm>
#include <vector>

#include "../bpf/mesh_shared.h"
#include "../bpf/mesh.skel.h"

// The verifier gives up with EAGAIN when a signal is pending on the loading thread, and
// libbpf retries only a few times: a profiler's SIGPROF stream (node --cpu-prof) made every
// load fail. Signals to this thread wait (they are not lost) until the load is done.
struct SignalsHeld {
  sigset_t old_;
  SignalsHeld() {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old_);
  }
  ~SignalsHeld() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }
};

void InitSocketIo(Napi::Env env, Napi::Object exports); // socket-io.cc: sockets driven from C++ (--native-io)

namespace {

// libbpf reports the verifier log through its print callback; keep the last of it so a
// rejection can be shown to the operator instead of a bare EINVAL.
std::string g_libbpf_log;
int CaptureLibbpfLog(enum libbpf_print_level level, const char* fmt, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char buf[4096];
  int n = vsnprintf(buf, sizeof(buf), fmt, args);
  if (n > 0) {
    g_libbpf_log.append(buf, std::min<size_t>(n, sizeof(buf) - 1));
    if (g_libbpf_log.size() > 64 * 1024) g_libbpf_log.erase(0, g_libbpf_log.size() - 64 * 1024);
  }
  return 0;
}

std::string Hint(int err, const std::string& what) {
  switch (err) {
    case EPERM:
    case EACCES:
      return "operation not permitted; run as root or grant CAP_BPF and CAP_NET_ADMIN (and CAP_SYS_RESOURCE on kernels before 5.11)";
    case ENOENT:
      return what == "attach" ? "no such cgroup directory; pass --cgroup-root pointing at the pods' cgroup in the cgroup2 mount"
                              : "no such file or directory";
    case ENOTDIR:
      return "not a directory; pass a cgroup2 directory";
    case ENOSYS:
      return "this kernel has no BPF syscall; use a kernel built with CONFIG_BPF_SYSCALL";
    case EINVAL:
      return "invalid argument (the kernel may lack a program type or helper this datapath needs: cgroup sock_addr, sockops, getpeername hooks need Linux 5.8 or newer)";
    case E2BIG:
    case ENOSPC:
      return "map is full; raise the map size or remove stale pods";
    default:
      return strerror(err);
  }
}

Napi::Error MakeError(Napi::Env env, const std::string& what, int err, const std::string& extra = "") {
  std::string msg = what + " failed: " + Hint(err, what.rfind("attach", 0) == 0 ? "attach" : what);
  if (!extra.empty()) msg += "\n" + extra;
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("errno", Napi::Number::New(env, err));
  const char* name = nullptr;
  switch (err) {
    case EPERM: name = "EPERM"; break;
    case EACCES: name = "EACCES"; break;
    case ENOENT: name = "ENOENT"; break;
    case ENOTDIR: name = "ENOTDIR"; break;
    case EINVAL: name = "EINVAL"; break;
    case ENOSYS: name = "ENOSYS"; break;
    case E2BIG: name = "E2BIG"; break;
    case ENOSPC: name = "ENOSPC"; break;
    case EEXIST: name = "EEXIST"; break;
    case EBADF: name = "EBADF"; break;
  }
  if (name) e.Set("code", Napi::String::New(env, name));
  return e;
}

bool ParseIp4(const Napi::Value& v, uint32_t* out) {
  if (!v.IsString()) return false;
  std::string s = v.As<Napi::String>();
  if (s.rfind("::ffff:", 0) == 0) s = s.substr(7);
  struct in_addr a;
  if (inet_pton(AF_INET, s.c_str(), &a) != 1) return false;
  *out = a.s_addr;
  return true;
}

std::string FormatIp4(uint32_t ip) {
  char buf[INET_ADDRSTRLEN];
  struct in_addr a = {ip};
  inet_ntop(AF_INET, &a, buf, sizeof(buf));
  return buf;
}

// [[lo, hi], ...] -> mesh_port_ranges; throws a TypeError naming the problem.
bool ParseRanges(Napi::Env env, const Napi::Value& v, mesh_port_ranges* r) {
  memset(r, 0, sizeof(*r));
  if (v.IsUndefined() || v.IsNull()) return true;
  if (!v.IsArray()) {
    Napi::TypeError::New(env, "port ranges must be an array of [lo, hi] pairs").ThrowAsJavaScriptException();
    return false;
  }
  Napi::Array a = v.As<Napi::Array>();
  if (a.Length() > MESH_MAX_PORT_RANGES) {
    Napi::RangeError::New(env, "at most " + std::to_string(MESH_MAX_PORT_RANGES) +
                                   " port ranges fit in the datapath; merge adjacent ports into ranges")
        .ThrowAsJavaScriptException();
    return false;
  }
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value p = a.Get(i);
    if (!p.IsArray() || p.As<Napi::Array>().Length() != 2) {
      Napi::TypeError::New(env, "each port range must be a [lo, hi] pair").ThrowAsJavaScriptException();
      return false;
    }
    uint32_t lo = p.As<Napi::Array>().Get(0u).ToNumber().Uint32Value();
    uint32_t hi = p.As<Napi::Array>().Get(1u).ToNumber().Uint32Value();
    if (lo < 1 || hi > 65535 || lo > hi) {
      Napi::RangeError::New(env, "port range " + std::to_string(lo) + "-" + std::to_string(hi) +
                                     " is invalid; ports are 1-65535 and lo <= hi")
          .ThrowAsJavaScriptException();
      return false;
    }
    r->lo[i] = lo;
    r->hi[i] = hi;
  }
  r->n = a.Length();
  return true;
}

uint64_t ToU64(const Napi::Value& v, bool* ok) {
  *ok = true;
  if (v.IsBigInt()) {
    bool lossless;
    uint64_t x = v.As<Napi::BigInt>().Uint64Value(&lossless);
    *ok = lossless;
    return x;
  }
  if (v.IsNumber()) return (uint64_t)v.As<Napi::Number>().Int64Value();
  *ok = false;
  return 0;
}

// Lookups from every thread of the process (the proxy runs on worker threads too, each with a
// MapView over the maps the main thread loaded): one pair of counters for counters().
std::atomic<uint64_t> g_lookups{0};
std::atomic<uint64_t> g_lookup_misses{0};

// The map operations the proxy needs, on map file descriptors, so a Datapath (which owns the
// maps) and a MapView (another thread's handle on the same fds) share one implementation.
namespace mapops {

bool SocketCookie(int fd, uint64_t* out) {
  socklen_t len = sizeof(*out);
  return getsockopt(fd, SOL_SOCKET, SO_COOKIE, out, &len) == 0;
}

// SO_RCVLOWAT both holds and releases the verdict. TCP calls data_ready (the verdict, once
// the socket is in the sockhash) only when at least rcvlowat bytes wait (or under memory
// pressure): a high mark keeps arriving bytes queued while the pair is inserted one socket
// at a time (a verdict before its peer is in would drop them), and setting it back runs
// tcp_data_ready() at once, so what queued meanwhile, and what was queued before the
// insert, is redirected now, in order, ahead of later bytes.
int SetLowat(int fd, int v) {
  return setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &v, sizeof(v)) ? errno : 0;
}
int GetLowat(int fd, int* v) {
  socklen_t len = sizeof(*v);
  return getsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, v, &len) ? errno : 0;
}

// The proxy has read the record of the connection it accepted: take it. Deleting its pending
// entry decides, atomically, against the client's close (mesh.bpf.c, sockops): deleted here, the
// proxy came first and the client's close will delete the record; already gone, the client
// closed first and left the record for this read, so it is deleted now. The record is then
// marked taken (written only by the winner, so nothing the kernel wrote is overwritten), so a
// second lookup of the same connection finds it rather than deleting it.
void Take(int tupleFd, int pendingFd, const mesh_tuple& key, mesh_orig o) {
  if (o.flags & MESH_ORIG_TAKEN) return;
  if (bpf_map_delete_elem(pendingFd, &key) != 0 && errno == ENOENT) {
    bpf_map_delete_elem(tupleFd, &key);
    return;
  }
  o.flags |= MESH_ORIG_TAKEN;
  bpf_map_update_elem(tupleFd, &key, &o, BPF_EXIST);  // ENOENT: the client closed since; its close deleted it
}

// lookup(remoteIp, remotePort) -> { ip, port, podKey } | null, for the proxy's accepted
// connection from that peer (the record is then taken, see Take).
Napi::Value Lookup(const Napi::CallbackInfo& info, int tupleFd, int pendingFd) {
  Napi::Env env = info.Env();
  mesh_tuple key;
  memset(&key, 0, sizeof(key));
  if (!ParseIp4(info[0], &key.ip)) return env.Null();  // IPv6 peers never have records
  uint32_t port = info[1].ToNumber().Uint32Value();
  if (port > 65535) return env.Null();
  key.port = port;
  mesh_orig o;
  g_lookups++;
  if (bpf_map_lookup_elem(tupleFd, &key, &o)) {
    g_lookup_misses++;
    return env.Null();
  }
  Take(tupleFd, pendingFd, key, o);
  Napi::Object r = Napi::Object::New(env);
  r.Set("ip", FormatIp4(o.dst_ip));
  r.Set("port", Napi::Number::New(env, o.dst_port));
  r.Set("podKey", Napi::BigInt::New(env, (uint64_t)o.pod_key));
  return r;
}

// lookupSocket(fd, out: Uint32Array(6)) -> 1 record | 0 none | 2 peer not IPv4 | -errno.
// An accepted socket's peer (getpeername) and its record in one call, into the caller's array
// (peer ip, peer port, dst ip, dst port, pod key low, high; ips in network order): no Node
// getpeername object, no address string parsed here, no result object built per connection.
Napi::Value LookupSocket(const Napi::CallbackInfo& info, int tupleFd, int pendingFd) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber() || !info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array ||
      info[1].As<Napi::Uint32Array>().ElementLength() < 6) {
    Napi::TypeError::New(env, "lookupSocket(fd, out) needs a socket fd and a Uint32Array of 6").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  uint32_t* out = info[1].As<Napi::Uint32Array>().Data();
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  if (getpeername(fd, (struct sockaddr*)&ss, &len) != 0) return Napi::Number::New(env, -errno);
  mesh_tuple key;
  memset(&key, 0, sizeof(key));
  if (ss.ss_family == AF_INET) {
    const struct sockaddr_in* a = (const struct sockaddr_in*)&ss;
    key.ip = a->sin_addr.s_addr;
    key.port = ntohs(a->sin_port);
  } else if (ss.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6*)&ss)->sin6_addr)) {
    const struct sockaddr_in6* a = (const struct sockaddr_in6*)&ss;
    memcpy(&key.ip, &a->sin6_addr.s6_addr[12], 4);
    key.port = ntohs(a->sin6_port);
  } else {
    return Napi::Number::New(env, 2);  // IPv6 peers never have records; the caller asks Node
  }
  out[0] = key.ip;
  out[1] = key.port;
  mesh_orig o;
  g_lookups++;
  if (bpf_map_lookup_elem(tupleFd, &key, &o)) {
    g_lookup_misses++;
    return Napi::Number::New(env, 0);
  }
  Take(tupleFd, pendingFd, key, o);
  out[2] = o.dst_ip;
  out[3] = o.dst_port;
  out[4] = (uint32_t)(o.pod_key & 0xffffffffu);
  out[5] = (uint32_t)(o.pod_key >> 32);
  return Napi::Number::New(env, 1);
}

// splice(fdA, fdB) -> [cookieA, cookieB]. The caller has stopped reading both sockets and
// flushed its own writes: from here what each receives goes to the other's egress.
Napi::Value Splice(const Napi::CallbackInfo& info, int socks, int links) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber() || !info[1].IsNumber()) {
    Napi::TypeError::New(env, "splice(fdA, fdB) needs two socket file descriptors").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int fds[2] = {info[0].As<Napi::Number>().Int32Value(), info[1].As<Napi::Number>().Int32Value()};
  uint64_t cookies[2];
  for (int i = 0; i < 2; i++)
    if (fds[i] < 0 || !SocketCookie(fds[i], &cookies[i])) {
      MakeError(env, "reading the socket cookie of fd " + std::to_string(fds[i]), fds[i] < 0 ? EBADF : errno)
          .ThrowAsJavaScriptException();
      return env.Undefined();
    }
  int lowat[2] = {1, 1};
  for (int i = 0; i < 2; i++) {
    int e = GetLowat(fds[i], &lowat[i]);
    if (!e) e = SetLowat(fds[i], 0x7fffffff);  // the kernel caps it at half of tcp_rmem[2]
    if (e) {
      for (int j = 0; j < i; j++) SetLowat(fds[j], lowat[j]);
      MakeError(env, "holding the receive queue for the splice", e).ThrowAsJavaScriptException();
      return env.Undefined();
    }
  }
  // Links first: the verdict drops what it cannot route, and it may run the moment a
  // socket is in the sockhash.
  int done = 0, err = 0;
  std::string what;
  for (; done < 2; done++) {
    mesh_splice_link l = {cookies[1 - done], 0, 0};
    if (bpf_map_update_elem(links, &cookies[done], &l, BPF_NOEXIST)) {
      err = errno;
      what = "recording the splice link";
      break;
    }
  }
  int inserted = 0;
  if (!err)
    for (; inserted < 2; inserted++) {
      uint64_t v = (uint64_t)fds[inserted];
      if (bpf_map_update_elem(socks, &cookies[inserted], &v, BPF_NOEXIST)) {
        err = errno;
        what = "adding the socket to the splice sockhash";
        break;
      }
    }
  if (err) {
    for (int i = 0; i < inserted; i++) bpf_map_delete_elem(socks, &cookies[i]);
    for (int i = 0; i < done; i++) bpf_map_delete_elem(links, &cookies[i]);
  }
  bool spliced = !err;
  for (int i = 0; i < 2; i++) {
    int e = SetLowat(fds[i], lowat[i]);
    if (e && !err) {
      err = e;
      what = "releasing the receive queue into the splice";
    }
  }
  if (err && spliced) {
    // The kernel owns the bytes now but queued ones may not move: the caller must reset.
    Napi::Error e = MakeError(env, what, err);
    e.Set("spliced", Napi::Boolean::New(env, true));
    e.ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (err) {
    MakeError(env, what, err).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Array r = Napi::Array::New(env, 2);
  r.Set(0u, Napi::BigInt::New(env, cookies[0]));
  r.Set(1u, Napi::BigInt::New(env, cookies[1]));
  return r;
}

// unsplice(cookieA, cookieB): forget the pair (a closed socket leaves the sockhash by itself).
Napi::Value Unsplice(const Napi::CallbackInfo& info, int socks, int links) {
  Napi::Env env = info.Env();
  for (int i = 0; i < 2; i++) {
    bool ok;
    uint64_t c = ToU64(info[i], &ok);
    if (!ok) {
      Napi::TypeError::New(env, "unsplice(cookieA, cookieB) needs the cookies splice() returned").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    bpf_map_delete_elem(socks, &c);
    bpf_map_delete_elem(links, &c);
  }
  return env.Undefined();
}

// splicedBytes(cookie) -> { bytes, drops }: what that socket received and the kernel redirected.
Napi::Value SplicedBytes(const Napi::CallbackInfo& info, int links) {
  Napi::Env env = info.Env();
  bool ok;
  uint64_t c = ToU64(info[0], &ok);
  mesh_splice_link l;
  if (!ok || bpf_map_lookup_elem(links, &c, &l)) return env.Null();
  Napi::Object r = Napi::Object::New(env);
  r.Set("bytes", Napi::Number::New(env, (double)l.bytes));
  r.Set("drops", Napi::Number::New(env, (double)l.drops));
  return r;
}

// sentBytes(fd): every byte handed to this TCP socket's send path so far (acked + still
// queued), or -1. Before a FIN, the proxy waits until it has grown by all the bytes the
// verdict redirected here, so the FIN never overtakes data still in the kernel's queue.
Napi::Value SentBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].ToNumber().Int32Value();
  struct tcp_info ti;
  memset(&ti, 0, sizeof(ti));
  socklen_t len = sizeof(ti);
  int outq = 0;
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) || len < offsetof(struct tcp_info, tcpi_bytes_received) ||
      ioctl(fd, SIOCOUTQ, &outq))
    return Napi::Number::New(env, -1);
  return Napi::Number::New(env, (double)ti.tcpi_bytes_acked + (double)outq);
}

}  // namespace mapops

// Entries per bpf() when status counts a map (CountEntries): a full connection map is 256 calls.
constexpr uint32_t kCountBatch = 1024;

const char* kCounterNames[MESH_C__COUNT] = {
    "redirected", "skippedPort", "skippedInbound", "unmeshed",  "passedLocal", "notTcp",
    "established", "establishedMiss", "closed", "getpeername", "mapFull",
};

// Loads a probe program: 1 when the kernel takes it, 0 when it refuses it (EINVAL: a hook or a
// helper it does not know), -errno when the probe itself could not run (EPERM).
int ProbeLoad(enum bpf_prog_type type, enum bpf_attach_type attach, const struct bpf_insn* insns, size_t n) {
  LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = attach);
  int fd = bpf_prog_load(type, "mesh_probe", "GPL", insns, n, &opts);
  if (fd >= 0) {
    close(fd);
    return 1;
  }
  int err = errno;
  return err == EINVAL ? 0 : -err;
}

// A cgroup/sock_release program that reads its socket's cookie, as mesh_sock_release does: the
// hook came in Linux 5.9, the cookie helper for it later.
int ProbeSockRelease() {
  struct bpf_insn insns[3];
  memset(insns, 0, sizeof(insns));
  insns[0].code = BPF_JMP | BPF_CALL;  // r0 = bpf_get_socket_cookie(r1 = ctx)
  insns[0].imm = BPF_FUNC_get_socket_cookie;
  insns[1].code = BPF_ALU64 | BPF_MOV | BPF_K;  // r0 = 1
  insns[1].dst_reg = BPF_REG_0;
  insns[1].imm = 1;
  insns[2].code = BPF_JMP | BPF_EXIT;
  return ProbeLoad(BPF_PROG_TYPE_CGROUP_SOCK, BPF_CGROUP_INET_SOCK_RELEASE, insns, 3);
}

class Datapath : public Napi::ObjectWrap<Datapath> {
 public:
  static Napi::Object Init(Napi::Env env, Napi::Object exports) {
    Napi::Function f = DefineClass(env, "Datapath",
        {
            InstanceMethod("load", &Datapath::Load),
            InstanceMethod("attach", &Datapath::Attach),
            InstanceMethod("detach", &Datapath::Detach),
            InstanceMethod("close", &Datapath::Close),
            InstanceMethod("setGlobal", &Datapath::SetGlobal),
            InstanceMethod("setPod", &Datapath::SetPod),
            InstanceMethod("removePod", &Datapath::RemovePod),
            InstanceMethod("setSkipInbound", &Datapath::SetSkipInbound),
            InstanceMethod("removeSkipInbound", &Datapath::RemoveSkipInbound),
            InstanceMethod("lookup", &Datapath::Lookup),
            InstanceMethod("lookupSocket", &Datapath::LookupSocket),
            InstanceMethod("counters", &Datapath::Counters),
            InstanceMethod("describe", &Datapath::Describe),
            InstanceMethod("splice", &Datapath::Splice),
            InstanceMethod("unsplice", &Datapath::Unsplice),
            InstanceMethod("splicedBytes", &Datapath::SplicedBytes),
            InstanceMethod("sentBytes", &Datapath::SentBytes),
            InstanceMethod("mapFds", &Datapath::MapFds),
        });
    exports.Set("Datapath", f);
    return exports;
  }

  explicit Datapath(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Datapath>(info) {}
  ~Datapath() override { Teardown(); }

 private:
  struct Attached {
    bpf_link* link;
    std::string program;
  };
  mesh_bpf* skel_ = nullptr;
  std::vector<Attached> links_;
  std::string cgroup_;
  bool splice_ = false;  // the sk_skb verdict is attached to mesh_splice

  void Teardown() {
    for (auto& a : links_) bpf_link__destroy(a.link);
    links_.clear();
    cgroup_.clear();
    if (skel_) mesh_bpf__destroy(skel_);
    skel_ = nullptr;
  }

  bool Loaded(Napi::Env env) {
    if (skel_) return true;
    Napi::Error::New(env, "the datapath is not loaded; call load() first").ThrowAsJavaScriptException();
    return false;
  }

  Napi::Value Load(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (skel_) return env.Undefined();
    g_libbpf_log.clear();
    libbpf_set_print(CaptureLibbpfLog);
    mesh_bpf* s = mesh_bpf__open();
    if (!s) {
      int err = errno;
      MakeError(env, "opening the BPF object", err, g_libbpf_log).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    // Kernel splice is opt-in: without it the sockmap program and maps are not even
    // created, so the default datapath needs nothing more from the kernel than before.
    bool splice = info.Length() > 0 && info[0].IsObject() &&
                  info[0].As<Napi::Object>().Get("kernelSplice").ToBoolean().Value();
    if (!splice) {
      bpf_program__set_autoload(s->progs.mesh_splice_verdict, false);
      bpf_map__set_autocreate(s->maps.mesh_splice, false);
      bpf_map__set_autocreate(s->maps.mesh_splice_links, false);
    }
    int rc;
    {
      SignalsHeld held;
      // Optional: without it, a connect() that fails before its SYN leaves its record to the LRU.
      if (ProbeSockRelease() != 1) bpf_program__set_autoload(s->progs.mesh_sock_release, false);
      rc = mesh_bpf__load(s);
    }
    if (rc) {
      int err = -rc;
      std::string log = g_libbpf_log;
      mesh_bpf__destroy(s);
      std::string extra;
      // EPERM needs no verifier log; anything else may be a rejection worth reading.
      if (err != EPERM && err != EACCES && !log.empty()) extra = "verifier/libbpf log:\n" + log;
      MakeError(env, "loading BPF", err, extra).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (splice && bpf_prog_attach(bpf_program__fd(s->progs.mesh_splice_verdict),
                                  bpf_map__fd(s->maps.mesh_splice), BPF_SK_SKB_STREAM_VERDICT, 0)) {
      int err = errno;
      mesh_bpf__destroy(s);
      MakeError(env, "attaching the kernel-splice verdict to its sockhash", err,
                "run without --kernel-splice on this kernel")
          .ThrowAsJavaScriptException();
      return env.Undefined();
    }
    splice_ = splice;
    skel_ = s;
    return env.Undefined();
  }

  bool SpliceReady(Napi::Env env) {
    if (!Loaded(env)) return false;
    if (splice_) return true;
    Napi::Error::New(env, "kernel splice is off; load({ kernelSplice: true }) (mesh-agent run --kernel-splice)")
        .ThrowAsJavaScriptException();
    return false;
  }

  int Fd(bpf_map* m) { return bpf_map__fd(m); }
  Napi::Value Splice(const Napi::CallbackInfo& info) {
    if (!SpliceReady(info.Env())) return info.Env().Undefined();
    return mapops::Splice(info, Fd(skel_->maps.mesh_splice), Fd(skel_->maps.mesh_splice_links));
  }
  Napi::Value Unsplice(const Napi::CallbackInfo& info) {
    if (!SpliceReady(info.Env())) return info.Env().Undefined();
    return mapops::Unsplice(info, Fd(skel_->maps.mesh_splice), Fd(skel_->maps.mesh_splice_links));
  }
  Napi::Value SplicedBytes(const Napi::CallbackInfo& info) {
    if (!SpliceReady(info.Env())) return info.Env().Undefined();
    return mapops::SplicedBytes(info, Fd(skel_->maps.mesh_splice_links));
  }
  Napi::Value SentBytes(const Napi::CallbackInfo& info) { return mapops::SentBytes(info); }

  // mapFds() -> { tuple, pending, splice, spliceLinks }: the maps a MapView on another thread uses
  // (-1 for maps not created). Valid until close(); a view used after it gets EBADF.
  Napi::Value MapFds(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Loaded(env)) return env.Undefined();
    Napi::Object r = Napi::Object::New(env);
    r.Set("tuple", Napi::Number::New(env, Fd(skel_->maps.mesh_orig_by_tuple)));
    r.Set("pending", Napi::Number::New(env, Fd(skel_->maps.mesh_orig_pending)));
    r.Set("splice", Napi::Number::New(env, splice_ ? Fd(skel_->maps.mesh_splice) : -1));
    r.Set("spliceLinks", Napi::Number::New(env, splice_ ? Fd(skel_->maps.mesh_splice_links) : -1));
    return r;
  }

  // attach(cgroupPath): every program, as links owned by this process.
  Napi::Value Attach(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Loaded(env)) return env.Undefined();
    if (!info[0].IsString()) {
      Napi::TypeError::New(env, "attach(cgroupPath) needs a path").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (!links_.empty()) {
      Napi::Error::New(env, "already attached to " + cgroup_ + "; detach() first").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    std::string path = info[0].As<Napi::String>();
    int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
      MakeError(env, "attaching to cgroup " + path, errno).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    struct statfs sfs;
    if (fstatfs(fd, &sfs) == 0 && sfs.f_type != CGROUP2_SUPER_MAGIC) {
      close(fd);
      Napi::Error e = Napi::Error::New(env, "attaching to cgroup " + path +
          " failed: not a cgroup2 directory; find the cgroup2 mount in /proc/self/mountinfo (on hybrid hosts often /sys/fs/cgroup/unified)");
      e.Set("code", Napi::String::New(env, "ENOTCGROUP2"));
      e.ThrowAsJavaScriptException();
      return env.Undefined();
    }
    struct { bpf_program* prog; const char* name; } progs[] = {
        {skel_->progs.mesh_connect4, "connect4"},
        {skel_->progs.mesh_connect6, "connect6"},
        {skel_->progs.mesh_getpeername4, "getpeername4"},
        {skel_->progs.mesh_getpeername6, "getpeername6"},
        {skel_->progs.mesh_sockops, "sockops"},
        {skel_->progs.mesh_sock_release, "sock_release"},
    };
    for (auto& p : progs) {
      if (bpf_program__fd(p.prog) < 0) continue;  // not loaded: this kernel lacks it (optional)
      bpf_link* link = bpf_program__attach_cgroup(p.prog, fd);
      if (!link) {
        int err = errno;
        close(fd);
        for (auto& a : links_) bpf_link__destroy(a.link);
        links_.clear();
        MakeError(env, std::string("attaching ") + p.name + " to cgroup " + path, err).ThrowAsJavaScriptException();
        return env.Undefined();
      }
      links_.push_back({link, p.name});
    }
    close(fd);
    cgroup_ = path;
    return env.Undefined();
  }

  Napi::Value Detach(const Napi::CallbackInfo& info) {
    for (auto& a : links_) bpf_link__destroy(a.link);
    links_.clear();
    cgroup_.clear();
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Teardown();
    return info.Env().Undefined();
  }

  // setGlobal({ proxyIp, proxyPort, skipOutbound })
  Napi::Value SetGlobal(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Loaded(env)) return env.Undefined();
    Napi::Object o = info[0].ToObject();
    mesh_global g;
    memset(&g, 0, sizeof(g));
    if (!ParseIp4(o.Get("proxyIp"), &g.proxy_ip)) {
      Napi::TypeError::New(env, "proxyIp must be an IPv4 address").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    uint32_t port = o.Get("proxyPort").ToNumber().Uint32Value();
    if (port < 1 || port > 65535) {
      Napi::RangeError::New(env, "proxyPort must be 1-65535").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    g.proxy_port = port;
    if (!ParseRanges(env, o.Get("skipOutbound"), &g.skip_out)) return env.Undefined();
    uint32_t zero = 0;
    if (bpf_map__update_elem(skel_->maps.mesh_global, &zero, sizeof(zero), &g, sizeof(g), BPF_ANY))
      MakeError(env, "updating the global config", errno).ThrowAsJavaScriptException();
    return env.Undefined();
  }

  // setPod(podKey: bigint, { ip, skipOutbound })
  Napi::Value SetPod(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Loaded(env)) return env.Undefined();
    bool ok;
    uint64_t key = ToU64(info[0], &ok);
    if (!ok || key == 0) {
      Napi::TypeError::New(env, "setPod needs the pod's cgroup id as a bigint").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    Napi::Object o = info[1].ToObject();
    mesh_pod p;
    memset(&p, 0, sizeof(p));
    if (o.Has("ip") && !o.Get("ip").IsUndefined() && !o.Get("ip").IsNull() && !ParseIp4(o.Get("ip"), &p.ip)) {
      Napi::TypeError::New(env, "pod ip must be an IPv4 address").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (!ParseRanges(env, o.Get("skipOutbound"), &p.skip_out)) return env.Undefined();
    if (bpf_map__update_elem(skel_->maps.mesh_pods, &key, sizeof(key), &p, sizeof(p), BPF_ANY))
      MakeError(env, "adding the pod to the datapath", errno).ThrowAsJavaScriptException();
    return env.Undefined();
  }

  Napi::Value RemovePod(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Loaded(env)) return env.Undefined();
    bool ok;
    uint64_t key = ToU64(info[0], &ok);
    if (!ok) {
      Napi::TypeError::New(env, "removePod needs the pod's cgroup id as a bigint").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    int rc = bpf_map__delete_elem(skel_->maps.mesh_pods, &key, sizeof(key), 0);
    return Napi::Boolean::New(env, rc == 0);
  }

  // setSkipInbound(podIp, ranges): connections to podIp on these ports bypass the proxy.
  Napi::Value SetSkipInbound(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Loaded(env)) return env.Undefined();
    uint32_t ip;
    if (!ParseIp4(info[0], &ip)) {
      Napi::TypeError::New(env, "setSkipInbound needs an IPv4 pod address").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    mesh_port_ranges r;
    if (!ParseRanges(env, info[1], &r)) return env.Undefined();
    if (bpf_map__update_elem(skel_->maps.mesh_skip_in, &ip, sizeof(ip), &r, sizeof(r), BPF_ANY))
      MakeError(env, "setting skip-inbound ports", errno).ThrowAsJavaScriptException();
    return env.Undefined();
  }

  Napi::Value RemoveSkipInbound(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Loaded(env)) return env.Undefined();
    uint32_t ip;
    if (!ParseIp4(info[0], &ip)) {
      Napi::TypeError::New(env, "removeSkipInbound needs an IPv4 pod address").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    int rc = bpf_map__delete_elem(skel_->maps.mesh_skip_in, &ip, sizeof(ip), 0);
    return Napi::Boolean::New(env, rc == 0);
  }

  Napi::Value Lookup(const Napi::CallbackInfo& info) {
    if (!Loaded(info.Env())) return info.Env().Undefined();
    return mapops::Lookup(info, Fd(skel_->maps.mesh_orig_by_tuple), Fd(skel_->maps.mesh_orig_pending));
  }

  Napi::Value LookupSocket(const Napi::CallbackInfo& info) {
    if (!Loaded(info.Env())) return info.Env().Undefined();
    return mapops::LookupSocket(info, Fd(skel_->maps.mesh_orig_by_tuple), Fd(skel_->maps.mesh_orig_pending));
  }

  Napi::Value Counters(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Loaded(env)) return env.Undefined();
    int ncpu = libbpf_num_possible_cpus();
    if (ncpu <= 0) ncpu = 1;
    std::vector<uint64_t> vals(ncpu);
    Napi::Object r = Napi::Object::New(env);
    for (uint32_t i = 0; i < MESH_C__COUNT; i++) {
      uint64_t sum = 0;
      if (bpf_map__lookup_elem(skel_->maps.mesh_counters, &i, sizeof(i), vals.data(),
                               sizeof(uint64_t) * ncpu, 0) == 0)
        for (auto v : vals) sum += v;
      r.Set(kCounterNames[i], Napi::BigInt::New(env, sum));
    }
    r.Set("lookups", Napi::BigInt::New(env, (uint64_t)g_lookups.load()));
    r.Set("lookupMisses", Napi::BigInt::New(env, (uint64_t)g_lookup_misses.load()));
    return r;
  }

  // A map's entries, counted for status. Batched: a node with many open connections has as many
  // records, and one bpf() per key made every status and report cost that many system calls.
  static uint32_t CountEntries(const bpf_map* m) {
    int fd = bpf_map__fd(m);
    size_t ks = bpf_map__key_size(m), vs = bpf_map__value_size(m);
    uint32_t max = bpf_map__max_entries(m);
    uint32_t chunk = kCountBatch;
    std::vector<char> keys, vals;
    uint64_t in = 0, out = 0;  // the kernel's cursor: a bucket index for hash maps
    uint32_t n = 0;
    bool first = true;
    for (;;) {
      keys.resize(size_t(chunk) * ks);
      vals.resize(size_t(chunk) * vs);
      uint32_t count = chunk;
      int rc = bpf_map_lookup_batch(fd, first ? nullptr : &in, &out, keys.data(), vals.data(), &count, nullptr);
      int err = rc ? errno : 0;
      if (rc == 0 || err == ENOENT) {
        n += count;  // ENOENT: the last batch, which may still hold entries
        // An empty batch that is not the last would not move on: stop rather than spin.
        if (rc != 0 || count == 0 || n > max * 2) return n;
        in = out;
        first = false;
        continue;
      }
      // A bucket longer than the batch: only a larger batch can take it.
      if (err == ENOSPC && chunk < max) {
        chunk = std::min(max, chunk * 2);
        continue;
      }
      // No batch operations for this map or kernel: one key at a time, from the start.
      if (first) return CountEntriesByKey(fd, ks, max);
      return n;  // the map changed under us: what was counted is the estimate
    }
  }

  static uint32_t CountEntriesByKey(int fd, size_t ks, uint32_t max) {
    std::vector<char> cur(ks), next(ks);
    uint32_t n = 0;
    void* prev = nullptr;
    while (bpf_map_get_next_key(fd, prev, next.data()) == 0) {
      n++;
      cur.swap(next);
      prev = cur.data();
      if (n > max * 2) break;  // map churned under us: stop, it is an estimate
    }
    return n;
  }

  // describe(): programs, attach point, maps with usage, for `status`.
  Napi::Value Describe(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object r = Napi::Object::New(env);
    r.Set("loaded", Napi::Boolean::New(env, skel_ != nullptr));
    r.Set("cgroup", cgroup_.empty() ? env.Null() : Napi::String::New(env, cgroup_));
    Napi::Array progs = Napi::Array::New(env);
    Napi::Array maps = Napi::Array::New(env);
    if (skel_) {
      uint32_t i = 0;
      bpf_program* p;
      bpf_object__for_each_program(p, skel_->obj) {
        if (bpf_program__fd(p) < 0) continue;  // not loaded (kernel splice off)
        Napi::Object o = Napi::Object::New(env);
        o.Set("name", bpf_program__name(p));
        o.Set("section", bpf_program__section_name(p));
        bpf_prog_info pinfo;
        memset(&pinfo, 0, sizeof(pinfo));
        uint32_t len = sizeof(pinfo);
        if (bpf_obj_get_info_by_fd(bpf_program__fd(p), &pinfo, &len) == 0) o.Set("id", pinfo.id);
        bool attached = false;
        std::string sec = bpf_program__section_name(p);
        for (auto& a : links_)
          if (sec.find(a.program) != std::string::npos) attached = true;
        o.Set("attachedTo", attached ? Napi::String::New(env, cgroup_) : env.Null());
        progs.Set(i++, o);
      }
      i = 0;
      bpf_map* m;
      bpf_object__for_each_map(m, skel_->obj) {
        std::string name = bpf_map__name(m);
        if (name.find(".") != std::string::npos) continue;  // .rodata etc.
        if (bpf_map__fd(m) < 0) continue;                     // not created (kernel splice off)
        Napi::Object o = Napi::Object::New(env);
        o.Set("name", name);
        o.Set("type", libbpf_bpf_map_type_str(bpf_map__type(m)));
        o.Set("maxEntries", bpf_map__max_entries(m));
        bool fixed = bpf_map__type(m) == BPF_MAP_TYPE_ARRAY || bpf_map__type(m) == BPF_MAP_TYPE_PERCPU_ARRAY;
        o.Set("used", fixed ? bpf_map__max_entries(m) : CountEntries(m));
        maps.Set(i++, o);
      }
    }
    r.Set("programs", progs);
    r.Set("maps", maps);
    return r;
  }
};

// "return 1" as a cgroup sock_addr program for one attach type: the kernel rejects an
// expected_attach_type it does not know with EINVAL (getpeername hooks came in 5.8, after
// connect hooks). ProbeLoad's answer.
int ProbeSockAddrAttach(enum bpf_attach_type type) {
  struct bpf_insn insns[2];
  memset(insns, 0, sizeof(insns));
  insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K;  // r0 = 1
  insns[0].dst_reg = BPF_REG_0;
  insns[0].imm = 1;
  insns[1].code = BPF_JMP | BPF_EXIT;
  return ProbeLoad(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, type, insns, 2);
}

// probeFeatures(): what the kernel offers of what native/bpf/mesh.bpf.c uses, including what
// only --kernel-splice loads (the sk_skb stream verdict, the sockhash, its redirect helper).
// Raw results only; src/datapath/features.ts decides what is required and what to tell the operator.
Napi::Value ProbeFeatures(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array out = Napi::Array::New(env);
  uint32_t i = 0;
  auto add = [&](const char* kind, const char* name, int result) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("kind", kind);
    o.Set("name", name);
    o.Set("result", Napi::Number::New(env, result));
    out.Set(i++, o);
  };
  SignalsHeld held;  // probes load programs too
  // libbpf's probes read "not permitted" as "not supported" (and its helper probe as
  // "supported"): without the right to load programs, report every feature as not probed.
  int baseline = ProbeSockAddrAttach(BPF_CGROUP_INET4_CONNECT);
  if (baseline == -EPERM || baseline == -EACCES) {
    for (const char* n : {"cgroup_sock_addr", "sock_ops", "sk_skb"}) add("program", n, baseline);
    for (const char* n : {"connect4", "connect6", "getpeername4", "getpeername6", "sock_release"}) add("attach", n, baseline);
    for (const char* n : {"hash", "array", "lru_hash", "percpu_array", "sockhash"}) add("map", n, baseline);
    for (const char* n : {"get_current_ancestor_cgroup_id", "get_socket_cookie", "sock_ops_cb_flags_set", "sk_redirect_hash"}) add("helper", n, baseline);
    return out;
  }
  // libbpf logs failed probe loads as warnings; they are expected here.
  libbpf_print_fn_t prev = libbpf_set_print(nullptr);
  add("program", "cgroup_sock_addr", libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, nullptr));
  add("program", "sock_ops", libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SOCK_OPS, nullptr));
  add("program", "sk_skb", libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SK_SKB, nullptr));
  add("attach", "connect4", ProbeSockAddrAttach(BPF_CGROUP_INET4_CONNECT));
  add("attach", "connect6", ProbeSockAddrAttach(BPF_CGROUP_INET6_CONNECT));
  add("attach", "getpeername4", ProbeSockAddrAttach(BPF_CGROUP_INET4_GETPEERNAME));
  add("attach", "getpeername6", ProbeSockAddrAttach(BPF_CGROUP_INET6_GETPEERNAME));
  add("attach", "sock_release", ProbeSockRelease());
  add("map", "hash", libbpf_probe_bpf_map_type(BPF_MAP_TYPE_HASH, nullptr));
  add("map", "array", libbpf_probe_bpf_map_type(BPF_MAP_TYPE_ARRAY, nullptr));
  add("map", "lru_hash", libbpf_probe_bpf_map_type(BPF_MAP_TYPE_LRU_HASH, nullptr));
  add("map", "percpu_array", libbpf_probe_bpf_map_type(BPF_MAP_TYPE_PERCPU_ARRAY, nullptr));
  add("map", "sockhash", libbpf_probe_bpf_map_type(BPF_MAP_TYPE_SOCKHASH, nullptr));
  add("helper", "get_current_ancestor_cgroup_id",
      libbpf_probe_bpf_helper(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_FUNC_get_current_ancestor_cgroup_id, nullptr));
  add("helper", "get_socket_cookie",
      libbpf_probe_bpf_helper(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_FUNC_get_socket_cookie, nullptr));
  add("helper", "sock_ops_cb_flags_set",
      libbpf_probe_bpf_helper(BPF_PROG_TYPE_SOCK_OPS, BPF_FUNC_sock_ops_cb_flags_set, nullptr));
  add("helper", "sk_redirect_hash",
      libbpf_probe_bpf_helper(BPF_PROG_TYPE_SK_SKB, BPF_FUNC_sk_redirect_hash, nullptr));
  libbpf_set_print(prev);
  return out;
}

// shutdownWrite(fd) -> 0 or -errno: sends the socket's FIN now. libuv's own shutdown waits
// for the stream to poll writable on a later loop turn; by then an HTTP/1 client that asked
// to close has usually closed first, and the TIME_WAIT lands in its pod (src/proxy/fin-now.ts).
Napi::Value ShutdownWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) {
    Napi::TypeError::New(env, "shutdownWrite(fd) needs a socket file descriptor").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  return Napi::Number::New(env, shutdown(fd, SHUT_WR) == 0 ? 0 : -errno);
}

// setCork(fd, on) -> 0 or -errno: TCP_CORK, so a response's last bytes and the FIN that
// shutdownWrite() sends right after leave in one segment (src/proxy/fin-now.ts).
Napi::Value SetCork(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber() || !info[1].IsBoolean()) {
    Napi::TypeError::New(env, "setCork(fd, on) needs a socket file descriptor and a boolean").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  int on = info[1].As<Napi::Boolean>().Value() ? 1 : 0;
  return Napi::Number::New(env, setsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, sizeof(on)) == 0 ? 0 : -errno);
}

// Inbound capture (src/datapath/inbound-capture.ts): the kernel's TPROXY hands the agent
// connections addressed to its pods, so the agent's sockets use addresses that are not its own.
// Node cannot set IP_TRANSPARENT before bind/listen/connect, hence these two.

#ifndef IP_TRANSPARENT
#define IP_TRANSPARENT 19
#endif
#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

bool SockAddr4(const Napi::Value& ip, uint32_t port, sockaddr_in* sa) {
  memset(sa, 0, sizeof(*sa));
  sa->sin_family = AF_INET;
  sa->sin_port = htons(port);
  return ParseIp4(ip, &sa->sin_addr.s_addr);
}

// listenTransparent(ip, port, reusePort) -> fd of a listening TCP socket with IP_TRANSPARENT,
// for net.Server#listen({ fd }). TPROXY only hands connections to transparent listeners.
Napi::Value ListenTransparent(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  sockaddr_in sa;
  uint32_t port = info[1].ToNumber().Uint32Value();
  if (!SockAddr4(info[0], port, &sa) || port > 65535) {
    Napi::TypeError::New(env, "listenTransparent(ip, port, reusePort) needs an IPv4 address and a port").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    MakeError(env, "creating the inbound listener", errno).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int one = 1;
  const char* step = nullptr;
  if (setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one))) step = "setting IP_TRANSPARENT on the inbound listener (needs CAP_NET_ADMIN)";
  else if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one))) step = "setting SO_REUSEADDR on the inbound listener";
  else if (info[2].ToBoolean().Value() && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one))) step = "setting SO_REUSEPORT on the inbound listener";
  else if (bind(fd, (sockaddr*)&sa, sizeof(sa))) step = "binding the inbound listener";
  else if (listen(fd, 511)) step = "listening on the inbound address";
  if (step) {
    int err = errno;
    close(fd);
    Napi::Error e = MakeError(env, step, err);
    e.ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::Number::New(env, fd);
}

// transparentSocket(sourceIp) -> fd of an unconnected TCP socket bound to sourceIp (port chosen
// at connect), with IP_TRANSPARENT: the pod sees the real client's address. The caller wraps it
// in a net.Socket and connects it.
Napi::Value TransparentSocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  sockaddr_in sa;
  if (!SockAddr4(info[0], 0, &sa)) {
    Napi::TypeError::New(env, "transparentSocket(sourceIp) needs an IPv4 address").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    MakeError(env, "creating a transparent upstream socket", errno).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int one = 1;
  const char* step = nullptr;
  if (setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one))) step = "setting IP_TRANSPARENT on an upstream socket (needs CAP_NET_ADMIN)";
  else if (setsockopt(fd, SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one))) step = "setting IP_BIND_ADDRESS_NO_PORT on an upstream socket";
  else if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))) step = "setting TCP_NODELAY on an upstream socket";
  else if (bind(fd, (sockaddr*)&sa, sizeof(sa))) step = "binding an upstream socket to the client's address";
  if (step) {
    int err = errno;
    close(fd);
    MakeError(env, step, err).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::Number::New(env, fd);
}

// A proxy worker thread's handle on the maps the main thread's Datapath loaded: the same
// lookups and splices, on the fds mapFds() gave (fds belong to the process, not a thread).
// Owns nothing: the Datapath closes the maps, after which calls fail as with EBADF.
class MapView : public Napi::ObjectWrap<MapView> {
 public:
  static void Init(Napi::Env env, Napi::Object exports) {
    exports.Set("MapView", DefineClass(env, "MapView",
        {
            InstanceMethod("lookup", &MapView::Lookup),
            InstanceMethod("lookupSocket", &MapView::LookupSocket),
            InstanceMethod("splice", &MapView::Splice),
            InstanceMethod("unsplice", &MapView::Unsplice),
            InstanceMethod("splicedBytes", &MapView::SplicedBytes),
            InstanceMethod("sentBytes", &MapView::SentBytes),
        }));
  }

  explicit MapView(const Napi::CallbackInfo& info) : Napi::ObjectWrap<MapView>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) {
      Napi::TypeError::New(env, "new MapView(fds) needs the object Datapath.mapFds() returned").ThrowAsJavaScriptException();
      return;
    }
    Napi::Object o = info[0].As<Napi::Object>();
    tuple_ = o.Get("tuple").ToNumber().Int32Value();
    pending_ = o.Get("pending").IsNumber() ? o.Get("pending").ToNumber().Int32Value() : -1;
    splice_ = o.Get("splice").IsNumber() ? o.Get("splice").ToNumber().Int32Value() : -1;
    links_ = o.Get("spliceLinks").IsNumber() ? o.Get("spliceLinks").ToNumber().Int32Value() : -1;
    if (tuple_ < 0 || pending_ < 0)
      Napi::TypeError::New(env, "new MapView(fds): no tuple or pending map fd; pass what Datapath.mapFds() returned").ThrowAsJavaScriptException();
  }

 private:
  int tuple_ = -1, pending_ = -1, splice_ = -1, links_ = -1;
  bool SpliceReady(Napi::Env env) {
    if (splice_ >= 0 && links_ >= 0) return true;
    Napi::Error::New(env, "kernel splice is off; load({ kernelSplice: true }) (mesh-agent run --kernel-splice)").ThrowAsJavaScriptException();
    return false;
  }
  Napi::Value Lookup(const Napi::CallbackInfo& info) { return mapops::Lookup(info, tuple_, pending_); }
  Napi::Value LookupSocket(const Napi::CallbackInfo& info) { return mapops::LookupSocket(info, tuple_, pending_); }
  Napi::Value Splice(const Napi::CallbackInfo& info) {
    return SpliceReady(info.Env()) ? mapops::Splice(info, splice_, links_) : info.Env().Undefined();
  }
  Napi::Value Unsplice(const Napi::CallbackInfo& info) {
    return SpliceReady(info.Env()) ? mapops::Unsplice(info, splice_, links_) : info.Env().Undefined();
  }
  Napi::Value SplicedBytes(const Napi::CallbackInfo& info) {
    return SpliceReady(info.Env()) ? mapops::SplicedBytes(info, links_) : info.Env().Undefined();
  }
  Napi::Value SentBytes(const Napi::CallbackInfo& info) { return mapops::SentBytes(info); }
};

Napi::Object InitAll(Napi::Env env, Napi::Object exports) {
  InitSocketIo(env, exports);
  exports.Set("probeFeatures", Napi::Function::New(env, ProbeFeatures, "probeFeatures"));
  exports.Set("shutdownWrite", Napi::Function::New(env, ShutdownWrite, "shutdownWrite"));
  exports.Set("setCork", Napi::Function::New(env, SetCork, "setCork"));
  exports.Set("listenTransparent", Napi::Function::New(env, ListenTransparent, "listenTransparent"));
  exports.Set("transparentSocket", Napi::Function::New(env, TransparentSocket, "transparentSocket"));
  MapView::Init(env, exports);
  return Datapath::Init(env, exports);
}

}  // namespace

NODE_API_MODULE(mesh_bpf, InitAll)
