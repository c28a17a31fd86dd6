// The native join path (issue #14; docs/performance.md, "The native join path").
//
// A WatchStream is etcd's watch stream (the JSON gateway's POST /v3/watch, plain HTTP) read in
// C++ on libuv's loop. Each newline-delimited message is looked at here first: a message that
// is exactly one PUT of a new peer's vxlan lease that conflicts with nothing known is written to
// the kernel at once (neighbour, FDB, route: the reconciler's own encoding, patched), and the
// message is held; JavaScript gets the held messages later, in one call (drainMs after the first,
// or before the next message it must see at once), flagged as applied, and keeps its books then.
// Everything else goes to JavaScript at once, in stream order.
//
// Why: on a host's shared cores a join's latency follows the CPU every daemon spends on it, and
// one JavaScript wake-up per join alone cost a quarter of issue #14's budget. Here a join is a C
// wake-up, a parse and one sendmsg; the books follow once a second for all of that second's joins.
//
// What it may decide is narrow on purpose, and every doubt leaves the message to JavaScript:
//   - the message: {"result":{…,"events":[one event]}}, no escapes in any string, integers only,
//     at most 128 JSON nodes and 8 levels (lease values are written by anyone with etcd access);
//   - the event: a PUT of a key under the subnets prefix, canonical "a.b.c.d-len", neither ours
//     nor one this host knows (a peer, or a departed one still in its grace: fastJoinKnow);
//   - the lease: exactly flannel's vxlan fields (PublicIP, PublicIPv6 null, BackendType "vxlan",
//     BackendData {VNI?, VtepMAC lower case}, BackendV6Data null), nothing more;
//   - the screen (src/backend/screen.ts) and vxlan's rules (src/backend/vxlan/desired.ts) for a
//     lease that conflicts with nothing: the subnet inside the Network with SubnetLen, no overlap
//     with ours, a known lease's, the underlay's networks; covering no etcd endpoint nor our
//     PublicIP; a unicast PublicIP outside the Network, not ours, no known lease's; our VNI; a
//     unicast VtepMAC, not all zeros, not ours, no known lease's.
// test/unit/native-join-decide.test.ts checks it against the TypeScript, which stays the
// reference: what this accepts, the TypeScript must accept with the same objects.
//
// The writes are the reconciler's (src/netlink/wire.ts encodes a template; weftd.ts says where
// each value sits), sent in one sendmsg with their ACKs read at once: rtnetlink answers within
// the sendmsg. A write that fails leaves the message to JavaScript, whose reconciler writes
// again (replace) or reads the kernel. The notifications of these writes are dropped before they
// wake JavaScript (DropOwnEcho, called by nlsock.cc).
#include "fastjoin.h"

#include "js_call.h"

