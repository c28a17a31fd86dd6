/**
 * The rtnetlink wire format of the writes weft makes on its hot path (routes, ARP/NDP neighbours,
 * VXLAN FDB entries, addresses), encoded by hand so that a whole reconcile phase goes to the
 * kernel as several nlmsghdr in one datagram (src/netlink/batch.ts). The `netlink` package can only
 * send one request at a time and wait for it; its encoder builds each message from many small
 * buffers. `encodeWrites` writes a whole batch back to back into one buffer, each message byte for
 * byte what the package writes for the same request (padded to 4 bytes, as iproute2 pads it;
 * test/unit/netlink-wire.test.ts compares them), so the kernel sees exactly the requests
 * NetlinkClient's single-request methods send.
 *
 * Layouts (linux/netlink.h, linux/rtnetlink.h, linux/neighbour.h, linux/if_addr.h; host byte order
 * except addresses):
 *
 *   nlmsghdr  16: len u32 | type u16 | flags u16 | seq u32 | pid u32
 *   rtmsg     12: family u8 | dst_len u8 | src_len u8 | tos u8 | table u8 | protocol u8 | scope u8 | type u8 | flags u32
 *   ndmsg     12: family u8 | pad u8 | pad u16 | ifindex s32 | state u16 | flags u8 | type u8
 *   ifaddrmsg  8: family u8 | prefixlen u8 | flags u8 | scope u8 | index u32
 *   rtattr     4: len u16 | type u16, then the payload, padded to 4
 *
 * Messages are encoded with seq and pid 0: the batch socket stamps its own (`stampMessage`).
 */
import { addressFamily, netAddress } from '../ip';
import { ipToBuffer, macToBuffer } from './codec';
import { MAIN_TABLE, type KernelWrite, type RouteSpec, type VxlanSpec } from './types';

export const NLMSG_HDRLEN = 16;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;

export const NLM_F_REQUEST = 0x1;
export const NLM_F_ACK = 0x4;
export const NLM_F_REPLACE = 0x100;
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;

export const RTM_NEWLINK = 16;
export const RTM_DELLINK = 17;
export const RTM_NEWADDR = 20;
export const RTM_DELADDR = 21;
export const RTM_NEWROUTE = 24;
export const RTM_DELROUTE = 25;
export const RTM_NEWNEIGH = 28;
export const RTM_DELNEIGH = 29;

export const AF_INET = 2;
export const AF_INET6 = 10;
export const AF_BRIDGE = 7;

export const RTA_DST = 1;
export const RTA_OIF = 4;
export const RTA_GATEWAY = 5;
export const RTA_PRIORITY = 6;
export const RTA_TABLE = 15;
export const NDA_DST = 1;
export const NDA_LLADDR = 2;
export const IFA_ADDRESS = 1;
export const IFA_LOCAL = 2;

const RTPROT_BOOT = 3; // what `ip route add` writes
const RT_SCOPE_UNIVERSE = 0;
const RT_SCOPE_LINK = 253;
const RTN_UNICAST = 1;
export const RTNH_F_ONLINK = 4;
export const NUD_PERMANENT = 0x80;
export const NTF_SELF = 0x02;

const CREATE_OR_REPLACE = NLM_F_CREATE | NLM_F_REPLACE;

/** Offsets of nlmsg_seq and nlmsg_pid in a message. */
const SEQ_OFFSET = 8;
const PID_OFFSET = 12;

const align4 = (n: number): number => (n + 3) & ~3;

// Little-endian fields read and written byte by byte. Why not Buffer's readUInt32LE & co: each is
// a JavaScript function of Node's (argument checks, then the bytes) and weftd runs without the
// optimizing compiler, so every call is interpreted; measured in `node --no-opt`, four of them
// take ~650 ns, these ~140 ns (issue #14: a join encodes three messages and walks its ACK and
// echoes). No bounds check: callers have checked the offset against the length (a read past the
// end would give 0 bytes, not throw).
export const u16le = (b: Uint8Array, at: number): number => b[at]! | (b[at + 1]! << 8);
export const i32le = (b: Uint8Array, at: number): number => b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24);
export const u32le = (b: Uint8Array, at: number): number => i32le(b, at) >>> 0;
export function setU16le(b: Uint8Array, value: number, at: number): void {
  b[at] = value;
  b[at + 1] = value >>> 8;
}
export function setU32le(b: Uint8Array, value: number, at: number): void {
  b[at] = value;
  b[at + 1] = value >>> 8;
  b[at + 2] = value >>> 16;
  b[at + 3] = value >>> 24;
}
/** Zero `[from, to)`: a message header is a few dozen bytes (Buffer's fill is Node's JavaScript, this a builtin). */
function zero(b: Uint8Array, from: number, to: number): void {
  Uint8Array.prototype.fill.call(b, 0, from, to);
}
function setU32be(b: Uint8Array, value: number, at: number): void {
  b[at] = value >>> 24;
  b[at + 1] = value >>> 16;
  b[at + 2] = value >>> 8;
  b[at + 3] = value;
}

