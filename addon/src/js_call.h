#pragma once
#include <node_api.h>

namespace weft {

// Call `fn` from a libuv callback with napi_make_callback, as Node calls its own I/O and timer
// callbacks: the nextTick and microtask queues run afterwards. A callback that throws becomes an
// uncaught exception (napi_fatal_exception: the process's 'uncaughtException', as for any Node
// callback). False when JavaScript cannot be called at all: while Node tears the environment
// down it still runs the loop once (CleanupHandles), and the call then fails with no exception
// pending (node-addon-api's MakeCallback would abort the process there) — the caller shuts its
// handle.
inline bool CallIntoJs(napi_env env, napi_value recv, napi_value fn, size_t argc, const napi_value* argv) {
  napi_value result;
  if (napi_make_callback(env, nullptr, recv, fn, argc, argv, &result) == napi_ok) return true;
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending) return false;
  napi_value exc;
  napi_get_and_clear_last_exception(env, &exc);
  napi_fatal_exception(env, exc);
  return true;
}

}  // namespace weft