#include <arpa/inet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace weft {
namespace fastjoin {
namespace {

// ---------------------------------------------------------------------------------------- state

struct Net4 {
  uint32_t addr = 0;  // host order
  int len = 0;
};
inline uint32_t Mask(int len) { return len <= 0 ? 0 : (len >= 32 ? 0xffffffffu : ~uint32_t(0) << (32 - len)); }
inline bool Overlap(Net4 a, Net4 b) {
  int l = a.len < b.len ? a.len : b.len;
  return ((a.addr ^ b.addr) & Mask(l)) == 0;
}
inline bool Contains(Net4 n, uint32_t ip) { return ((n.addr ^ ip) & Mask(n.len)) == 0; }

struct Peer {
  Net4 subnet;
  uint32_t public_ip = 0;
  uint8_t mac[6] = {0};
  bool has_mac = false;
};

struct Config {
  bool enabled = false;
  std::string prefix, own_key;
  Net4 network, own_subnet;
  int subnet_len = 0;
  uint32_t own_public_ip = 0, own_iface_ip = 0;
  uint8_t own_mac[6] = {0};
  bool has_own_mac = false;
  uint32_t vni = 1;
  int ifindex = 0;
  std::vector<Net4> underlay;
  std::vector<uint32_t> protected_ips;
  std::vector<uint8_t> tmpl;
  std::vector<uint32_t> at_gw, at_mac, at_pub, at_dst, at_dst_len, at_seq, at_pid;
};

Config g_cfg;
std::unordered_map<std::string, Peer> g_peers;
int g_nl = -1;
uint32_t g_nl_port = 0;
uint32_t g_seq = 0x40000000;

struct ExpectedFdb {
  int ifindex;
  uint8_t mac[6];
  uint32_t dst;  // network order
  uint64_t at_ms;
};
std::vector<ExpectedFdb> g_expected;
// How long after a write its FDB notification is taken for an echo (reconciler.ts's ECHO_TTL_MS).
constexpr uint64_t kEchoTtlMs = 2000;

uint64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// ------------------------------------------------------------------------------- a strict JSON

// A node of a parsed JSON text: strings without escapes only (anything else: not for this path).
struct JNode {
  enum Type : uint8_t { OBJ, ARR, STR, NUM, TRUE, FALSE, NUL } type;
  uint32_t s = 0, e = 0;    // the value (a string without its quotes)
  uint32_t ks = 0, ke = 0;  // its key in the parent object
  int first = -1, next = -1;
};

class Json {
 public:
  Json(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  // The root's index, or -1: malformed, too deep, too many nodes, or a string with an escape.
  int Parse() {
    int root = Value(0);
    Ws();
    return root >= 0 && i_ == n_ ? root : -1;
  }
  const JNode& operator[](int i) const { return nodes_[i]; }
  int Find(int obj, const char* key) const {
    size_t kl = std::strlen(key);
    for (int c = nodes_[obj].first; c >= 0; c = nodes_[c].next) {
      const JNode& n = nodes_[c];
      if (n.ke - n.ks == kl && std::memcmp(p_ + n.ks, key, kl) == 0) return c;
    }
    return -1;
  }
  bool KeyIs(int c, const char* key) const {
    size_t kl = std::strlen(key);
    return nodes_[c].ke - nodes_[c].ks == kl && std::memcmp(p_ + nodes_[c].ks, key, kl) == 0;
  }
  bool StrIs(int c, const char* s) const {
    size_t l = std::strlen(s);
    return c >= 0 && nodes_[c].type == JNode::STR && nodes_[c].e - nodes_[c].s == l && std::memcmp(p_ + nodes_[c].s, s, l) == 0;
  }
  // A string of decimal digits as etcd's gateway writes int64s ("0", "57"; no sign, no leading
  // zero, at most 20 digits: cluster and member ids are uint64s): what int64Field takes, and its value (wrapping).
  bool Decimal(int c, uint64_t& v) const {
    if (c < 0 || nodes_[c].type != JNode::STR) return false;
    uint32_t s = nodes_[c].s, e = nodes_[c].e;
    if (e == s || e - s > 20 || (p_[s] == '0' && e - s > 1)) return false;
    v = 0;
    for (uint32_t i = s; i < e; i++) {
      if (p_[i] < '0' || p_[i] > '9') return false;
      v = v * 10 + uint64_t(p_[i] - '0');
    }
    return true;
  }
  std::string Str(int c) const { return std::string(reinterpret_cast<const char*>(p_ + nodes_[c].s), nodes_[c].e - nodes_[c].s); }

 private:
  void Ws() {
    while (i_ < n_ && (p_[i_] == ' ' || p_[i_] == '\t' || p_[i_] == '\r' || p_[i_] == '\n')) i_++;
  }
  bool StrSpan(uint32_t& s, uint32_t& e) {
    if (i_ >= n_ || p_[i_] != '"') return false;
    s = uint32_t(++i_);
    while (i_ < n_ && p_[i_] != '"') {
      if (p_[i_] == '\\' || p_[i_] < 0x20) return false;
      i_++;
    }
    if (i_ >= n_) return false;
    e = uint32_t(i_++);
    return true;
  }
  int Add(JNode::Type t) {
    if (nodes_.size() >= 128) return -1;
    nodes_.push_back(JNode{t});
    return int(nodes_.size() - 1);
  }
  int Value(int depth) {
    if (depth > 8) return -1;
    Ws();
    if (i_ >= n_) return -1;
    uint8_t c = p_[i_];
    if (c == '{' || c == '[') {
      bool obj = c == '{';
      int me = Add(obj ? JNode::OBJ : JNode::ARR);
      if (me < 0) return -1;
      nodes_[me].s = uint32_t(i_++);
      Ws();
      int last = -1;
      if (i_ < n_ && p_[i_] == (obj ? '}' : ']')) {
        nodes_[me].e = uint32_t(++i_);
        return me;
      }
      for (;;) {
        uint32_t ks = 0, ke = 0;
        if (obj) {
          Ws();
          if (!StrSpan(ks, ke)) return -1;
          Ws();
          if (i_ >= n_ || p_[i_] != ':') return -1;
          i_++;
        }
        // A repeated name: JSON.parse keeps the last one, a lookup here the first. Refused.
        if (obj) {
          for (int c = nodes_[me].first; c >= 0; c = nodes_[c].next) {
            if (nodes_[c].ke - nodes_[c].ks == ke - ks && std::memcmp(p_ + nodes_[c].ks, p_ + ks, ke - ks) == 0) return -1;
          }
        }
        int child = Value(depth + 1);
        if (child < 0) return -1;
        nodes_[child].ks = ks;
        nodes_[child].ke = ke;
        if (last < 0) nodes_[me].first = child;
        else nodes_[last].next = child;
        last = child;
        Ws();
        if (i_ >= n_) return -1;
        if (p_[i_] == ',') {
          i_++;
          continue;
        }
        if (p_[i_] == (obj ? '}' : ']')) {
          nodes_[me].e = uint32_t(++i_);
          return me;
        }
        return -1;
      }
    }
    if (c == '"') {
      int me = Add(JNode::STR);
      if (me < 0) return -1;
      uint32_t s, e;
      if (!StrSpan(s, e)) return -1;
      nodes_[me].s = s;
      nodes_[me].e = e;
      return me;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
      int me = Add(JNode::NUM);
      if (me < 0) return -1;
      nodes_[me].s = uint32_t(i_);
      if (p_[i_] == '-') i_++;
      size_t d = i_;
      while (i_ < n_ && p_[i_] >= '0' && p_[i_] <= '9') i_++;
      if (i_ == d || (p_[d] == '0' && i_ - d > 1)) return -1;  // JSON has no leading zeros
      if (i_ < n_ && (p_[i_] == '.' || p_[i_] == 'e' || p_[i_] == 'E')) return -1;  // integers only here
      nodes_[me].e = uint32_t(i_);
      return me;
    }
    struct Lit {
      const char* text;
      JNode::Type type;
    };
    static const Lit lits[] = {{"true", JNode::TRUE}, {"false", JNode::FALSE}, {"null", JNode::NUL}};
    for (const Lit& l : lits) {
      size_t ll = std::strlen(l.text);
      if (n_ - i_ >= ll && std::memcmp(p_ + i_, l.text, ll) == 0) {
        int me = Add(l.type);
        if (me < 0) return -1;
        nodes_[me].s = uint32_t(i_);
        i_ += ll;
        nodes_[me].e = uint32_t(i_);
        return me;
      }
    }
    return -1;
  }

  const uint8_t* p_;
  size_t n_;
  size_t i_ = 0;
  std::vector<JNode> nodes_;
};

// --------------------------------------------------------------------------- small decoders

bool Base64(const uint8_t* s, size_t n, std::string& out) {
  if (n % 4 != 0) return false;
  out.clear();
  out.reserve(n / 4 * 3);
  auto val = [](uint8_t c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  for (size_t i = 0; i < n; i += 4) {
    int a = val(s[i]), b = val(s[i + 1]);
    if (a < 0 || b < 0) return false;
    bool last = i + 4 == n;
    int c = s[i + 2] == '=' && last ? -2 : val(s[i + 2]);
    int d = s[i + 3] == '=' && last ? -2 : val(s[i + 3]);
    if (c == -1 || d == -1 || (c == -2 && d != -2)) return false;
    out.push_back(char((a << 2) | (b >> 4)));
    if (c >= 0) out.push_back(char(((b & 15) << 4) | (c >> 2)));
    if (d >= 0) out.push_back(char(((c & 3) << 6) | d));
  }
  return true;
}

// Canonical decimal 0..max (no sign, no leading zero), advancing `i`.
bool Dec(const std::string& t, size_t& i, uint32_t max, uint32_t& out) {
  size_t start = i;
  uint64_t v = 0;
  while (i < t.size() && t[i] >= '0' && t[i] <= '9' && i - start < 10) v = v * 10 + uint32_t(t[i++] - '0');
  if (i == start || (t[start] == '0' && i - start > 1) || v > max) return false;
  out = uint32_t(v);
  return true;
}

bool Ip4(const std::string& t, size_t& i, uint32_t& ip) {
  ip = 0;
  for (int k = 0; k < 4; k++) {
    uint32_t o;
    if (k > 0) {
      if (i >= t.size() || t[i] != '.') return false;
      i++;
    }
    if (!Dec(t, i, 255, o)) return false;
    ip = (ip << 8) | o;
  }
  return true;
}

bool Mac(const std::string& t, uint8_t mac[6]) {
  if (t.size() != 17) return false;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;  // lower case only: the canonical form (anything else goes to JavaScript)
  };
  for (int k = 0; k < 6; k++) {
    int h = hex(t[k * 3]), l = hex(t[k * 3 + 1]);
    if (h < 0 || l < 0 || (k < 5 && t[k * 3 + 2] != ':')) return false;
    mac[k] = uint8_t(h << 4 | l);
  }
  return true;
}

// ------------------------------------------------------------------------------- the decision

struct Join {
  std::string key;
  Peer peer;
};

// True when `line` is exactly one PUT of a new key's vxlan lease that may be programmed now
// whatever the other peers are (conservative: any doubt, false).
bool Decide(const uint8_t* line, size_t len, const std::unordered_set<std::string>& open_watch_ids, Join& out) {
  if (!g_cfg.enabled) return false;
  Json j(line, len);
  int root = j.Parse();
  if (root < 0 || j[root].type != JNode::OBJ) return false;
  int result = -1;
  for (int c = j[root].first; c >= 0; c = j[c].next) {
    if (!j.KeyIs(c, "result")) return false;
    result = c;
  }
  if (result < 0 || j[result].type != JNode::OBJ) return false;
  int events = -1, header = -1, watch_id = -1;
  for (int c = j[result].first; c >= 0; c = j[c].next) {
    if (j.KeyIs(c, "events")) events = c;
    else if (j.KeyIs(c, "header")) header = c;
    else if (j.KeyIs(c, "watch_id")) watch_id = c;
    else if (j.KeyIs(c, "created") || j.KeyIs(c, "canceled") || j.KeyIs(c, "fragment")) {
      if (j[c].type != JNode::FALSE) return false;
    } else if (j.KeyIs(c, "compact_revision")) {
      if (!j.StrIs(c, "0")) return false;
    } else {
      return false;
    }
  }
  // One of this stream's open watchers (JavaScript drops the others' messages), and a header
  // whose every field is an int64 string, the revision among them.
  uint64_t header_rev = 0, n = 0;
  if (watch_id < 0 || !j.Decimal(watch_id, n) || open_watch_ids.count(j.Str(watch_id)) == 0) return false;
  if (header < 0 || j[header].type != JNode::OBJ) return false;
  bool has_rev = false;
  for (int c = j[header].first; c >= 0; c = j[c].next) {
    if (!j.Decimal(c, n)) return false;
    if (j.KeyIs(c, "revision")) {
      header_rev = n;
      has_rev = true;
    }
  }
  if (!has_rev) return false;
  if (events < 0 || j[events].type != JNode::ARR) return false;
  int ev = j[events].first;
  if (ev < 0 || j[ev].next >= 0 || j[ev].type != JNode::OBJ) return false;
  int kv = -1;
  for (int c = j[ev].first; c >= 0; c = j[c].next) {
    if (j.KeyIs(c, "kv")) kv = c;
    else if (j.KeyIs(c, "type")) {
      if (!j.StrIs(c, "PUT")) return false;
    } else {
      return false;
    }
  }
  if (kv < 0 || j[kv].type != JNode::OBJ) return false;
  int key = -1, value = -1, mod_rev = -1;
  for (int c = j[kv].first; c >= 0; c = j[c].next) {
    if (j.KeyIs(c, "key")) key = c;
    else if (j.KeyIs(c, "value")) value = c;
    else if (j.KeyIs(c, "mod_revision")) mod_rev = c;
    else if (!(j.KeyIs(c, "create_revision") || j.KeyIs(c, "version") || j.KeyIs(c, "lease")) || !j.Decimal(c, n)) return false;
  }
  if (key < 0 || value < 0 || j[key].type != JNode::STR || j[value].type != JNode::STR) return false;
  // A live event: its revision is the header's. A replay from before (a watch resumed at an
  // older revision) is older than its message; JavaScript decides about those.
  uint64_t rev = 0;
  if (!j.Decimal(mod_rev, rev) || rev == 0 || rev != header_rev) return false;
  std::string k, v;
  if (!Base64(line + j[key].s, j[key].e - j[key].s, k) || !Base64(line + j[value].s, j[value].e - j[value].s, v)) return false;
  const Config& cfg = g_cfg;
  if (k.size() <= cfg.prefix.size() || k.compare(0, cfg.prefix.size(), cfg.prefix) != 0) return false;
  // Keys as the registry names them (JavaScript's Lease.key): "a.b.c.d-len", canonical.
  std::string tail = k.substr(cfg.prefix.size());
  if (tail == cfg.own_key || g_peers.count(tail) != 0) return false;
  size_t i = 0;
  Peer p;
  uint32_t plen;
  if (!Ip4(tail, i, p.subnet.addr) || i >= tail.size() || tail[i++] != '-' || !Dec(tail, i, 32, plen) || i != tail.size()) return false;
  p.subnet.len = int(plen);
  // The screen (src/backend/screen.ts), for a lease that conflicts with no other.
  if (p.subnet.len != cfg.subnet_len || (p.subnet.addr & ~Mask(p.subnet.len)) != 0) return false;
  if (p.subnet.len < cfg.network.len || !Contains(cfg.network, p.subnet.addr)) return false;
  if (Overlap(p.subnet, cfg.own_subnet)) return false;
  for (const Net4& u : cfg.underlay) if (Overlap(p.subnet, u)) return false;
  for (uint32_t ip : cfg.protected_ips) if (Contains(p.subnet, ip)) return false;
  if (Contains(p.subnet, cfg.own_public_ip) || (cfg.own_iface_ip != 0 && Contains(p.subnet, cfg.own_iface_ip))) return false;
  // The lease: {"PublicIP":…,"PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":n,"VtepMAC":…}}.
  Json l(reinterpret_cast<const uint8_t*>(v.data()), v.size());
  int lr = l.Parse();
  if (lr < 0 || l[lr].type != JNode::OBJ) return false;
  int pub = -1, bt = -1, bd = -1;
  for (int c = l[lr].first; c >= 0; c = l[c].next) {
    if (l.KeyIs(c, "PublicIP")) pub = c;
    else if (l.KeyIs(c, "BackendType")) bt = c;
    else if (l.KeyIs(c, "BackendData")) bd = c;
    else if (l.KeyIs(c, "PublicIPv6") || l.KeyIs(c, "BackendV6Data")) {
      if (l[c].type != JNode::NUL) return false;
    } else {
      return false;
    }
  }
  if (pub < 0 || bt < 0 || bd < 0 || !l.StrIs(bt, "vxlan") || l[pub].type != JNode::STR || l[bd].type != JNode::OBJ) return false;
  std::string pubText = l.Str(pub);
  i = 0;
  if (!Ip4(pubText, i, p.public_ip) || i != pubText.size()) return false;
  uint32_t ip = p.public_ip;
  if (ip == 0 || ip >> 24 == 0 || ip >> 24 == 127 || ip >> 28 == 0xe || ip >> 28 == 0xf) return false;
  if (ip == cfg.own_public_ip || ip == cfg.own_iface_ip || Contains(cfg.network, ip)) return false;
  int vni = -1, mac = -1;
  for (int c = l[bd].first; c >= 0; c = l[c].next) {
    if (l.KeyIs(c, "VNI")) vni = c;
    else if (l.KeyIs(c, "VtepMAC")) mac = c;
    else return false;
  }
  if (vni >= 0) {
    if (l[vni].type != JNode::NUM) return false;
    std::string t = l.Str(vni);
    size_t vi = 0;
    uint32_t n;
    if (!Dec(t, vi, 0xffffff, n) || vi != t.size() || n != cfg.vni) return false;
  }
  if (mac < 0 || l[mac].type != JNode::STR || !Mac(l.Str(mac), p.mac)) return false;
  p.has_mac = true;
  static const uint8_t zero[6] = {0};
  if (std::memcmp(p.mac, zero, 6) == 0 || (p.mac[0] & 1) || (cfg.has_own_mac && std::memcmp(p.mac, cfg.own_mac, 6) == 0)) return false;
  // Conflicts with nobody: no overlap, no shared MAC or PublicIP (key order would decide).
  for (const auto& kvp : g_peers) {
    const Peer& o = kvp.second;
    if (Overlap(o.subnet, p.subnet)) return false;
    if (o.public_ip == p.public_ip || Contains(p.subnet, o.public_ip)) return false;
    if (o.has_mac && std::memcmp(o.mac, p.mac, 6) == 0) return false;
  }
  out.key = std::move(tail);
  out.peer = p;
  return true;
}

void Put32be(uint8_t* at, uint32_t v) {
  v = htonl(v);
  std::memcpy(at, &v, 4);
}

// What JavaScript is told of an applied join (src/lease/native-join.ts readRecord).
constexpr size_t kRecordBytes = 16;
void WriteRecord(const Join& jn, uint8_t rec[kRecordBytes]) {
  std::memset(rec, 0, kRecordBytes);
  Put32be(rec, jn.peer.subnet.addr);
  rec[4] = uint8_t(jn.peer.subnet.len);
  std::memcpy(rec + 5, jn.peer.mac, 6);
  Put32be(rec + 12, jn.peer.public_ip);
}

// Write the join's three objects (the reconciler's template, patched), ACKs read at once.
bool Apply(const Join& jn) {
  if (g_nl < 0 || g_cfg.tmpl.empty()) return false;
  std::vector<uint8_t>& b = g_cfg.tmpl;
  uint32_t gw = jn.peer.subnet.addr;
  for (uint32_t at : g_cfg.at_gw) Put32be(&b[at], gw);
  for (uint32_t at : g_cfg.at_pub) Put32be(&b[at], jn.peer.public_ip);
  for (uint32_t at : g_cfg.at_dst) Put32be(&b[at], jn.peer.subnet.addr);
  for (uint32_t at : g_cfg.at_dst_len) b[at] = uint8_t(jn.peer.subnet.len);
  for (uint32_t at : g_cfg.at_mac) std::memcpy(&b[at], jn.peer.mac, 6);
  uint32_t first = g_seq;
  for (uint32_t at : g_cfg.at_seq) std::memcpy(&b[at], &g_seq, 4), g_seq++;
  for (uint32_t at : g_cfg.at_pid) std::memcpy(&b[at], &g_nl_port, 4);
  sockaddr_nl to{};
  to.nl_family = AF_NETLINK;
  if (sendto(g_nl, b.data(), b.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to) != ssize_t(b.size())) return false;
  uint64_t now = NowMs();
  ExpectedFdb e{g_cfg.ifindex, {0}, htonl(jn.peer.public_ip), now};
  std::memcpy(e.mac, jn.peer.mac, 6);
  // Expired expectations go here too: an echo that never came must not be kept for ever.
  while (!g_expected.empty() && now - g_expected.front().at_ms > kEchoTtlMs) g_expected.erase(g_expected.begin());
  g_expected.push_back(e);
  // rtnetlink handles a request within sendmsg: its ACKs are queued by now.
  size_t want = g_cfg.at_seq.size(), acked = 0;
  bool ok = true;
  uint8_t buf[8192];
  while (acked < want) {
    ssize_t n = recv(g_nl, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;  // no ACK queued: take it as failed (JavaScript programs it again)
    }
    for (size_t off = 0; off + sizeof(nlmsghdr) <= size_t(n);) {
      const nlmsghdr* h = reinterpret_cast<const nlmsghdr*>(buf + off);
      if (h->nlmsg_len < sizeof(nlmsghdr) || off + h->nlmsg_len > size_t(n)) break;
      if (h->nlmsg_type == NLMSG_ERROR && h->nlmsg_seq - first < want) {
        const nlmsgerr* er = reinterpret_cast<const nlmsgerr*>(NLMSG_DATA(h));
        if (er->error != 0) ok = false;
        acked++;
      }
      off += NLMSG_ALIGN(h->nlmsg_len);
    }
  }
  return ok;
}

// -------------------------------------------------------------------------------- the stream

// The longest message taken (src/lease/http1.ts MAX_BODY_BYTES).
constexpr size_t kMaxLine = 32u << 20;

class WatchStreamWrap;
// The streams open now (FlushHeld).
std::vector<WatchStreamWrap*> g_streams;

struct PollHandle {
  uv_poll_t poll;
  WatchStreamWrap* owner;
};
struct TimerHandle {
  uv_timer_t timer;
  WatchStreamWrap* owner;
};

class WatchStreamWrap : public Napi::ObjectWrap<WatchStreamWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "WatchStream",
                       {
                           InstanceMethod<&WatchStreamWrap::Send>("send"),
                           InstanceMethod<&WatchStreamWrap::Abort>("abort"),
                           InstanceMethod<&WatchStreamWrap::Flush>("flush"),
                           InstanceMethod<&WatchStreamWrap::WatchOpen>("watchOpen"),
                           InstanceMethod<&WatchStreamWrap::WatchClosed>("watchClosed"),
                       });
  }

