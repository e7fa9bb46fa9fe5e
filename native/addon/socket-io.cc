// Sockets driven from C++ on Node's own loop (`mesh-agent run --native-io`, src/proxy/native-socket.ts).
//
// A connected TCP socket's fd is dup()ed and from then on read and written here through a libuv
// poll handle on the calling thread's loop (no other thread): one read() per wake-up into one
// ArrayBuffer the JavaScript side made once, then one call into JavaScript (a callback scope, so
// the nextTick and microtask queues run after it, as after Node's own socket reads). A write goes
// to the kernel at once; what it does not take is kept here and the fd polled for writable. The
// JavaScript side gets events: data (length), EOF, drained, write side shut, error (errno and
// the call that failed, so a message reads as Node's own: "write EPIPE", "read ECONNRESET").
// Everything is per thread (per Node-API env): each proxy worker has its own set.
// Measured against Node's streams in docs/benchmarks.md ("The floor with the sockets driven from C++").
#include <napi.h>
#include <uv.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string>
#include <sys/socket.h>
#include <unistd.h>
#include <unordered_map>

namespace {

// Event kinds passed to the JavaScript function (keep in step with native-socket.ts).
constexpr uint32_t kData = 0;    // value: bytes read into the shared buffer
constexpr uint32_t kEof = 1;     // the peer's FIN
constexpr uint32_t kDrain = 2;   // what write() kept has all gone to the kernel
constexpr uint32_t kFinish = 3;  // the write side is shut (end() completed)
constexpr uint32_t kError = 4;   // value: errno | (the failed call << 16)

// The call an error came from, in kError's high half (keep in step with native-socket.ts).
constexpr uint32_t kOpRead = 0;
constexpr uint32_t kOpWrite = 1;
constexpr uint32_t kOpShutdown = 2;

struct IoState;

struct Sock {
  uv_poll_t poll;
  int fd = -1;
  uint32_t id = 0;
  IoState* st = nullptr;
  int events = 0;          // what the poll handle waits for now (0: stopped)
  bool reading = false;    // JavaScript wants reads (resume/pause)
  // Paused but still polled for readable: a pause is usually short (the forwarder pauses its
  // client for each exchange), and changing a poll handle's events costs epoll_ctl calls
  // (libuv deletes and re-adds the fd). The poll drops readable only if data comes while paused.
  bool lazyRead = false;
  bool eof = false;        // read() returned 0: nothing more to read
  bool endAfterFlush = false; // end() was called with bytes still kept
  bool failed = false;     // an error was reported: no more I/O
  bool closing = false;
  std::string pending;     // bytes write() could not hand to the kernel yet
  size_t pendingOff = 0;
};

struct IoState {
  napi_env env = nullptr;
  napi_ref onEvent = nullptr;
  napi_ref bufferRef = nullptr;
  napi_async_context asyncContext = nullptr;
  uint8_t* buf = nullptr;
  size_t bufSize = 0;
  uint32_t nextId = 1;
  std::unordered_map<uint32_t, Sock*> socks;
  // Socks not freed yet, those closing included: their poll handles' close callbacks are this
  // addon's code, so the env's teardown waits for them (asyncCleanup) before it may unload it.
  size_t unfreed = 0;
  bool tearingDown = false;
  napi_async_cleanup_hook_handle cleanupHandle = nullptr;
};

void finishCleanup(IoState* st);

void onPoll(uv_poll_t* handle, int status, int events);

void onClosed(uv_handle_t* handle) {
  Sock* s = static_cast<Sock*>(handle->data);
  IoState* st = s->st;
  close(s->fd); // a poll handle does not own its fd
  delete s;
  if (--st->unfreed == 0 && st->tearingDown) finishCleanup(st);
}

void closeSock(Sock* s, bool reset) {
  if (s->closing) return;
  s->closing = true;
  s->st->socks.erase(s->id);
  if (reset) {
    // RST instead of FIN: close() with a zero linger drops what is queued and resets.
    struct linger l = {1, 0};
    setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&s->poll), onClosed);
}

