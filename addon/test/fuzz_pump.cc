// Datagram fuzz of the packet pump (issue #9): the real receive and transmit paths of pump.cc,
// built with -fsanitize=address,undefined -DWEFT_PUMP_TEST, fed random bytes and mutated real
// VXLAN / udp-mode packets (single datagrams, TCP trains for coalescing, TSO super-frames), in
// the four modes (vxlan|udp × offloads on|off). "The device" is one end of a SOCK_SEQPACKET pair,
// so every frame the pump writes to the TAP/TUN is read back and checked:
//   - an IPv4 header written to the device has IHL×4 within the frame and a right checksum;
//   - a datagram whose inner IPv4 header arrived with a wrong checksum never reaches the device
//     with a right one (the pump patches checksums, RFC 1624, it does not recompute them);
//   - drop counters move on garbage, packetsIn moves on good packets.
// Any sanitizer report aborts the run (-fno-sanitize-recover=all). Prints one JSON line.
//
//   fuzz_pump <iterations> [seed]
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "pump.h"

using namespace weft;
using Bytes = std::vector<uint8_t>;

namespace {

std::mt19937_64 rng;
uint64_t R(uint64_t n) { return n == 0 ? 0 : rng() % n; }

uint16_t Sum(const uint8_t* p, size_t n, uint32_t sum = 0) {
  for (size_t i = 0; i + 1 < n; i += 2) sum += (uint32_t(p[i]) << 8) | p[i + 1];
  if (n & 1) sum += uint32_t(p[n - 1]) << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(sum);
}

bool HeaderValid(const uint8_t* ip, size_t len) {
  if (len < 20 || (ip[0] >> 4) != 4) return false;
  const size_t ihl = size_t(ip[0] & 15) * 4;
  return ihl >= 20 && ihl <= len && Sum(ip, ihl) == 0xffff;
}

// An IPv4 packet 10.5.1.2 → 10.5.2.2 with a right header and L4 checksum.
Bytes Ip4(uint8_t proto, size_t payload, uint32_t seq = 1, uint8_t tcpflags = 0x10) {
  const size_t l4h = proto == IPPROTO_TCP ? 20 : 8;
  Bytes b(20 + l4h + payload);
  uint8_t* ip = b.data();
  ip[0] = 0x45;
  ip[2] = uint8_t(b.size() >> 8);
  ip[3] = uint8_t(b.size());
  ip[4] = uint8_t(R(256));
  ip[6] = 0x40;  // DF
  ip[8] = 64;
  ip[9] = proto;
  const uint8_t src[4] = {10, 5, 1, 2}, dst[4] = {10, 5, 2, 2};
  std::memcpy(ip + 12, src, 4);
  std::memcpy(ip + 16, dst, 4);
  const uint16_t hc = static_cast<uint16_t>(~Sum(ip, 20));
  ip[10] = uint8_t(hc >> 8);
  ip[11] = uint8_t(hc);
  uint8_t* l4 = ip + 20;
  l4[0] = 0x30;
  l4[1] = 0x39;  // port 12345
  l4[2] = 0x00;
  l4[3] = 0x50;  // port 80
  for (size_t i = 0; i < payload; i++) l4[l4h + i] = uint8_t(R(256));
  const size_t l4len = l4h + payload;
  if (proto == IPPROTO_TCP) {
    l4[4] = uint8_t(seq >> 24);
    l4[5] = uint8_t(seq >> 16);
    l4[6] = uint8_t(seq >> 8);
    l4[7] = uint8_t(seq);
    l4[12] = 0x50;
    l4[13] = tcpflags;
    l4[14] = 0xff;
  } else {
    l4[4] = uint8_t(l4len >> 8);
    l4[5] = uint8_t(l4len);
  }
  uint32_t pseudo = Sum(ip + 12, 8) + proto + uint32_t(l4len);
  const uint16_t c = static_cast<uint16_t>(~Sum(l4, l4len, pseudo));
  const size_t off = proto == IPPROTO_TCP ? 16 : 6;
  l4[off] = uint8_t(c >> 8);
  l4[off + 1] = uint8_t(c);
  return b;
}

const uint8_t kPeerMac[6] = {0x02, 0, 0, 0, 0, 0x02};
const uint8_t kOwnMac[6] = {0x02, 0, 0, 0, 0, 0x01};

Bytes Eth(const Bytes& ip) {
  Bytes b(14);
  std::memcpy(b.data(), kOwnMac, 6);
  std::memcpy(b.data() + 6, kPeerMac, 6);
  b[12] = 0x08;
  b.insert(b.end(), ip.begin(), ip.end());
  return b;
}

Bytes Vxlan(const Bytes& frame, uint32_t vni = 1) {
  Bytes b = {0x08, 0, 0, 0, uint8_t(vni >> 16), uint8_t(vni >> 8), uint8_t(vni), 0};
  b.insert(b.end(), frame.begin(), frame.end());
  return b;
}

void Mutate(Bytes* b) {
  switch (R(6)) {
    case 0:  // flip bytes
      for (int i = 0, n = 1 + int(R(8)); i < n && !b->empty(); i++) (*b)[R(b->size())] ^= uint8_t(1 + R(255));
      break;
    case 1:  // truncate
      b->resize(R(b->size() + 1));
      break;
    case 2:  // extend with garbage
      for (int i = 0, n = int(R(100)); i < n; i++) b->push_back(uint8_t(R(256)));
      break;
    case 3: {  // the IHL nibble of the first IPv4 header we can find
      for (size_t i = 0; i < b->size(); i++) {
        if (((*b)[i] >> 4) == 4) {
          (*b)[i] = uint8_t(0x40 | R(16));
          break;
        }
      }
      break;
    }
    case 4:  // one byte of the header area (where the interesting fields are)
      if (!b->empty()) (*b)[R(std::min<size_t>(b->size(), 80))] = uint8_t(R(256));
      break;
    default:
      break;  // unmodified
  }
}

Bytes Random() {
  Bytes b(R(8) == 0 ? R(66000) : R(200));
  for (auto& x : b) x = uint8_t(R(256));
  return b;
}

struct Stats {
  uint64_t datagrams = 0, frames = 0, written = 0, violations = 0, corrupt_headers = 0;
};

struct Harness {
  bool vxlan;
  bool offloads;
  int devpair[2] = {-1, -1};
  int sink = -1;
  int sock = -1;
  std::unique_ptr<Pump> pump;
  std::unique_ptr<PumpTest> t;
  Stats* st;
  std::string name;

