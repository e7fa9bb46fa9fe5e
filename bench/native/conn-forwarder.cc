// A bench spike, not product code (bench/conn-floor.ts, forwarders native-c and native-js): what
// a new TCP connection through an opaque forwarder costs when accept, the upstream dial and the
// relay are all done from C++ on Node's own loop (libuv poll handles, no extra threads), instead
// of net.Server, net.connect and Node's streams (issue 16, `conn-rate` and `cpu-conn`).
//
// listen() makes the listening socket here (socket, bind, listen) and polls it; each wake-up
// accepts with accept4() until EAGAIN (nginx's multi_accept). Each accepted client gets
// TCP_NODELAY, then (native-js) one call into JavaScript that picks the upstream, as the agent's
// lookup and routing would, over a shared Int32Array: [peer IPv4, peer port, upstream IPv4,
// upstream port] (IPv4 in host order; an upstream port of 0 refuses the connection). The dial is
// a nonblocking socket() + connect() with TCP_NODELAY, polled for writable, then
// getsockopt(SO_ERROR), as libuv and nginx do. The relay: one read() per wake-up into one buffer,
// written to the peer at once; what the peer does not take is kept, reading the other side
// stops and the peer is polled for writable (backpressure). Half-close is kept as the agent
// keeps it: a side's EOF shuts the peer's write side (after its kept bytes), and when both sides
// have read EOF the pair is closed without a second shutdown (the close sends that FIN). A short
// read with the poll's UV_DISCONNECT (EPOLLRDHUP) reads again at once for the FIN, as nginx does
// with its pending_eof, instead of waiting for another wake-up. Errors close both sides.
// At the close (native-js) one more call into JavaScript with the bytes each way, for telemetry.
// native-c makes neither call: the upstream is fixed at listen() (nginx's shape, the bound).
// native-c-et and native-js-et (useOwnEpoll() before listen()): the same, but the sockets are in
// an epoll set of the addon's own, each added once with EPOLLIN | EPOLLOUT | EPOLLRDHUP |
// EPOLLET and dropped by its close(), that set polled through one uv_poll handle on Node's loop:
// nginx's way. One uv_poll handle per socket costs epoll_ctl calls nginx does not make
// (uv_poll_init adds and removes the fd to check it, and sets it nonblocking again; each change
// of the events waited for is a MOD, a stop and a close a DEL).
//
// Calls into JavaScript go through napi_make_callback (a callback scope, so the nextTick and
// microtask queues run after each, as after Node's own socket callbacks), as a product would.
#include <napi.h>
#include <uv.h>

#include <arpa/inet.h>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

