/**
 * The kernel WireGuard device over netlink: link kind "wireguard" (rtnetlink) and the WireGuard
 * generic netlink family "wireguard", version 1 (include/uapi/linux/wireguard.h), the same
 * messages `wg` and flannel's wgctrl send — without a `wg` process per change.
 *
 * Encoding and decoding are pure (unit-tested byte for byte against the attribute numbers and
 * layouts of wireguard.h); WireguardGenl sends them. UNTESTED against a real kernel module on
 * the machine this was written on (its kernel has no WireGuard): see docs/wireguard.md.
 *
 * The `netlink` package (its generic netlink client) is loaded only when a WireguardGenl talks to
 * the kernel (`loadNetlink`): importing this module costs nothing, so a vxlan or host-gw weftd
 * never loads the package's index (~4 MB of private memory; docs/dependencies.md).
 */
import type { GenericNetlinkSocket, genl } from 'netlink';
import { formatIPv6, parseIPv4, parseIPv6 } from '../ip';
import { NetlinkError, toNetlinkError } from './errors';

export const WG_GENL_NAME = 'wireguard';
export const WG_GENL_VERSION = 1;
export const WG_KEY_LEN = 32;

export const WG_CMD_GET_DEVICE = 0;
export const WG_CMD_SET_DEVICE = 1;

export const WGDEVICE_F_REPLACE_PEERS = 1;
export const WGDEVICE_A_IFINDEX = 1;      // NLA_U32
export const WGDEVICE_A_IFNAME = 2;       // NLA_NUL_STRING
export const WGDEVICE_A_PRIVATE_KEY = 3;  // 32 bytes
export const WGDEVICE_A_PUBLIC_KEY = 4;   // 32 bytes
export const WGDEVICE_A_FLAGS = 5;        // NLA_U32
export const WGDEVICE_A_LISTEN_PORT = 6;  // NLA_U16
export const WGDEVICE_A_FWMARK = 7;       // NLA_U32
export const WGDEVICE_A_PEERS = 8;        // NLA_NESTED

export const WGPEER_F_REMOVE_ME = 1;
export const WGPEER_F_REPLACE_ALLOWEDIPS = 2;
export const WGPEER_F_UPDATE_ONLY = 4;
export const WGPEER_A_PUBLIC_KEY = 1;
export const WGPEER_A_PRESHARED_KEY = 2;
export const WGPEER_A_FLAGS = 3;                          // NLA_U32
export const WGPEER_A_ENDPOINT = 4;                       // struct sockaddr_in / sockaddr_in6
export const WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL = 5;  // NLA_U16
export const WGPEER_A_LAST_HANDSHAKE_TIME = 6;            // struct __kernel_timespec
export const WGPEER_A_RX_BYTES = 7;                       // NLA_U64
export const WGPEER_A_TX_BYTES = 8;                       // NLA_U64
export const WGPEER_A_ALLOWEDIPS = 9;                     // NLA_NESTED
export const WGPEER_A_PROTOCOL_VERSION = 10;              // NLA_U32

export const WGALLOWEDIP_A_FAMILY = 1;    // NLA_U16
export const WGALLOWEDIP_A_IPADDR = 2;    // in_addr / in6_addr
export const WGALLOWEDIP_A_CIDR_MASK = 3; // NLA_U8

export const NLA_F_NESTED = 0x8000;
const NLA_TYPE_MASK = ~(0x8000 | 0x4000) & 0xffff;
const AF_INET = 2;
const AF_INET6 = 10;

function ipv6Bytes(ip: string): Buffer | null {
  const n = parseIPv6(ip);
  if (n === null) return null;
  const b = Buffer.alloc(16);
  b.writeBigUInt64BE(n >> 64n, 0);
  b.writeBigUInt64BE(n & 0xffffffffffffffffn, 8);
  return b;
}

/** A peer in a SET_DEVICE request (keys raw). */
export interface GenlPeer {
  readonly publicKey: Buffer;
  readonly remove?: boolean;
  readonly presharedKey?: Buffer;       // all zero: no PSK
  readonly endpoint?: { readonly ip: string; readonly port: number };
  readonly persistentKeepalive?: number;
  readonly replaceAllowedIps?: boolean;
  readonly allowedIps?: readonly { readonly ip: string; readonly prefixLen: number }[];
}

export interface GenlSetDevice {
  readonly ifname: string;
  readonly privateKey?: Buffer;
  readonly listenPort?: number;
  readonly replacePeers?: boolean;
  readonly peers?: readonly GenlPeer[];
}

/** One netlink attribute: 4-byte header (length incl. header, type), payload, padding to 4. */
export function nla(type: number, payload: Buffer): Buffer {
  const len = 4 + payload.length;
  const out = Buffer.alloc((len + 3) & ~3);
  out.writeUInt16LE(len, 0);
  out.writeUInt16LE(type, 2);
  payload.copy(out, 4);
  return out;
}