/**
 * Canonical dotted-quad text → its 32-bit value, or -1 for anything else (then the general parser
 * in codec.ts decides: IPv6, or a TypeError). The hot path of a batch parses thousands of these.
 */
function fastIPv4(text: string): number {
  let value = 0;
  let part = 0;
  let digits = 0;
  let parts = 0;
  for (let i = 0; i <= text.length; i++) {
    const c = i === text.length ? 46 : text.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || part > 255 || parts === 4) return -1;
      value = value * 256 + part;
      parts++;
      part = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && part === 0) return -1; // a leading zero: not canonical
      part = part * 10 + (c - 48);
      digits++;
    } else {
      return -1;
    }
  }
  return parts === 4 ? value : -1;
}

function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

/**
 * Messages appended to one growing buffer: `begin` a message, write its fixed header and
 * attributes, `end` it. Every attribute is padded to 4 bytes and nlmsg_len counts the padding,
 * as iproute2 writes it, so messages can follow each other in one datagram.
 */
class MessageWriter {
  buf: Buffer;
  off = 0;
  private start = 0;

  /** `expectedBytes`: a guess of the total (grown as needed); small ones come from Node's buffer pool. */
  constructor(expectedBytes: number) {
    this.buf = Buffer.allocUnsafe(Math.max(256, expectedBytes));
  }

  private ensure(n: number): void {
    if (this.off + n <= this.buf.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.off + n));
    this.buf.copy(bigger, 0, 0, this.off);
    this.buf = bigger;
  }

  /** nlmsghdr with len/seq/pid 0 (len set by `end`, seq/pid by `stampMessage`) and `fixedLen` zeroed bytes of fixed header; returns the fixed header's offset. */
  begin(type: number, flags: number, fixedLen: number): number {
    this.ensure(NLMSG_HDRLEN + fixedLen);
    this.start = this.off;
    zero(this.buf, this.off, this.off + NLMSG_HDRLEN + fixedLen);
    setU16le(this.buf, type, this.off + 4);
    setU16le(this.buf, flags, this.off + 6);
    this.off += NLMSG_HDRLEN + fixedLen;
    return this.start + NLMSG_HDRLEN;
  }

  /** Attribute header for a payload of `len` bytes (zero-padded); returns the payload's offset. */
  private attr(type: number, len: number): number {
    const padded = align4(4 + len);
    this.ensure(padded);
    setU16le(this.buf, 4 + len, this.off);
    setU16le(this.buf, type, this.off + 2);
    if (padded > 4 + len) zero(this.buf, this.off + 4 + len, this.off + padded);
    const at = this.off + 4;
    this.off += padded;
    return at;
  }

  // Each writer below takes the payload offset from attr() before touching this.buf: attr() may
  // replace the buffer with a bigger one.
  u32(type: number, value: number): void {
    const at = this.attr(type, 4);
    setU32le(this.buf, value, at);
  }

  /** An address attribute: 4 bytes for IPv4 text, 16 for IPv6 (TypeError for neither). */
  ip(type: number, text: string): void {
    const v4 = fastIPv4(text);
    if (v4 >= 0) {
      const at = this.attr(type, 4);
      setU32be(this.buf, v4, at);
      return;
    }
    const b = ipToBuffer(text);
    const at = this.attr(type, b.length);
    b.copy(this.buf, at);
  }

  u8(type: number, value: number): void {
    const at = this.attr(type, 1);
    this.buf[at] = value;
  }

  /** A 16-bit attribute in network byte order (ports). */
  u16be(type: number, value: number): void {
    const at = this.attr(type, 2);
    this.buf[at] = value >>> 8;
    this.buf[at + 1] = value;
  }

  /** A flag attribute: no payload, present means set. */
  flag(type: number): void {
    this.attr(type, 0);
  }

  /** A NUL-terminated string attribute (IFLA_IFNAME, IFLA_INFO_KIND), as iproute2 writes it. */
  str(type: number, text: string): void {
    const bytes = Buffer.byteLength(text);
    const at = this.attr(type, bytes + 1);
    this.buf.write(text, at);
    this.buf[at + bytes] = 0;
  }

  bytes(type: number, payload: Buffer): void {
    const at = this.attr(type, payload.length);
    payload.copy(this.buf, at);
  }

  /** Open a nested attribute; its length is written by `endNest` with the offset returned. */
  beginNest(type: number): number {
    const at = this.off;
    this.attr(type, 0);
    return at;
  }

  endNest(at: number): void {
    setU16le(this.buf, this.off - at, at);
  }

  ipValue(type: number, value: number): void {
    const at = this.attr(type, 4);
    setU32be(this.buf, value, at);
  }

  /** "aa:bb:cc:dd:ee:ff" (either case) as 6 bytes; anything else goes to codec.ts's parser (which trims, or throws a TypeError). */
  mac(type: number, text: string): void {
    const at = this.attr(type, 6);
    if (text.length === 17) {
      let i = 0;
      for (; i < 6; i++) {
        const hi = hexDigit(text.charCodeAt(i * 3));
        const lo = hexDigit(text.charCodeAt(i * 3 + 1));
        if (hi < 0 || lo < 0 || (i < 5 && text.charCodeAt(i * 3 + 2) !== 58)) break;
        this.buf[at + i] = (hi << 4) | lo;
      }
      if (i === 6) return;
    }
    macToBuffer(text).copy(this.buf, at);
  }

  /** Close the message: write its length. */
  end(): void {
    setU32le(this.buf, this.off - this.start, this.start);
  }

  /** Forget a message begun but not ended (its encoding threw). */
  abandon(): void {
    this.off = this.start;
  }
}

