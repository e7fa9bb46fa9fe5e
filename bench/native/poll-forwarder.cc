// A bench spike, not product code (bench/h1-floor.ts, forwarders addon-c and addon-js): what a
// keep-alive HTTP/1 forwarder costs when its sockets are read and written from C++ on Node's own
// loop (libuv poll handles, no extra threads) instead of through Node's streams.
//
// JavaScript accepts and dials with `net`, then hands both connected fds over: pair() dup()s them
// (the caller then destroys its net.Sockets; the dups keep the connections) and from then on this
// file owns the pair. Each wake-up reads once into one buffer and writes what it read to the peer;
// what the peer does not take (a partial write, EAGAIN) is kept, the reading side stops, and the
// peer is polled for writable until it is flushed (backpressure). EOF or an error closes both.
//
// Two modes, set once by start():
//   - addon-c: no JavaScript per read (nginx's shape, the bound of this design).
//   - addon-js: each read calls one JavaScript function (pair id, direction, length) over a shared
//     ArrayBuffer the caller made once, then writes: the parsing stays in JavaScript, only the
//     socket I/O moved. It is called as Node calls a socket's read callback (a callback scope, so
//     the nextTick and microtask queues run after it), which a product would need.
#include <napi.h>
#include <uv.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unistd.h>

namespace {

constexpr size_t kBufSize = 64 * 1024;

struct Pair;

/** One socket of a pair: its poll handle and what waits to be written to it. */
struct Side {
  uv_poll_t poll;
  int fd = -1;
  int events = 0; // what the poll handle is started with now (0: stopped)
  std::string pending; // bytes read from the peer that this socket has not taken yet
  Pair* pair = nullptr;
  int index = 0; // 0: the client, 1: the upstream; a read from side d is direction d
};

struct Pair {
  Side side[2];
  uint32_t id = 0;
  bool closing = false;
  int open = 0; // poll handles not yet closed
};

struct State {
  napi_env env = nullptr;
  napi_ref onRead = nullptr; // addon-js: the function; addon-c: null
  napi_ref bufferRef = nullptr; // keeps the shared ArrayBuffer alive
  napi_async_context asyncContext = nullptr;
  uint8_t* buf = nullptr;
  size_t bufSize = 0;
  uint32_t nextId = 1;
  // Counters the bench prints: they show whether backpressure paths ran at all.
  double pairs = 0, reads = 0, writes = 0, partialWrites = 0, writableWakeups = 0, closes = 0;
};

State state;
uint8_t ownBuffer[kBufSize]; // addon-c's buffer

void onPoll(uv_poll_t* handle, int status, int events);

void onClosed(uv_handle_t* handle) {
  Side* s = static_cast<Side*>(handle->data);
  close(s->fd); // a poll handle does not own its fd
  if (--s->pair->open == 0) delete s->pair;
}

void closePair(Pair* p) {
  if (p->closing) return;
  p->closing = true;
  state.closes++;
  // Sides are initialized in order; pair() may close a pair whose second side never was.
  for (int i = 0, n = p->open; i < n; i++) uv_close(reinterpret_cast<uv_handle_t*>(&p->side[i].poll), onClosed);
}

/** Starts, changes or stops a side's poll to what it waits for now. */
void update(Side& s) {
  Side& peer = s.pair->side[1 - s.index];
  // Read only while the peer has taken everything read before (one read's worth in flight).
  int want = (peer.pending.empty() ? UV_READABLE : 0) | (s.pending.empty() ? 0 : UV_WRITABLE);
  if (want == s.events) return;
  s.events = want;
  int err = want ? uv_poll_start(&s.poll, want, onPoll) : uv_poll_stop(&s.poll);
  if (err < 0) closePair(s.pair);
}

/** Writes `data` to side `to`, keeping what it did not take. False: the pair is closed. */
bool send(Side& to, const uint8_t* data, size_t len) {
  ssize_t w = write(to.fd, data, len);
  state.writes++;
  if (w < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK) return closePair(to.pair), false;
    w = 0;
  }
  if (static_cast<size_t>(w) < len) {
    state.partialWrites++;
    to.pending.append(reinterpret_cast<const char*>(data) + w, len - w);
  }
  return true;
}

