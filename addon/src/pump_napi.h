#pragma once
#include <napi.h>
namespace weft {
// Pump: the user-space packet pump (TUN/TAP <-> UDP), see pump.h and src/native.ts.
void InitPump(Napi::Env env, Napi::Object exports);
}