function familyOfAddress(ip: string): number {
  return ip.includes(':') && addressFamily(ip) === 6 ? AF_INET6 : AF_INET;
}

function indexOf(link: number | { readonly index: number }): number {
  return typeof link === 'number' ? link : link.index;
}

/** RTM_NEWROUTE / RTM_DELROUTE for `spec` in the main table, as NetlinkClient's route methods send it. */
function writeRoute(w: MessageWriter, spec: RouteSpec, how: 'add' | 'replace' | 'delete'): void {
  const flags = NLM_F_REQUEST | NLM_F_ACK | (how === 'add' ? NLM_F_CREATE | NLM_F_EXCL : how === 'replace' ? CREATE_OR_REPLACE : 0);
  const v4 = typeof spec.dst.ip === 'number';
  const at = w.begin(how === 'delete' ? RTM_DELROUTE : RTM_NEWROUTE, flags, 12);
  w.buf[at] = v4 ? AF_INET : familyOfAddress(netAddress(spec.dst));
  w.buf[at + 1] = spec.dst.prefixLen;
  w.buf[at + 4] = MAIN_TABLE;
  if (how !== 'delete') {
    // Deletion matches on what is given: protocol, scope and type stay 0 so any route with this
    // dst, gateway and device goes (as NetlinkClient.deleteRoute does).
    w.buf[at + 5] = RTPROT_BOOT;
    w.buf[at + 6] = spec.gateway ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK;
    w.buf[at + 7] = RTN_UNICAST;
  }
  if (spec.onlink) setU32le(w.buf, RTNH_F_ONLINK, at + 8);
  if (typeof spec.dst.ip === 'number') w.ipValue(RTA_DST, spec.dst.ip);
  else w.ip(RTA_DST, spec.dst.ip);
  w.u32(RTA_OIF, spec.oif);
  if (spec.gateway) w.ip(RTA_GATEWAY, spec.gateway);
  if (spec.priority) w.u32(RTA_PRIORITY, spec.priority);
}

/** ndmsg: family, ifindex, state, flags. */
function beginNeighbour(w: MessageWriter, type: number, flags: number, family: number, ifindex: number, state: number, ntf: number): void {
  const at = w.begin(type, flags, 12);
  w.buf[at] = family;
  setU32le(w.buf, ifindex, at + 4);
  setU16le(w.buf, state, at + 8);
  w.buf[at + 10] = ntf;
}

