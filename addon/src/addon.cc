// Entry point of weft's native addon: each feature registers its functions here.
#include <napi.h>

#include "fastjoin.h"
#include "memory.h"
#include "nlsock.h"
#include "notify.h"
#include "pump_napi.h"
#include "timer.h"

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  weft::InitNotify(env, exports);
  weft::InitPump(env, exports);
  weft::InitNetlinkSocket(env, exports);
  weft::InitTimer(env, exports);
  weft::InitMemory(env, exports);
  weft::fastjoin::Init(env, exports);
  return exports;
}

NODE_API_MODULE(weft_native, Init)
