/**
 * The one place that loads the native addon (addon/, built by `npm run build:addon`).
 * Typed declarations of every native function live here with their contracts.
 */
import * as path from 'node:path';

/**
 * The native join path's configuration (addon/src/fastjoin.cc; weftd.ts builds it). Addresses
 * are IPv4 numbers in host order; `template` is the reconciler's three writes for one peer
 * (neighbour, FDB, route) with marker values, and the at* lists say where each value sits.
 */
export interface NativeJoinConfig {
  readonly prefix: string;
  readonly ownKey: string;
  readonly networkIp: number;
  readonly networkLen: number;
  readonly subnetLen: number;
  readonly ownSubnetIp: number;
  readonly ownSubnetLen: number;
  readonly ownPublicIp: number;
  readonly ownIfaceIp: number;
  readonly ownMac: Buffer | null;
  readonly vni: number;
  readonly ifindex: number;
  /** [ip, prefixLen, ip, prefixLen, …] */
  readonly underlay: readonly number[];
  readonly protectedIps: readonly number[];
  readonly template: Buffer;
  readonly atGw: readonly number[];
  readonly atPub: readonly number[];
  readonly atDst: readonly number[];
  readonly atMac: readonly number[];
  readonly atDstLen: readonly number[];
  readonly atSeq: readonly number[];
  readonly atPid: readonly number[];
}

export interface NativeAddon {
  /**
   * Send one datagram `message` to the AF_UNIX socket `socketPath` (systemd's NOTIFY_SOCKET;
   * a leading '@' means the abstract namespace). Synchronous; throws Error with errno text.
   */
  sdNotify(socketPath: string, message: string): void;
  /**
   * The user-space packet pump (addon/src/pump.h): a TUN/TAP device on one side, a UDP socket
   * on the other, two native threads in between. See NativePump for the contract.
   */
  Pump: new (options: NativePumpOptions) => NativePump;
  /**
   * A raw netlink socket (addon/src/nlsock.cc), read on libuv's loop: see NativeNetlinkSocket.
   * The constructor opens socket(AF_NETLINK, SOCK_RAW|SOCK_CLOEXEC|SOCK_NONBLOCK, protocol) in the
   * calling thread's network namespace and binds it (the kernel picks the port id); it starts
   * referenced. Throws an Error with `code` (the errno name) when that fails.
   * `onDatagrams(data, meta)` is called once per readable wake-up with every datagram read in it:
   * datagram i is `meta[2i]` bytes from sender port `meta[2i+1]` (0: the kernel), and starts at
   * the previous one's end rounded up to 4 bytes. `onError(code, syscall, errno)`: a receive
   * failed — 'ENOBUFS' (the receive buffer overflowed: datagrams were lost; NETLINK_NO_ENOBUFS
   * is never set), 'EMSGSIZE' (a datagram longer than 64 KiB was dropped), anything else (the
   * socket stopped polling). Datagrams read before the error are delivered first.
   */
  NetlinkSocket: new (
    protocol: number,
    onDatagrams: (data: Buffer, meta: Uint32Array) => void,
    onError: (code: string, syscall: string, errno: number) => void,
  ) => NativeNetlinkSocket;
  /**
   * A one-shot libuv timer (addon/src/timer.cc) whose stop() takes it off the loop — Node's
   * clearTimeout leaves the loop armed for the cleared expiry (src/deadline.ts says why that
   * matters). `onExpire` runs like an I/O callback (nextTick and microtask queues after it).
   * Starts referenced (it keeps the process alive while armed) and disarmed.
   */
  Timer: new (onExpire: () => void) => NativeTimer;
  /**
   * glibc's malloc_trim(0) (addon/src/memory.cc): every whole free page of the C heap's arenas
   * back to the kernel. True when memory was released; false when none was, or the C library has
   * no such call. Synchronous; cheap when there is little free (it walks the free lists).
   */
  trimMalloc(): boolean;
  /**
   * etcd's watch stream read in C++ with the native join path (addon/src/fastjoin.cc): connects
   * to ipv4:port, sends `request` (the HTTP head and the first chunk), answers onHead(status)
   * for a chunked 200, then onLines(data, meta, records) with the lines of one or more reads:
   * line i is meta[2i] bytes, meta[2i+1] = 1 when the addon applied it (its 16-byte record in
   * `records`, in order); anything else ends it with onEnd(reason), null for a clean end of the
   * body. send() writes bytes as they are; abort() ends it without onEnd; flush() delivers the
   * held lines now. Lines the addon applied are held up to `drainMs` × 1.5.
   */
  WatchStream: new (
    ipv4: number, port: number, request: Uint8Array, drainMs: number,
    onHead: (status: number) => void,
    onLines: (data: Buffer, meta: Uint32Array, records: Buffer) => void,
    onEnd: (err: string | null) => void,
  ) => { send(data: Uint8Array): void; abort(): void; flush(): void; watchOpen(id: string): void; watchClosed(id: string): void };
  /** The native join path's configuration (null: off); the port id of its netlink socket, 0 when it could not open one. */
  fastJoinConfigure(config: NativeJoinConfig | null): number;
  fastJoinKnow(key: string, subnetIp: number, subnetLen: number, publicIp: number, mac: Buffer | null): void;
  fastJoinForget(key: string): void;
  /** Tests: what the path would do with one watch message (null: leave it to JavaScript). Writes nothing. */
  fastJoinDecide(line: Uint8Array, openWatchIds?: readonly string[]): { key: string; record: Buffer } | null;
}

