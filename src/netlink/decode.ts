/**
 * Pure decoders of the rtnetlink messages weft reads, straight from the kernel's bytes into weft's
 * own shapes (types.ts): links (with the VXLAN attributes), addresses, neighbours and bridge FDB
 * entries, routes, and the NLMSG_ERROR / NLMSG_DONE control messages of a request.
 *
 * Why not the `netlink` package: `import 'netlink'` loads its whole index (generated struct tables
 * for rt, nl80211, genl and wg: ~4 MB of private memory per daemon), and it turns every attribute
 * of every message into an object before weft looks at three of them. Here one walk over the
 * attributes reads the few weft uses, in place, and skips the rest (docs/netlink.md).
 *
 * Layouts (linux/netlink.h, rtnetlink.h, if_link.h, if_addr.h, neighbour.h; host byte order,
 * little-endian on every machine weft runs on, except addresses and ports):
 *
 *   nlmsghdr  16: len u32 | type u16 | flags u16 | seq u32 | pid u32
 *   ifinfomsg 16: family u8 | pad u8 | type u16 | index s32 | flags u32 | change u32
 *   ifaddrmsg  8: family u8 | prefixlen u8 | flags u8 | scope u8 | index u32
 *   ndmsg     12: family u8 | pad u8 | pad u16 | ifindex s32 | state u16 | flags u8 | type u8
 *   rtmsg     12: family u8 | dst_len u8 | src_len u8 | tos u8 | table u8 | protocol u8 | scope u8 | type u8 | flags u32
 *   rtattr     4: len u16 | type u16 (top two bits: NLA_F_NESTED, NLA_F_NET_BYTEORDER), payload padded to 4
 *
 * Hostile input: every length is checked against what is left before anything is read. A message
 * or attribute that claims more bytes than there are, or fewer than its own header, a fixed header
 * cut short, or an integer attribute of the wrong size throws a NetlinkDecodeError (never a
 * RangeError from an out-of-bounds read); every loop advances by at least 4 bytes, so none can spin.
 * An address attribute of an unexpected size (neither 4 nor 16 bytes) is not an error: it reads as
 * null, as for the tunnels whose "hardware address" is an IP address.
 */
import { WeftError } from '../errors';
import type { IPNet } from '../ip';
import { ipAt, macAt } from './codec';
import type { LinkInfo, VxlanInfo } from './types';
import {
  IFA_ADDRESS,
  IFA_LOCAL,
  IFF_UP,
  IFLA_ADDRESS,
  IFLA_IFNAME,
  IFLA_INFO_DATA,
  IFLA_INFO_KIND,
  IFLA_LINKINFO,
  IFLA_MTU,
  IFLA_VXLAN_GBP,
  IFLA_VXLAN_ID,
  IFLA_VXLAN_LEARNING,
  IFLA_VXLAN_LINK,
  IFLA_VXLAN_LOCAL,
  IFLA_VXLAN_LOCAL6,
  IFLA_VXLAN_PORT,
  NDA_DST,
  NDA_LLADDR,
  NTF_SELF,
  NUD_PERMANENT,
  RTA_DST,
  RTA_GATEWAY,
  RTA_PRIORITY,
  RTNH_F_ONLINK,
} from './wire';

export const NLMSG_HDRLEN = 16;
export const NLMSG_NOOP = 1;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLM_F_MULTI = 0x2;
/** The dump was interrupted by a change (its content may be inconsistent). */
export const NLM_F_DUMP_INTR = 0x10;

export const AF_INET = 2;
export const AF_INET6 = 10;
export const AF_BRIDGE = 7;

const IFLA_MASTER = 10;
const NDA_MASTER = 9;
const RTA_OIF = 4;
const RTA_PREFSRC = 7;
const RTA_TABLE = 15;
export const NLA_TYPE_MASK = 0x3fff;

/** A kernel message weft cannot read safely: cut short, or claiming more bytes than it has. */
export class NetlinkDecodeError extends WeftError {
  constructor(
    /** What was being decoded ("RTM_NEWLINK", "attribute 3 of ifinfomsg", ...). */
    readonly what: string,
    /** Byte offset of the fault in the buffer decoded. */
    readonly offset: number,
    detail: string,
  ) {
    super('NETLINK', `malformed netlink message (${what} at byte ${offset}): ${detail}; the kernel's message was dropped — report it with the kernel version`);
    this.name = 'NetlinkDecodeError';
  }
}