/** RTM_NEWADDR (create or replace) / RTM_DELADDR; IPv4 carries IFA_LOCAL and IFA_ADDRESS, IPv6 IFA_ADDRESS only. */
function writeAddress(w: MessageWriter, ifindex: number, ip: string, prefixLen: number, how: 'add' | 'delete'): void {
  const family = familyOfAddress(ip);
  const at = how === 'add'
    ? w.begin(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | CREATE_OR_REPLACE, 8)
    : w.begin(RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK, 8);
  w.buf.writeUInt8(family, at);
  w.buf.writeUInt8(prefixLen, at + 1);
  w.buf.writeUInt32LE(ifindex, at + 4);
  if (family === AF_INET) w.ip(IFA_LOCAL, ip);
  w.ip(IFA_ADDRESS, ip);
}

function writeOne(w: MessageWriter, x: KernelWrite): void {
  const req = NLM_F_REQUEST | NLM_F_ACK;
  switch (x.op) {
    case 'addAddress':
      return writeAddress(w, indexOf(x.link), x.ip, x.prefixLen, 'add');
    case 'deleteAddress':
      return writeAddress(w, indexOf(x.link), x.ip, x.prefixLen, 'delete');
    case 'replaceNeighbour': // `ip neigh replace IP lladdr MAC dev IFINDEX nud permanent` (ARP or NDP by the address's family)
      beginNeighbour(w, RTM_NEWNEIGH, req | CREATE_OR_REPLACE, familyOfAddress(x.ip), indexOf(x.link), NUD_PERMANENT, 0);
      w.ip(NDA_DST, x.ip);
      w.mac(NDA_LLADDR, x.mac);
      return;
    case 'deleteNeighbour':
      beginNeighbour(w, RTM_DELNEIGH, req, familyOfAddress(x.ip), indexOf(x.link), 0, 0);
      w.ip(NDA_DST, x.ip);
      return;
    case 'replaceFdb': // `bridge fdb replace MAC dev IFINDEX dst DST self permanent` (AF_BRIDGE)
      beginNeighbour(w, RTM_NEWNEIGH, req | CREATE_OR_REPLACE, AF_BRIDGE, indexOf(x.link), NUD_PERMANENT, NTF_SELF);
      w.mac(NDA_LLADDR, x.mac);
      w.ip(NDA_DST, x.dst);
      return;
    case 'deleteFdb':
      beginNeighbour(w, RTM_DELNEIGH, req, AF_BRIDGE, indexOf(x.link), 0, NTF_SELF);
      w.mac(NDA_LLADDR, x.mac);
      if (x.dst) w.ip(NDA_DST, x.dst);
      return;
    case 'addRoute':
      return writeRoute(w, x.spec, 'add');
    case 'replaceRoute':
      return writeRoute(w, x.spec, 'replace');
    case 'deleteRoute':
      return writeRoute(w, x.spec, 'delete');
  }
}

/** Requests encoded back to back in one buffer (seq and pid 0), and where each begins. */
export interface EncodedBatch {
  readonly buffer: Buffer;
  /** offsets[j] is where the j-th encoded request starts; offsets[count] is the end. */
  readonly offsets: readonly number[];
  /** The index in the input of the j-th encoded request (writes that failed to encode are left out). */
  readonly indices: readonly number[];
}

/**
 * Encode `writes` back to back. A write that cannot be encoded (a malformed address or MAC: the
 * single method would throw the same TypeError) is left out and reported to `onError`.
 */
export function encodeWrites(writes: readonly KernelWrite[], onError: (index: number, err: Error) => void): EncodedBatch {
  // ~48–72 bytes per request (a route with a gateway: 60; IPv6: more).
  const w = new MessageWriter(writes.length * 72);
  const offsets: number[] = [];
  const indices: number[] = [];
  for (let i = 0; i < writes.length; i++) {
    const start = w.off;
    try {
      writeOne(w, writes[i]!);
      w.end();
      offsets.push(start);
      indices.push(i);
    } catch (err) {
      w.abandon();
      onError(i, err instanceof Error ? err : new Error(String(err)));
    }
  }
  offsets.push(w.off);
  return { buffer: w.buf.subarray(0, w.off), offsets, indices };
}

/** The request for one write, alone (throws TypeError on a malformed address or MAC). */
export function encodeWrite(x: KernelWrite): Buffer {
  let failure: Error | null = null;
  const batch = encodeWrites([x], (_i, err) => {
    failure = err;
  });
  if (failure) throw failure;
  return Buffer.from(batch.buffer);
}

/** Write a message's sequence number and sender port in place. */
export function stampMessage(buf: Buffer, seq: number, pid: number, offset = 0): void {
  setU32le(buf, seq, offset + SEQ_OFFSET);
  setU32le(buf, pid, offset + PID_OFFSET);
}

