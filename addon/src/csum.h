// Internet checksum (RFC 1071) helpers for the packet pump.
//
// Everything is computed in "memory order": 16-bit words are loaded in host byte order straight
// from the packet and the folded result is stored back the same way. The one's complement sum is
// independent of byte order (RFC 1071 §2(B)), so no byte swapping is needed anywhere; constants
// that are not read from a packet (protocol, length) are added as htons(x).
#pragma once

#include <arpa/inet.h>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace weft::csum {

// Sum of the 16-bit words of [p, p+len) into a 64-bit accumulator (not folded). A trailing odd
// byte counts as the high-order byte of a big-endian word, i.e. [b, 0] in memory.
inline uint64_t Add(uint64_t sum, const uint8_t* p, size_t len) {
  // 32-bit words into a 64-bit accumulator: no carry handling needed for any realistic length.
  while (len >= 32) {
    uint32_t w[8];
    std::memcpy(w, p, 32);
    sum += uint64_t(w[0]) + w[1] + w[2] + w[3] + w[4] + w[5] + w[6] + w[7];
    p += 32;
    len -= 32;
  }
  while (len >= 4) {
    uint32_t w;
    std::memcpy(&w, p, 4);
    sum += w;
    p += 4;
    len -= 4;
  }
  if (len >= 2) {
    uint16_t w;
    std::memcpy(&w, p, 2);
    sum += w;
    p += 2;
    len -= 2;
  }
  if (len) {
    uint8_t tail[2] = {p[0], 0};
    uint16_t w;
    std::memcpy(&w, tail, 2);
    sum += w;
  }
  return sum;
}

// Fold to 16 bits with end-around carry (not complemented).
inline uint16_t Fold(uint64_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(sum);
}

// The IPv4 pseudo-header sum for an L4 segment of `l4len` bytes (addresses as in the packet).
inline uint64_t Pseudo4(const uint8_t* iph, uint8_t proto, uint32_t l4len) {
  uint64_t sum = Add(0, iph + 12, 8);  // saddr, daddr
  sum += htons(proto);
  sum += htons(static_cast<uint16_t>(l4len));
  return sum;
}

inline uint16_t Load16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

inline void Store16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }

// Whether an IPv4 header of `ihl` bytes (the caller checked that many are there) has a right checksum.
inline bool Ip4HeaderOk(const uint8_t* iph, size_t ihl) { return Fold(Add(0, iph, ihl)) == 0xffff; }

// Compute the checksum of an IPv4 header we built ourselves (`ihl` bytes, bounds checked by the
// caller). Never for a header that came from the wire: patch those (Patch16), so a header
// corrupted in transit stays invalid and the receiver drops it.
inline void FixIp4(uint8_t* iph, size_t ihl) {
  Store16(iph + 10, 0);
  Store16(iph + 10, static_cast<uint16_t>(~Fold(Add(0, iph, ihl))));
}

// RFC 1624 eqn. 3: the checksum at `check` after a 16-bit word of the covered data changed from
// `old_word` to `new_word` (both as loaded from memory): HC' = ~(~HC + ~m + m').
inline void Patch16(uint8_t* check, uint16_t old_word, uint16_t new_word) {
  uint64_t sum = static_cast<uint16_t>(~Load16(check));
  sum += static_cast<uint16_t>(~old_word);
  sum += new_word;
  Store16(check, static_cast<uint16_t>(~Fold(sum)));
}

}  // namespace weft::csum
