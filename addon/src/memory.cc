// trimMalloc(): glibc's malloc_trim(0), for weftd's idle GC (src/daemon/idle-gc.ts).
//
// Why: Node allocates Buffers' memory, its own C++ objects and the addons' with malloc. When a
// full GC frees the Buffers of a start-up or a burst, their chunks go back to malloc's free lists
// but not to the kernel: glibc returns memory on its own only from the top of an arena (above
// M_TRIM_THRESHOLD), and the freed chunks sit below live ones. malloc_trim(0) walks every arena
// and madvise(MADV_DONTNEED)s each whole free page. Measured on a 30-host lab (docs/performance.md,
// "Issue #14, eleventh pass"): 0.1-1.5 MB of private memory per weftd.
//
// Other C libraries have no such call (musl returns memory by itself): false, nothing done.
#include "memory.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace weft {
namespace {

Napi::Value TrimMalloc(const Napi::CallbackInfo& info) {
#if defined(__GLIBC__)
  return Napi::Boolean::New(info.Env(), malloc_trim(0) != 0);
#else
  return Napi::Boolean::New(info.Env(), false);
#endif
}

}  // namespace

void InitMemory(Napi::Env env, Napi::Object exports) {
  exports.Set("trimMalloc", Napi::Function::New(env, TrimMalloc, "trimMalloc"));
}

}  // namespace weft