  // new WatchStream(ipv4: number, port: number, request: Uint8Array, drainMs: number,
  //                 onHead(status: number), onLines(data: Buffer, meta: Uint32Array, records: Buffer), onEnd(err: string|null))
  explicit WatchStreamWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<WatchStreamWrap>(info) {
    Napi::Env env = info.Env();
    env_ = env;
    uint32_t ip = info[0].As<Napi::Number>().Uint32Value();
    int port = info[1].As<Napi::Number>().Int32Value();
    Napi::TypedArray ta = info[2].As<Napi::TypedArray>();
    const uint8_t* req = static_cast<const uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
    out_.assign(req, req + ta.ByteLength());
    drain_ms_ = info[3].As<Napi::Number>().Uint32Value();
    on_head_ = Napi::Persistent(info[4].As<Napi::Function>());
    on_lines_ = Napi::Persistent(info[5].As<Napi::Function>());
    on_end_ = Napi::Persistent(info[6].As<Napi::Function>());
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd_ < 0) {
      Napi::Error::New(env, std::string("etcd watch stream: socket: ") + std::strerror(errno)).ThrowAsJavaScriptException();
      return;
    }
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd_, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(uint16_t(port));
    to.sin_addr.s_addr = htonl(ip);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&to), sizeof to) < 0 && errno != EINPROGRESS) {
      int e = errno;
      ::close(fd_);
      fd_ = -1;
      Napi::Error::New(env, std::string("etcd watch stream: connect: ") + std::strerror(e)).ThrowAsJavaScriptException();
      return;
    }
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(env, &loop);
    poll_ = new PollHandle{};
    poll_->owner = this;
    uv_poll_init(loop, &poll_->poll, fd_);
    uv_poll_start(&poll_->poll, UV_WRITABLE | UV_READABLE, OnPoll);
    timer_ = new TimerHandle{};
    timer_->owner = this;
    uv_timer_init(loop, &timer_->timer);
    Napi::ObjectWrap<WatchStreamWrap>::Ref();
    g_streams.push_back(this);
  }

  ~WatchStreamWrap() override { Shutdown(); }

  // Hand JavaScript what this stream holds, now (FlushHeld).
  void FlushNow() {
    if (!ended_ && !held_meta_.empty()) Deliver();
  }

 private:
  static void OnPoll(uv_poll_t* p, int status, int events) {
    auto* h = reinterpret_cast<PollHandle*>(p);
    if (h->owner) h->owner->Ready(status, events);
  }
  static void OnTimer(uv_timer_t* t) {
    auto* h = reinterpret_cast<TimerHandle*>(t);
    if (h->owner == nullptr) return;
    napi_handle_scope scope;
    if (napi_open_handle_scope(h->owner->env_, &scope) != napi_ok) return;
    h->owner->Deliver();
    napi_close_handle_scope(h->owner->env_, scope);
  }

  void Ready(int status, int events) {
    napi_handle_scope scope;
    napi_open_handle_scope(env_, &scope);
    if (status < 0) {
      int err = 0;
      socklen_t l = sizeof err;
      getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &l);
      End(std::string("etcd watch stream: ") + std::strerror(err ? err : EIO));
    } else {
      if (events & UV_WRITABLE) WriteOut();
      if (fd_ >= 0 && (events & UV_READABLE)) ReadIn();
    }
    napi_close_handle_scope(env_, scope);
  }

  void WriteOut() {
    while (!out_.empty()) {
      ssize_t n = ::send(fd_, out_.data(), out_.size(), MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) break;
        End(std::string("etcd watch stream: send: ") + std::strerror(errno));
        return;
      }
      out_.erase(out_.begin(), out_.begin() + n);
    }
    if (poll_) uv_poll_start(&poll_->poll, out_.empty() ? UV_READABLE : (UV_READABLE | UV_WRITABLE), OnPoll);
  }

  void ReadIn() {
    uint8_t buf[65536];
    bool eof = false;
    for (;;) {
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) break;
        Parse(nullptr, 0);
        End(std::string("etcd watch stream: recv: ") + std::strerror(errno));
        return;
      }
      if (n == 0) {
        eof = true;
        break;
      }
      if (!Parse(buf, size_t(n))) return;
      if (size_t(n) < sizeof buf) break;
    }
    if (!now_.empty()) Deliver();
    if (eof) End("");
  }

  // HTTP/1.1 head, then a chunked body split into lines. False: the stream ended.
  bool Parse(const uint8_t* p, size_t n) {
    in_.insert(in_.end(), p, p + n);
    size_t at = 0;
    if (!head_done_) {
      const char* h = reinterpret_cast<const char*>(in_.data());
      std::string head(h, in_.size());
      size_t end = head.find("\r\n\r\n");
      if (end == std::string::npos) {
        if (in_.size() > 16384) return End("etcd watch stream: response head too large"), false;
        return true;
      }
      head_done_ = true;
      int status = 0;
      if (head.compare(0, 9, "HTTP/1.1 ") == 0) status = std::atoi(head.c_str() + 9);
      std::string lower = head.substr(0, end);
      for (char& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
      if (status != 200 || lower.find("transfer-encoding: chunked") == std::string::npos) {
        return End("etcd watch stream: HTTP " + std::to_string(status) + " (not a chunked 200)"), false;
      }
      napi_value st;
      napi_create_int32(env_, status, &st);
      if (!Call(on_head_, {st}) || ended_) return false;  // JavaScript may have aborted it
      at = end + 4;
    }
    for (;;) {
      if (chunk_left_ == 0) {
        // "<hex>\r\n" (a chunk's data is followed by \r\n, eaten with the next size line)
        size_t i = at;
        while (i + 1 < in_.size() && !(in_[i] == '\r' && in_[i + 1] == '\n')) i++;
        if (i + 1 >= in_.size()) break;
        std::string line(reinterpret_cast<const char*>(in_.data() + at), i - at);
        at = i + 2;
        if (line.empty()) continue;  // the CRLF after a chunk's data
        size_t size = std::strtoul(line.c_str(), nullptr, 16);
        if (size == 0) {
          in_.clear();
          return End(""), false;
        }
        chunk_left_ = size;
        continue;
      }
      size_t take = in_.size() - at < chunk_left_ ? in_.size() - at : chunk_left_;
      if (take == 0) break;
      if (!Body(in_.data() + at, take)) return false;
      at += take;
      chunk_left_ -= take;
    }
    in_.erase(in_.begin(), in_.begin() + at);
    return true;
  }

  // False: a message over kMaxLine (the stream is ended, as http1.ts's LineSplitter ends it).
  bool Body(const uint8_t* p, size_t n) {
    while (n > 0) {
      const uint8_t* nl = static_cast<const uint8_t*>(std::memchr(p, '\n', n));
      size_t take = nl ? size_t(nl - p) : n;
      if (line_.size() + take > kMaxLine) return End("etcd watch stream: a message over " + std::to_string(kMaxLine) + " bytes");
      line_.insert(line_.end(), p, p + take);
      if (!nl) break;
      Line();
      line_.clear();
      p += take + 1;
      n -= take + 1;
    }
    return true;
  }

  void Line() {
    Join jn;
    if (now_.empty() && Decide(line_.data(), line_.size(), open_watch_ids_, jn) && Apply(jn)) {
      g_peers[jn.key] = jn.peer;
      Append(held_, held_meta_, line_, 1);
      uint8_t rec[kRecordBytes];
      WriteRecord(jn, rec);
      records_.insert(records_.end(), rec, rec + kRecordBytes);
      if (!timer_armed_ && timer_) {
        // Spread over [drain/2, 3·drain/2): the hosts' books, which all wait on the same joins,
        // do not all run at once (on shared cores their bursts would delay the next join).
        uint64_t delay = drain_ms_ / 2 + (drain_ms_ > 0 ? uint64_t(rand()) % drain_ms_ : 0);
        uv_timer_start(&timer_->timer, OnTimer, delay, 0);
        timer_armed_ = true;
      }
      return;
    }
    Append(now_, now_meta_, line_, 0);
  }

  static void Append(std::vector<uint8_t>& to, std::vector<uint32_t>& meta, const std::vector<uint8_t>& line, uint32_t flag) {
    to.insert(to.end(), line.begin(), line.end());
    meta.push_back(uint32_t(line.size()));
    meta.push_back(flag);
  }

  // Everything held, then everything for now, in one call.
  void Deliver() {
    if (timer_armed_ && timer_) uv_timer_stop(&timer_->timer);
    timer_armed_ = false;
    if (held_meta_.empty() && now_meta_.empty()) return;
    std::vector<uint8_t> data(std::move(held_));
    data.insert(data.end(), now_.begin(), now_.end());
    std::vector<uint32_t> meta(std::move(held_meta_));
    meta.insert(meta.end(), now_meta_.begin(), now_meta_.end());
    std::vector<uint8_t> rec(std::move(records_));
    held_.clear();
    held_meta_.clear();
    records_.clear();
    now_.clear();
    now_meta_.clear();
    napi_value d, ab, m, r;
    void* abd = nullptr;
    napi_create_buffer_copy(env_, data.size(), data.data(), nullptr, &d);
    napi_create_arraybuffer(env_, meta.size() * 4, &abd, &ab);
    std::memcpy(abd, meta.data(), meta.size() * 4);
    napi_create_typedarray(env_, napi_uint32_array, meta.size(), ab, 0, &m);
    napi_create_buffer_copy(env_, rec.size(), rec.data(), nullptr, &r);
    Call(on_lines_, {d, m, r});
  }

  bool End(const std::string& err) {
    if (ended_) return false;
    // What was read before the end goes first.
    Deliver();
    ended_ = true;
    Shutdown();
    napi_value e;
    if (err.empty()) napi_get_null(env_, &e);
    else napi_create_string_utf8(env_, err.c_str(), err.size(), &e);
    Call(on_end_, {e});
    return false;
  }

  bool Call(Napi::FunctionReference& fn, std::initializer_list<napi_value> args) {
    if (fn.IsEmpty()) return false;
    return CallIntoJs(env_, Value(), fn.Value(), args.size(), args.begin());
  }

  void Shutdown() {
    for (size_t i = 0; i < g_streams.size(); i++) {
      if (g_streams[i] == this) {
        g_streams.erase(g_streams.begin() + i);
        break;
      }
    }
    if (poll_) {
      uv_poll_stop(&poll_->poll);
      poll_->owner = nullptr;
      uv_close(reinterpret_cast<uv_handle_t*>(&poll_->poll), [](uv_handle_t* h) { delete reinterpret_cast<PollHandle*>(h); });
      poll_ = nullptr;
    }
    if (timer_) {
      uv_timer_stop(&timer_->timer);
      timer_->owner = nullptr;
      uv_close(reinterpret_cast<uv_handle_t*>(&timer_->timer), [](uv_handle_t* h) { delete reinterpret_cast<TimerHandle*>(h); });
      timer_ = nullptr;
    }
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
    if (!unrefd_) {
      unrefd_ = true;
      Napi::ObjectWrap<WatchStreamWrap>::Unref();
    }
  }

  Napi::Value Send(const Napi::CallbackInfo& info) {
    if (fd_ < 0) return info.Env().Undefined();
    Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
    const uint8_t* d = static_cast<const uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
    out_.insert(out_.end(), d, d + ta.ByteLength());
    WriteOut();
    return info.Env().Undefined();
  }

  Napi::Value Abort(const Napi::CallbackInfo& info) {
    ended_ = true;
    Shutdown();
    return info.Env().Undefined();
  }

  // Deliver what is held now (before JavaScript reads the kernel, say).
  Napi::Value Flush(const Napi::CallbackInfo& info) {
    if (!ended_) Deliver();
    return info.Env().Undefined();
  }

  // watchOpen(id) / watchClosed(id): the watchers JavaScript has open on this stream; only their
  // events may be applied (JavaScript drops the others).
  Napi::Value WatchOpen(const Napi::CallbackInfo& info) {
    open_watch_ids_.insert(info[0].As<Napi::String>());
    return info.Env().Undefined();
  }
  Napi::Value WatchClosed(const Napi::CallbackInfo& info) {
    open_watch_ids_.erase(info[0].As<Napi::String>());
    return info.Env().Undefined();
  }

  std::unordered_set<std::string> open_watch_ids_;
  napi_env env_ = nullptr;
  int fd_ = -1;
  PollHandle* poll_ = nullptr;
  TimerHandle* timer_ = nullptr;
  bool timer_armed_ = false;
  bool ended_ = false;
  bool unrefd_ = false;
  bool head_done_ = false;
  size_t chunk_left_ = 0;
  uint32_t drain_ms_ = 100;
  std::vector<uint8_t> out_, in_, line_;
  std::vector<uint8_t> held_, now_, records_;
  std::vector<uint32_t> held_meta_, now_meta_;
  Napi::FunctionReference on_head_, on_lines_, on_end_;
};