const u16 = (v: number): Buffer => { const b = Buffer.alloc(2); b.writeUInt16LE(v); return b; };
const u32 = (v: number): Buffer => { const b = Buffer.alloc(4); b.writeUInt32LE(v); return b; };
const nested = (type: number, parts: readonly Buffer[]): Buffer => nla(type | NLA_F_NESTED, Buffer.concat(parts));

/**
 * struct sockaddr_in: family (host order), port (network order), address, 8 zero bytes; or for an
 * IPv6 address struct sockaddr_in6: family, port, flowinfo 0, 16-byte address, scope id 0.
 */
export function sockaddrIn(ip: string, port: number): Buffer {
  const v6 = ipv6Bytes(ip);
  if (v6 !== null) {
    const b = Buffer.alloc(28);
    b.writeUInt16LE(AF_INET6, 0);
    b.writeUInt16BE(port, 2);
    v6.copy(b, 8);
    return b;
  }
  const n = parseIPv4(ip);
  if (n === null) throw new NetlinkError(`encode WireGuard endpoint ${ip}:${port}`, 'EINVAL', new Error('not an IPv4 address'));
  const b = Buffer.alloc(16);
  b.writeUInt16LE(AF_INET, 0);
  b.writeUInt16BE(port, 2);
  b.writeUInt32BE(n, 4);
  return b;
}

function encodePeer(p: GenlPeer): Buffer {
  const parts = [nla(WGPEER_A_PUBLIC_KEY, p.publicKey)];
  const flags = (p.remove ? WGPEER_F_REMOVE_ME : 0) | (p.replaceAllowedIps ? WGPEER_F_REPLACE_ALLOWEDIPS : 0);
  if (flags) parts.push(nla(WGPEER_A_FLAGS, u32(flags)));
  if (!p.remove) {
    if (p.presharedKey) parts.push(nla(WGPEER_A_PRESHARED_KEY, p.presharedKey));
    if (p.endpoint) parts.push(nla(WGPEER_A_ENDPOINT, sockaddrIn(p.endpoint.ip, p.endpoint.port)));
    if (p.persistentKeepalive !== undefined) parts.push(nla(WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL, u16(p.persistentKeepalive)));
    if (p.allowedIps) {
      parts.push(nested(WGPEER_A_ALLOWEDIPS, p.allowedIps.map((a) => {
        const v6 = ipv6Bytes(a.ip);
        if (v6 !== null) {
          return nested(0, [nla(WGALLOWEDIP_A_FAMILY, u16(AF_INET6)), nla(WGALLOWEDIP_A_IPADDR, v6), nla(WGALLOWEDIP_A_CIDR_MASK, Buffer.from([a.prefixLen]))]);
        }
        const n = parseIPv4(a.ip);
        if (n === null) throw new NetlinkError(`encode WireGuard allowed IP ${a.ip}/${a.prefixLen}`, 'EINVAL', new Error('not an IPv4 address'));
        const addr = Buffer.alloc(4);
        addr.writeUInt32BE(n);
        return nested(0, [nla(WGALLOWEDIP_A_FAMILY, u16(AF_INET)), nla(WGALLOWEDIP_A_IPADDR, addr), nla(WGALLOWEDIP_A_CIDR_MASK, Buffer.from([a.prefixLen]))]);
      })));
    }
  }
  return nested(0, parts);
}

/** The attributes of a WG_CMD_SET_DEVICE message (after the genl header). */
export function encodeSetDevice(req: GenlSetDevice): Buffer {
  const parts = [nla(WGDEVICE_A_IFNAME, Buffer.from(`${req.ifname}\0`))];
  if (req.privateKey) parts.push(nla(WGDEVICE_A_PRIVATE_KEY, req.privateKey));
  if (req.listenPort !== undefined) parts.push(nla(WGDEVICE_A_LISTEN_PORT, u16(req.listenPort)));
  if (req.replacePeers) parts.push(nla(WGDEVICE_A_FLAGS, u32(WGDEVICE_F_REPLACE_PEERS)));
  if (req.peers && req.peers.length > 0) parts.push(nested(WGDEVICE_A_PEERS, req.peers.map(encodePeer)));
  return Buffer.concat(parts);
}

/** The attributes of a WG_CMD_GET_DEVICE dump request. */
export function encodeGetDevice(ifname: string): Buffer {
  return nla(WGDEVICE_A_IFNAME, Buffer.from(`${ifname}\0`));
}