/**
 * A native timer. start(ms) (re)arms it, replacing any earlier expiry; stop() disarms it. An armed
 * timer is never garbage-collected; close() disarms it for good and releases the libuv handle at
 * once (start() is then a no-op), as collection or the environment's teardown would.
 */
export interface NativeTimer {
  start(ms: number): void;
  stop(): void;
  ref(): void;
  unref(): void;
  close(): void;
}

/**
 * An open native netlink socket. Methods other than send/close/port/ref/unref throw (`code`
 * EBADF) once it is closed. close() is idempotent and also runs at environment teardown; an open
 * socket is never garbage-collected.
 */
export interface NativeNetlinkSocket {
  /** One sendto(2) of `data` to `port` (default 0: the kernel). Returns undefined, or the errno name. */
  send(data: Uint8Array, port?: number): string | undefined;
  close(): void;
  /** The port id the kernel bound it to (the nlmsg_pid of its requests' notifications). */
  port(): number;
  ref(): void;
  unref(): void;
  /** SO_RCVBUFFORCE, falling back to SO_RCVBUF (capped by net.core.rmem_max). */
  setRecvBufferSize(bytes: number): void;
  getRecvBufferSize(): number;
  getSendBufferSize(): number;
  /** NETLINK_ADD_MEMBERSHIP. */
  addMembership(group: number): void;
  /** SO_ATTACH_FILTER: `program` is an array of struct sock_filter (8 bytes each, host order). */
  attachFilter(program: Uint8Array): void;
}

/**
 * Options of `new Pump(options)`. The constructor, synchronously and in the calling process's
 * network namespace (weftd's own: the fds belong to that namespace for good):
 * 1. opens a UDP socket bound to `localIp:port` (UDP_GRO on when `offloads`);
 * 2. creates the device `device` (a TAP for 'vxlan', a TUN for 'udp'; IFF_NO_PI, IFF_VNET_HDR
 *    when `offloads`) or attaches to it if it exists with that type and no other process holds
 *    it, and makes it persistent (it outlives the pump and the process, like a kernel VXLAN
 *    device; `ip link del` removes it). It does not set the MAC, MTU, address or up state:
 *    callers do that over netlink;
 * 3. starts the two threads (device → peers, peers → device).
 * Throws an Error whose message names the failed step (e.g. "open vxlan pump on flannel.1:
 * bind UDP 10.250.0.11:8472: Address already in use") and whose `code` is the errno name
 * ('EADDRINUSE', 'EINVAL' when a device of another type has that name, 'EBUSY' when another
 * process holds it). On failure nothing stays open and no device is left persistent.
 */