/**
 * Stamp one request of a batch's datagram in place: its sequence number and sender port, and
 * NLM_F_ACK on the datagram's last request only (errors are answered anyway; the encoders set it
 * on every request).
 */
export function stampBatchRequest(buf: Buffer, seq: number, pid: number, offset: number, last: boolean): void {
  stampMessage(buf, seq, pid, offset);
  const flags = u16le(buf, offset + 6);
  setU16le(buf, last ? flags | NLM_F_ACK : flags & ~NLM_F_ACK, offset + 6);
}

/**
 * Every acknowledgement in one received datagram: `onAck(seq, errno)` with errno 0 for success,
 * the positive errno otherwise (NLMSG_ERROR carries -errno). Other messages are skipped; a
 * truncated or malformed tail ends the walk.
 */
export function forEachAck(datagram: Buffer, onAck: (seq: number, errno: number) => void): void {
  let off = 0;
  while (off + NLMSG_HDRLEN <= datagram.length) {
    const len = u32le(datagram, off);
    if (len < NLMSG_HDRLEN || off + len > datagram.length) return;
    if (u16le(datagram, off + 4) === NLMSG_ERROR && len >= NLMSG_HDRLEN + 4) {
      const negErrno = i32le(datagram, off + NLMSG_HDRLEN);
      onAck(u32le(datagram, off + SEQ_OFFSET), negErrno === 0 ? 0 : -negErrno);
    }
    off += align4(len);
  }
}

/**
 * What identifies an FDB change, read from a message body (after the nlmsghdr) in place: the same
 * key for our RTM_NEWNEIGH/RTM_DELNEIGH request and for the kernel's notification of it. VXLAN
 * FDB notifications carry nlmsg_pid 0 whoever made the change (the driver does not pass the
 * requester's port on), so our own are recognised by content instead: a new entry by device, MAC,
 * destination, state and NTF_SELF; a deletion by device and MAC. null for anything else.
 */
export function fdbEchoKey(type: number, body: Buffer, start = 0, end: number = body.length): string | null {
  if ((type !== RTM_NEWNEIGH && type !== RTM_DELNEIGH) || end - start < 12 || body[start] !== AF_BRIDGE) return null;
  const ifindex = i32le(body, start + 4);
  let lladdr: string | null = null;
  let dst = '';
  for (let a = start + 12; a + 4 <= end; ) {
    const alen = u16le(body, a);
    if (alen < 4 || a + alen > end) break;
    const atype = u16le(body, a + 2) & 0x3fff;
    if (atype === NDA_LLADDR) lladdr = body.toString('hex', a + 4, a + alen);
    else if (atype === NDA_DST) dst = body.toString('hex', a + 4, a + alen);
    a += (alen + 3) & ~3;
  }
  if (lladdr === null) return null;
  if (type === RTM_DELNEIGH) return `del ${ifindex} ${lladdr}`;
  return `new ${ifindex} ${lladdr} ${dst} ${u16le(body, start + 8)} ${body[start + 10]! & NTF_SELF}`;
}

// ------------------------------------------------------------------ requests of the request socket

export const RTM_GETLINK = 18;
export const RTM_SETLINK = 19;
export const RTM_GETADDR = 22;
export const RTM_GETROUTE = 26;
export const RTM_GETNEIGH = 30;
export const NLM_F_DUMP = 0x300; // NLM_F_ROOT | NLM_F_MATCH

export const IFLA_ADDRESS = 1;
export const IFLA_IFNAME = 3;
export const IFLA_MTU = 4;
export const IFLA_LINKINFO = 18;
export const IFLA_INFO_KIND = 1;
export const IFLA_INFO_DATA = 2;
export const IFLA_VXLAN_ID = 1;
export const IFLA_VXLAN_LINK = 3;
export const IFLA_VXLAN_LOCAL = 4;
export const IFLA_VXLAN_LEARNING = 7;
export const IFLA_VXLAN_PORT = 15;
export const IFLA_VXLAN_LOCAL6 = 17;
export const IFLA_VXLAN_GBP = 23;
export const IFF_UP = 0x1;

/** The fixed-header size of each GET request's family: ifinfomsg 16, ifaddrmsg 8, rtmsg 12, ndmsg 12. */
const FIXED_OF_GET: Readonly<Record<number, number>> = { [RTM_GETLINK]: 16, [RTM_GETADDR]: 8, [RTM_GETROUTE]: 12, [RTM_GETNEIGH]: 12 };

