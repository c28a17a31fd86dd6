/**
 * The rtnetlink wire format of the writes weft makes on its hot path (routes, ARP/NDP neighbours,
 * VXLAN FDB entries, addresses), encoded by hand so that a whole reconcile phase goes to the
 * kernel as several nlmsghdr in one datagram (src/netlink/batch.ts). The `netlink` package can only
 * send one request at a time and wait for it; its encoder builds each message from many small
 * buffers. These encoders write one Buffer per message, byte for byte what the package writes for
 * the same request (test/unit/netlink-wire.test.ts compares them), so the kernel sees exactly the
 * requests NetlinkClient's single-request methods send.
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
import { MAIN_TABLE, type KernelWrite, type RouteSpec } from './types';

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

const RTA_DST = 1;
export const RTA_OIF = 4;
const RTA_GATEWAY = 5;
const RTA_PRIORITY = 6;
export const RTA_TABLE = 15;
const NDA_DST = 1;
const NDA_LLADDR = 2;
const IFA_ADDRESS = 1;
const IFA_LOCAL = 2;

const RTPROT_BOOT = 3; // what `ip route add` writes
const RT_SCOPE_UNIVERSE = 0;
const RT_SCOPE_LINK = 253;
const RTN_UNICAST = 1;
const RTNH_F_ONLINK = 4;
const NUD_PERMANENT = 0x80;
const NTF_SELF = 0x02;

const CREATE_OR_REPLACE = NLM_F_CREATE | NLM_F_REPLACE;

/** Offsets of nlmsg_seq and nlmsg_pid in a message. */
const SEQ_OFFSET = 8;
const PID_OFFSET = 12;

/** One attribute before encoding: its type and payload. */
interface Attr {
  readonly type: number;
  readonly payload: Buffer;
}

const align4 = (n: number): number => (n + 3) & ~3;

function u32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32LE(n >>> 0, 0);
  return b;
}

/** nlmsghdr + a fixed header + attributes, in one buffer (seq and pid 0). */
function message(type: number, flags: number, fixed: Buffer, attrs: readonly Attr[]): Buffer {
  let len = NLMSG_HDRLEN + fixed.length;
  for (const a of attrs) len = align4(len) + 4 + a.payload.length;
  len = align4(len);
  const out = Buffer.alloc(len);
  out.writeUInt32LE(len, 0);
  out.writeUInt16LE(type, 4);
  out.writeUInt16LE(flags, 6);
  fixed.copy(out, NLMSG_HDRLEN);
  let off = NLMSG_HDRLEN + fixed.length;
  for (const a of attrs) {
    off = align4(off);
    out.writeUInt16LE(4 + a.payload.length, off);
    out.writeUInt16LE(a.type, off + 2);
    a.payload.copy(out, off + 4);
    off += 4 + a.payload.length;
  }
  return out;
}

function familyOfAddress(ip: string): number {
  return addressFamily(ip) === 6 ? AF_INET6 : AF_INET;
}

/** RTM_NEWROUTE / RTM_DELROUTE for `spec` in the main table, as NetlinkClient's route methods send it. */
export function encodeRoute(spec: RouteSpec, how: 'add' | 'replace' | 'delete'): Buffer {
  const fixed = Buffer.alloc(12);
  const family = familyOfAddress(netAddress(spec.dst));
  fixed.writeUInt8(family, 0);
  fixed.writeUInt8(spec.dst.prefixLen, 1);
  fixed.writeUInt8(MAIN_TABLE, 4);
  if (how !== 'delete') {
    // Deletion matches on what is given: protocol, scope and type stay 0 so any route with this
    // dst, gateway and device goes (as NetlinkClient.deleteRoute does).
    fixed.writeUInt8(RTPROT_BOOT, 5);
    fixed.writeUInt8(spec.gateway ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK, 6);
    fixed.writeUInt8(RTN_UNICAST, 7);
  }
  if (spec.onlink) fixed.writeUInt32LE(RTNH_F_ONLINK, 8);
  const dst = typeof spec.dst.ip === 'number' ? u32be(spec.dst.ip) : ipToBuffer(spec.dst.ip);
  const attrs: Attr[] = [{ type: RTA_DST, payload: dst }, { type: RTA_OIF, payload: u32(spec.oif) }];
  if (spec.gateway) attrs.push({ type: RTA_GATEWAY, payload: ipToBuffer(spec.gateway) });
  if (spec.priority) attrs.push({ type: RTA_PRIORITY, payload: u32(spec.priority) });
  const flags = NLM_F_REQUEST | NLM_F_ACK | (how === 'add' ? NLM_F_CREATE | NLM_F_EXCL : how === 'replace' ? CREATE_OR_REPLACE : 0);
  return message(how === 'delete' ? RTM_DELROUTE : RTM_NEWROUTE, flags, fixed, attrs);
}

function u32be(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
}

function ndmsg(family: number, ifindex: number, state: number, flags: number): Buffer {
  const fixed = Buffer.alloc(12);
  fixed.writeUInt8(family, 0);
  fixed.writeInt32LE(ifindex, 4);
  fixed.writeUInt16LE(state, 8);
  fixed.writeUInt8(flags, 10);
  return fixed;
}