export interface NativePumpOptions {
  readonly mode: 'vxlan' | 'udp';
  readonly device: string;
  /** Address the UDP socket binds to (the underlay interface's own address). */
  readonly localIp: string;
  readonly port: number;
  /** The device's MTU: the segment size for oversize packets written to it. Default 1450. */
  readonly mtu?: number;
  /** vxlan: the VNI sent and required on receive. Default 1. */
  readonly vni?: number;
  /** IFF_VNET_HDR, TSO from the device, UDP GSO/GRO, TCP coalescing. Default true. */
  readonly offloads?: boolean;
}

/**
 * A peer-table entry: frames whose destination MAC is `mac` (vxlan), or packets whose destination
 * lies in `subnet`/`prefixLen` (udp, longest prefix wins), go to `dst` (a PublicIP). Every `dst`
 * is also an allowed source: datagrams from any other address are dropped (dropNotPeer).
 */
export type NativePumpEntry =
  | { readonly mac: string; readonly dst: string }
  | { readonly subnet: string; readonly prefixLen: number; readonly dst: string };

/** Monotonic counters since the pump was opened (packet counts are datagrams on the wire). */
export interface NativePumpCounters {
  readonly framesIn: number;        // reads from the device (a TSO super-frame counts once)
  readonly packetsOut: number;      // datagrams sent to peers
  readonly bytesOut: number;        // their UDP payload bytes
  readonly packetsIn: number;       // datagrams accepted from peers
  readonly bytesIn: number;
  readonly framesOut: number;       // writes to the device (a coalesced super-frame counts once)
  readonly coalesced: number;       // datagrams merged into super-frames
  readonly dropNoPeer: number;      // no peer for the destination MAC / address
  readonly dropBroadcast: number;   // broadcast/multicast frames (never flooded)
  readonly dropMalformed: number;   // unparseable frames from the device
  readonly dropSendError: number;   // sendmmsg refused a datagram
  readonly dropNotPeer: number;     // datagrams from an address that is not a peer's PublicIP
  readonly dropBadVni: number;      // not VXLAN, or another VNI
  readonly dropBadPacket: number;   // truncated or malformed datagrams
  readonly dropBadChecksum: number; // inner TCP checksum wrong
  readonly dropWriteError: number;  // write to the device failed
  readonly dropTtl: number;         // udp: TTL expired
  readonly icmpUnreachable: number; // udp: ICMP net-unreachable sent for an unknown destination
}

export interface NativePumpStatus {
  /** Both threads run. False after close(), or once a thread stopped on a fatal error. */
  readonly running: boolean;
  /** The fatal error that stopped a thread (e.g. the device was deleted), else null. */
  readonly error: string | null;
  /** Source of the last datagram dropped as dropNotPeer, or null. */
  readonly lastNotPeer: string | null;
  readonly vnetHdr: boolean;
}

/**
 * An open pump. All methods are synchronous and safe to call at any time from the JS thread.
 * - setPeers(): builds a new table and publishes it with one atomic pointer swap; the threads
 *   pick it up at their next batch. Traffic never stops; throws TypeError on a malformed entry
 *   (the old table then stays).
 * - counters(), status(): cheap reads of atomics; still answer after close().
 * - close(): stops both threads (they wake from poll() on an eventfd), joins them, closes the
 *   device fd and the socket. Idempotent; blocks for at most ~1 s (a send in progress). The
 *   device itself stays (persistent) with its address and routes. Also run by the garbage
 *   collector for a pump that was never closed.
 * The pump never calls into JavaScript; packets never cross into it.
 */
export interface NativePump {
  setPeers(entries: readonly NativePumpEntry[]): void;
  counters(): NativePumpCounters;
  status(): NativePumpStatus;
  close(): void;
}

let cached: NativeAddon | undefined;

export function loadNative(): NativeAddon {
  if (cached) return cached;
  // dist/src/native.js → <repo>/addon/build/Release/weft_native.node
  const file = path.resolve(__dirname, '..', '..', 'addon', 'build', 'Release', 'weft_native.node');
  try {
    cached = require(file) as NativeAddon;
  } catch (err) {
    throw new Error(`cannot load weft's native addon at ${file}: run "npm run build" (needs g++, make, python3 and npm_config_nodedir=/usr)`, { cause: err });
  }
  return cached;
}