// ---------------------------------------------------------------------------- configuration

std::vector<uint32_t> U32s(Napi::Value v) {
  std::vector<uint32_t> out;
  if (!v.IsArray()) return out;
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) out.push_back(a.Get(i).As<Napi::Number>().Uint32Value());
  return out;
}

// fastJoinConfigure(null | {...}): the port id of the path's netlink socket (0: disabled).
Napi::Value Configure(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  g_cfg = Config{};
  g_peers.clear();
  if (!info[0].IsObject()) return Napi::Number::New(env, 0);
  Napi::Object o = info[0].As<Napi::Object>();
  g_cfg.prefix = o.Get("prefix").As<Napi::String>();
  g_cfg.own_key = o.Get("ownKey").As<Napi::String>();
  g_cfg.network = {o.Get("networkIp").As<Napi::Number>().Uint32Value(), o.Get("networkLen").As<Napi::Number>().Int32Value()};
  g_cfg.subnet_len = o.Get("subnetLen").As<Napi::Number>().Int32Value();
  g_cfg.own_subnet = {o.Get("ownSubnetIp").As<Napi::Number>().Uint32Value(), o.Get("ownSubnetLen").As<Napi::Number>().Int32Value()};
  g_cfg.own_public_ip = o.Get("ownPublicIp").As<Napi::Number>().Uint32Value();
  g_cfg.own_iface_ip = o.Get("ownIfaceIp").As<Napi::Number>().Uint32Value();
  Napi::Value om = o.Get("ownMac");
  if (om.IsBuffer() && om.As<Napi::Buffer<uint8_t>>().Length() == 6) {
    std::memcpy(g_cfg.own_mac, om.As<Napi::Buffer<uint8_t>>().Data(), 6);
    g_cfg.has_own_mac = true;
  }
  g_cfg.vni = o.Get("vni").As<Napi::Number>().Uint32Value();
  g_cfg.ifindex = o.Get("ifindex").As<Napi::Number>().Int32Value();
  std::vector<uint32_t> u = U32s(o.Get("underlay"));
  for (size_t i = 0; i + 1 < u.size(); i += 2) g_cfg.underlay.push_back({u[i], int(u[i + 1])});
  g_cfg.protected_ips = U32s(o.Get("protectedIps"));
  Napi::Buffer<uint8_t> t = o.Get("template").As<Napi::Buffer<uint8_t>>();
  g_cfg.tmpl.assign(t.Data(), t.Data() + t.Length());
  g_cfg.at_gw = U32s(o.Get("atGw"));
  g_cfg.at_mac = U32s(o.Get("atMac"));
  g_cfg.at_pub = U32s(o.Get("atPub"));
  g_cfg.at_dst = U32s(o.Get("atDst"));
  g_cfg.at_dst_len = U32s(o.Get("atDstLen"));
  g_cfg.at_seq = U32s(o.Get("atSeq"));
  g_cfg.at_pid = U32s(o.Get("atPid"));
  if (g_nl < 0) {
    g_nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE);
    sockaddr_nl a{};
    a.nl_family = AF_NETLINK;
    socklen_t l = sizeof a;
    if (g_nl < 0 || bind(g_nl, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0 || getsockname(g_nl, reinterpret_cast<sockaddr*>(&a), &l) < 0) {
      if (g_nl >= 0) ::close(g_nl);
      g_nl = -1;
      return Napi::Number::New(env, 0);
    }
    g_nl_port = a.nl_pid;
  }
  g_cfg.enabled = true;
  return Napi::Number::New(env, g_nl_port);
}