/** `ip neigh replace IP lladdr MAC dev IFINDEX nud permanent` (ARP or NDP by the address's family). */
export function encodeReplaceNeighbour(ifindex: number, ip: string, mac: string): Buffer {
  return message(RTM_NEWNEIGH, NLM_F_REQUEST | NLM_F_ACK | CREATE_OR_REPLACE, ndmsg(familyOfAddress(ip), ifindex, NUD_PERMANENT, 0), [
    { type: NDA_DST, payload: ipToBuffer(ip) },
    { type: NDA_LLADDR, payload: macToBuffer(mac) },
  ]);
}

export function encodeDeleteNeighbour(ifindex: number, ip: string): Buffer {
  return message(RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK, ndmsg(familyOfAddress(ip), ifindex, 0, 0), [{ type: NDA_DST, payload: ipToBuffer(ip) }]);
}

/** `bridge fdb replace MAC dev IFINDEX dst DST self permanent` (AF_BRIDGE). */
export function encodeReplaceFdb(ifindex: number, mac: string, dst: string): Buffer {
  return message(RTM_NEWNEIGH, NLM_F_REQUEST | NLM_F_ACK | CREATE_OR_REPLACE, ndmsg(AF_BRIDGE, ifindex, NUD_PERMANENT, NTF_SELF), [
    { type: NDA_LLADDR, payload: macToBuffer(mac) },
    { type: NDA_DST, payload: ipToBuffer(dst) },
  ]);
}

export function encodeDeleteFdb(ifindex: number, mac: string, dst: string | null): Buffer {
  const attrs: Attr[] = [{ type: NDA_LLADDR, payload: macToBuffer(mac) }];
  if (dst) attrs.push({ type: NDA_DST, payload: ipToBuffer(dst) });
  return message(RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK, ndmsg(AF_BRIDGE, ifindex, 0, NTF_SELF), attrs);
}

/** RTM_NEWADDR (create or replace) / RTM_DELADDR; IPv4 carries IFA_LOCAL and IFA_ADDRESS, IPv6 IFA_ADDRESS only. */
export function encodeAddress(ifindex: number, ip: string, prefixLen: number, how: 'add' | 'delete'): Buffer {
  const family = familyOfAddress(ip);
  const fixed = Buffer.alloc(8);
  fixed.writeUInt8(family, 0);
  fixed.writeUInt8(prefixLen, 1);
  fixed.writeUInt32LE(ifindex, 4);
  const addr = ipToBuffer(ip);
  const attrs: Attr[] = family === AF_INET6 ? [{ type: IFA_ADDRESS, payload: addr }] : [{ type: IFA_LOCAL, payload: addr }, { type: IFA_ADDRESS, payload: addr }];
  return how === 'add'
    ? message(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | CREATE_OR_REPLACE, fixed, attrs)
    : message(RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK, fixed, attrs);
}

function indexOf(link: number | { readonly index: number }): number {
  return typeof link === 'number' ? link : link.index;
}

/** The request for one write (throws TypeError on a malformed address or MAC). */
export function encodeWrite(w: KernelWrite): Buffer {
  switch (w.op) {
    case 'addAddress':
      return encodeAddress(indexOf(w.link), w.ip, w.prefixLen, 'add');
    case 'deleteAddress':
      return encodeAddress(indexOf(w.link), w.ip, w.prefixLen, 'delete');
    case 'replaceNeighbour':
      return encodeReplaceNeighbour(indexOf(w.link), w.ip, w.mac);
    case 'deleteNeighbour':
      return encodeDeleteNeighbour(indexOf(w.link), w.ip);
    case 'replaceFdb':
      return encodeReplaceFdb(indexOf(w.link), w.mac, w.dst);
    case 'deleteFdb':
      return encodeDeleteFdb(indexOf(w.link), w.mac, w.dst);
    case 'addRoute':
      return encodeRoute(w.spec, 'add');
    case 'replaceRoute':
      return encodeRoute(w.spec, 'replace');
    case 'deleteRoute':
      return encodeRoute(w.spec, 'delete');
  }
}

/** Write a message's sequence number and sender port in place. */
export function stampMessage(msg: Buffer, seq: number, pid: number): void {
  msg.writeUInt32LE(seq >>> 0, SEQ_OFFSET);
  msg.writeUInt32LE(pid >>> 0, PID_OFFSET);
}

/**
 * Every acknowledgement in one received datagram: `onAck(seq, errno)` with errno 0 for success,
 * the positive errno otherwise (NLMSG_ERROR carries -errno). Other messages are skipped; a
 * truncated or malformed tail ends the walk.
 */
export function forEachAck(datagram: Buffer, onAck: (seq: number, errno: number) => void): void {
  let off = 0;
  while (off + NLMSG_HDRLEN <= datagram.length) {
    const len = datagram.readUInt32LE(off);
    if (len < NLMSG_HDRLEN || off + len > datagram.length) return;
    if (datagram.readUInt16LE(off + 4) === NLMSG_ERROR && len >= NLMSG_HDRLEN + 4) {
      const negErrno = datagram.readInt32LE(off + NLMSG_HDRLEN);
      onAck(datagram.readUInt32LE(off + SEQ_OFFSET), negErrno === 0 ? 0 : -negErrno);
    }
    off += align4(len);
  }
}
