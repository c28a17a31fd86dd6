// A one-shot libuv timer for deadlines that are almost always cancelled (src/deadline.ts).
//
// Why not setTimeout: Node arms ONE libuv timer for the earliest of its JavaScript timers and
// moves it only when its timer callback runs (lib/internal/timers.js processTimers). A timeout
// cleared from an I/O callback — the answer came in time, as it nearly always does — leaves that
// libuv timer armed for the cleared expiry: the process wakes for nothing then, an empty loop
// iteration with a cold cache. For weftd's idle deadlines (the etcd watch probe's answer, the
// peer probes' replies) that was a third of its wake-ups. uv_timer_stop takes the timer out of
// libuv's heap, so the loop sleeps until the next real deadline.
#include "timer.h"

#include "js_call.h"

#include <uv.h>

namespace weft {
namespace {

class TimerWrap;

// The handle outlives the wrap when the wrap is finalized: uv_close is asynchronous.
struct TimerHandle {
  uv_timer_t timer;
  TimerWrap* owner;
};

class TimerWrap : public Napi::ObjectWrap<TimerWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Timer",
                       {
                           InstanceMethod<&TimerWrap::Start>("start"),
                           InstanceMethod<&TimerWrap::Stop>("stop"),
                           InstanceMethod<&TimerWrap::Ref>("ref"),
                           InstanceMethod<&TimerWrap::Unref>("unref"),
                           InstanceMethod<&TimerWrap::Close>("close"),
                       });
  }

  explicit TimerWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TimerWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsFunction()) {
      Napi::TypeError::New(env, "new Timer(onExpire: Function)").ThrowAsJavaScriptException();
      return;
    }
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
      Napi::Error::New(env, "timer: no libuv loop").ThrowAsJavaScriptException();
      return;
    }
    handle_ = new TimerHandle{};
    handle_->owner = this;
    int rc = uv_timer_init(loop, &handle_->timer);
    if (rc != 0) {
      delete handle_;  // not initialized: the loop does not know it
      handle_ = nullptr;
      Napi::Error::New(env, std::string("timer: uv_timer_init: ") + uv_strerror(rc)).ThrowAsJavaScriptException();
      return;
    }
    on_expire_ = Napi::Persistent(info[0].As<Napi::Function>());
    env_ = env;
    napi_add_env_cleanup_hook(env, CleanupHook, this);
    hook_ = true;
  }

  ~TimerWrap() override { Shutdown(); }

 private:
  static void CleanupHook(void* arg) {
    auto* self = static_cast<TimerWrap*>(arg);
    self->hook_ = false;  // the hook is being run: do not remove it
    self->Shutdown();
  }

  void Shutdown() {
    Disarmed();
    if (handle_) {
      uv_timer_stop(&handle_->timer);
      handle_->owner = nullptr;
      uv_close(reinterpret_cast<uv_handle_t*>(&handle_->timer),
               [](uv_handle_t* h) { delete reinterpret_cast<TimerHandle*>(h); });
      handle_ = nullptr;
    }
    if (hook_) {
      napi_remove_env_cleanup_hook(env_, CleanupHook, this);
      hook_ = false;
    }
  }

  // An armed timer holds its wrap (and so its callback) like a Node timer holds itself; a
  // disarmed one may be collected, which closes the handle.
  void Armed() {
    if (!armed_) Napi::ObjectWrap<TimerWrap>::Ref();
    armed_ = true;
  }

  void Disarmed() {
    if (armed_) Napi::ObjectWrap<TimerWrap>::Unref();
    armed_ = false;
  }

  // start(ms): (re)arm, replacing any earlier expiry, `ms` from now. libuv counts from the loop's
  // time, taken when the loop last woke: after a long callback that is well in the past, and a
  // deadline armed then would expire early (a watch probe taken for dead). So the time first.
  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsNumber()) {
      Napi::TypeError::New(env, "start(ms: number)").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (!handle_) return env.Undefined();  // the environment is going away
    // NaN and negatives are 0 (as soon as possible); beyond 2^52 ms (and Infinity), 2^52 ms.
    double ms = info[0].As<Napi::Number>().DoubleValue();
    constexpr double kLongest = 4503599627370496.0;
    uint64_t timeout = ms > 0 ? static_cast<uint64_t>(ms < kLongest ? ms : kLongest) : 0;
    uv_update_time(handle_->timer.loop);
    int rc = uv_timer_start(&handle_->timer, OnTimer, timeout, 0);
    if (rc != 0) {
      Napi::Error::New(env, std::string("timer: uv_timer_start: ") + uv_strerror(rc)).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    Armed();
    return env.Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    if (handle_) uv_timer_stop(&handle_->timer);
    Disarmed();
    return info.Env().Undefined();
  }

  // close(): stopped for good and the handle given back to libuv now, not at collection.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    Shutdown();
    on_expire_.Reset();
    return info.Env().Undefined();
  }

  Napi::Value Ref(const Napi::CallbackInfo& info) {
    if (handle_) uv_ref(reinterpret_cast<uv_handle_t*>(&handle_->timer));
    return info.Env().Undefined();
  }

  Napi::Value Unref(const Napi::CallbackInfo& info) {
    if (handle_) uv_unref(reinterpret_cast<uv_handle_t*>(&handle_->timer));
    return info.Env().Undefined();
  }

  static void OnTimer(uv_timer_t* timer) {
    auto* h = reinterpret_cast<TimerHandle*>(timer);
    if (h->owner) h->owner->Expire();
  }

  // Like Node's own timers (js_call.h); JavaScript that cannot be called any more shuts the timer.
  void Expire() {
    napi_handle_scope scope;
    if (napi_open_handle_scope(env_, &scope) != napi_ok) {
      Shutdown();
      return;
    }
    // Disarmed before the call: the callback may arm it again (and may drop the last reference
    // to it, which is why the wrap's own reference is only released after the call).
    bool held = armed_;
    armed_ = false;
    if (!CallIntoJs(env_, Value(), on_expire_.Value(), 0, nullptr)) Shutdown();
    if (held) Napi::ObjectWrap<TimerWrap>::Unref();  // a re-arm took a reference of its own
    napi_close_handle_scope(env_, scope);
  }

  Napi::Env env_{nullptr};
  TimerHandle* handle_ = nullptr;
  bool armed_ = false;
  bool hook_ = false;
  Napi::FunctionReference on_expire_;
};

}  // namespace

void InitTimer(Napi::Env env, Napi::Object exports) { exports.Set("Timer", TimerWrap::Define(env)); }

}  // namespace weft