// fastJoinKnow(key, subnetIp, subnetLen, publicIp, mac: Buffer | null)
Napi::Value Know(const Napi::CallbackInfo& info) {
  Peer p;
  p.subnet = {info[1].As<Napi::Number>().Uint32Value(), info[2].As<Napi::Number>().Int32Value()};
  p.public_ip = info[3].As<Napi::Number>().Uint32Value();
  if (info[4].IsBuffer() && info[4].As<Napi::Buffer<uint8_t>>().Length() == 6) {
    std::memcpy(p.mac, info[4].As<Napi::Buffer<uint8_t>>().Data(), 6);
    p.has_mac = true;
  }
  g_peers[info[0].As<Napi::String>()] = p;
  return info.Env().Undefined();
}

Napi::Value Forget(const Napi::CallbackInfo& info) {
  g_peers.erase(info[0].As<Napi::String>());
  return info.Env().Undefined();
}

// fastJoinDecide(line: Uint8Array): the record of what the path would write for this watch
// message (null: it would leave it to JavaScript). Writes nothing: for tests (differential
// against the TypeScript screen and rules).
Napi::Value DecideForTest(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray()) {
    Napi::TypeError::New(env, "fastJoinDecide(line: Uint8Array)").ThrowAsJavaScriptException();
    return env.Null();
  }
  Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
  const uint8_t* d = static_cast<const uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  // fastJoinDecide(line, openWatchIds?: string[]): default ["1"].
  std::unordered_set<std::string> ids;
  if (info.Length() > 1 && info[1].IsArray()) {
    Napi::Array a = info[1].As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); i++) ids.insert(a.Get(i).As<Napi::String>());
  } else {
    ids.insert("1");
  }
  Join jn;
  if (!Decide(d, ta.ByteLength(), ids, jn)) return env.Null();
  uint8_t rec[kRecordBytes];
  WriteRecord(jn, rec);
  Napi::Object out = Napi::Object::New(env);
  out.Set("key", Napi::String::New(env, jn.key));
  out.Set("record", Napi::Buffer<uint8_t>::Copy(env, rec, kRecordBytes));
  return out;
}

}  // namespace