/** Calls the JavaScript event function as Node calls a socket's read callback. False: the socket is gone. */
bool emit(Sock* s, uint32_t kind, uint32_t value) {
  IoState* st = s->st;
  napi_env env = st->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value fn, recv, argv[3], result;
  napi_get_reference_value(env, st->onEvent, &fn);
  napi_get_global(env, &recv);
  napi_create_uint32(env, s->id, &argv[0]);
  napi_create_uint32(env, kind, &argv[1]);
  napi_create_uint32(env, value, &argv[2]);
  napi_status rc = napi_make_callback(env, st->asyncContext, recv, fn, 3, argv, &result);
  if (rc == napi_pending_exception) {
    // The JavaScript side catches its own errors; one that escapes is an uncaught exception, as in Node.
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
  napi_close_handle_scope(env, scope);
  return !s->closing;
}

/** Starts, changes or stops the poll to what the socket waits for now. */
void update(Sock* s) {
  if (s->closing) return;
  bool read = (s->reading || s->lazyRead) && !s->eof;
  int want = s->failed ? 0 : (read ? UV_READABLE : 0) | (s->pending.size() > s->pendingOff ? UV_WRITABLE : 0);
  if (want == s->events) return;
  s->events = want;
  if (want) uv_poll_start(&s->poll, want, onPoll);
  else uv_poll_stop(&s->poll);
}

/** Reports an error once and stops all I/O; JavaScript destroys the socket. */
void fail(Sock* s, int err, uint32_t op) {
  if (s->failed) return;
  s->failed = true;
  update(s);
  emit(s, kError, (static_cast<uint32_t>(err) & 0xffff) | (op << 16));
}

/** Writes as much as the kernel takes; returns the bytes it did not, or -errno. */
ssize_t writeNow(int fd, const uint8_t* data, size_t len, size_t* taken) {
  size_t off = 0;
  while (off < len) {
    ssize_t w = send(fd, data + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      *taken = off;
      return -errno;
    }
    off += static_cast<size_t>(w);
  }
  *taken = off;
  return static_cast<ssize_t>(len - off);
}

/** Shuts the write side (our FIN); the other direction stays open. */
int shutWrite(Sock* s) {
  if (shutdown(s->fd, SHUT_WR) < 0 && errno != ENOTCONN) return -errno;
  return 0;
}

void flush(Sock* s) {
  size_t taken = 0;
  const uint8_t* p = reinterpret_cast<const uint8_t*>(s->pending.data()) + s->pendingOff;
  ssize_t left = writeNow(s->fd, p, s->pending.size() - s->pendingOff, &taken);
  if (left < 0) return fail(s, static_cast<int>(-left), kOpWrite);
  s->pendingOff += taken;
  if (left > 0) return;
  s->pending.clear();
  s->pendingOff = 0;
  update(s);
  if (s->endAfterFlush) {
    s->endAfterFlush = false;
    int rc = shutWrite(s);
    if (rc < 0) return fail(s, -rc, kOpShutdown);
    if (!emit(s, kFinish, 0)) return;
  }
  emit(s, kDrain, 0);
}

void onPoll(uv_poll_t* handle, int status, int events) {
  Sock* s = static_cast<Sock*>(handle->data);
  if (s->closing || s->failed) return;
  if (status < 0) {
    // libuv reports POLLERR as UV_EBADF; the socket's own error is the one that happened. It
    // belongs to the bytes still to send when there are some (Node would fail that write),
    // else to the reading that was waiting.
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err == 0) err = -status;
    return fail(s, err, s->pending.size() > s->pendingOff ? kOpWrite : kOpRead);
  }
  if (events & UV_WRITABLE) {
    flush(s);
    if (s->closing || s->failed) return;
  }
  if ((events & UV_READABLE) && !s->reading && s->lazyRead) {
    s->lazyRead = false; // data while paused: stop polling for it until resumed
    update(s);
    return;
  }
  if ((events & UV_READABLE) && s->reading && !s->eof) {
    IoState* st = s->st;
    ssize_t n = read(s->fd, st->buf, st->bufSize);
    if (n > 0) {
      emit(s, kData, static_cast<uint32_t>(n));
    } else if (n == 0) {
      s->eof = true;
      update(s);
      emit(s, kEof, 0);
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      fail(s, errno, kOpRead);
    }
  }
}

IoState* stateOf(const Napi::CallbackInfo& info) { return static_cast<IoState*>(info.Data()); }

Sock* sockArg(const Napi::CallbackInfo& info, const char* fn) {
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(fn) + "(id, ...) needs the id ioAdopt() returned");
  auto& m = stateOf(info)->socks;
  auto it = m.find(info[0].As<Napi::Number>().Uint32Value());
  return it == m.end() ? nullptr : it->second;
}