/** Split a buffer of attributes into (type without flags, payload). */
export function parseAttrs(buf: Buffer): { type: number; data: Buffer }[] {
  const out: { type: number; data: Buffer }[] = [];
  let off = 0;
  while (off + 4 <= buf.length) {
    const len = buf.readUInt16LE(off);
    if (len < 4 || off + len > buf.length) break;
    out.push({ type: buf.readUInt16LE(off + 2) & NLA_TYPE_MASK, data: buf.subarray(off + 4, off + len) });
    off += (len + 3) & ~3;
  }
  return out;
}

export interface GenlPeerState {
  readonly publicKey: Buffer;
  readonly presharedKey: Buffer | null;
  readonly endpoint: string | null;
  readonly persistentKeepalive: number;
  readonly lastHandshake: number;
  readonly rxBytes: number;
  readonly txBytes: number;
  readonly allowedIps: string[];
}

export interface GenlDeviceState {
  readonly ifindex: number;
  readonly listenPort: number;
  readonly privateKey: Buffer | null;
  readonly peers: GenlPeerState[];
}

function formatEndpoint(b: Buffer): string | null {
  if (b.length >= 8 && b.readUInt16LE(0) === AF_INET) return `${b[4]}.${b[5]}.${b[6]}.${b[7]}:${b.readUInt16BE(2)}`;
  if (b.length >= 24 && b.readUInt16LE(0) === AF_INET6) {
    const n = (b.readBigUInt64BE(8) << 64n) | b.readBigUInt64BE(16);
    return `[${formatIPv6(n)}]:${b.readUInt16BE(2)}`;
  }
  return null;
}

function decodePeer(buf: Buffer): GenlPeerState {
  let publicKey = Buffer.alloc(WG_KEY_LEN);
  let presharedKey: Buffer | null = null;
  let endpoint: string | null = null;
  let keepalive = 0;
  let handshake = 0;
  let rx = 0;
  let tx = 0;
  const allowed: string[] = [];
  for (const a of parseAttrs(buf)) {
    switch (a.type) {
      case WGPEER_A_PUBLIC_KEY: publicKey = Buffer.from(a.data); break;
      case WGPEER_A_PRESHARED_KEY: presharedKey = a.data.equals(Buffer.alloc(WG_KEY_LEN)) ? null : Buffer.from(a.data); break;
      case WGPEER_A_ENDPOINT: endpoint = formatEndpoint(a.data); break;
      case WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL: keepalive = a.data.readUInt16LE(0); break;
      case WGPEER_A_LAST_HANDSHAKE_TIME: handshake = Number(a.data.readBigInt64LE(0)); break;
      case WGPEER_A_RX_BYTES: rx = Number(a.data.readBigUInt64LE(0)); break;
      case WGPEER_A_TX_BYTES: tx = Number(a.data.readBigUInt64LE(0)); break;
      case WGPEER_A_ALLOWEDIPS:
        for (const entry of parseAttrs(a.data)) {
          let family = 0;
          let addr: Buffer | null = null;
          let mask = 0;
          for (const f of parseAttrs(entry.data)) {
            if (f.type === WGALLOWEDIP_A_FAMILY) family = f.data.readUInt16LE(0);
            else if (f.type === WGALLOWEDIP_A_IPADDR) addr = f.data;
            else if (f.type === WGALLOWEDIP_A_CIDR_MASK) mask = f.data[0]!;
          }
          if (family === AF_INET && addr !== null && addr.length === 4) allowed.push(`${addr[0]}.${addr[1]}.${addr[2]}.${addr[3]}/${mask}`);
          if (family === AF_INET6 && addr !== null && addr.length === 16) {
            allowed.push(`${formatIPv6((addr.readBigUInt64BE(0) << 64n) | addr.readBigUInt64BE(8))}/${mask}`);
          }
        }
        break;
      default: break;
    }
  }
  return { publicKey, presharedKey, endpoint, persistentKeepalive: keepalive, lastHandshake: handshake, rxBytes: rx, txBytes: tx, allowedIps: allowed };
}

/**
 * Decode the messages of a GET_DEVICE dump. A device with many peers comes in several messages,
 * each repeating the device attributes and carrying the next peers; one peer can even be split
 * (its allowed IPs continue in the next message under the same public key): merged here.
 */
export function decodeGetDevice(messages: readonly Buffer[]): GenlDeviceState {
  let ifindex = 0;
  let listenPort = 0;
  let privateKey: Buffer | null = null;
  const peers: GenlPeerState[] = [];
  for (const m of messages) {
    for (const a of parseAttrs(m)) {
      if (a.type === WGDEVICE_A_IFINDEX) ifindex = a.data.readUInt32LE(0);
      else if (a.type === WGDEVICE_A_LISTEN_PORT) listenPort = a.data.readUInt16LE(0);
      else if (a.type === WGDEVICE_A_PRIVATE_KEY) privateKey = a.data.equals(Buffer.alloc(WG_KEY_LEN)) ? null : Buffer.from(a.data);
      else if (a.type === WGDEVICE_A_PEERS) {
        for (const p of parseAttrs(a.data)) {
          const peer = decodePeer(p.data);
          const last = peers[peers.length - 1];
          if (last !== undefined && last.publicKey.equals(peer.publicKey)) last.allowedIps.push(...peer.allowedIps);
          else peers.push(peer);
        }
      }
    }
  }
  return { ifindex, listenPort, privateKey, peers };
}