// The monitor's sockets ask this first (nlsock.cc): the notifications of the path's own writes
// never wake JavaScript (the route and neighbour carry the path's port id; the FDB entry's, pid 0,
// is matched by content).
bool DropOwnEcho(const uint8_t* d, size_t len) {
  if (g_nl_port == 0 || len < sizeof(nlmsghdr)) return false;
  const nlmsghdr* h = reinterpret_cast<const nlmsghdr*>(d);
  if (h->nlmsg_len != len) return false;
  if (h->nlmsg_type != RTM_NEWNEIGH && h->nlmsg_type != RTM_NEWROUTE) return false;
  if (h->nlmsg_pid == g_nl_port) return true;
  if (h->nlmsg_pid != 0 || h->nlmsg_type != RTM_NEWNEIGH || g_expected.empty() || len < NLMSG_HDRLEN + sizeof(ndmsg)) return false;
  const ndmsg* nd = reinterpret_cast<const ndmsg*>(d + NLMSG_HDRLEN);
  if (nd->ndm_family != AF_BRIDGE) return false;
  const uint8_t* mac = nullptr;
  uint32_t dst = 0;
  bool has_dst = false;
  for (size_t a = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(ndmsg)); a + 4 <= len;) {
    const rtattr* ra = reinterpret_cast<const rtattr*>(d + a);
    if (ra->rta_len < 4 || a + ra->rta_len > len) break;
    if (ra->rta_type == NDA_LLADDR && ra->rta_len == 4 + 6) mac = d + a + 4;
    if (ra->rta_type == NDA_DST && ra->rta_len == 4 + 4) {
      std::memcpy(&dst, d + a + 4, 4);
      has_dst = true;
    }
    a += RTA_ALIGN(ra->rta_len);
  }
  if (mac == nullptr || !has_dst) return false;
  uint64_t now = NowMs();
  for (size_t i = 0; i < g_expected.size(); i++) {
    ExpectedFdb& e = g_expected[i];
    if (now - e.at_ms > kEchoTtlMs) {
      g_expected.erase(g_expected.begin() + i--);
      continue;
    }
    if (e.ifindex == nd->ndm_ifindex && e.dst == dst && std::memcmp(e.mac, mac, 6) == 0) {
      g_expected.erase(g_expected.begin() + i);
      return true;
    }
  }
  return false;
}

// Before the kernel's notifications reach JavaScript (nlsock.cc): the books must hold what this
// path wrote, or JavaScript would judge a change to one of those objects (an operator deleting
// a route a second after it came) as none of its business — and the route would stay gone until
// the next resync.
void FlushHeld() {
  if (g_streams.empty()) return;
  std::vector<WatchStreamWrap*> streams(g_streams);
  for (WatchStreamWrap* s : streams) {
    // A stream ended by an earlier one's JavaScript is no longer listed.
    for (WatchStreamWrap* live : g_streams) {
      if (live == s) {
        s->FlushNow();
        break;
      }
    }
  }
}

void Init(Napi::Env env, Napi::Object exports) {
  exports.Set("WatchStream", WatchStreamWrap::Define(env));
  exports.Set("fastJoinConfigure", Napi::Function::New(env, Configure));
  exports.Set("fastJoinKnow", Napi::Function::New(env, Know));
  exports.Set("fastJoinForget", Napi::Function::New(env, Forget));
  exports.Set("fastJoinDecide", Napi::Function::New(env, DecideForTest));
}

}  // namespace fastjoin
}  // namespace weft
