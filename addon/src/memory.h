#pragma once
#include <napi.h>
namespace weft {
// trimMalloc(): gives the C heap's free pages back to the kernel (glibc's malloc_trim).
void InitMemory(Napi::Env env, Napi::Object exports);
}
