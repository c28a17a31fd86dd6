// TCPv4 segmentation in user space (what the kernel's tcp_gso_segment does), shared by the send
// path (TSO super-frames from the device) and the receive path (super-packets a peer's kernel
// handed over unsegmented). Each segment gets its own copy of the headers: IP total length, id
// and checksum, TCP sequence, flags and a complete checksum; FIN/PSH only on the last segment,
// CWR only on the first. The payload is never copied: callers point iovecs at it.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "csum.h"

namespace weft {

// Layout of a TCPv4 packet starting at an optional L2 header of `l2` bytes.
struct TcpLayout {
  size_t l2 = 0, ihl = 0, doff = 0, hlen = 0, payload = 0;
};

// Parse the layout of an IPv4/TCP packet of `len` bytes; false when it is not one.
inline bool ParseTcp4(const uint8_t* pkt, size_t len, size_t l2, TcpLayout* out) {
  if (l2 && (len < l2 || pkt[l2 - 2] != 0x08 || pkt[l2 - 1] != 0x00)) return false;
  const uint8_t* ip = pkt + l2;
  if (len < l2 + 20 || (ip[0] >> 4) != 4 || ip[9] != IPPROTO_TCP) return false;
  const size_t ihl = size_t(ip[0] & 0x0f) * 4;
  if (ihl < 20 || len < l2 + ihl + 20) return false;
  const size_t doff = size_t(ip[ihl + 12] >> 4) * 4;
  if (doff < 20 || l2 + ihl + doff > len) return false;
  out->l2 = l2;
  out->ihl = ihl;
  out->doff = doff;
  out->hlen = l2 + ihl + doff;
  out->payload = len - out->hlen;
  return true;
}

// Segmenter for one super-packet: call Header(s, out) for s in [0, count).
class TcpSegmenter {
 public:
  TcpSegmenter(const uint8_t* pkt, const TcpLayout& lay, size_t mss) : pkt_(pkt), lay_(lay), mss_(mss) {
    const uint8_t* ip = pkt + lay.l2;
    const uint8_t* tcp = ip + lay.ihl;
    uint32_t seq;
    std::memcpy(&seq, tcp + 4, 4);
    seq0_ = ntohl(seq);
    id0_ = ntohs(csum::Load16(ip + 4));
    flags_ = tcp[13];
    addr_sum_ = csum::Add(0, ip + 12, 8) + htons(IPPROTO_TCP);
    count_ = lay.payload == 0 ? 1 : (lay.payload + mss - 1) / mss;
  }

  size_t count() const { return count_; }
  const uint8_t* payload(size_t s) const { return pkt_ + lay_.hlen + s * mss_; }
  size_t seglen(size_t s) const {
    const size_t done = s * mss_;
    return done >= lay_.payload ? 0 : (lay_.payload - done < mss_ ? lay_.payload - done : mss_);
  }

  // Write segment s's headers (lay.hlen bytes, L2 included) to `out`.
  void Header(size_t s, uint8_t* out) const {
    const size_t len = seglen(s);
    std::memcpy(out, pkt_, lay_.hlen);
    uint8_t* ip = out + lay_.l2;
    uint8_t* tcp = ip + lay_.ihl;
    // Total length and id change: patch the header checksum (RFC 1624), never recompute it, so
    // a super-packet whose header arrived corrupted yields segments the receiver still drops.
    const uint16_t old_len = csum::Load16(ip + 2), old_id = csum::Load16(ip + 4);
    csum::Store16(ip + 2, htons(static_cast<uint16_t>(lay_.ihl + lay_.doff + len)));
    csum::Store16(ip + 4, htons(static_cast<uint16_t>(id0_ + s)));
    csum::Patch16(ip + 10, old_len, csum::Load16(ip + 2));
    csum::Patch16(ip + 10, old_id, csum::Load16(ip + 4));
    const uint32_t seq = htonl(seq0_ + static_cast<uint32_t>(s * mss_));
    std::memcpy(tcp + 4, &seq, 4);
    uint8_t f = flags_;
    if (s + 1 != count_) f &= static_cast<uint8_t>(~(0x01 | 0x08));  // FIN, PSH: last only
    if (s != 0) f &= static_cast<uint8_t>(~0x80);                      // CWR: first only
    tcp[13] = f;
    csum::Store16(tcp + 16, 0);
    uint64_t sum = addr_sum_ + htons(static_cast<uint16_t>(lay_.doff + len));
    sum = csum::Add(sum, tcp, lay_.doff);
    sum = csum::Add(sum, payload(s), len);
    csum::Store16(tcp + 16, static_cast<uint16_t>(~csum::Fold(sum)));
  }

 private:
  const uint8_t* pkt_;
  TcpLayout lay_;
  size_t mss_;
  uint32_t seq0_ = 0;
  uint16_t id0_ = 0;
  uint8_t flags_ = 0;
  uint64_t addr_sum_ = 0;
  size_t count_ = 0;
};

}  // namespace weft