namespace {

constexpr size_t kBufSize = 64 * 1024;

struct Conn;

/** One socket of a connection: index 0 the client, 1 the upstream. */
struct Side {
  uv_poll_t poll;
  int fd = -1;
  int events = 0;        // what the poll handle waits for now (0: stopped)
  bool polled = false;   // uv_poll_init done (it needs a uv_close)
  bool eof = false;      // read() returned 0: this side sends nothing more
  bool shutAfterFlush = false; // the peer's EOF came while this side had bytes kept
  std::string pending;   // bytes for this side that its socket has not taken yet
  bool canRead = false;  // native-et: an edge said readable and no read has drained it since
  bool rdhup = false;    // native-et: the peer's FIN is queued (EPOLLRDHUP)
  Conn* conn = nullptr;
  int index = 0;
};

struct Conn {
  Side side[2];
  uint32_t id = 0;
  bool connecting = true;
  bool closing = false;
  bool failed = false;
  int open = 0; // poll handles not yet closed
  double bytes[2] = {0, 0}; // read from the client (to the upstream), from the upstream
};

struct State {
  napi_env env = nullptr;
  uv_loop_t* loop = nullptr;
  uv_poll_t listenPoll;
  int listenFd = -1;
  napi_ref onAccept = nullptr; // native-js: the functions; native-c: null
  napi_ref onClose = nullptr;
  napi_ref ioRef = nullptr;
  napi_async_context asyncContext = nullptr;
  int32_t* io = nullptr; // [peer ip, peer port, upstream ip, upstream port]
  uint32_t upIp = 0;     // native-c's fixed upstream, host order
  uint16_t upPort = 0;
  uint32_t nextId = 1;
  int epfd = -1; // native-et: the addon's own epoll set, polled through one uv_poll handle
  uv_poll_t epollPoll;
  std::vector<Conn*> dead; // native-et: closed during one batch of events, freed after it
  // Counters the bench prints: they show what ran.
  double accepted = 0, acceptWakeups = 0, dialed = 0, connected = 0, dialFailed = 0, refused = 0, closed = 0,
         errors = 0, reads = 0, rdhupReads = 0, writes = 0, partialWrites = 0, shutdowns = 0;
};

State state;
bool ownEpoll = false; // native-c-et: set by useOwnEpoll() before listen()
uint8_t buf[kBufSize];

void onPoll(uv_poll_t* handle, int status, int events);

/** A call into JavaScript as Node makes its socket callbacks; an exception there is fatal (a bench). */
void callJs(napi_ref fnRef, size_t argc, napi_value* argv) {
  napi_env env = state.env;
  napi_value fn, recv, result;
  napi_get_reference_value(env, fnRef, &fn);
  napi_get_global(env, &recv);
  if (napi_make_callback(env, state.asyncContext, recv, fn, argc, argv, &result) == napi_pending_exception) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
}

void onClosed(uv_handle_t* handle) {
  Side* s = static_cast<Side*>(handle->data);
  close(s->fd); // a poll handle does not own its fd
  if (--s->conn->open == 0) delete s->conn;
}

void closeConn(Conn* c, bool failed) {
  if (c->closing) return;
  c->closing = true;
  state.closed++;
  if (failed) state.errors++;
  if (state.onClose) {
    napi_handle_scope scope;
    napi_open_handle_scope(state.env, &scope);
    napi_value argv[4];
    napi_create_uint32(state.env, c->id, &argv[0]);
    napi_create_double(state.env, c->bytes[0], &argv[1]);
    napi_create_double(state.env, c->bytes[1], &argv[2]);
    napi_get_boolean(state.env, failed, &argv[3]);
    callJs(state.onClose, 4, argv);
    napi_close_handle_scope(state.env, scope);
  }
  if (state.epfd >= 0) { // native-et: close() takes each fd out of the epoll set
    for (Side& s : c->side) if (s.fd >= 0) close(s.fd);
    state.dead.push_back(c); // later events of this batch may still name it
    return;
  }
  int n = 0;
  for (Side& s : c->side) {
    if (s.polled) {
      n++;
      uv_close(reinterpret_cast<uv_handle_t*>(&s.poll), onClosed);
    } else if (s.fd >= 0) {
      close(s.fd);
    }
  }
  if (n == 0) delete c;
}

/** Starts, changes or stops a side's poll to what it waits for now. */
void update(Side& s) {
  Conn* c = s.conn;
  if (c->closing) return;
  Side& peer = c->side[1 - s.index];
  int want;
  if (c->connecting) want = s.index == 1 ? UV_WRITABLE : 0; // the client waits for the dial
  else want = (!s.eof && peer.pending.empty() ? UV_READABLE | UV_DISCONNECT : 0) | (s.pending.empty() ? 0 : UV_WRITABLE);
  if (want == s.events) return;
  s.events = want;
  int err = want ? uv_poll_start(&s.poll, want, onPoll) : uv_poll_stop(&s.poll);
  if (err < 0) closeConn(c, true);
}

/** Writes to side `to`, keeping what it does not take. False: the connection was closed. */
bool send(Side& to, const uint8_t* data, size_t len) {
  ssize_t w = write(to.fd, data, len);
  state.writes++;
  if (w < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK) return closeConn(to.conn, true), false;
    w = 0;
  }
  if (static_cast<size_t>(w) < len) {
    state.partialWrites++;
    to.pending.append(reinterpret_cast<const char*>(data) + w, len - w);
  }
  return true;
}

/** Side `s` will send nothing more: shut its peer's write side, or close when both are done. */
void onEof(Side& s) {
  Conn* c = s.conn;
  Side& peer = c->side[1 - s.index];
  s.eof = true;
  if (peer.eof && s.pending.empty() && peer.pending.empty()) return closeConn(c, false);
  if (!peer.pending.empty()) peer.shutAfterFlush = true;
  else {
    shutdown(peer.fd, SHUT_WR);
    state.shutdowns++;
  }
  update(s);
}