function finish(w: MessageWriter): Buffer {
  w.end();
  return w.buf.subarray(0, w.off);
}

/**
 * A dump request (NLM_F_REQUEST|NLM_F_ACK|NLM_F_DUMP, as the package sends it): every link, or
 * every address/route/neighbour of `family` (the fixed header's first byte; 0 for links).
 */
export function encodeDump(type: typeof RTM_GETLINK | typeof RTM_GETADDR | typeof RTM_GETROUTE | typeof RTM_GETNEIGH, family: number): Buffer {
  const w = new MessageWriter(64);
  const at = w.begin(type, NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP, FIXED_OF_GET[type]!);
  w.buf.writeUInt8(family, at);
  return finish(w);
}

/** RTM_GETLINK for one link, by index or by name (IFLA_IFNAME). */
export function encodeGetLink(link: { readonly index: number } | { readonly name: string }): Buffer {
  const w = new MessageWriter(64);
  const at = w.begin(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK, 16);
  if ('index' in link) w.buf.writeInt32LE(link.index, at + 4);
  else w.str(IFLA_IFNAME, link.name);
  return finish(w);
}

/** `ip route get IP`: RTM_GETROUTE with a host-length RTA_DST (TypeError for a malformed address). */
export function encodeGetRoute(ip: string): Buffer {
  const family = familyOfAddress(ip);
  const w = new MessageWriter(64);
  const at = w.begin(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_ACK, 12);
  w.buf.writeUInt8(family, at);
  w.buf.writeUInt8(family === AF_INET6 ? 128 : 32, at + 1);
  w.ip(RTA_DST, ip);
  return finish(w);
}

/** What `encodeCreateVxlan` needs. */
export type VxlanCreate = VxlanSpec;

/**
 * `ip link add NAME mtu MTU address MAC type vxlan id VNI local IP dev UNDERLAY dstport PORT
 * [nolearning] [gbp]` with NLM_F_CREATE|NLM_F_EXCL (EEXIST if the name is taken); left down.
 * IFLA_VXLAN_LOCAL6 for an IPv6 underlay (flannel-v6.<VNI>), IFLA_VXLAN_LOCAL otherwise.
 */
export function encodeCreateVxlan(spec: VxlanCreate): Buffer {
  const w = new MessageWriter(160);
  w.begin(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, 16);
  w.str(IFLA_IFNAME, spec.name);
  w.u32(IFLA_MTU, spec.mtu);
  w.mac(IFLA_ADDRESS, spec.mac);
  const info = w.beginNest(IFLA_LINKINFO);
  w.str(IFLA_INFO_KIND, 'vxlan');
  const data = w.beginNest(IFLA_INFO_DATA);
  w.u32(IFLA_VXLAN_ID, spec.vni);
  w.ip(familyOfAddress(spec.localIP) === AF_INET6 ? IFLA_VXLAN_LOCAL6 : IFLA_VXLAN_LOCAL, spec.localIP);
  w.u32(IFLA_VXLAN_LINK, spec.underlayIndex);
  w.u16be(IFLA_VXLAN_PORT, spec.port);
  w.u8(IFLA_VXLAN_LEARNING, spec.learning ? 1 : 0);
  if (spec.gbp) w.flag(IFLA_VXLAN_GBP);
  w.endNest(data);
  w.endNest(info);
  return finish(w);
}

/** What one RTM_SETLINK changes (one of them per request, as NetlinkClient's methods do). */
export type LinkChange = { readonly up: boolean } | { readonly mtu: number } | { readonly mac: string };

/** RTM_SETLINK on link `index`: IFF_UP in ifi_flags under an ifi_change mask, or IFLA_MTU, or IFLA_ADDRESS. */
export function encodeSetLink(index: number, change: LinkChange): Buffer {
  const w = new MessageWriter(64);
  const at = w.begin(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, 16);
  w.buf.writeInt32LE(index, at + 4);
  if ('up' in change) {
    w.buf.writeUInt32LE(change.up ? IFF_UP : 0, at + 8);
    w.buf.writeUInt32LE(IFF_UP, at + 12);
  } else if ('mtu' in change) {
    w.u32(IFLA_MTU, change.mtu);
  } else {
    w.mac(IFLA_ADDRESS, change.mac);
  }
  return finish(w);
}

/** RTM_DELLINK of link `index`. */
export function encodeDeleteLink(index: number): Buffer {
  const w = new MessageWriter(32);
  const at = w.begin(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, 16);
  w.buf.writeInt32LE(index, at + 4);
  return finish(w);
}
