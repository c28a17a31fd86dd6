// The packet pump (see pump.h for the picture). Design notes, from measurements on a 2-vCPU VM
// (docs/dataplane-design.md):
// - Copies and per-packet kernel work dominate, not syscall entry. So: the device hands us TSO
//   super-frames (IFF_VNET_HDR + TUNSETOFFLOAD), we cut them into datagrams whose headers we
//   build in a scratch area while the payload stays where it was read (iovecs), and each
//   super-frame leaves in one UDP GSO send (UDP_SEGMENT). sendmmsg alone was half as fast.
// - Receive: UDP_GRO hands us trains of datagrams; consecutive segments of one TCP flow are
//   written back to the device as one TSO super-frame (virtio_net_hdr GSO), so the stack above
//   handles one large packet instead of ~45.
// - Inner checksums: a kernel VXLAN sender on a veth underlay leaves the inner TCP/UDP checksum
//   partial (only the pseudo-header sum in the field) and nobody completes it. A field equal to
//   the pseudo-header sum is handed to the device as NEEDS_CSUM (the kernel completes it when it
//   must); any other value is a complete checksum: verified here before a packet is merged into
//   a super-frame, otherwise left to the kernel to verify. What we send always carries complete
//   checksums: a kernel receiver verifies them.
// - Threads: one per direction, blocking in poll() only when there is nothing to do. Pinning
//   and more threads did not pay on two cores (the ceiling is CPU), so there are just two.
#include "pump.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "csum.h"
#include "segment.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

namespace weft {

// struct virtio_net_hdr from <linux/virtio_net.h>, which does not compile as C++ (a field is
// named `class`). Native byte order: the TUN/TAP default on little-endian hosts.
struct virtio_net_hdr {
  uint8_t flags;
  uint8_t gso_type;
  uint16_t hdr_len;
  uint16_t gso_size;
  uint16_t csum_start;
  uint16_t csum_offset;
};
static_assert(sizeof(virtio_net_hdr) == 10, "virtio_net_hdr is 10 bytes");
constexpr uint8_t VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
constexpr uint8_t VIRTIO_NET_HDR_F_DATA_VALID = 2;
constexpr uint8_t VIRTIO_NET_HDR_GSO_NONE = 0;
constexpr uint8_t VIRTIO_NET_HDR_GSO_TCPV4 = 1;
constexpr uint8_t VIRTIO_NET_HDR_GSO_ECN = 0x80;

const char* const kCounterNames[kNumCounters] = {
    "framesIn",      "packetsOut",     "bytesOut",        "packetsIn",        "bytesIn",
    "framesOut",     "coalesced",      "dropNoPeer",      "dropBroadcast",    "dropMalformed",
    "dropSendError", "dropNotPeer",    "dropBadVni",      "dropBadPacket",    "dropBadChecksum",
    "dropWriteError", "dropTtl",       "icmpUnreachable",
};

namespace {

constexpr size_t kVnetLen = sizeof(virtio_net_hdr);  // 10: the default TUNSETVNETHDRSZ
constexpr size_t kVxlanLen = 8;
constexpr size_t kEthLen = 14;
constexpr size_t kFrameBuf = 65536 + 512;             // a TSO super-frame plus headers
constexpr size_t kMaxUdpPayload = 65535 - 20 - 8;     // one UDP (GSO) send
constexpr int kMaxGsoSegments = 64;                    // UDP_MAX_SEGMENTS on older kernels
constexpr int kBatch = 32;
constexpr uint8_t kTcpFin = 0x01, kTcpSyn = 0x02, kTcpRst = 0x04, kTcpPsh = 0x08, kTcpAck = 0x10,
                  kTcpUrg = 0x20, kTcpEce = 0x40, kTcpCwr = 0x80;

std::string ErrnoText(const char* what, int e) { return std::string(what) + ": " + std::strerror(e); }

uint64_t MacAt(const uint8_t* p) {
  uint64_t m = 0;
  for (int i = 0; i < 6; i++) m = (m << 8) | p[i];
  return m;
}

uint32_t Load32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

void Store32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }

// Decrement an IPv4 TTL in place (the caller checked 20 bytes are there), patching the header
// checksum (RFC 1624) instead of recomputing it: a header corrupted in transit stays invalid.
// False when the TTL expires.
bool DecrementTtl(uint8_t* iph) {
  if (iph[8] <= 1) return false;
  const uint16_t old = csum::Load16(iph + 8);  // TTL and protocol
  iph[8]--;
  csum::Patch16(iph + 10, old, csum::Load16(iph + 8));
  return true;
}

// Length of the IPv4 header at `iph` when it is one that fits in `len` bytes (IHL×4 in [20, len]
// and within the total length), else 0. Every read of a header past its 20th byte is bounded by it.
size_t Ip4HeaderLen(const uint8_t* iph, size_t len) {
  if (len < 20 || (iph[0] >> 4) != 4) return 0;
  const size_t ihl = size_t(iph[0] & 0x0f) * 4;
  const size_t tot = (size_t(iph[2]) << 8) | iph[3];
  if (ihl < 20 || ihl > len || tot < ihl) return 0;
  return ihl;
}

// The L4 checksum field offset for TCP/UDP, 0 for anything else.
size_t L4CheckOffset(uint8_t proto) { return proto == IPPROTO_TCP ? 16 : proto == IPPROTO_UDP ? 6 : 0; }

}  // namespace

// ------------------------------------------------------------------------------- peer table