/** The dial finished: true once connected; false when it failed (the connection is closed). */
bool dialDone(Conn* c) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(c->side[1].fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
  if (err != 0) {
    state.dialFailed++;
    closeConn(c, true);
    return false;
  }
  state.connected++;
  c->connecting = false;
  return true;
}

void connected(Conn* c) {
  if (!dialDone(c)) return;
  update(c->side[0]);
  update(c->side[1]);
}

void pumpEt(Side& s);

/** native-et: the dial finished; relay what either side already has. */
void connectedEt(Conn* c) {
  if (!dialDone(c)) return;
  pumpEt(c->side[1]);
  pumpEt(c->side[0]);
}

void onPoll(uv_poll_t* handle, int status, int events) {
  Side& s = *static_cast<Side*>(handle->data);
  Conn* c = s.conn;
  if (c->closing) return;
  if (c->connecting) return connected(c); // an error status shows in SO_ERROR too
  if (status < 0) return closeConn(c, true);
  Side& peer = c->side[1 - s.index];
  if (events & UV_WRITABLE) {
    std::string rest;
    rest.swap(s.pending);
    if (!send(s, reinterpret_cast<const uint8_t*>(rest.data()), rest.size())) return;
    if (s.pending.empty() && s.shutAfterFlush) {
      s.shutAfterFlush = false;
      if (peer.eof && s.eof) return closeConn(c, false);
      shutdown(s.fd, SHUT_WR);
      state.shutdowns++;
    }
    update(s);
    update(peer); // the peer may read again
  }
  if (!(events & (UV_READABLE | UV_DISCONNECT)) || s.eof || !peer.pending.empty()) return;
  for (int attempt = 0; attempt < 2; attempt++) {
    ssize_t n = read(s.fd, buf, kBufSize);
    state.reads++;
    if (attempt == 1) state.rdhupReads++;
    if (n == 0) return onEof(s);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
      return closeConn(c, true);
    }
    c->bytes[s.index] += n;
    if (!send(peer, buf, static_cast<size_t>(n))) return;
    if (!peer.pending.empty()) {
      update(peer);
      update(s);
      return;
    }
    // A short read with the peer's FIN pending: read it now rather than on another wake-up.
    if (static_cast<size_t>(n) == kBufSize || !(events & UV_DISCONNECT)) return;
  }
}

/** native-et: adds a socket to the addon's epoll set once, edge-triggered, for all it may wait for (nginx's way). */
void watch(Side& s) {
  epoll_event e{};
  e.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  e.data.ptr = &s;
  if (epoll_ctl(state.epfd, EPOLL_CTL_ADD, s.fd, &e) < 0) closeConn(s.conn, true);
}

/** native-et: reads side `s` while an edge said readable and its peer takes what it reads. */
void pumpEt(Side& s) {
  Conn* c = s.conn;
  Side& peer = c->side[1 - s.index];
  while (!c->closing && s.canRead && !s.eof && peer.pending.empty()) {
    ssize_t n = read(s.fd, buf, kBufSize);
    state.reads++;
    if (n == 0) {
      s.canRead = false;
      s.eof = true;
      if (peer.eof && s.pending.empty()) return closeConn(c, false);
      if (!peer.pending.empty()) peer.shutAfterFlush = true;
      else {
        shutdown(peer.fd, SHUT_WR);
        state.shutdowns++;
      }
      return;
    }
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) s.canRead = false;
      else if (errno != EINTR) closeConn(c, true);
      return;
    }
    c->bytes[s.index] += n;
    if (!send(peer, buf, static_cast<size_t>(n))) return;
    // A short read took all there was: the next data or FIN is a new edge. With the FIN queued
    // already (EPOLLRDHUP), read it now, as nginx's pending_eof does.
    if (static_cast<size_t>(n) < kBufSize) {
      if (s.rdhup) state.rdhupReads++;
      else s.canRead = false;
    }
  }
}