/** One message of a datagram: its header fields and where its payload lies in `buf`. */
export interface RawMessage {
  readonly type: number;
  readonly flags: number;
  readonly seq: number;
  readonly pid: number;
  /** The payload (after the nlmsghdr): a view of the datagram, no copy. */
  readonly body: Buffer;
}

/**
 * Call `onMessage` for each nlmsghdr of a datagram. Throws NetlinkDecodeError for a header that
 * claims fewer than 16 bytes or more than are left; trailing bytes shorter than a header are a
 * malformed datagram too (the kernel never sends them).
 */
export function forEachMessage(datagram: Buffer, onMessage: (m: RawMessage) => void): void {
  let off = 0;
  while (off < datagram.length) {
    if (datagram.length - off < NLMSG_HDRLEN) throw new NetlinkDecodeError('nlmsghdr', off, `${datagram.length - off} bytes left, a header takes ${NLMSG_HDRLEN}`);
    const len = datagram.readUInt32LE(off);
    if (len < NLMSG_HDRLEN) throw new NetlinkDecodeError('nlmsghdr', off, `length ${len} is shorter than the header`);
    if (len > datagram.length - off) throw new NetlinkDecodeError('nlmsghdr', off, `length ${len} exceeds the ${datagram.length - off} bytes left`);
    onMessage({
      type: datagram.readUInt16LE(off + 4),
      flags: datagram.readUInt16LE(off + 6),
      seq: datagram.readUInt32LE(off + 8),
      pid: datagram.readUInt32LE(off + 12),
      body: datagram.subarray(off + NLMSG_HDRLEN, off + len),
    });
    off += (len + 3) & ~3;
  }
}

/**
 * Walk the attributes of `buf[start, end)`: `onAttr(type, payloadStart, payloadEnd)` with the type
 * stripped of NLA_F_NESTED / NLA_F_NET_BYTEORDER. Throws on an attribute shorter than its header
 * or longer than what is left. A last attribute's padding may be missing (the kernel omits it).
 */
export function forEachAttr(buf: Buffer, start: number, end: number, what: string, onAttr: (type: number, at: number, atEnd: number) => void): void {
  let a = start;
  while (a < end) {
    if (end - a < 4) throw new NetlinkDecodeError(what, a, `${end - a} bytes left, an attribute header takes 4`);
    const alen = buf.readUInt16LE(a);
    if (alen < 4) throw new NetlinkDecodeError(what, a, `attribute length ${alen} is shorter than its header`);
    if (alen > end - a) throw new NetlinkDecodeError(what, a, `attribute ${buf.readUInt16LE(a + 2) & NLA_TYPE_MASK} claims ${alen} bytes, ${end - a} left`);
    onAttr(buf.readUInt16LE(a + 2) & NLA_TYPE_MASK, a + 4, a + alen);
    a += (alen + 3) & ~3;
  }
}

function needFixed(body: Buffer, size: number, what: string): void {
  if (body.length < size) throw new NetlinkDecodeError(what, 0, `${body.length} bytes, its fixed header takes ${size}`);
}

function u32(buf: Buffer, at: number, end: number, what: string): number {
  if (end - at !== 4) throw new NetlinkDecodeError(what, at, `a 32-bit attribute of ${end - at} bytes`);
  return buf.readUInt32LE(at);
}

/** A NUL-terminated string attribute (a missing NUL is tolerated: the payload ends the string). */
function stringAt(buf: Buffer, at: number, end: number): string {
  let stop = at;
  while (stop < end && buf[stop] !== 0) stop++;
  return buf.toString('utf8', at, stop);
}

// ------------------------------------------------------------------ links

/** A link message (RTM_NEWLINK / RTM_DELLINK) as weft sees it; `master` is IFLA_MASTER (bridge, bond), null without. */
export interface DecodedLink extends LinkInfo {
  readonly master: number | null;
  /** IFLA_IFNAME as sent; null when the message had none (`name` is then "#<index>"). */
  readonly ifname: string | null;
}

/** Decode an ifinfomsg and its attributes (body: the message after its nlmsghdr). */
export function decodeLink(body: Buffer): DecodedLink {
  const what = 'ifinfomsg';
  needFixed(body, 16, what);
  const index = body.readInt32LE(4);
  const up = (body.readUInt32LE(8) & IFF_UP) !== 0;
  let name: string | null = null;
  let mtu = 0;
  let mac: string | null = null;
  let master: number | null = null;
  let kind: string | null = null;
  let vxlan: VxlanInfo | null = null;
  forEachAttr(body, 16, body.length, what, (type, at, end) => {
    switch (type) {
      case IFLA_IFNAME:
        name = stringAt(body, at, end);
        break;
      case IFLA_MTU:
        mtu = u32(body, at, end, 'IFLA_MTU');
        break;
      case IFLA_ADDRESS:
        mac = macAt(body, at, end);
        break;
      case IFLA_MASTER:
        master = u32(body, at, end, 'IFLA_MASTER');
        break;
      case IFLA_LINKINFO: {
        const info = decodeLinkInfo(body, at, end);
        kind = info.kind;
        vxlan = info.vxlan;
        break;
      }
    }
  });
  const ifname: string | null = name;
  return { index, name: ifname ?? `#${index}`, ifname, up, mtu, mac, kind, vxlan, master };
}