/** addon-js: hands the read to JavaScript as Node hands a socket read to its stream. */
bool callJs(Pair* p, int direction, ssize_t n) {
  napi_env env = state.env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value fn, recv, argv[3], result;
  napi_get_reference_value(env, state.onRead, &fn);
  napi_get_global(env, &recv); // napi_make_callback wants an object as `this`
  napi_create_uint32(env, p->id, &argv[0]);
  napi_create_uint32(env, static_cast<uint32_t>(direction), &argv[1]);
  napi_create_uint32(env, static_cast<uint32_t>(n), &argv[2]);
  napi_status st = napi_make_callback(env, state.asyncContext, recv, fn, 3, argv, &result);
  if (st == napi_pending_exception) {
    // A bench forwarder whose JavaScript throws must stop loudly, as an uncaught exception.
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
  napi_close_handle_scope(env, scope);
  return st == napi_ok;
}

void onPoll(uv_poll_t* handle, int status, int events) {
  Side& s = *static_cast<Side*>(handle->data);
  Pair* p = s.pair;
  if (p->closing) return;
  if (status < 0) return closePair(p);
  Side& peer = p->side[1 - s.index];
  if (events & UV_WRITABLE) {
    state.writableWakeups++;
    std::string rest;
    rest.swap(s.pending);
    if (!send(s, reinterpret_cast<const uint8_t*>(rest.data()), rest.size())) return;
    update(s);
    update(peer); // the peer may read again
  }
  if ((events & UV_READABLE) && peer.pending.empty()) {
    ssize_t n = read(s.fd, state.buf, state.bufSize);
    state.reads++;
    if (n == 0) return closePair(p);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
      return closePair(p);
    }
    if (state.onRead && (!callJs(p, s.index, n) || p->closing)) return closePair(p);
    if (!send(peer, state.buf, static_cast<size_t>(n))) return;
    if (!peer.pending.empty()) {
      update(peer);
      update(s);
    }
  }
}

/** start(buffer?, onRead?): addon-c with neither, addon-js with both. Once per process. */
Napi::Value Start(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (state.env) throw Napi::Error::New(env, "start() was already called in this process");
  state.env = env;
  if (info.Length() >= 2 && info[0].IsArrayBuffer() && info[1].IsFunction()) {
    Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
    state.buf = static_cast<uint8_t*>(ab.Data());
    state.bufSize = ab.ByteLength();
    napi_create_reference(env, ab, 1, &state.bufferRef);
    napi_create_reference(env, info[1], 1, &state.onRead);
    napi_value name;
    napi_create_string_utf8(env, "PollForwarderRead", NAPI_AUTO_LENGTH, &name);
    napi_async_init(env, nullptr, name, &state.asyncContext);
  } else if (info.Length() == 0) {
    state.buf = ownBuffer;
    state.bufSize = kBufSize;
  } else {
    throw Napi::TypeError::New(env, "start() takes nothing (addon-c) or an ArrayBuffer and a function (addon-js)");
  }
  if (state.bufSize == 0) throw Napi::RangeError::New(env, "start(): the shared ArrayBuffer is empty");
  return env.Undefined();
}

/** pair(clientFd, upstreamFd) -> id: dup()s both and forwards between the dups from now on. */
Napi::Value PairFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!state.env) throw Napi::Error::New(env, "call start() before pair()");
  if (info.Length() != 2 || !info[0].IsNumber() || !info[1].IsNumber()) throw Napi::TypeError::New(env, "pair(clientFd, upstreamFd) takes two fds");
  uv_loop_t* loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) throw Napi::Error::New(env, "napi_get_uv_event_loop failed");
  Pair* p = new Pair();
  p->id = state.nextId++;
  for (int i = 0; i < 2; i++) {
    Side& s = p->side[i];
    s.pair = p;
    s.index = i;
    // The dup shares the original's open file description, so it is nonblocking as Node made it.
    s.fd = dup(info[i].As<Napi::Number>().Int32Value());
    int err = s.fd < 0 ? -errno : uv_poll_init(loop, &s.poll, s.fd);
    if (err < 0) {
      if (s.fd >= 0) close(s.fd);
      std::string msg = std::string("pair(): ") + (s.fd < 0 ? "dup" : "uv_poll_init") + " of fd " + std::to_string(info[i].As<Napi::Number>().Int32Value()) + " failed: " + uv_strerror(err);
      if (p->open == 0) delete p;
      else closePair(p); // the first side's close callback frees the pair
      throw Napi::Error::New(env, msg);
    }
    s.poll.data = &s;
    p->open++;
  }
  for (Side& s : p->side) update(s);
  state.pairs++;
  return Napi::Number::New(env, p->id);
}

Napi::Value Stats(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("pairs", state.pairs);
  o.Set("reads", state.reads);
  o.Set("writes", state.writes);
  o.Set("partialWrites", state.partialWrites);
  o.Set("writableWakeups", state.writableWakeups);
  o.Set("closes", state.closes);
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("start", Napi::Function::New(env, Start));
  exports.Set("pair", Napi::Function::New(env, PairFds));
  exports.Set("stats", Napi::Function::New(env, Stats));
  return exports;
}

} // namespace

NODE_API_MODULE(poll_forwarder, Init)