/** native-et: flushes what side `s` kept, then shuts it if its peer's EOF waited for that. */
void flushEt(Side& s) {
  Conn* c = s.conn;
  if (s.pending.empty() || c->closing) return;
  std::string rest;
  rest.swap(s.pending);
  if (!send(s, reinterpret_cast<const uint8_t*>(rest.data()), rest.size())) return;
  if (s.pending.empty() && s.shutAfterFlush) {
    s.shutAfterFlush = false;
    Side& peer = c->side[1 - s.index];
    if (peer.eof && s.eof) return closeConn(c, false);
    shutdown(s.fd, SHUT_WR);
    state.shutdowns++;
  }
}

/** native-et: the epoll set is readable: take a batch of events and act on each. */
void onEpoll(uv_poll_t*, int status, int) {
  if (status < 0) return;
  epoll_event ev[256];
  int n = epoll_wait(state.epfd, ev, 256, 0);
  for (int i = 0; i < n; i++) {
    Side& s = *static_cast<Side*>(ev[i].data.ptr);
    Conn* c = s.conn;
    if (c->closing) continue;
    uint32_t e = ev[i].events;
    if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) s.canRead = true;
    if (e & (EPOLLRDHUP | EPOLLHUP)) s.rdhup = true;
    if (c->connecting) {
      if (s.index == 1 && (e & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        connectedEt(c);
      }
      continue;
    }
    Side& peer = c->side[1 - s.index];
    if (e & EPOLLOUT) {
      flushEt(s);
      pumpEt(peer); // the peer may read again now that this side took its bytes
    }
    pumpEt(s);
  }
  for (Conn* c : state.dead) delete c;
  state.dead.clear();
}