/** ioInit(buffer, onEvent(id, kind, value)): once per thread, before ioAdopt. */
Napi::Value IoInit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  IoState* st = stateOf(info);
  if (st->onEvent) throw Napi::Error::New(env, "ioInit() was already called on this thread");
  if (info.Length() != 2 || !info[0].IsArrayBuffer() || !info[1].IsFunction()) throw Napi::TypeError::New(env, "ioInit(buffer, onEvent) needs an ArrayBuffer and a function");
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  if (ab.ByteLength() == 0) throw Napi::RangeError::New(env, "ioInit(): the shared ArrayBuffer is empty");
  st->env = env;
  st->buf = static_cast<uint8_t*>(ab.Data());
  st->bufSize = ab.ByteLength();
  napi_create_reference(env, ab, 1, &st->bufferRef);
  napi_create_reference(env, info[1], 1, &st->onEvent);
  napi_value name;
  napi_create_string_utf8(env, "MeshNativeSocket", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, nullptr, name, &st->asyncContext);
  return env.Undefined();
}

/** ioAdopt(fd) -> id: dup()s a connected socket's fd; the caller may then close its own. Not reading yet. */
Napi::Value IoAdopt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  IoState* st = stateOf(info);
  if (!st->onEvent) throw Napi::Error::New(env, "call ioInit() before ioAdopt()");
  if (info.Length() != 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "ioAdopt(fd) needs a socket file descriptor");
  int from = info[0].As<Napi::Number>().Int32Value();
  uv_loop_t* loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) throw Napi::Error::New(env, "ioAdopt(): napi_get_uv_event_loop failed");
  int fd = fcntl(from, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) throw Napi::Error::New(env, "ioAdopt(): dup of fd " + std::to_string(from) + " failed: " + strerror(errno));
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
    int e = errno;
    close(fd);
    throw Napi::Error::New(env, std::string("ioAdopt(): O_NONBLOCK failed: ") + strerror(e));
  }
  Sock* s = new Sock();
  s->fd = fd;
  s->st = st;
  int err = uv_poll_init(loop, &s->poll, fd);
  if (err < 0) {
    close(fd);
    delete s;
    throw Napi::Error::New(env, std::string("ioAdopt(): uv_poll_init failed: ") + uv_strerror(err));
  }
  s->poll.data = s;
  st->unfreed++;
  do s->id = st->nextId++; while (s->id == 0 || st->socks.count(s->id));
  st->socks[s->id] = s;
  return Napi::Number::New(env, s->id);
}

/** ioRead(id, on): start or stop reading. */
Napi::Value IoRead(const Napi::CallbackInfo& info) {
  Sock* s = sockArg(info, "ioRead");
  if (s) {
    bool on = info.Length() > 1 && info[1].ToBoolean().Value();
    s->lazyRead = !on && (s->reading || s->lazyRead);
    s->reading = on;
    update(s);
  }
  return info.Env().Undefined();
}

/**
 * ioWrite(id, bytes) -> bytes kept (0: the kernel took all) or -errno. Kept bytes are written
 * when the socket turns writable, and a drain event follows.
 */
Napi::Value IoWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Sock* s = sockArg(info, "ioWrite");
  if (info.Length() < 2 || !info[1].IsTypedArray()) throw Napi::TypeError::New(env, "ioWrite(id, bytes) needs a Uint8Array");
  if (!s || s->failed) return Napi::Number::New(env, -EPIPE);
  Napi::Uint8Array b = info[1].As<Napi::Uint8Array>();
  const uint8_t* data = b.Data();
  size_t len = b.ByteLength();
  if (s->pending.size() > s->pendingOff) {
    s->pending.append(reinterpret_cast<const char*>(data), len); // behind what waits, in order
    return Napi::Number::New(env, static_cast<double>(s->pending.size() - s->pendingOff));
  }
  size_t taken = 0;
  ssize_t left = writeNow(s->fd, data, len, &taken);
  if (left < 0) return Napi::Number::New(env, static_cast<double>(left));
  if (left > 0) {
    s->pending.assign(reinterpret_cast<const char*>(data) + taken, static_cast<size_t>(left));
    s->pendingOff = 0;
    update(s);
  }
  return Napi::Number::New(env, static_cast<double>(left));
}