/** IFLA_LINKINFO for a link of `kind` (no IFLA_INFO_DATA: a WireGuard link has none): one IFLA_INFO_KIND, the NUL-terminated kind padded to 4. */
export function linkInfoOfKind(kind: string): Buffer {
  const IFLA_INFO_KIND = 1;
  const payload = Buffer.from(`${kind}\0`);
  const attr = Buffer.alloc((4 + payload.length + 3) & ~3);
  attr.writeUInt16LE(4 + payload.length, 0);
  attr.writeUInt16LE(IFLA_INFO_KIND, 2);
  payload.copy(attr, 4);
  return attr;
}

type NetlinkPackage = typeof import('netlink');
let netlinkPackage: NetlinkPackage | undefined;

/** The `netlink` package, loaded on first use: only the kernel WireGuard path needs it. */
function loadNetlink(): NetlinkPackage {
  netlinkPackage ??= require('netlink') as NetlinkPackage;
  return netlinkPackage;
}

/** The kernel's WireGuard, over rtnetlink (create) and generic netlink (configure, read). */
export class WireguardGenl {
  private sock: GenericNetlinkSocket | null = null;
  private familyId: number | null = null;

  constructor(private readonly timeoutMs = 5000) {}

  /** Create a link of kind "wireguard". EOPNOTSUPP here is "no WireGuard in this kernel". */
  async createLink(name: string, mtu: number): Promise<void> {
    const { createRtNetlink, FlagsNew } = loadNetlink();
    const rt = createRtNetlink({ ref: false, recvBufferSize: 1 << 20, sendBufferSize: 0 });
    try {
      await rt.newLink({}, { ifname: name, mtu, linkinfo: linkInfoOfKind('wireguard') }, { flags: FlagsNew.CREATE | FlagsNew.EXCL, timeout: this.timeoutMs });
    } catch (err) {
      throw toNetlinkError(`create wireguard device ${name}`, err);
    } finally {
      rt.socket.close();
    }
  }

  private async family(): Promise<{ sock: GenericNetlinkSocket; id: number }> {
    const nl = loadNetlink();
    if (this.sock === null) this.sock = nl.createGenericNetlink({ ref: false, recvBufferSize: 1 << 20, sendBufferSize: 0 });
    if (this.familyId === null) {
      let res: genl.Message[];
      try {
        res = await this.sock.ctrlRequest(nl.genl.Commands.GET_FAMILY, { familyName: WG_GENL_NAME }, { timeout: this.timeoutMs });
      } catch (err) {
        throw toNetlinkError('resolve generic netlink family "wireguard"', err);
      }
      const id = res[0]?.familyId;
      if (id === undefined) throw new NetlinkError('resolve generic netlink family "wireguard"', 'ENOENT', new Error('no family id in the answer'));
      this.familyId = id;
    }
    return { sock: this.sock, id: this.familyId };
  }

  async setDevice(req: GenlSetDevice): Promise<void> {
    const { sock, id } = await this.family();
    // Large peer lists go in several messages, as `wg` does; only the first carries REPLACE_PEERS.
    const peers = req.peers ?? [];
    const chunks: GenlPeer[][] = [];
    for (let i = 0; i < peers.length; i += 32) chunks.push(peers.slice(i, i + 32));
    if (chunks.length === 0) chunks.push([]);
    for (let i = 0; i < chunks.length; i++) {
      const part: GenlSetDevice = i === 0 ? { ...req, peers: chunks[i]! } : { ifname: req.ifname, peers: chunks[i]! };
      try {
        await sock.request(id, WG_CMD_SET_DEVICE, WG_GENL_VERSION, encodeSetDevice(part), { timeout: this.timeoutMs });
      } catch (err) {
        throw toNetlinkError(`configure wireguard device ${req.ifname}`, err);
      }
    }
  }

  async getDevice(ifname: string): Promise<GenlDeviceState> {
    const { sock, id } = await this.family();
    try {
      const [msgs] = await sock.request(id, WG_CMD_GET_DEVICE, WG_GENL_VERSION, encodeGetDevice(ifname), { flags: loadNetlink().FlagsGet.DUMP, timeout: this.timeoutMs });
      return decodeGetDevice(msgs.map((m) => m.data));
    } catch (err) {
      throw toNetlinkError(`read wireguard device ${ifname}`, err);
    }
  }

  close(): void {
    this.sock?.socket.close();
    this.sock = null;
    this.familyId = null;
  }
}