/** Dials the upstream for a client accepted and set up; the connection is closed on failure. */
void dial(Conn* c, uint32_t ip, uint16_t port) {
  Side& up = c->side[1];
  state.dialed++;
  up.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (up.fd < 0) return closeConn(c, true);
  int one = 1;
  setsockopt(up.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr.s_addr = htonl(ip);
  to.sin_port = htons(port);
  if (connect(up.fd, reinterpret_cast<sockaddr*>(&to), sizeof to) < 0 && errno != EINPROGRESS) {
    state.dialFailed++;
    return closeConn(c, true);
  }
  if (state.epfd >= 0) return watch(up);
  if (uv_poll_init(state.loop, &up.poll, up.fd) < 0) return closeConn(c, true);
  up.polled = true;
  up.poll.data = &up;
  c->open++;
  update(up); // writable once connected (libuv does the same for a pending connect)
}

void onListen(uv_poll_t*, int status, int) {
  if (status < 0) return;
  state.acceptWakeups++;
  for (;;) {
    sockaddr_in peer{};
    socklen_t len = sizeof peer;
    int fd = accept4(state.listenFd, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return; // EAGAIN: all taken; EMFILE and the like: the next wake-up tries again
    state.accepted++;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    Conn* c = new Conn();
    c->id = state.nextId++;
    for (int i = 0; i < 2; i++) {
      c->side[i].conn = c;
      c->side[i].index = i;
      c->side[i].poll.data = &c->side[i];
    }
    Side& client = c->side[0];
    client.fd = fd;
    if (state.epfd >= 0) {
      watch(client);
      if (c->closing) continue;
    } else if (uv_poll_init(state.loop, &client.poll, fd) < 0) {
      closeConn(c, true);
      continue;
    } else {
      client.polled = true;
      c->open++;
    }
    uint32_t upIp = state.upIp;
    uint16_t upPort = state.upPort;
    if (state.onAccept) {
      state.io[0] = static_cast<int32_t>(ntohl(peer.sin_addr.s_addr));
      state.io[1] = ntohs(peer.sin_port);
      state.io[2] = 0;
      state.io[3] = 0;
      napi_handle_scope scope;
      napi_open_handle_scope(state.env, &scope);
      napi_value argv[1];
      napi_create_uint32(state.env, c->id, &argv[0]);
      callJs(state.onAccept, 1, argv);
      napi_close_handle_scope(state.env, scope);
      upIp = static_cast<uint32_t>(state.io[2]);
      upPort = static_cast<uint16_t>(state.io[3]);
      if (upPort == 0) {
        state.refused++;
        closeConn(c, false);
        continue;
      }
    }
    dial(c, upIp, upPort);
  }
}

/**
 * listen(ip, upstreamIp, upstreamPort[, io, onAccept, onClose]) -> port. IPv4 addresses as host-order
 * numbers; port 0 picked by the kernel. With io (an Int32Array of 4) and both functions: native-js.
 */
Napi::Value Listen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (state.env) throw Napi::Error::New(env, "listen() was already called in this process");
  if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsNumber()) {
    throw Napi::TypeError::New(env, "listen(ip, upstreamIp, upstreamPort[, io, onAccept, onClose]) takes host-order IPv4 numbers and a port");
  }
  bool js = info.Length() == 6;
  if (js && (!info[3].IsTypedArray() || info[3].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array ||
             info[3].As<Napi::TypedArray>().ElementLength() < 4 || !info[4].IsFunction() || !info[5].IsFunction())) {
    throw Napi::TypeError::New(env, "listen(): native-js wants an Int32Array of 4 and two functions (onAccept, onClose)");
  }
  if (napi_get_uv_event_loop(env, &state.loop) != napi_ok) throw Napi::Error::New(env, "napi_get_uv_event_loop failed");
  state.env = env;
  state.upIp = info[1].As<Napi::Number>().Uint32Value();
  state.upPort = static_cast<uint16_t>(info[2].As<Napi::Number>().Uint32Value());
  if (js) {
    Napi::Int32Array io = info[3].As<Napi::Int32Array>();
    state.io = io.Data();
    napi_create_reference(env, io, 1, &state.ioRef);
    napi_create_reference(env, info[4], 1, &state.onAccept);
    napi_create_reference(env, info[5], 1, &state.onClose);
    napi_value name;
    napi_create_string_utf8(env, "ConnForwarder", NAPI_AUTO_LENGTH, &name);
    napi_async_init(env, nullptr, name, &state.asyncContext);
  }
  if (ownEpoll) {
    state.epfd = epoll_create1(EPOLL_CLOEXEC);
    int e = state.epfd < 0 ? -errno : uv_poll_init(state.loop, &state.epollPoll, state.epfd);
    if (e == 0) e = uv_poll_start(&state.epollPoll, UV_READABLE, onEpoll);
    if (e < 0) throw Napi::Error::New(env, std::string("listen(): the addon's epoll set: ") + uv_strerror(e));
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(info[0].As<Napi::Number>().Uint32Value());
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0 || listen(fd, 4096) < 0) {
    std::string msg = std::string("listen(): ") + strerror(errno);
    if (fd >= 0) close(fd);
    throw Napi::Error::New(env, msg);
  }
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  state.listenFd = fd;
  int err = uv_poll_init(state.loop, &state.listenPoll, fd);
  if (err == 0) err = uv_poll_start(&state.listenPoll, UV_READABLE, onListen);
  if (err < 0) throw Napi::Error::New(env, std::string("listen(): uv_poll of the listening socket failed: ") + uv_strerror(err));
  return Napi::Number::New(env, ntohs(addr.sin_port));
}

/** useOwnEpoll(): before listen(), drive the sockets through an epoll set of the addon's own (native-c-et). */
Napi::Value UseOwnEpoll(const Napi::CallbackInfo& info) {
  if (state.env) throw Napi::Error::New(info.Env(), "useOwnEpoll() comes before listen()");
  ownEpoll = true;
  return info.Env().Undefined();
}

Napi::Value Stats(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("accepted", state.accepted);
  o.Set("acceptWakeups", state.acceptWakeups);
  o.Set("dialed", state.dialed);
  o.Set("connected", state.connected);
  o.Set("dialFailed", state.dialFailed);
  o.Set("refused", state.refused);
  o.Set("closed", state.closed);
  o.Set("errors", state.errors);
  o.Set("reads", state.reads);
  o.Set("rdhupReads", state.rdhupReads);
  o.Set("writes", state.writes);
  o.Set("partialWrites", state.partialWrites);
  o.Set("shutdowns", state.shutdowns);
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("listen", Napi::Function::New(env, Listen));
  exports.Set("useOwnEpoll", Napi::Function::New(env, UseOwnEpoll));
  exports.Set("stats", Napi::Function::New(env, Stats));
  return exports;
}

} // namespace

NODE_API_MODULE(conn_forwarder, Init)