  Harness(bool vx, bool off, Stats* s) : vxlan(vx), offloads(off), st(s) {
    name = std::string(vx ? "vxlan" : "udp") + (off ? "+offloads" : "");
    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0, devpair);
    int big = 4 << 20;
    setsockopt(devpair[0], SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big);
    setsockopt(devpair[1], SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
    sink = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(sink, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t al = sizeof a;
    getsockname(sink, reinterpret_cast<sockaddr*>(&a), &al);
    sock = socket(AF_INET, SOCK_DGRAM, 0);
    timeval tv{0, 100000};
    setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    PumpConfig cfg;
    cfg.mode = vx ? PumpMode::kVxlan : PumpMode::kUdp;
    cfg.device = "fuzz0";
    cfg.port = ntohs(a.sin_port);
    cfg.offloads = off;
    pump = PumpTest::Make(cfg, devpair[0], sock);
    auto table = std::make_shared<PeerTable>();
    const uint32_t lo = htonl(INADDR_LOOPBACK);
    table->macs.push_back({0x020000000002ull, lo});
    table->nets.push_back({htonl(0x0a050200), htonl(0xffffff00), 24, lo});
    table->peers.push_back(lo);
    table->Finish();
    pump->SetPeers(table);
    t = std::make_unique<PumpTest>(pump.get());
  }

  ~Harness() {
    t.reset();
    pump.reset();  // closes devpair[0] and sock
    close(devpair[1]);
    close(sink);
  }

  // Read back what the device got; check every frame. `corrupt_in`: the input's inner IPv4
  // header was wrong, so no IPv4 frame with a right header may come out of this operation.
  void Drain(bool rx, bool corrupt_in) {
    static thread_local Bytes buf(70000);
    for (;;) {
      ssize_t n = recv(devpair[1], buf.data(), buf.size(), 0);
      if (n < 0) break;
      st->written++;
      size_t off = offloads ? 10 : 0;
      if (vxlan) {
        if (size_t(n) < off + 14 || buf[off + 12] != 0x08 || buf[off + 13] != 0x00) continue;
        off += 14;
      }
      if (size_t(n) < off + 20 || (buf[off] >> 4) != 4) continue;
      const uint8_t* ip = buf.data() + off;
      const size_t len = size_t(n) - off;
      const bool valid = HeaderValid(ip, len);
      if (rx && !valid) Violation("an IPv4 header with a wrong checksum or IHL out of bounds was written to the device");
      if (rx && corrupt_in && valid) Violation("a datagram whose inner IPv4 header arrived corrupted left with a valid checksum");
      if (!rx && !valid) Violation("an ICMP message the pump built has a wrong header");
    }
    char sinkbuf[2048];
    while (recv(sink, sinkbuf, sizeof sinkbuf, 0) >= 0) {
    }
  }

  void Violation(const char* what) {
    if (st->violations++ < 5) std::fprintf(stderr, "VIOLATION (%s): %s\n", name.c_str(), what);
  }

  // One received datagram (from the peer): the inner packet as a peer would send it.
  void RxOne(Bytes d, bool corrupt_in) {
    std::vector<Bytes*> v = {&d};
    t->Rx(v, htonl(INADDR_LOOPBACK));
    st->datagrams++;
    Drain(true, corrupt_in);
  }

  Bytes WrapRx(const Bytes& ip) { return vxlan ? Vxlan(Eth(ip)) : ip; }

  size_t InnerOff() const { return vxlan ? 8 + 14 : 0; }

  bool InnerHeaderCorrupt(const Bytes& d) const {
    const size_t o = InnerOff();
    if (d.size() < o + 20) return false;
    if (vxlan && (d[o - 2] != 0x08 || d[o - 1] != 0x00)) return false;
    if ((d[o] >> 4) != 4) return false;
    const size_t ihl = size_t(d[o] & 15) * 4;
    if (ihl < 20 || ihl > d.size() - o) return false;  // out of bounds: must be dropped (checked as "valid ⇒ in bounds")
    return Sum(d.data() + o, ihl) != 0xffff;
  }

  void RxCase() {
    Bytes d;
    switch (R(4)) {
      case 0:
        d = Random();
        break;
      case 1: {
        const uint8_t proto = R(2) ? IPPROTO_TCP : IPPROTO_UDP;
        d = WrapRx(Ip4(proto, R(1400)));
        Mutate(&d);
        break;
      }
      case 2: {  // a real packet with a corrupted IP header (TTL or an address): checksum now wrong
        d = WrapRx(Ip4(IPPROTO_TCP, 100 + R(1000)));
        const size_t o = InnerOff();
        d[o + (R(2) ? 8 : 13)] ^= uint8_t(1 + R(255));
        break;
      }
      default: {  // a TCP train to coalesce, one segment maybe corrupted, maybe an oversize one
        const size_t mss = R(4) == 0 ? 3000 + R(20000) : 1000;
        std::vector<Bytes> segs;
        uint32_t seq = uint32_t(R(1u << 31));
        for (int i = 0, n = 2 + int(R(20)); i < n; i++) {
          segs.push_back(WrapRx(Ip4(IPPROTO_TCP, mss, seq, i + 1 == n ? 0x18 : 0x10)));
          seq += uint32_t(mss);
        }
        if (R(2)) Mutate(&segs[R(segs.size())]);
        std::vector<Bytes*> v;
        for (auto& s : segs) v.push_back(&s);
        t->Rx(v, htonl(INADDR_LOOPBACK));
        st->datagrams += segs.size();
        Drain(true, false);
        return;
      }
    }
    const bool corrupt = InnerHeaderCorrupt(d);
    if (corrupt) st->corrupt_headers++;
    RxOne(std::move(d), corrupt);
  }

  void TxCase() {
    Bytes f;
    Bytes vh(offloads ? 10 : 0);
    switch (R(3)) {
      case 0:
        f = Random();
        vh.clear();
        break;
      case 1: {
        Bytes ip = Ip4(R(2) ? IPPROTO_TCP : IPPROTO_UDP, R(1400));
        f = vxlan ? Eth(ip) : ip;
        Mutate(&f);
        if (offloads && R(2)) {  // a partial checksum to complete, at a random place
          vh[0] = 1;
          const uint16_t start = uint16_t(R(f.size() + 40)), o = uint16_t(R(40));
          std::memcpy(&vh[6], &start, 2);
          std::memcpy(&vh[8], &o, 2);
        }
        break;
      }
      default: {  // a TSO super-frame (offloads) or just a big TCP packet
        Bytes ip = Ip4(IPPROTO_TCP, 2000 + R(60000));
        f = vxlan ? Eth(ip) : ip;
        if (offloads) {
          vh[1] = R(8) ? 1 : uint8_t(R(256));  // GSO TCPV4, or garbage
          const uint16_t gso = uint16_t(R(8) ? 1400 : R(70000));
          std::memcpy(&vh[4], &gso, 2);
        }
        if (R(2)) Mutate(&f);
        break;
      }
    }
    f.insert(f.begin(), vh.begin(), vh.end());
    t->Tx(&f);
    st->frames++;
    Drain(false, false);
  }
};

}  // namespace

int main(int argc, char** argv) {
  const long iterations = argc > 1 ? std::atol(argv[1]) : 20000;
  const uint64_t seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1;
  rng.seed(seed);
  Stats st;
  uint64_t drops = 0, packets_in = 0;
  for (int mode = 0; mode < 4; mode++) {
    Harness h(mode < 2, mode % 2 == 0, &st);
    for (long i = 0; i < iterations / 4; i++) {
      if (R(3)) h.RxCase();
      else h.TxCase();
    }
    for (int c = 0; c < kNumCounters; c++) {
      const std::string n = kCounterNames[c];
      if (n.rfind("drop", 0) == 0) drops += h.pump->Count(c);
    }
    packets_in += h.pump->Count(kPacketsIn);
    if (h.pump->Count(kPacketsIn) == 0) h.Violation("no good packet was accepted (packetsIn did not move)");
  }
  if (drops == 0) std::fprintf(stderr, "VIOLATION: drop counters did not move\n"), st.violations++;
  std::printf(
      "{\"seed\":%llu,\"datagrams\":%llu,\"frames\":%llu,\"deviceWrites\":%llu,\"corruptHeaders\":%llu,"
      "\"drops\":%llu,\"packetsIn\":%llu,\"violations\":%llu}\n",
      (unsigned long long)seed, (unsigned long long)st.datagrams, (unsigned long long)st.frames,
      (unsigned long long)st.written, (unsigned long long)st.corrupt_headers, (unsigned long long)drops,
      (unsigned long long)packets_in, (unsigned long long)st.violations);
  return st.violations == 0 ? 0 : 1;
}