/** ioEnd(id) -> 0: FIN sent now; 1: after the kept bytes (a finish event follows); -errno. */
Napi::Value IoEnd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Sock* s = sockArg(info, "ioEnd");
  if (!s || s->failed) return Napi::Number::New(env, -EPIPE);
  if (s->pending.size() > s->pendingOff) {
    s->endAfterFlush = true;
    return Napi::Number::New(env, 1);
  }
  return Napi::Number::New(env, shutWrite(s));
}

/** ioCork(id, on) -> 0 or -errno: TCP_CORK, so the last bytes and the FIN leave as one segment (fin-now.ts). */
Napi::Value IoCork(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Sock* s = sockArg(info, "ioCork");
  if (!s) return Napi::Number::New(env, -EBADF);
  int on = info.Length() > 1 && info[1].ToBoolean().Value() ? 1 : 0;
  return Napi::Number::New(env, setsockopt(s->fd, IPPROTO_TCP, TCP_CORK, &on, sizeof on) < 0 ? -errno : 0);
}

/** ioNoDelay(id, on) -> 0 or -errno. */
Napi::Value IoNoDelay(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Sock* s = sockArg(info, "ioNoDelay");
  if (!s) return Napi::Number::New(env, -EBADF);
  int on = info.Length() > 1 && info[1].ToBoolean().Value() ? 1 : 0;
  return Napi::Number::New(env, setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) < 0 ? -errno : 0);
}

/** ioClose(id, reset): closes the fd (reset: RST, SO_LINGER 0); no event follows. */
Napi::Value IoClose(const Napi::CallbackInfo& info) {
  Sock* s = sockArg(info, "ioClose");
  if (s) closeSock(s, info.Length() > 1 && info[1].ToBoolean().Value());
  return info.Env().Undefined();
}

/** ioCount() -> sockets open on this thread (tests, status). */
Napi::Value IoCount(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(stateOf(info)->socks.size()));
}

/** The last Sock is freed during the env's teardown: the env may go on (and unload the addon). */
void finishCleanup(IoState* st) {
  napi_remove_async_cleanup_hook(st->cleanupHandle);
  delete st;
}

/**
 * The thread's env is going away (a worker exits): close what is left; no JavaScript can run
 * now. Asynchronous: Node runs the loop until every poll handle's close callback (onClosed,
 * which closes the fd) has run, sockets closed just before included; after that the env may
 * unload this addon, and a close callback left for later would call into unmapped code.
 */
void asyncCleanup(napi_async_cleanup_hook_handle, void* arg) {
  IoState* st = static_cast<IoState*>(arg);
  st->tearingDown = true;
  while (!st->socks.empty()) {
    Sock* s = st->socks.begin()->second;
    st->socks.erase(st->socks.begin());
    s->closing = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&s->poll), onClosed); // closes the fd
  }
  if (st->onEvent) {
    napi_delete_reference(st->env, st->onEvent);
    napi_delete_reference(st->env, st->bufferRef);
    napi_async_destroy(st->env, st->asyncContext);
    st->onEvent = nullptr;
  }
  if (st->unfreed == 0) finishCleanup(st);
}

} // namespace

void InitSocketIo(Napi::Env env, Napi::Object exports) {
  IoState* st = new IoState();
  st->env = env;
  napi_add_async_cleanup_hook(env, asyncCleanup, st, &st->cleanupHandle);
  exports.Set("ioInit", Napi::Function::New(env, IoInit, "ioInit", st));
  exports.Set("ioAdopt", Napi::Function::New(env, IoAdopt, "ioAdopt", st));
  exports.Set("ioRead", Napi::Function::New(env, IoRead, "ioRead", st));
  exports.Set("ioWrite", Napi::Function::New(env, IoWrite, "ioWrite", st));
  exports.Set("ioEnd", Napi::Function::New(env, IoEnd, "ioEnd", st));
  exports.Set("ioCork", Napi::Function::New(env, IoCork, "ioCork", st));
  exports.Set("ioNoDelay", Napi::Function::New(env, IoNoDelay, "ioNoDelay", st));
  exports.Set("ioClose", Napi::Function::New(env, IoClose, "ioClose", st));
  exports.Set("ioCount", Napi::Function::New(env, IoCount, "ioCount", st));
}
