#pragma once
#include <napi.h>
namespace weft {
// `new Timer(onExpire)`: a one-shot libuv timer whose stop() disarms the loop. Contract in src/native.ts.
void InitTimer(Napi::Env env, Napi::Object exports);
}