/** IFLA_LINKINFO: IFLA_INFO_KIND (a string, NUL stripped) and, for vxlan, IFLA_INFO_DATA's IFLA_VXLAN_*. */
function decodeLinkInfo(buf: Buffer, start: number, end: number): { kind: string | null; vxlan: VxlanInfo | null } {
  let kind: string | null = null;
  let data: [number, number] | null = null;
  forEachAttr(buf, start, end, 'IFLA_LINKINFO', (type, at, atEnd) => {
    if (type === IFLA_INFO_KIND) kind = stringAt(buf, at, atEnd);
    else if (type === IFLA_INFO_DATA) data = [at, atEnd];
  });
  const k: string | null = kind;
  const d: [number, number] | null = data;
  return { kind: k, vxlan: k === 'vxlan' && d !== null ? decodeVxlan(buf, d[0], d[1]) : null };
}

function decodeVxlan(buf: Buffer, start: number, end: number): VxlanInfo {
  let vni = 0;
  let local: string | null = null;
  let local6: string | null = null;
  let underlayIndex: number | null = null;
  let port = 0;
  let learning = false;
  let gbp = false;
  forEachAttr(buf, start, end, 'IFLA_INFO_DATA (vxlan)', (type, at, atEnd) => {
    switch (type) {
      case IFLA_VXLAN_ID:
        vni = u32(buf, at, atEnd, 'IFLA_VXLAN_ID');
        break;
      case IFLA_VXLAN_LOCAL:
        local = ipAt(buf, at, atEnd);
        break;
      case IFLA_VXLAN_LOCAL6:
        local6 = ipAt(buf, at, atEnd);
        break;
      case IFLA_VXLAN_LINK:
        underlayIndex = u32(buf, at, atEnd, 'IFLA_VXLAN_LINK');
        break;
      case IFLA_VXLAN_PORT: // network byte order
        if (atEnd - at !== 2) throw new NetlinkDecodeError('IFLA_VXLAN_PORT', at, `a 16-bit attribute of ${atEnd - at} bytes`);
        port = buf.readUInt16BE(at);
        break;
      case IFLA_VXLAN_LEARNING:
        if (atEnd - at < 1) throw new NetlinkDecodeError('IFLA_VXLAN_LEARNING', at, 'an 8-bit attribute of 0 bytes');
        learning = buf[at] !== 0;
        break;
      case IFLA_VXLAN_GBP: // a flag: present means set
        gbp = true;
        break;
    }
  });
  return { vni, local: local ?? local6, underlayIndex, port, learning, gbp };
}

// ------------------------------------------------------------------ addresses

export interface DecodedAddress {
  readonly family: number;
  readonly ifindex: number;
  /** IFA_LOCAL, else IFA_ADDRESS (on a point-to-point IPv4 link IFA_ADDRESS is the peer); null without either. */
  readonly ip: string | null;
  readonly prefixLen: number;
}

export function decodeAddress(body: Buffer): DecodedAddress {
  const what = 'ifaddrmsg';
  needFixed(body, 8, what);
  let local: string | null = null;
  let address: string | null = null;
  forEachAttr(body, 8, body.length, what, (type, at, end) => {
    if (type === IFA_LOCAL) local = ipAt(body, at, end);
    else if (type === IFA_ADDRESS) address = ipAt(body, at, end);
  });
  return { family: body[0]!, ifindex: body.readUInt32LE(4), ip: local ?? address, prefixLen: body[1]! };
}

// ------------------------------------------------------------------ neighbours and FDB

export interface DecodedNeighbour {
  /** AF_INET / AF_INET6: ARP / NDP; AF_BRIDGE: an FDB entry. */
  readonly family: number;
  readonly ifindex: number;
  /** NUD_* bits. */
  readonly state: number;
  /** NTF_* bits. */
  readonly flags: number;
  readonly permanent: boolean;
  /** NTF_SELF: the device's own table (VXLAN), not a bridge master's. */
  readonly self: boolean;
  /** NDA_DST: the neighbour's address, or an FDB entry's remote VTEP. */
  readonly dst: string | null;
  /** NDA_LLADDR. */
  readonly mac: string | null;
  /** NDA_MASTER (an FDB entry of a bridge port); null without. */
  readonly master: number | null;
}

