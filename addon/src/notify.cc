// sd_notify without libsystemd: one AF_UNIX datagram to $NOTIFY_SOCKET.
// Node has no unix datagram sockets, so this small sendto() lives in the addon instead of
// pulling in the sd-notify package (which needs libsystemd-dev at install time and a rebuild
// per Node ABI). Protocol: https://www.freedesktop.org/software/systemd/man/sd_notify.html
// A leading '@' names an abstract socket: it becomes a leading NUL byte in sun_path.
#include "notify.h"

#include <cerrno>
#include <cstring>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace weft {
namespace {

Napi::Value SdNotify(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString()) {
    Napi::TypeError::New(env, "sdNotify(socketPath: string, message: string)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string path = info[0].As<Napi::String>().Utf8Value();
  std::string msg = info[1].As<Napi::String>().Utf8Value();

  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    Napi::Error::New(env, "sd_notify: NOTIFY_SOCKET path empty or too long: " + path).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  if (path[0] == '@') {
    addr.sun_path[0] = '\0';  // abstract namespace: no trailing NUL counted
  } else {
    len += 1;  // include the terminating NUL of a filesystem path
  }

  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    Napi::Error::New(env, std::string("sd_notify: socket: ") + std::strerror(errno)).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  ssize_t sent = sendto(fd, msg.data(), msg.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr), len);
  int saved = errno;
  close(fd);
  if (sent < 0) {
    Napi::Error::New(env, "sd_notify: sendto " + path + ": " + std::strerror(saved)).ThrowAsJavaScriptException();
  }
  return env.Undefined();
}

}  // namespace

void InitNotify(Napi::Env env, Napi::Object exports) {
  exports.Set("sdNotify", Napi::Function::New(env, SdNotify, "sdNotify"));
}

}  // namespace weft
