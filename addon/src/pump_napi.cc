// JavaScript face of the pump: `new Pump(options)`, `setPeers(entries)`, `counters()`,
// `status()`, `close()`. Thin on purpose: parsing of the arguments, nothing else; the contract
// is written in src/native.ts.
#include "pump_napi.h"

#include <arpa/inet.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "pump.h"

namespace weft {
namespace {

void ThrowErrno(Napi::Env env, const std::string& msg, int err_no) {
  Napi::Error e = Napi::Error::New(env, msg);
  const char* name = err_no ? strerrorname_np(err_no) : nullptr;
  if (name) e.Set("code", Napi::String::New(env, name));
  e.ThrowAsJavaScriptException();
}

bool ParseIp(const std::string& text, uint32_t* out) { return inet_pton(AF_INET, text.c_str(), out) == 1; }

bool ParseMac(const std::string& text, uint64_t* out) {
  unsigned b[6];
  char extra;
  if (std::sscanf(text.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &extra) != 6) {
    return false;
  }
  uint64_t m = 0;
  for (unsigned v : b) m = (m << 8) | v;
  *out = m;
  return true;
}

class PumpWrap : public Napi::ObjectWrap<PumpWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Pump",
                       {
                           InstanceMethod<&PumpWrap::SetPeers>("setPeers"),
                           InstanceMethod<&PumpWrap::Counters>("counters"),
                           InstanceMethod<&PumpWrap::Status>("status"),
                           InstanceMethod<&PumpWrap::Close>("close"),
                       });
  }

  explicit PumpWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<PumpWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) {
      Napi::TypeError::New(env, "new Pump(options: {mode, device, localIp, port, mtu?, vni?, offloads?})").ThrowAsJavaScriptException();
      return;
    }
    Napi::Object o = info[0].As<Napi::Object>();
    PumpConfig cfg;
    std::string mode = o.Get("mode").IsString() ? o.Get("mode").As<Napi::String>().Utf8Value() : "";
    if (mode == "vxlan") {
      cfg.mode = PumpMode::kVxlan;
    } else if (mode == "udp") {
      cfg.mode = PumpMode::kUdp;
    } else {
      Napi::TypeError::New(env, "Pump: mode must be \"vxlan\" or \"udp\", got \"" + mode + "\"").ThrowAsJavaScriptException();
      return;
    }
    if (!o.Get("device").IsString() || !o.Get("localIp").IsString() || !o.Get("port").IsNumber()) {
      Napi::TypeError::New(env, "Pump: device (string), localIp (string) and port (number) are required").ThrowAsJavaScriptException();
      return;
    }
    cfg.device = o.Get("device").As<Napi::String>().Utf8Value();
    std::string local = o.Get("localIp").As<Napi::String>().Utf8Value();
    if (!ParseIp(local, &cfg.local_ip)) {
      Napi::TypeError::New(env, "Pump: localIp \"" + local + "\" is not an IPv4 address").ThrowAsJavaScriptException();
      return;
    }
    int64_t port = o.Get("port").As<Napi::Number>().Int64Value();
    if (port < 1 || port > 65535) {
      Napi::RangeError::New(env, "Pump: port " + std::to_string(port) + " is not 1..65535").ThrowAsJavaScriptException();
      return;
    }
    cfg.port = static_cast<uint16_t>(port);
    if (o.Get("vni").IsNumber()) {
      int64_t vni = o.Get("vni").As<Napi::Number>().Int64Value();
      if (vni < 0 || vni > 0xffffff) {
        Napi::RangeError::New(env, "Pump: vni " + std::to_string(vni) + " is not 0..16777215").ThrowAsJavaScriptException();
        return;
      }
      cfg.vni = static_cast<uint32_t>(vni);
    }
    if (o.Get("offloads").IsBoolean()) cfg.offloads = o.Get("offloads").As<Napi::Boolean>().Value();
    if (o.Get("mtu").IsNumber()) {
      int64_t mtu = o.Get("mtu").As<Napi::Number>().Int64Value();
      if (mtu < 576 || mtu > 65535) {
        Napi::RangeError::New(env, "Pump: mtu " + std::to_string(mtu) + " is not 576..65535").ThrowAsJavaScriptException();
        return;
      }
      cfg.mtu = static_cast<int>(mtu);
    }
    std::string err;
    int err_no = 0;
    pump_ = Pump::Open(cfg, &err, &err_no);
    if (!pump_) ThrowErrno(env, "open " + mode + " pump on " + cfg.device + ": " + err, err_no);
  }

 private:
  bool Alive(Napi::Env env, const char* op) {
    if (pump_) return true;
    Napi::Error::New(env, std::string("Pump.") + op + ": the pump is closed").ThrowAsJavaScriptException();
    return false;
  }

  // setPeers([{mac, dst}] | [{subnet, prefixLen, dst}]): builds a table, then one atomic swap.
  Napi::Value SetPeers(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env, "setPeers")) return env.Undefined();
    if (info.Length() < 1 || !info[0].IsArray()) {
      Napi::TypeError::New(env, "setPeers(entries: Array<{mac, dst} | {subnet, prefixLen, dst}>)").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    Napi::Array arr = info[0].As<Napi::Array>();
    auto table = std::make_shared<PeerTable>();
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Value v = arr.Get(i);
      if (!v.IsObject()) continue;
      Napi::Object e = v.As<Napi::Object>();
      std::string dst_text = e.Get("dst").IsString() ? e.Get("dst").As<Napi::String>().Utf8Value() : "";
      uint32_t dst;
      if (!ParseIp(dst_text, &dst)) {
        Napi::TypeError::New(env, "setPeers: entry " + std::to_string(i) + ": dst \"" + dst_text + "\" is not an IPv4 address")
            .ThrowAsJavaScriptException();
        return env.Undefined();
      }
      if (e.Get("mac").IsString()) {
        std::string mac_text = e.Get("mac").As<Napi::String>().Utf8Value();
        uint64_t mac;
        if (!ParseMac(mac_text, &mac)) {
          Napi::TypeError::New(env, "setPeers: entry " + std::to_string(i) + ": mac \"" + mac_text + "\" is not a MAC address")
              .ThrowAsJavaScriptException();
          return env.Undefined();
        }
        table->macs.push_back({mac, dst});
      } else if (e.Get("subnet").IsString() && e.Get("prefixLen").IsNumber()) {
        std::string net_text = e.Get("subnet").As<Napi::String>().Utf8Value();
        int64_t prefix = e.Get("prefixLen").As<Napi::Number>().Int64Value();
        uint32_t net;
        if (!ParseIp(net_text, &net) || prefix < 0 || prefix > 32) {
          Napi::TypeError::New(env, "setPeers: entry " + std::to_string(i) + ": subnet " + net_text + "/" + std::to_string(prefix) +
                                        " is not an IPv4 network")
              .ThrowAsJavaScriptException();
          return env.Undefined();
        }
        uint32_t mask = prefix == 0 ? 0 : htonl(~uint32_t(0) << (32 - prefix));
        table->nets.push_back({net & mask, mask, static_cast<int>(prefix), dst});
      } else {
        Napi::TypeError::New(env, "setPeers: entry " + std::to_string(i) + " has neither mac nor subnet+prefixLen")
            .ThrowAsJavaScriptException();
        return env.Undefined();
      }
    }
    table->Finish();
    pump_->SetPeers(std::move(table));
    return env.Undefined();
  }

  Napi::Value Counters(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object out = Napi::Object::New(env);
    for (int i = 0; i < kNumCounters; i++) {
      out.Set(kCounterNames[i], Napi::Number::New(env, pump_ ? static_cast<double>(pump_->Count(i)) : 0));
    }
    return out;
  }

  Napi::Value Status(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object out = Napi::Object::New(env);
    out.Set("running", Napi::Boolean::New(env, pump_ && pump_->Running()));
    std::string err = pump_ ? pump_->Error() : "";
    out.Set("error", err.empty() ? env.Null() : Napi::String::New(env, err));
    uint32_t last = pump_ ? pump_->LastNotPeer() : 0;
    if (last) {
      char ip[INET_ADDRSTRLEN];
      inet_ntop(AF_INET, &last, ip, sizeof ip);
      out.Set("lastNotPeer", Napi::String::New(env, ip));
    } else {
      out.Set("lastNotPeer", env.Null());
    }
    out.Set("vnetHdr", Napi::Boolean::New(env, pump_ && pump_->vnet_hdr()));
    return out;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    // Keep the counters readable after close(): stop the threads, close the fds, keep the object.
    if (pump_) pump_->Close();
    return info.Env().Undefined();
  }

  std::unique_ptr<Pump> pump_;
};

}  // namespace

void InitPump(Napi::Env env, Napi::Object exports) { exports.Set("Pump", PumpWrap::Define(env)); }

}  // namespace weft
