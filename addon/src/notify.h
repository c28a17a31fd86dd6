#pragma once
#include <napi.h>
namespace weft {
// sdNotify(socketPath, message): sends one datagram to systemd's NOTIFY_SOCKET.
void InitNotify(Napi::Env env, Napi::Object exports);
}
