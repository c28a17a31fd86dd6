#pragma once
#include <napi.h>

#include <cstddef>
#include <cstdint>

namespace weft {
namespace fastjoin {
void Init(Napi::Env env, Napi::Object exports);
// True when this kernel notification is the echo of the native join path's own write.
bool DropOwnEcho(const uint8_t* datagram, size_t len);
// Deliver every stream's held messages to JavaScript now (in a handle scope, on the loop thread).
void FlushHeld();
}  // namespace fastjoin
}  // namespace weft
