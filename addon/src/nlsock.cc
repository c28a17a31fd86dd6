// A raw netlink socket for weft's rtnetlink writes and notifications (src/netlink/transport.ts).
//
// Why not the `netlink` package's binding: it peeks every datagram to size it, reads it again,
// and calls into JavaScript once per datagram (two recvmsg, one uv wake-up and one JS call per
// datagram). Here each readable wake-up drains the socket with recvmmsg(MSG_DONTWAIT), usually
// one syscall for all that is queued, and hands all the datagrams of the wake-up to JavaScript
// in ONE call:
// onDatagrams(data: Buffer, meta: Uint32Array [length, port, length, port, ...]).
//
// NETLINK_NO_ENOBUFS is deliberately NOT set: when the receive buffer overflows the kernel drops
// datagrams and the next read fails with ENOBUFS, which is reported as onError('ENOBUFS') so
// that the owner resynchronizes (the monitor re-reads everything).
#include "nlsock.h"

#include "fastjoin.h"
#include "js_call.h"

#include <linux/filter.h>
#include <linux/netlink.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

namespace weft {
namespace {

// The largest datagram read whole. The kernel sizes a dump's datagrams up to 32 KiB (and its
// notifications far below that); a longer one is reported as EMSGSIZE rather than cut silently.
constexpr size_t kMaxDatagram = 64 << 10;
// Stop draining after this much in one wake-up and deliver it (the poll is level-triggered: the
// rest is read on the next loop iteration), so one flood cannot hold the loop or grow the buffer.
constexpr size_t kMaxBytesPerWakeup = 1 << 20;
// Datagrams read per recvmmsg: a join's answers and notifications are 1–4; a dump's parts come
// one per read anyway (the kernel fills the next one when we read).
constexpr unsigned kSlots = 8;
// A wake-up that read a datagram larger than this (a dump's part) drops the slots' pages after.
constexpr size_t kResidentDatagram = 16 << 10;

Napi::Error ErrnoError(Napi::Env env, const std::string& what, int err_no) {
  const char* name = strerrorname_np(err_no);
  Napi::Error e = Napi::Error::New(env, what + ": " + std::strerror(err_no));
  if (name) e.Set("code", Napi::String::New(env, name));
  e.Set("errno", Napi::Number::New(env, err_no));
  return e;
}

class NetlinkSocketWrap;

// The poll handle outlives the wrap when the wrap is finalized: uv_close is asynchronous.
struct PollHandle {
  uv_poll_t poll;
  NetlinkSocketWrap* owner;
};

class NetlinkSocketWrap : public Napi::ObjectWrap<NetlinkSocketWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NetlinkSocket",
                       {
                           InstanceMethod<&NetlinkSocketWrap::Send>("send"),
                           InstanceMethod<&NetlinkSocketWrap::Close>("close"),
                           InstanceMethod<&NetlinkSocketWrap::Port>("port"),
                           InstanceMethod<&NetlinkSocketWrap::Ref>("ref"),
                           InstanceMethod<&NetlinkSocketWrap::Unref>("unref"),
                           InstanceMethod<&NetlinkSocketWrap::SetRecvBufferSize>("setRecvBufferSize"),
                           InstanceMethod<&NetlinkSocketWrap::GetRecvBufferSize>("getRecvBufferSize"),
                           InstanceMethod<&NetlinkSocketWrap::GetSendBufferSize>("getSendBufferSize"),
                           InstanceMethod<&NetlinkSocketWrap::AddMembership>("addMembership"),
                           InstanceMethod<&NetlinkSocketWrap::AttachFilter>("attachFilter"),
                       });
  }

  explicit NetlinkSocketWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NetlinkSocketWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsFunction() || !info[2].IsFunction()) {
      Napi::TypeError::New(env, "new NetlinkSocket(protocol: number, onDatagrams: Function, onError: Function)")
          .ThrowAsJavaScriptException();
      return;
    }
    int protocol = info[0].As<Napi::Number>().Int32Value();
    fd_ = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, protocol);
    if (fd_ < 0) {
      ErrnoError(env, "netlink socket(protocol " + std::to_string(protocol) + ")", errno).ThrowAsJavaScriptException();
      return;
    }
    sockaddr_nl addr{};
    addr.nl_family = AF_NETLINK;  // nl_pid 0: the kernel picks a free port id
    socklen_t len = sizeof addr;
    if (bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0 ||
        getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) < 0) {
      int e = errno;
      ::close(fd_);
      fd_ = -1;
      ErrnoError(env, "netlink bind", e).ThrowAsJavaScriptException();
      return;
    }
    port_ = addr.nl_pid;
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
      ::close(fd_);
      fd_ = -1;
      Napi::Error::New(env, "netlink socket: no libuv loop").ThrowAsJavaScriptException();
      return;
    }
    handle_ = new PollHandle{};
    handle_->owner = this;
    int rc = uv_poll_init(loop, &handle_->poll, fd_);
    if (rc != 0) {
      delete handle_;  // not initialized: the loop does not know it
    } else if ((rc = uv_poll_start(&handle_->poll, UV_READABLE, OnReadable)) != 0) {
      handle_->owner = nullptr;  // initialized: only uv_close may free it
      uv_close(reinterpret_cast<uv_handle_t*>(&handle_->poll),
               [](uv_handle_t* h) { delete reinterpret_cast<PollHandle*>(h); });
    }
    if (rc != 0) {
      handle_ = nullptr;
      ::close(fd_);
      fd_ = -1;
      Napi::Error::New(env, std::string("netlink socket: uv_poll: ") + uv_strerror(rc)).ThrowAsJavaScriptException();
      return;
    }
    on_datagrams_ = Napi::Persistent(info[1].As<Napi::Function>());
    on_error_ = Napi::Persistent(info[2].As<Napi::Function>());
    env_ = env;
    // An open socket is never collected: it is closed explicitly (or at env teardown).
    Napi::ObjectWrap<NetlinkSocketWrap>::Ref();
    napi_add_env_cleanup_hook(env, CleanupHook, this);
    hook_ = true;
  }

  ~NetlinkSocketWrap() override { Shutdown(); }

 private:
  static void CleanupHook(void* arg) {
    auto* self = static_cast<NetlinkSocketWrap*>(arg);
    self->hook_ = false;  // the hook is being run: do not remove it
    self->Shutdown();
  }

  // Idempotent: stop polling, close the fd, drop the self-reference.
  void Shutdown() {
    if (handle_) {
      uv_poll_stop(&handle_->poll);
      handle_->owner = nullptr;
      uv_close(reinterpret_cast<uv_handle_t*>(&handle_->poll),
               [](uv_handle_t* h) { delete reinterpret_cast<PollHandle*>(h); });
      handle_ = nullptr;
    }
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
    if (region_) {
      munmap(region_, kSlots * kMaxDatagram);
      region_ = nullptr;
    }
    if (hook_) {
      napi_remove_env_cleanup_hook(env_, CleanupHook, this);
      hook_ = false;
    }
  }

  void CloseFromJs() {
    bool was_open = fd_ >= 0;
    Shutdown();
    if (was_open) {
      on_datagrams_.Reset();
      on_error_.Reset();
      Napi::ObjectWrap<NetlinkSocketWrap>::Unref();
    }
  }

  static void OnReadable(uv_poll_t* poll, int status, int events) {
    auto* h = reinterpret_cast<PollHandle*>(poll);
    if (h->owner) h->owner->Drain(status, events);
  }

  // `status` < 0: libuv saw POLLERR (it reports UV_EBADF for any socket error and has stopped
  // the handle). On a netlink socket that is sk_err, e.g. ENOBUFS after an overflow: a read
  // returns it (and clears it), so read as usual and poll again afterwards.
  void Drain(int status, int /*events*/) {
    napi_handle_scope scope;
    if (napi_open_handle_scope(env_, &scope) != napi_ok) {
      Unusable();
      return;
    }
    DrainInScope(status);
    napi_close_handle_scope(env_, scope);
  }

  // One recvmmsg(2) per wake-up in the common case: it returns the datagrams queued (up to
  // kSlots), and fewer than kSlots means the queue was empty, so no trailing EAGAIN read either.
  // An error after some datagrams is kept by the kernel in sk_err and reported by the next one
  // (POLLERR, see Drain). Each datagram is copied out of its slot, 4-byte aligned, into buf_.
  void DrainInScope(int status) {
    size_t used = 0;
    size_t largest = 0;
    meta_.clear();
    int err_no = 0;
    if (!region_ && !MapRegion()) {
      err_no = ENOMEM;
    }
    while (region_ && used < kMaxBytesPerWakeup) {
      for (unsigned i = 0; i < kSlots; i++) {
        msgs_[i].msg_hdr.msg_namelen = sizeof froms_[i];
        msgs_[i].msg_hdr.msg_flags = 0;
        msgs_[i].msg_len = 0;
      }
      int n = recvmmsg(fd_, msgs_, kSlots, MSG_DONTWAIT | MSG_TRUNC, nullptr);
      if (n < 0) {
        if (errno == EINTR) continue;
        // ENOBUFS comes first, before the datagrams queued ahead of the overflow: read those,
        // deliver them, then report it (their order on the socket).
        if (errno == ENOBUFS && err_no != ENOBUFS) {  // once per wake-up: never spin on it
          err_no = ENOBUFS;
          continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) err_no = errno;
        break;
      }
      bool cut = false;
      for (int i = 0; i < n; i++) {
        size_t len = msgs_[i].msg_len;
        if (len > kMaxDatagram || (msgs_[i].msg_hdr.msg_flags & MSG_TRUNC)) {
          cut = true;  // a datagram was cut: it is lost, say so (after the others)
          continue;
        }
        if (froms_[i].nl_pid == 0 && fastjoin::DropOwnEcho(region_ + i * kMaxDatagram, len)) continue;
        size_t aligned = (len + 3) & ~size_t(3);
        if (buf_.size() < used + aligned) buf_.resize(used + aligned);
        std::memcpy(buf_.data() + used, region_ + i * kMaxDatagram, len);
        meta_.push_back(static_cast<uint32_t>(len));
        meta_.push_back(froms_[i].nl_pid);
        used += aligned;
        if (len > largest) largest = len;
      }
      if (cut) err_no = EMSGSIZE;
      if (cut || n < static_cast<int>(kSlots)) break;
    }
    if (!meta_.empty()) {
      // Offsets are implied: each datagram starts at the previous one's end rounded up to 4.
      // The C API, status checked: node-addon-api's wrappers abort the process when a call fails
      // (they throw, and at environment teardown a throw is fatal).
      napi_value data, ab, meta;
      void* ab_data = nullptr;
      size_t meta_bytes = meta_.size() * sizeof(uint32_t);
      if (napi_create_buffer_copy(env_, used, buf_.data(), nullptr, &data) != napi_ok ||
          napi_create_arraybuffer(env_, meta_bytes, &ab_data, &ab) != napi_ok ||
          napi_create_typedarray(env_, napi_uint32_array, meta_.size(), ab, 0, &meta) != napi_ok) {
        Unusable();
        return;
      }
      std::memcpy(ab_data, meta_.data(), meta_bytes);
      fastjoin::FlushHeld();
      if (fd_ < 0) return;  // closed by the JavaScript the flush ran
      Call(on_datagrams_, {data, meta});
    }
    // Give back what a dump or a flood made resident: an idle daemon keeps a few pages, not
    // the slots' 512 KiB or a megabyte of copies.
    if (region_ && largest > kResidentDatagram) madvise(region_, kSlots * kMaxDatagram, MADV_DONTNEED);
    if (buf_.capacity() > 2 * kMaxDatagram) std::vector<uint8_t>().swap(buf_);
    if (err_no != 0 && fd_ >= 0) {
      Fail(err_no, "recvmmsg");
    } else if (status < 0 && meta_.empty() && fd_ >= 0) {
      Fail(-status, "poll");  // POLLERR, yet the read found no error: nothing to go on
      return;
    }
    if (status < 0 && fd_ >= 0 && handle_ && (err_no == 0 || err_no == ENOBUFS || err_no == EMSGSIZE)) {
      uv_poll_start(&handle_->poll, UV_READABLE, OnReadable);
    }
  }

  void Fail(int err_no, const char* syscall) {
    const char* name = strerrorname_np(err_no);
    napi_value code, call, num;
    if (napi_create_string_utf8(env_, name ? name : "EIO", NAPI_AUTO_LENGTH, &code) != napi_ok ||
        napi_create_string_utf8(env_, syscall, NAPI_AUTO_LENGTH, &call) != napi_ok ||
        napi_create_int32(env_, err_no, &num) != napi_ok) {
      Unusable();
      return;
    }
    Call(on_error_, {code, call, num});
    // A socket that cannot be polled any more would spin: stop it (the owner reopens).
    if (err_no != ENOBUFS && err_no != EMSGSIZE && handle_) uv_poll_stop(&handle_->poll);
  }

  // Like any I/O callback (js_call.h); JavaScript that cannot be called any more shuts the socket.
  void Call(Napi::FunctionReference& fn, std::initializer_list<napi_value> args) {
    if (fn.IsEmpty()) return;
    if (!CallIntoJs(env_, Value(), fn.Value(), args.size(), args.begin())) Unusable();
  }

  // JavaScript cannot be called (the environment is going away): stop reading, close the fd.
  void Unusable() {
    bool pending = false;
    if (napi_is_exception_pending(env_, &pending) == napi_ok && pending) {
      napi_value ignored;
      napi_get_and_clear_last_exception(env_, &ignored);
    }
    Shutdown();
  }

  bool Alive(Napi::Env env, const char* op) {
    if (fd_ >= 0) return true;
    Napi::Error e = Napi::Error::New(env, std::string("NetlinkSocket.") + op + ": the socket is closed");
    e.Set("code", Napi::String::New(env, "EBADF"));
    e.ThrowAsJavaScriptException();
    return false;
  }

  // send(data: Uint8Array, port: number): one sendto. Returns undefined, or the errno name.
  Napi::Value Send(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (fd_ < 0) return Napi::String::New(env, "EBADF");
    if (info.Length() < 1 || !info[0].IsTypedArray()) {
      Napi::TypeError::New(env, "send(data: Uint8Array, port?: number)").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
    const uint8_t* data = static_cast<const uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
    sockaddr_nl to{};
    to.nl_family = AF_NETLINK;
    if (info.Length() > 1 && info[1].IsNumber()) to.nl_pid = info[1].As<Napi::Number>().Uint32Value();
    for (;;) {
      ssize_t n = sendto(fd_, data, ta.ByteLength(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
      if (n >= 0) return env.Undefined();
      if (errno == EINTR) continue;
      const char* name = strerrorname_np(errno);
      return Napi::String::New(env, name ? name : "EIO");
    }
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    CloseFromJs();
    return info.Env().Undefined();
  }

  Napi::Value Port(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), port_); }

  Napi::Value Ref(const Napi::CallbackInfo& info) {
    if (handle_) uv_ref(reinterpret_cast<uv_handle_t*>(&handle_->poll));
    return info.Env().Undefined();
  }

  Napi::Value Unref(const Napi::CallbackInfo& info) {
    if (handle_) uv_unref(reinterpret_cast<uv_handle_t*>(&handle_->poll));
    return info.Env().Undefined();
  }

  // SO_RCVBUFFORCE (CAP_NET_ADMIN: past net.core.rmem_max), else SO_RCVBUF (capped by it).
  Napi::Value SetRecvBufferSize(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env, "setRecvBufferSize")) return env.Undefined();
    if (info.Length() < 1 || !info[0].IsNumber()) {
      Napi::TypeError::New(env, "setRecvBufferSize(bytes: number)").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    int size = info[0].As<Napi::Number>().Int32Value();
    if (setsockopt(fd_, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0 &&
        setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &size, sizeof size) < 0) {
      ErrnoError(env, "netlink setsockopt(SO_RCVBUF)", errno).ThrowAsJavaScriptException();
    }
    return env.Undefined();
  }

  Napi::Value GetIntOption(Napi::Env env, int level, int name, const char* what) {
    int v = 0;
    socklen_t len = sizeof v;
    if (getsockopt(fd_, level, name, &v, &len) < 0) {
      ErrnoError(env, std::string("netlink getsockopt(") + what + ")", errno).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    return Napi::Number::New(env, v);
  }

  Napi::Value GetRecvBufferSize(const Napi::CallbackInfo& info) {
    if (!Alive(info.Env(), "getRecvBufferSize")) return info.Env().Undefined();
    return GetIntOption(info.Env(), SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF");
  }

  Napi::Value GetSendBufferSize(const Napi::CallbackInfo& info) {
    if (!Alive(info.Env(), "getSendBufferSize")) return info.Env().Undefined();
    return GetIntOption(info.Env(), SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF");
  }

  Napi::Value AddMembership(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env, "addMembership")) return env.Undefined();
    if (info.Length() < 1 || !info[0].IsNumber()) {
      Napi::TypeError::New(env, "addMembership(group: number)").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    int group = info[0].As<Napi::Number>().Int32Value();
    if (setsockopt(fd_, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof group) < 0) {
      ErrnoError(env, "netlink join group " + std::to_string(group), errno).ThrowAsJavaScriptException();
    }
    return env.Undefined();
  }

  // attachFilter(program: Uint8Array): SO_ATTACH_FILTER with an array of struct sock_filter
  // (8 bytes each: u16 code, u8 jt, u8 jf, u32 k, host byte order).
  Napi::Value AttachFilter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env, "attachFilter")) return env.Undefined();
    if (info.Length() < 1 || !info[0].IsTypedArray()) {
      Napi::TypeError::New(env, "attachFilter(program: Uint8Array of struct sock_filter)").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
    size_t bytes = ta.ByteLength();
    if (bytes == 0 || bytes % sizeof(sock_filter) != 0 || bytes / sizeof(sock_filter) > BPF_MAXINSNS) {
      Napi::RangeError::New(env, "attachFilter: the program must be 1.." + std::to_string(BPF_MAXINSNS) +
                                     " instructions of 8 bytes, got " + std::to_string(bytes) + " bytes")
          .ThrowAsJavaScriptException();
      return env.Undefined();
    }
    std::vector<sock_filter> insns(bytes / sizeof(sock_filter));
    std::memcpy(insns.data(), static_cast<const uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset(), bytes);
    sock_fprog prog{static_cast<unsigned short>(insns.size()), insns.data()};
    if (setsockopt(fd_, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) < 0) {
      ErrnoError(env, "netlink setsockopt(SO_ATTACH_FILTER)", errno).ThrowAsJavaScriptException();
    }
    return env.Undefined();
  }

  // The slots recvmmsg reads into: mapped on the first wake-up, pages made resident only by what
  // the kernel writes (a notification touches one page of one slot).
  bool MapRegion() {
    void* p = mmap(nullptr, kSlots * kMaxDatagram, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return false;
    region_ = static_cast<uint8_t*>(p);
    for (unsigned i = 0; i < kSlots; i++) {
      iovs_[i] = {region_ + i * kMaxDatagram, kMaxDatagram};
      msgs_[i] = {};
      msgs_[i].msg_hdr.msg_name = &froms_[i];
      msgs_[i].msg_hdr.msg_iov = &iovs_[i];
      msgs_[i].msg_hdr.msg_iovlen = 1;
    }
    return true;
  }

  Napi::Env env_{nullptr};
  uint8_t* region_ = nullptr;
  mmsghdr msgs_[kSlots];
  iovec iovs_[kSlots];
  sockaddr_nl froms_[kSlots];
  int fd_ = -1;
  uint32_t port_ = 0;
  PollHandle* handle_ = nullptr;
  bool hook_ = false;
  Napi::FunctionReference on_datagrams_;
  Napi::FunctionReference on_error_;
  std::vector<uint8_t> buf_;
  std::vector<uint32_t> meta_;
};

}  // namespace

void InitNetlinkSocket(Napi::Env env, Napi::Object exports) {
  exports.Set("NetlinkSocket", NetlinkSocketWrap::Define(env));
}

}  // namespace weft
