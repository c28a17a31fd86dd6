// The user-space packet pump: a TUN/TAP device on one side, a UDP socket on the other, two
// native threads in between. Packets never cross into JavaScript; JavaScript opens a pump,
// swaps its peer table, reads its counters and closes it (see src/native.ts for the contract).
//
//   device ──read (super-frames with IFF_VNET_HDR)──► TX thread ──segment, checksum, frame──►
//          sendmmsg (+UDP GSO) ──► peers
//   peers ──recvmmsg (+UDP GRO)──► RX thread ──check peer/VNI, coalesce TCP──► writev ──► device
//
// Modes:
//   vxlan: TAP (L2), datagram = 8-byte VXLAN header + Ethernet frame, peer chosen by the frame's
//          destination MAC (the peer's VtepMAC); datagrams must carry our VNI.
//   udp:   TUN (L3), datagram = the raw IPv4 packet (flannel's legacy udp backend), peer chosen by
//          longest-prefix match of the destination address on the peers' subnets; TTL decremented.
// In both modes datagrams whose source address is not a peer's PublicIP are dropped and counted.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace weft {

enum class PumpMode { kVxlan, kUdp };

struct PumpConfig {
  PumpMode mode = PumpMode::kVxlan;
  std::string device;      // TAP (vxlan) or TUN (udp) name; created persistent if missing
  uint32_t local_ip = 0;   // bind address, network byte order
  uint16_t port = 0;       // UDP port, host order
  uint32_t vni = 1;        // vxlan only
  bool offloads = true;    // IFF_VNET_HDR + TSO from the device, UDP GSO/GRO, TCP coalescing
  int mtu = 1450;          // the device's MTU: segment size for super-packets written to it
  int sndbuf = 4 << 20;
  int rcvbuf = 8 << 20;
};

struct MacRoute {
  uint64_t mac;  // 48-bit MAC, first octet most significant
  uint32_t dst;  // peer PublicIP, network order
};

struct NetRoute {
  uint32_t net;   // network order
  uint32_t mask;  // network order
  int prefix;
  uint32_t dst;   // network order
};

// Immutable once published: the threads read it without locks (atomic shared_ptr swap).
struct PeerTable {
  std::vector<MacRoute> macs;  // sorted by mac
  std::vector<NetRoute> nets;  // sorted by prefix, longest first
  std::vector<uint32_t> peers; // every dst, sorted, unique

  void Finish();  // sort and index; call once before publishing
  bool LookupMac(uint64_t mac, uint32_t* dst) const;
  bool LookupIp(uint32_t ip, uint32_t* dst) const;
  bool IsPeer(uint32_t ip) const;
};

// Counter ids; names in kCounterNames (same order), exported to JavaScript as they are.
enum PumpCounter : int {
  kFramesIn,        // reads from the device (a TSO super-frame counts once)
  kPacketsOut,      // datagrams sent to peers (after segmentation)
  kBytesOut,        // UDP payload bytes sent
  kPacketsIn,       // datagrams accepted from peers
  kBytesIn,         // UDP payload bytes accepted
  kFramesOut,       // writes to the device (a coalesced super-frame counts once)
  kCoalesced,       // datagrams merged into super-frames written to the device
  kDropNoPeer,      // device → peers: no peer for the destination MAC / address
  kDropBroadcast,   // device → peers: broadcast/multicast frame (no flooding, as VXLAN nolearning)
  kDropMalformed,   // unparseable frame from the device
  kDropSendError,   // sendmmsg failed for a datagram
  kDropNotPeer,     // peers → device: source address is not a peer's PublicIP
  kDropBadVni,      // peers → device: not VXLAN or another VNI
  kDropBadPacket,   // peers → device: truncated or malformed datagram
  kDropBadChecksum, // peers → device: inner TCP/UDP checksum wrong
  kDropWriteError,  // write to the device failed
  kDropTtl,         // udp mode: TTL expired
  kIcmpUnreachable, // udp mode: ICMP net-unreachable sent back for an unknown destination
  kNumCounters
};
extern const char* const kCounterNames[kNumCounters];

class Pump {
 public:
  // Opens (creates or attaches to) the device, binds the socket, starts both threads. On failure
  // returns null with `err` naming the step and `err_no` the errno.
  static std::unique_ptr<Pump> Open(const PumpConfig& cfg, std::string* err, int* err_no);
  ~Pump();

  Pump(const Pump&) = delete;
  Pump& operator=(const Pump&) = delete;

  // Publish a new peer table; packets in flight finish with the old one. Never blocks traffic.
  void SetPeers(std::shared_ptr<const PeerTable> table);
  // Stop and join both threads, close the fds. The device stays (it is persistent). Idempotent.
  void Close();

  uint64_t Count(int id) const { return counters_[id].load(std::memory_order_relaxed); }
  uint32_t LastNotPeer() const { return last_not_peer_.load(std::memory_order_relaxed); }
  // True while both threads run; false after Close() or when one stopped on a fatal error.
  bool Running() const;
  // The fatal error that stopped a thread (e.g. the device was deleted), empty if none.
  std::string Error() const;
  const std::string& device() const { return cfg_.device; }
  bool vnet_hdr() const { return cfg_.offloads; }

 private:
  explicit Pump(const PumpConfig& cfg) : cfg_(cfg) {}
  void TxLoop();
  void RxLoop();
  void Fail(const std::string& what);
  void Inc(int id, uint64_t n = 1) { counters_[id].fetch_add(n, std::memory_order_relaxed); }
  std::shared_ptr<const PeerTable> Table() const { return std::atomic_load(&table_); }

  friend class TxPath;
  friend class RxPath;
  friend class PumpTest;

  PumpConfig cfg_;
  int dev_fd_ = -1;
  int sock_fd_ = -1;
  int stop_fd_ = -1;  // eventfd: readable once Close() was called
  std::atomic<bool> stopping_{false};
  std::atomic<int> live_threads_{0};
  std::thread tx_;
  std::thread rx_;
  std::shared_ptr<const PeerTable> table_;
  std::atomic<uint64_t> counters_[kNumCounters] = {};
  std::atomic<uint32_t> last_not_peer_{0};
  mutable std::mutex err_mu_;
  std::string error_;
  std::mutex close_mu_;
  bool closed_ = false;
};

#ifdef WEFT_PUMP_TEST
// Only in the sanitizer test build (addon/test/fuzz_pump.cc): drive the receive and transmit
// paths directly, one datagram or frame at a time, over fds the test owns.
class PumpTest {
 public:
  // A pump over `dev_fd` (what "the device" gets) and `sock_fd` (where datagrams go); no threads.
  static std::unique_ptr<Pump> Make(const PumpConfig& cfg, int dev_fd, int sock_fd);
  explicit PumpTest(Pump* p);
  ~PumpTest();
  // Datagrams received from `from` (network order), then the coalescing group flushed.
  void Rx(const std::vector<std::vector<uint8_t>*>& datagrams, uint32_t from);
  // One frame read from the device (with its virtio_net_hdr when offloads are on).
  void Tx(std::vector<uint8_t>* frame);

 private:
  Pump* p_;
  class RxPath* rx_;
  class TxPath* tx_;
};
#endif

}  // namespace weft
