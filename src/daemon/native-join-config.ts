/**
 * What the native join path (addon/src/fastjoin.cc) is told, as pure functions of the daemon's
 * state (weftd.ts decides when the path runs at all and calls these).
 *
 * The writes it makes are the reconciler's own: the three requests the reconciler sends for a
 * vxlan peer (`replaceNeighbour`, `replaceFdb`, `addRoute`; src/netlink/wire.ts) are encoded once
 * with marker values, and the addon is told where each value sits, to patch them per join. So
 * the kernel gets byte for byte what the reconciler would send, and a change to wire.ts changes
 * both paths at once.
 */
import { formatIPv4Cidr, parseIPv4 } from '../ip';
import type { IPv4Net, Lease } from '../lease/types';
import type { NativeJoinConfig } from '../native';
import { ipToBuffer, macToBuffer, normalizeMac } from '../netlink/codec';
import { NLMSG_HDRLEN, encodeWrites } from '../netlink/wire';
import { routePriority } from './diff';

export interface NativeJoinInput {
  /** The registry's prefix + "/subnets/": where peer leases live. */
  readonly subnetsPrefix: string;
  readonly own: Lease;
  readonly network: IPv4Net;
  readonly subnetLen: number;
  /** Our lease's BackendData: { VNI, VtepMAC }. */
  readonly backendData: unknown;
  /** The overlay device (flannel.<VNI>). */
  readonly device: { readonly index: number; readonly name: string };
  readonly underlayNetworks: readonly IPv4Net[];
  /** etcd's endpoint addresses (text; the IPv4 ones matter here). */
  readonly protectedIPs: readonly string[];
}

// Marker values of the template: documentation ranges (RFC 5737) and a locally administered MAC,
// each found once or twice in the encoded requests and nowhere by chance.
const MARK_GATEWAY = '198.51.100.7';
const MARK_PUBLIC_IP = '203.0.113.9';
const MARK_MAC = '02:fe:dc:ba:98:76';
const MARK_SUBNET = '192.0.2.0';
// nlmsghdr: seq at 8, pid at 12; rtmsg: dst_len at 1.
const SEQ_AT = 8;
const PID_AT = 12;
const RTM_DST_LEN_AT = 1;

/** The addon's configuration, or null when our own lease cannot be described to it (no IPv4 PublicIP). */
export function nativeJoinConfig(i: NativeJoinInput): NativeJoinConfig | null {
  const publicIp = parseIPv4(i.own.attrs.PublicIP);
  if (publicIp === null) return null;
  const data = (i.backendData ?? {}) as { readonly VNI?: unknown; readonly VtepMAC?: unknown };
  const dst: IPv4Net = { ip: parseIPv4(MARK_SUBNET)!, prefixLen: i.subnetLen };
  const batch = encodeWrites([
    { op: 'replaceNeighbour', link: i.device, ip: MARK_GATEWAY, mac: MARK_MAC },
    { op: 'replaceFdb', link: i.device, mac: MARK_MAC, dst: MARK_PUBLIC_IP },
    { op: 'addRoute', spec: { dst, gateway: MARK_GATEWAY, oif: i.device.index, onlink: true, priority: routePriority(dst) } },
  ], () => undefined);
  const starts = batch.offsets.slice(0, -1);
  if (starts.length !== 3) return null;
  const template = Buffer.from(batch.buffer);
  const at = (bytes: Buffer): number[] => {
    const out: number[] = [];
    for (let x = template.indexOf(bytes); x >= 0; x = template.indexOf(bytes, x + 1)) out.push(x);
    return out;
  };
  return {
    prefix: i.subnetsPrefix, ownKey: i.own.key,
    networkIp: i.network.ip >>> 0, networkLen: i.network.prefixLen, subnetLen: i.subnetLen,
    ownSubnetIp: i.own.subnet.ip >>> 0, ownSubnetLen: i.own.subnet.prefixLen, ownPublicIp: publicIp >>> 0,
    // vxlan's rules take no interface address of ours (VxlanBackend passes none): neither does this.
    ownIfaceIp: 0,
    ownMac: macOrNull(data.VtepMAC), vni: typeof data.VNI === 'number' ? data.VNI : 1, ifindex: i.device.index,
    underlay: i.underlayNetworks.flatMap((n) => [n.ip >>> 0, n.prefixLen]),
    protectedIps: i.protectedIPs.flatMap((t) => { const ip = parseIPv4(t); return ip === null ? [] : [ip >>> 0]; }),
    template,
    atGw: at(ipToBuffer(MARK_GATEWAY)), atPub: at(ipToBuffer(MARK_PUBLIC_IP)), atDst: at(ipToBuffer(MARK_SUBNET)), atMac: at(macToBuffer(MARK_MAC)),
    atDstLen: [starts[2]! + NLMSG_HDRLEN + RTM_DST_LEN_AT], atSeq: starts.map((o) => o + SEQ_AT), atPid: starts.map((o) => o + PID_AT),
  };
}

/** What the configuration is made of, as text: weftd rebuilds the configuration only when it moves. */
export function nativeJoinInputKey(i: NativeJoinInput): string {
  return [i.subnetsPrefix, i.own.key, i.own.attrs.PublicIP, formatIPv4Cidr(i.network), i.subnetLen, JSON.stringify(i.backendData ?? null),
    i.device.index, i.device.name, i.underlayNetworks.map(formatIPv4Cidr).join(), i.protectedIPs.join()].join(' ');
}

/** A known lease as the addon takes it (fastJoinKnow's arguments after the key). */
export function nativePeerOf(lease: Lease): [subnetIp: number, prefixLen: number, publicIp: number, mac: Buffer | null] {
  const data = lease.attrs.BackendData as { readonly VtepMAC?: unknown } | undefined;
  return [lease.subnet.ip >>> 0, lease.subnet.prefixLen, (parseIPv4(lease.attrs.PublicIP) ?? 0) >>> 0, macOrNull(data?.VtepMAC)];
}

function macOrNull(v: unknown): Buffer | null {
  return typeof v === 'string' && normalizeMac(v) !== null ? macToBuffer(v) : null;
}