void PeerTable::Finish() {
  std::sort(macs.begin(), macs.end(), [](const MacRoute& a, const MacRoute& b) { return a.mac < b.mac; });
  std::stable_sort(nets.begin(), nets.end(), [](const NetRoute& a, const NetRoute& b) { return a.prefix > b.prefix; });
  peers.clear();
  for (const auto& m : macs) peers.push_back(m.dst);
  for (const auto& n : nets) peers.push_back(n.dst);
  std::sort(peers.begin(), peers.end());
  peers.erase(std::unique(peers.begin(), peers.end()), peers.end());
}

bool PeerTable::LookupMac(uint64_t mac, uint32_t* dst) const {
  auto it = std::lower_bound(macs.begin(), macs.end(), mac, [](const MacRoute& r, uint64_t m) { return r.mac < m; });
  if (it == macs.end() || it->mac != mac) return false;
  *dst = it->dst;
  return true;
}

bool PeerTable::LookupIp(uint32_t ip, uint32_t* dst) const {
  for (const auto& n : nets) {
    if ((ip & n.mask) == n.net) {
      *dst = n.dst;
      return true;
    }
  }
  return false;
}

bool PeerTable::IsPeer(uint32_t ip) const { return std::binary_search(peers.begin(), peers.end(), ip); }

// ------------------------------------------------------------------------------- open / close

std::unique_ptr<Pump> Pump::Open(const PumpConfig& cfg, std::string* err, int* err_no) {
  std::unique_ptr<Pump> p(new Pump(cfg));
  p->table_ = std::make_shared<PeerTable>();
  auto fail = [&](const std::string& what) -> std::unique_ptr<Pump> {
    *err_no = errno;
    *err = ErrnoText(what.c_str(), errno);
    return nullptr;  // ~Pump closes what was opened
  };
  const bool tap = cfg.mode == PumpMode::kVxlan;
  const std::string kind = tap ? "TAP" : "TUN";

  p->sock_fd_ = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (p->sock_fd_ < 0) return fail("UDP socket");
  // Big buffers: a TSO super-frame is ~45 datagrams. FORCE needs CAP_NET_ADMIN (weftd has it);
  // fall back to the sysctl-capped variant.
  if (setsockopt(p->sock_fd_, SOL_SOCKET, SO_SNDBUFFORCE, &cfg.sndbuf, sizeof cfg.sndbuf) < 0) {
    setsockopt(p->sock_fd_, SOL_SOCKET, SO_SNDBUF, &cfg.sndbuf, sizeof cfg.sndbuf);
  }
  if (setsockopt(p->sock_fd_, SOL_SOCKET, SO_RCVBUFFORCE, &cfg.rcvbuf, sizeof cfg.rcvbuf) < 0) {
    setsockopt(p->sock_fd_, SOL_SOCKET, SO_RCVBUF, &cfg.rcvbuf, sizeof cfg.rcvbuf);
  }
  // A send never blocks Close() for long.
  timeval tv{1, 0};
  setsockopt(p->sock_fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (cfg.offloads) {
    int one = 1;
    if (setsockopt(p->sock_fd_, IPPROTO_UDP, UDP_GRO, &one, sizeof one) < 0) return fail("enable UDP_GRO");
  }
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = cfg.local_ip;
  sa.sin_port = htons(cfg.port);
  if (bind(p->sock_fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) {
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &cfg.local_ip, ip, sizeof ip);
    return fail(std::string("bind UDP ") + ip + ":" + std::to_string(cfg.port));
  }

  p->dev_fd_ = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
  if (p->dev_fd_ < 0) return fail("open /dev/net/tun");
  ifreq ifr{};
  if (cfg.device.empty() || cfg.device.size() >= IFNAMSIZ) {
    errno = EINVAL;
    return fail(kind + " device name \"" + cfg.device + "\"");
  }
  std::memcpy(ifr.ifr_name, cfg.device.data(), cfg.device.size());
  ifr.ifr_flags = static_cast<short>((tap ? IFF_TAP : IFF_TUN) | IFF_NO_PI | (cfg.offloads ? IFF_VNET_HDR : 0));
  if (ioctl(p->dev_fd_, TUNSETIFF, &ifr) < 0) return fail("create " + kind + " " + cfg.device + " (TUNSETIFF)");
  if (cfg.offloads) {
    // What we accept from the kernel: partial checksums and TCPv4 TSO (ECN included). Not TSO6
    // (the overlay is IPv4) and not USO: the kernel segments those itself.
    unsigned off = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO_ECN;
    if (ioctl(p->dev_fd_, TUNSETOFFLOAD, off) < 0) return fail("enable offloads on " + cfg.device + " (TUNSETOFFLOAD)");
  } else if (ioctl(p->dev_fd_, TUNSETOFFLOAD, 0u) < 0) {
    return fail("disable offloads on " + cfg.device + " (TUNSETOFFLOAD)");
  }

  p->stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (p->stop_fd_ < 0) return fail("eventfd");
  // Last, so that a failure above leaves no device behind. Persistent: the device, its address
  // and routes outlive a weftd restart, as the kernel VXLAN device does; a restarted weftd
  // attaches to it again.
  if (ioctl(p->dev_fd_, TUNSETPERSIST, 1) < 0) return fail("make " + cfg.device + " persistent (TUNSETPERSIST)");

  p->live_threads_ = 2;
  p->tx_ = std::thread([raw = p.get()] { raw->TxLoop(); });
  p->rx_ = std::thread([raw = p.get()] { raw->RxLoop(); });
  return p;
}

Pump::~Pump() { Close(); }

void Pump::Close() {
  std::lock_guard<std::mutex> lock(close_mu_);
  if (closed_) return;
  closed_ = true;
  stopping_ = true;
  if (stop_fd_ >= 0) {
    uint64_t one = 1;
    ssize_t r = write(stop_fd_, &one, sizeof one);
    (void)r;
  }
  if (tx_.joinable()) tx_.join();
  if (rx_.joinable()) rx_.join();
  for (int* fd : {&dev_fd_, &sock_fd_, &stop_fd_}) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
  }
}

