#pragma once
#include <napi.h>
namespace weft {
// `new NetlinkSocket(protocol, onDatagrams, onError)`: a raw netlink socket read on libuv's loop,
// every datagram of a wake-up delivered in one call. Contract in src/native.ts.
void InitNetlinkSocket(Napi::Env env, Napi::Object exports);
}