export function decodeNeighbour(body: Buffer): DecodedNeighbour {
  const what = 'ndmsg';
  needFixed(body, 12, what);
  let dst: string | null = null;
  let mac: string | null = null;
  let master: number | null = null;
  forEachAttr(body, 12, body.length, what, (type, at, end) => {
    if (type === NDA_DST) dst = ipAt(body, at, end);
    else if (type === NDA_LLADDR) mac = macAt(body, at, end);
    else if (type === NDA_MASTER) master = u32(body, at, end, 'NDA_MASTER');
  });
  const state = body.readUInt16LE(8);
  const flags = body[10]!;
  return {
    family: body[0]!,
    ifindex: body.readInt32LE(4),
    state,
    flags,
    permanent: (state & NUD_PERMANENT) !== 0,
    self: (flags & NTF_SELF) !== 0,
    dst,
    mac,
    master,
  };
}

// ------------------------------------------------------------------ routes

export interface DecodedRoute {
  readonly family: number;
  /** RTA_DST with rtm_dst_len; for a default route (no RTA_DST) 0.0.0.0/0 or ::/0. null for a family other than IPv4/IPv6. */
  readonly dst: IPNet | null;
  readonly gateway: string | null;
  readonly oif: number | null;
  /** RTA_TABLE when present (tables above 255), else rtm_table. */
  readonly table: number;
  readonly priority: number;
  readonly prefsrc: string | null;
  readonly protocol: number;
  readonly scope: number;
  readonly type: number;
  readonly onlink: boolean;
}

export function decodeRoute(body: Buffer): DecodedRoute {
  const what = 'rtmsg';
  needFixed(body, 12, what);
  const family = body[0]!;
  const dstLen = body[1]!;
  let table = body[4]!;
  let dstIp: string | null = null;
  let dstValue = 0;
  let dstUnreadable = false;
  let gateway: string | null = null;
  let oif: number | null = null;
  let priority = 0;
  let prefsrc: string | null = null;
  forEachAttr(body, 12, body.length, what, (type, at, end) => {
    switch (type) {
      case RTA_DST:
        // IPv4 destinations stay numbers (IPv4Net): no text round trip on the hot path.
        if (family === AF_INET && end - at === 4) dstValue = body.readUInt32BE(at);
        else if (family === AF_INET6 && end - at === 16) dstIp = ipAt(body, at, end);
        else dstUnreadable = true;
        break;
      case RTA_GATEWAY:
        gateway = ipAt(body, at, end);
        break;
      case RTA_OIF:
        oif = u32(body, at, end, 'RTA_OIF');
        break;
      case RTA_TABLE:
        table = u32(body, at, end, 'RTA_TABLE');
        break;
      case RTA_PRIORITY:
        priority = u32(body, at, end, 'RTA_PRIORITY');
        break;
      case RTA_PREFSRC:
        prefsrc = ipAt(body, at, end);
        break;
    }
  });
  let dst: IPNet | null = null;
  if (!dstUnreadable && family === AF_INET) dst = { ip: dstValue >>> 0, prefixLen: dstLen };
  else if (!dstUnreadable && family === AF_INET6) dst = { ip: dstIp ?? '::', prefixLen: dstLen };
  return {
    family,
    dst,
    gateway,
    oif,
    table,
    priority,
    prefsrc,
    protocol: body[5]!,
    scope: body[6]!,
    type: body[7]!,
    onlink: (body.readUInt32LE(8) & RTNH_F_ONLINK) !== 0,
  };
}

// ------------------------------------------------------------------ control messages

/**
 * The errno of an NLMSG_ERROR body: 0 for an acknowledgement, else the positive errno (the kernel
 * sends -errno). Throws when the body is shorter than its int.
 */
export function decodeErrno(body: Buffer): number {
  needFixed(body, 4, 'nlmsgerr');
  const neg = body.readInt32LE(0);
  return neg === 0 ? 0 : -neg;
}

/** The errno an NLMSG_DONE carries (a dump that failed part-way puts -errno there); 0 when absent. */
export function decodeDoneErrno(body: Buffer): number {
  if (body.length < 4) return 0;
  const neg = body.readInt32LE(0);
  return neg < 0 ? -neg : 0;
}