void Pump::SetPeers(std::shared_ptr<const PeerTable> table) { std::atomic_store(&table_, std::move(table)); }

bool Pump::Running() const { return live_threads_.load() == 2 && !stopping_.load(); }

std::string Pump::Error() const {
  std::lock_guard<std::mutex> lock(err_mu_);
  return error_;
}

void Pump::Fail(const std::string& what) {
  {
    std::lock_guard<std::mutex> lock(err_mu_);
    if (error_.empty()) error_ = what;
  }
}

// Wait until `fd` is readable or Close() was called. False: stop.
static bool WaitReadable(int fd, int stop_fd, const std::atomic<bool>& stopping) {
  pollfd fds[2] = {{fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
  for (;;) {
    if (stopping.load(std::memory_order_relaxed)) return false;
    int r = poll(fds, 2, -1);
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (fds[1].revents) return false;
    return true;  // readable, or an error the next read reports
  }
}

// ------------------------------------------------------------------------------- TX: device → peers

// Collects datagrams (as iovec lists) for one sendmmsg call. Headers built for segments live in
// a scratch area that stays valid until Flush().
class TxPath {
  friend class PumpTest;  // the sanitizer test build (WEFT_PUMP_TEST) drives the path directly

 public:
  explicit TxPath(Pump* pump) : p_(pump), cfg_(pump->cfg_) {
    scratch_.resize(kScratch);
    vxlan_[0] = 0x08;  // I flag: the VNI is valid
    vxlan_[4] = static_cast<uint8_t>(cfg_.vni >> 16);
    vxlan_[5] = static_cast<uint8_t>(cfg_.vni >> 8);
    vxlan_[6] = static_cast<uint8_t>(cfg_.vni);
  }

  void Run() {
    // Frames stay in their slot until the batch is flushed: iovecs point into them.
    std::vector<uint8_t> bufs(size_t(kBatch) * kFrameBuf);
    for (;;) {
      if (!WaitReadable(p_->dev_fd_, p_->stop_fd_, p_->stopping_)) return;
      for (;;) {
        table_ = p_->Table();
        int n = 0;
        for (; n < kBatch; n++) {
          uint8_t* buf = bufs.data() + size_t(n) * kFrameBuf;
          ssize_t len = read(p_->dev_fd_, buf, kFrameBuf);
          if (len < 0) {
            if (errno == EINTR) {
              n--;
              continue;
            }
            if (errno == EAGAIN) break;
            Flush();
            p_->Fail(ErrnoText(("read from " + cfg_.device).c_str(), errno) +
                     (errno == EBADFD || errno == EIO ? " (the device was deleted?)" : ""));
            return;
          }
          p_->Inc(kFramesIn);
          Encode(buf, static_cast<size_t>(len));
        }
        Flush();
        if (n < kBatch || p_->stopping_.load(std::memory_order_relaxed)) break;
      }
    }
  }

 private:
  static constexpr size_t kScratch = 512 * 1024;
  static constexpr int kMaxMsgs = 512;
  static constexpr int kMaxIov = 8192;

  // One frame (with its virtio_net_hdr when offloads are on) read from the device.
  void Encode(uint8_t* buf, size_t len) {
    virtio_net_hdr vh{};
    uint8_t* frame = buf;
    size_t flen = len;
    if (cfg_.offloads) {
      if (len < kVnetLen) return Drop(kDropMalformed);
      std::memcpy(&vh, buf, kVnetLen);
      frame = buf + kVnetLen;
      flen = len - kVnetLen;
    }
    uint32_t dst = 0;
    size_t l2 = 0;
    if (cfg_.mode == PumpMode::kVxlan) {
      if (flen < kEthLen) return Drop(kDropMalformed);
      if (frame[0] & 1) return Drop(kDropBroadcast);
      if (!table_->LookupMac(MacAt(frame), &dst)) return Drop(kDropNoPeer);
      l2 = kEthLen;
    } else {
      // IPv6 multicast (MLD, router solicitations of the TUN's link-local address) is expected
      // noise, like broadcasts on the TAP; the overlay carries IPv4 only.
      if (flen >= 40 && (frame[0] >> 4) == 6 && frame[24] == 0xff) return Drop(kDropBroadcast);
      if (Ip4HeaderLen(frame, flen) == 0) return Drop(kDropMalformed);
      if (!table_->LookupIp(Load32(frame + 16), &dst)) {
        Unreachable(frame, flen);
        return Drop(kDropNoPeer);
      }
      if (!DecrementTtl(frame)) return Drop(kDropTtl);
    }
    const uint8_t gso = vh.gso_type & ~VIRTIO_NET_HDR_GSO_ECN;
    if (gso == VIRTIO_NET_HDR_GSO_NONE) {
      if (vh.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
        if (!CompleteChecksum(frame, flen, vh.csum_start, vh.csum_offset)) return Drop(kDropMalformed);
      }
      return Single(frame, flen, dst);
    }
    if (gso != VIRTIO_NET_HDR_GSO_TCPV4) return Drop(kDropMalformed);
    Segment(frame, flen, l2, vh.gso_size, dst);
  }

  // Finish a partial checksum as the kernel's skb_checksum_help would.
  static bool CompleteChecksum(uint8_t* frame, size_t flen, size_t start, size_t off) {
    if (start + off + 2 > flen) return false;
    uint16_t c = static_cast<uint16_t>(~csum::Fold(csum::Add(0, frame + start, flen - start)));
    if (off == 6 && c == 0) c = 0xffff;  // UDP: 0 means "no checksum"
    csum::Store16(frame + start + off, c);
    return true;
  }

  void Single(uint8_t* frame, size_t flen, uint32_t dst) {
    size_t total = flen + (cfg_.mode == PumpMode::kVxlan ? kVxlanLen : 0);
    if (total > kMaxUdpPayload) return Drop(kDropMalformed);
    Reserve(1, 2, 0);
    int first = niov_;
    if (cfg_.mode == PumpMode::kVxlan) iov_[niov_++] = {vxlan_, kVxlanLen};
    iov_[niov_++] = {frame, flen};
    AddMsg(dst, first, 0, 1, total);
  }

  // Cut a TCPv4 TSO super-frame into MSS-sized segments with their own headers, and send them in
  // as few UDP GSO sends as the 64 KB datagram limit allows (equal-size datagrams, last shorter).
  void Segment(uint8_t* frame, size_t flen, size_t l2, size_t mss, uint32_t dst) {
    TcpLayout lay;
    if (!ParseTcp4(frame, flen, l2, &lay) || mss == 0) return Drop(kDropMalformed);
    const TcpSegmenter seg(frame, lay, mss);
    const size_t vx = cfg_.mode == PumpMode::kVxlan ? kVxlanLen : 0;
    const size_t outer = vx + lay.hlen;
    const size_t segsize = outer + mss;
    if (segsize > kMaxUdpPayload) return Drop(kDropMalformed);
    const size_t per_send = std::min<size_t>(kMaxGsoSegments, kMaxUdpPayload / segsize);
    const size_t nseg = seg.count();
    for (size_t s = 0; s < nseg;) {
      const size_t k = std::min(per_send, nseg - s);
      Reserve(1, int(2 * k), k * outer);
      const int first = niov_;
      size_t bytes = 0;
      for (size_t j = 0; j < k; j++, s++) {
        uint8_t* h = scratch_.data() + used_;
        used_ += outer;
        if (vx) std::memcpy(h, vxlan_, kVxlanLen);
        seg.Header(s, h + vx);
        const size_t len = seg.seglen(s);
        iov_[niov_++] = {h, outer};
        if (len) iov_[niov_++] = {const_cast<uint8_t*>(seg.payload(s)), len};
        bytes += outer + len;
      }
      AddMsg(dst, first, k > 1 ? static_cast<uint16_t>(segsize) : 0, static_cast<int>(k), bytes);
    }
  }

  // udp mode, like flannel's proxy: tell the sender the destination network is unreachable.
  // (Rare by nature; no rate limit needed beyond the sender's own retries.)
  void Unreachable(const uint8_t* pkt, size_t len) {
    const size_t ihl = size_t(pkt[0] & 0x0f) * 4;
    if (ihl < 20 || len < ihl + 8 || pkt[9] == IPPROTO_ICMP) return;  // never ICMP about ICMP
    if (csum::Load16(pkt + 6) & htons(0x1fff)) return;                  // first fragment only
    // Source: the unreachable destination itself. flannel uses flannel0's own address, which
    // the kernel drops as a martian (a local source arriving from a device), so its message
    // never reaches the sender; an address inside the Network routed via flannel0 passes.
    const uint32_t src = Load32(pkt + 16);
    uint8_t out[kVnetLen + 20 + 8 + 60 + 8] = {};
    uint8_t* ip = out + (cfg_.offloads ? kVnetLen : 0);
    const size_t body = ihl + 8;
    const size_t total = 20 + 8 + body;
    ip[0] = 0x45;
    csum::Store16(ip + 2, htons(static_cast<uint16_t>(total)));
    ip[8] = 8;  // flannel's TTL for these
    ip[9] = IPPROTO_ICMP;
    Store32(ip + 12, src);
    std::memcpy(ip + 16, pkt + 12, 4);
    csum::FixIp4(ip, 20);  // a header we built
    uint8_t* icmp = ip + 20;
    icmp[0] = 3;  // destination unreachable
    icmp[1] = 0;  // net unreachable
    std::memcpy(icmp + 8, pkt, body);
    csum::Store16(icmp + 2, static_cast<uint16_t>(~csum::Fold(csum::Add(0, icmp, 8 + body))));
    if (write(p_->dev_fd_, out, (ip - out) + total) > 0) p_->Inc(kIcmpUnreachable);
  }

  void Drop(int reason) { p_->Inc(reason); }

  // Make room for `msgs` messages, `iovs` iovecs and `hdr` scratch bytes, flushing if needed.
  void Reserve(int msgs, int iovs, size_t hdr) {
    if (nmsg_ + msgs > kMaxMsgs || niov_ + iovs > kMaxIov || used_ + hdr > scratch_.size()) Flush();
  }

  void AddMsg(uint32_t dst, int first_iov, uint16_t gso, int segs, size_t bytes) {
    mmsghdr& m = msgs_[nmsg_];
    std::memset(&m, 0, sizeof m);
    sockaddr_in& a = addrs_[nmsg_];
    a = {};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = dst;
    a.sin_port = htons(cfg_.port);
    m.msg_hdr.msg_name = &a;
    m.msg_hdr.msg_namelen = sizeof a;
    m.msg_hdr.msg_iov = &iov_[first_iov];
    m.msg_hdr.msg_iovlen = static_cast<size_t>(niov_ - first_iov);
    if (gso) {
      char* ctrl = ctrl_[nmsg_];
      std::memset(ctrl, 0, kCtrl);
      m.msg_hdr.msg_control = ctrl;
      m.msg_hdr.msg_controllen = kCtrl;
      cmsghdr* c = CMSG_FIRSTHDR(&m.msg_hdr);
      c->cmsg_level = SOL_UDP;
      c->cmsg_type = UDP_SEGMENT;
      c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      std::memcpy(CMSG_DATA(c), &gso, sizeof gso);
    }
    segs_[nmsg_] = segs;
    bytes_[nmsg_] = bytes;
    nmsg_++;
  }

  void Flush() {
    int off = 0;
    while (off < nmsg_) {
      int r = sendmmsg(p_->sock_fd_, msgs_ + off, static_cast<unsigned>(nmsg_ - off), 0);
      if (r < 0) {
        if (errno == EINTR) continue;
        // The first message of the rest failed (unreachable peer, EMSGSIZE...): drop it, go on.
        p_->Inc(kDropSendError, static_cast<uint64_t>(segs_[off]));
        off++;
        continue;
      }
      for (int i = off; i < off + r; i++) {
        p_->Inc(kPacketsOut, static_cast<uint64_t>(segs_[i]));
        p_->Inc(kBytesOut, bytes_[i]);
      }
      off += r;
    }
    nmsg_ = 0;
    niov_ = 0;
    used_ = 0;
  }

  static constexpr size_t kCtrl = CMSG_SPACE(sizeof(uint16_t));
  Pump* p_;
  const PumpConfig& cfg_;
  std::shared_ptr<const PeerTable> table_;
  std::vector<uint8_t> scratch_;
  size_t used_ = 0;
  uint8_t vxlan_[kVxlanLen] = {};
  mmsghdr msgs_[kMaxMsgs];
  sockaddr_in addrs_[kMaxMsgs];
  alignas(cmsghdr) char ctrl_[kMaxMsgs][kCtrl];
  int segs_[kMaxMsgs];
  size_t bytes_[kMaxMsgs];
  iovec iov_[kMaxIov];
  int nmsg_ = 0;
  int niov_ = 0;
};

void Pump::TxLoop() {
  auto path = std::make_unique<TxPath>(this);
  path->Run();
  live_threads_--;
}

// ------------------------------------------------------------------------------- RX: peers → device

// What the receive path learned about one inner IPv4 packet.
struct Parsed {
  bool ip4 = false;
  bool l4 = false;          // complete TCP/UDP packet (not a fragment) whose checksum we looked at
  bool partial = false;     // its checksum field holds only the pseudo-header sum
  bool verified = false;    // its (complete) checksum was verified here
  bool tcp_merge = false;   // candidate for coalescing
  bool oversize = false;    // a TCP super-packet larger than the device MTU (see One())
  bool ip_ok = false;       // the IPv4 header (ihl bytes, in bounds) has a right checksum
  size_t ihl = 0, doff = 0, hlen = 0, payload = 0;
  uint8_t proto = 0;
};

class RxPath {
  friend class PumpTest;  // the sanitizer test build (WEFT_PUMP_TEST) drives the path directly

 public:
  explicit RxPath(Pump* pump) : p_(pump), cfg_(pump->cfg_) {
    l2_ = cfg_.mode == PumpMode::kVxlan ? kEthLen : 0;
  }

  void Run() {
    std::vector<uint8_t> bufs(size_t(kBatch) * kFrameBuf);
    mmsghdr msgs[kBatch];
    iovec iovs[kBatch];
    sockaddr_in addrs[kBatch];
    alignas(cmsghdr) char ctrl[kBatch][CMSG_SPACE(sizeof(int))];
    for (;;) {
      if (!WaitReadable(p_->sock_fd_, p_->stop_fd_, p_->stopping_)) return;
      for (;;) {
        for (int i = 0; i < kBatch; i++) {
          iovs[i] = {bufs.data() + size_t(i) * kFrameBuf, kFrameBuf};
          std::memset(&msgs[i], 0, sizeof msgs[i]);
          msgs[i].msg_hdr.msg_name = &addrs[i];
          msgs[i].msg_hdr.msg_namelen = sizeof addrs[i];
          msgs[i].msg_hdr.msg_iov = &iovs[i];
          msgs[i].msg_hdr.msg_iovlen = 1;
          msgs[i].msg_hdr.msg_control = ctrl[i];
          msgs[i].msg_hdr.msg_controllen = sizeof ctrl[i];
        }
        int n = recvmmsg(p_->sock_fd_, msgs, kBatch, MSG_DONTWAIT, nullptr);
        if (n < 0) {
          if (errno == EINTR) continue;
          if (errno == EAGAIN) break;
          p_->Fail(ErrnoText("receive from UDP socket", errno));
          return;
        }
        table_ = p_->Table();
        for (int i = 0; i < n && !dead_; i++) Datagrams(msgs[i], addrs[i]);
        FlushGroup();
        if (dead_) return;
        if (n < kBatch || p_->stopping_.load(std::memory_order_relaxed)) break;
      }
    }
  }

 private:
  static constexpr size_t kMaxGroup = 64;

  void Datagrams(mmsghdr& m, const sockaddr_in& from) {
    uint8_t* data = static_cast<uint8_t*>(m.msg_hdr.msg_iov[0].iov_base);
    size_t len = m.msg_len;
    size_t gso = len;
    for (cmsghdr* c = CMSG_FIRSTHDR(&m.msg_hdr); c; c = CMSG_NXTHDR(&m.msg_hdr, c)) {
      if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
        int v;
        std::memcpy(&v, CMSG_DATA(c), sizeof v);
        if (v > 0) gso = static_cast<size_t>(v);
      }
    }
    if (gso == 0) return;
    const uint64_t segs = (len + gso - 1) / gso;
    if (!table_->IsPeer(from.sin_addr.s_addr)) {
      p_->Inc(kDropNotPeer, segs);
      p_->last_not_peer_.store(from.sin_addr.s_addr, std::memory_order_relaxed);
      return;
    }
    if (m.msg_hdr.msg_flags & MSG_TRUNC) {
      p_->Inc(kDropBadPacket, segs);
      return;
    }
    for (size_t off = 0; off < len; off += gso) One(data + off, std::min(gso, len - off));
  }

  void One(uint8_t* d, size_t len) {
    uint8_t* pkt = d;
    size_t plen = len;
    if (cfg_.mode == PumpMode::kVxlan) {
      if (len < kVxlanLen + kEthLen) return Drop(kDropBadPacket);
      const uint32_t vni = (uint32_t(d[4]) << 16) | (uint32_t(d[5]) << 8) | d[6];
      if (!(d[0] & 0x08) || vni != cfg_.vni) return Drop(kDropBadVni);
      pkt = d + kVxlanLen;
      plen = len - kVxlanLen;
    } else {
      const size_t ihl = Ip4HeaderLen(d, len);
      if (ihl == 0) return Drop(kDropBadPacket);
      // A header corrupted in transit is dropped here, never passed on with a fixed checksum.
      if (!csum::Ip4HeaderOk(d, ihl)) return Drop(kDropBadChecksum);
      if (!DecrementTtl(d)) return Drop(kDropTtl);
    }
    Parsed pp = Parse(pkt, plen);
    // An inner IPv4 header with a wrong checksum: the kernel would drop it; so do we (counted),
    // before anything below rewrites the header.
    if (pp.ip4 && pp.ihl == 0) return Drop(kDropBadPacket);  // IHL out of bounds
    if (pp.ip4 && !pp.ip_ok) return Drop(kDropBadChecksum);
    p_->Inc(kPacketsIn);
    p_->Inc(kBytesIn, len);
    if (pp.l4 && !pp.partial && ((pp.tcp_merge && cfg_.offloads) || pp.oversize)) {
      // About to be merged into a super-frame the kernel will not verify, or cut into segments
      // that get fresh checksums (offloads off): verify it here first.
      uint8_t* l4 = pkt + l2_ + pp.ihl;
      const size_t l4len = plen - l2_ - pp.ihl;
      if (csum::Fold(csum::Add(csum::Pseudo4(pkt + l2_, pp.proto, static_cast<uint32_t>(l4len)), l4, l4len)) != 0xffff) {
        return Drop(kDropBadChecksum);
      }
      pp.verified = true;
    }
    if (pp.oversize) {
      // A kernel VXLAN peer on a veth underlay hands its TSO packets over unsegmented: the UDP
      // socket receives one datagram carrying up to 64 KB of inner TCP. Local delivery would
      // take it as is, but forwarding to a container would not (it exceeds the MTU): hand it
      // to the device as the super-frame it is.
      FlushGroup();
      return WriteOversize(pkt, plen, pp);
    }
    if (!pp.tcp_merge || !cfg_.offloads) {
      FlushGroup();
      return WriteSingle(pkt, plen, pp);
    }
    if (ngroup_ > 0 && !CanAppend(pkt, pp)) FlushGroup();
    if (ngroup_ == 0) {
      group_info_ = pp;
      mss_ = pp.payload;
      total_ = 0;
    }
    group_[ngroup_++] = {pkt, plen};
    total_ += pp.payload;
    next_seq_ = ntohl(Load32(pkt + l2_ + pp.ihl + 4)) + static_cast<uint32_t>(pp.payload);
    last_payload_ = pp.payload;
    const uint8_t flags = pkt[l2_ + pp.ihl + 13];
    // Like GRO: PSH, a short segment or a full group ends it.
    if ((flags & kTcpPsh) || pp.payload < mss_ || ngroup_ == kMaxGroup) FlushGroup();
  }

  Parsed Parse(uint8_t* pkt, size_t plen) const {
    Parsed r;
    if (l2_ && (plen < l2_ + 20 || pkt[12] != 0x08 || pkt[13] != 0x00)) return r;
    const uint8_t* ip = pkt + l2_;
    if (plen < l2_ + 20 || (ip[0] >> 4) != 4) return r;
    r.ip4 = true;
    r.ihl = Ip4HeaderLen(ip, plen - l2_);
    if (r.ihl == 0) return r;  // IHL out of bounds: passed on untouched, the kernel drops it
    r.ip_ok = csum::Ip4HeaderOk(ip, r.ihl);
    if (!r.ip_ok) return r;
    const size_t tot = ntohs(csum::Load16(ip + 2));
    if (tot != plen - l2_) return r;  // padded or truncated: leave to the kernel
    if (csum::Load16(ip + 6) & htons(0x3fff)) return r;           // a fragment
    r.proto = ip[9];
    const size_t off = L4CheckOffset(r.proto);
    const size_t l4len = tot - r.ihl;
    if (off == 0 || l4len < off + 2) return r;
    const uint8_t* l4 = ip + r.ihl;
    const uint16_t field = csum::Load16(l4 + off);
    if (r.proto == IPPROTO_UDP && field == 0) return r;  // no UDP checksum
    r.l4 = true;
    const uint16_t pseudo = csum::Fold(csum::Pseudo4(ip, r.proto, static_cast<uint32_t>(l4len)));
    r.partial = field == pseudo || (pseudo == 0xffff && field == 0);
    if (r.proto != IPPROTO_TCP || l4len < 20) return r;
    r.doff = size_t(l4[12] >> 4) * 4;
    if (r.doff < 20 || r.doff > l4len) return r;
    r.hlen = l2_ + r.ihl + r.doff;
    r.payload = l4len - r.doff;
    const uint8_t flags = l4[13];
    if (r.payload > DevMss(r)) {
      r.oversize = true;
      return r;
    }
    r.tcp_merge = r.ihl == 20 && r.payload > 0 && (flags & kTcpAck) &&
                  !(flags & (kTcpFin | kTcpSyn | kTcpRst | kTcpUrg | kTcpEce | kTcpCwr));
    return r;
  }

  // Same flow, next in sequence, same headers except what changes per segment (IP length, id
  // and checksum; TCP sequence, checksum and PSH).
  bool CanAppend(const uint8_t* pkt, const Parsed& pp) const {
    const uint8_t* first = group_[0].p;
    const Parsed& g = group_info_;
    if (pp.doff != g.doff || last_payload_ != mss_ || pp.payload > mss_) return false;
    if (total_ + pp.payload + g.ihl + g.doff > 65535 - 64) return false;
    if (l2_ && std::memcmp(pkt, first, l2_) != 0) return false;
    const uint8_t* a = pkt + l2_;
    const uint8_t* b = first + l2_;
    if (a[1] != b[1] || a[8] != b[8] || std::memcmp(a + 12, b + 12, 8) != 0) return false;  // tos, ttl, addresses
    const uint8_t* ta = a + 20;
    const uint8_t* tb = b + 20;
    if (std::memcmp(ta, tb, 4) != 0) return false;                            // ports
    if (ntohl(Load32(ta + 4)) != next_seq_) return false;                     // in sequence
    if (std::memcmp(ta + 8, tb + 8, 4) != 0) return false;                    // ack
    if (std::memcmp(ta + 14, tb + 14, 2) != 0) return false;                  // window
    if (std::memcmp(ta + 18, tb + 18, pp.doff - 18) != 0) return false;       // urgent ptr, options
    return true;
  }

  void FlushGroup() {
    if (ngroup_ == 0) return;
    if (ngroup_ == 1) {
      WriteSingle(group_[0].p, group_[0].len, group_info_);
      ngroup_ = 0;
      return;
    }
    const Parsed& g = group_info_;
    uint8_t hdr[kEthLen + 60 + 60];
    std::memcpy(hdr, group_[0].p, g.hlen);
    uint8_t* ip = hdr + l2_;
    uint8_t* tcp = ip + g.ihl;
    const size_t l4len = g.doff + total_;
    const uint16_t old_len = csum::Load16(ip + 2);
    csum::Store16(ip + 2, htons(static_cast<uint16_t>(g.ihl + l4len)));
    csum::Patch16(ip + 10, old_len, csum::Load16(ip + 2));  // RFC 1624 (the header was verified)
    const Seg& last = group_[ngroup_ - 1];
    tcp[13] |= last.p[l2_ + g.ihl + 13] & kTcpPsh;
    // NEEDS_CSUM wants the pseudo-header sum in the field; the kernel completes it if it must.
    csum::Store16(tcp + 16, csum::Fold(csum::Pseudo4(ip, IPPROTO_TCP, static_cast<uint32_t>(l4len))));
    virtio_net_hdr vh{};
    vh.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    vh.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
    vh.hdr_len = static_cast<uint16_t>(g.hlen);
    vh.gso_size = static_cast<uint16_t>(mss_);
    vh.csum_start = static_cast<uint16_t>(l2_ + g.ihl);
    vh.csum_offset = 16;
    iovec iov[kMaxGroup + 2];
    int n = 0;
    iov[n++] = {&vh, kVnetLen};
    iov[n++] = {hdr, g.hlen};
    for (size_t i = 0; i < ngroup_; i++) {
      iov[n++] = {group_[i].p + g.hlen, group_[i].len - g.hlen};
    }
    Write(iov, n);
    p_->Inc(kCoalesced, ngroup_);
    ngroup_ = 0;
  }

  // The largest TCP payload the device MTU allows with this packet's headers.
  size_t DevMss(const Parsed& pp) const {
    const size_t h = pp.ihl + pp.doff;
    return size_t(cfg_.mtu) > h ? size_t(cfg_.mtu) - h : 1;
  }

  void WriteOversize(uint8_t* pkt, size_t plen, const Parsed& pp) {
    const size_t mss = DevMss(pp);
    if (cfg_.offloads) {
      uint8_t* ip = pkt + l2_;
      // NEEDS_CSUM wants the pseudo-header sum in the field (a complete one was verified above).
      if (!pp.partial) {
        csum::Store16(ip + pp.ihl + 16, csum::Fold(csum::Pseudo4(ip, IPPROTO_TCP, static_cast<uint32_t>(plen - l2_ - pp.ihl))));
      }
      virtio_net_hdr vh{};
      vh.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
      vh.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
      vh.hdr_len = static_cast<uint16_t>(pp.hlen);
      vh.gso_size = static_cast<uint16_t>(mss);
      vh.csum_start = static_cast<uint16_t>(l2_ + pp.ihl);
      vh.csum_offset = 16;
      iovec iov[2] = {{&vh, kVnetLen}, {pkt, plen}};
      return Write(iov, 2);
    }
    // No virtio header: segment here, one write per segment, checksums completed.
    TcpLayout lay;
    if (!ParseTcp4(pkt, plen, l2_, &lay)) return Drop(kDropBadPacket);
    const TcpSegmenter seg(pkt, lay, mss);
    uint8_t hdr[kEthLen + 60 + 60];
    for (size_t s = 0; s < seg.count() && !dead_; s++) {
      seg.Header(s, hdr);
      iovec iov[2] = {{hdr, lay.hlen}, {const_cast<uint8_t*>(seg.payload(s)), seg.seglen(s)}};
      Write(iov, 2);
    }
  }

  void WriteSingle(uint8_t* pkt, size_t plen, const Parsed& pp) {
    if (!cfg_.offloads) {
      // No virtio header to say "complete this": do it here.
      if (pp.l4 && pp.partial) {
        uint8_t* l4 = pkt + l2_ + pp.ihl;
        const size_t l4len = plen - l2_ - pp.ihl;
        const size_t off = L4CheckOffset(pp.proto);
        uint16_t c = static_cast<uint16_t>(~csum::Fold(csum::Add(0, l4, l4len)));
        if (pp.proto == IPPROTO_UDP && c == 0) c = 0xffff;
        csum::Store16(l4 + off, c);
      }
      iovec iov[1] = {{pkt, plen}};
      return Write(iov, 1);
    }
    virtio_net_hdr vh{};
    if (pp.l4 && pp.partial) {
      vh.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
      vh.csum_start = static_cast<uint16_t>(l2_ + pp.ihl);
      vh.csum_offset = static_cast<uint16_t>(L4CheckOffset(pp.proto));
    } else if (pp.verified) {
      vh.flags = VIRTIO_NET_HDR_F_DATA_VALID;  // spare the kernel a second pass
    }
    iovec iov[2] = {{&vh, kVnetLen}, {pkt, plen}};
    Write(iov, 2);
  }

  void Write(iovec* iov, int n) {
    ssize_t r;
    do {
      r = writev(p_->dev_fd_, iov, n);
    } while (r < 0 && errno == EINTR);
    if (r >= 0) {
      p_->Inc(kFramesOut);
      return;
    }
    p_->Inc(kDropWriteError);
    if (errno == EBADFD || errno == EIO || errno == ENODEV) {
      p_->Fail(ErrnoText(("write to " + cfg_.device).c_str(), errno) + " (the device was deleted?)");
      dead_ = true;
    }
  }

  void Drop(int reason) { p_->Inc(reason); }

  struct Seg {
    uint8_t* p;
    size_t len;
  };
  Pump* p_;
  const PumpConfig& cfg_;
  size_t l2_;
  std::shared_ptr<const PeerTable> table_;
  Seg group_[kMaxGroup];
  size_t ngroup_ = 0;
  Parsed group_info_;
  size_t mss_ = 0, total_ = 0, last_payload_ = 0;
  uint32_t next_seq_ = 0;
  bool dead_ = false;
};

void Pump::RxLoop() {
  auto path = std::make_unique<RxPath>(this);
  path->Run();
  live_threads_--;
}

#ifdef WEFT_PUMP_TEST
// Test entry points (addon/test/fuzz_pump.cc, built with sanitizers): the real paths, driven
// one datagram or frame at a time, with no threads.
std::unique_ptr<Pump> PumpTest::Make(const PumpConfig& cfg, int dev_fd, int sock_fd) {
  std::unique_ptr<Pump> p(new Pump(cfg));
  p->table_ = std::make_shared<PeerTable>();
  p->dev_fd_ = dev_fd;
  p->sock_fd_ = sock_fd;
  return p;
}

PumpTest::PumpTest(Pump* p) : p_(p), rx_(new RxPath(p)), tx_(new TxPath(p)) {}
PumpTest::~PumpTest() {
  delete rx_;
  delete tx_;
}

void PumpTest::Rx(const std::vector<std::vector<uint8_t>*>& datagrams, uint32_t from) {
  rx_->table_ = p_->Table();
  for (auto* d : datagrams) {
    mmsghdr m{};
    iovec iov{d->data(), d->size()};
    m.msg_hdr.msg_iov = &iov;
    m.msg_hdr.msg_iovlen = 1;
    m.msg_len = static_cast<unsigned>(d->size());
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = from;
    rx_->Datagrams(m, a);
  }
  rx_->FlushGroup();
}

void PumpTest::Tx(std::vector<uint8_t>* frame) {
  tx_->table_ = p_->Table();
  tx_->Encode(frame->data(), frame->size());
  tx_->Flush();
}
#endif

}  // namespace weft
