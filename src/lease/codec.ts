/**
 * Wire formats of the lease store, byte-identical to flannel's (compat §1), so that weft and
 * flanneld hosts read each other's leases:
 *
 *   key:   <prefix>/subnets/10.5.52.0-24            (dual stack: 10.5.52.0-24&fc00:0:0:34::-64)
 *   value: {"PublicIP":"10.250.0.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}
 *
 * The value is what Go's encoding/json makes of flannel's LeaseAttrs: PublicIP and PublicIPv6
 * always present (PublicIPv6 a *IP6, hence null), BackendType/BackendData/BackendV6Data
 * `omitempty`. Decoding is tolerant of what older flannels wrote (v0.12: no VNI; the udp backend:
 * no BackendType/BackendData) and strict about everything else: a malformed value is a
 * WeftError('BAD_DATA') naming the key, never a half-filled Lease.
 */
import { WeftError } from '../errors';
import { formatIPv4, ip6, maskOf, parseIPv4 } from '../ip';
import type { IPv4Net, IPv6Net, Lease, LeaseAttrs, VxlanLeaseData } from './types';

export const DEFAULT_PREFIX = '/coreos.com/network';

/** `<prefix>/config` */
export function configKey(prefix: string): string {
  return `${trimPrefix(prefix)}/config`;
}

/** `<prefix>/subnets/` — the directory the watch and the list cover (trailing slash included). */
export function subnetsDir(prefix: string): string {
  return `${trimPrefix(prefix)}/subnets/`;
}

/** `<prefix>/subnets/<subnet key>` */
export function fullSubnetKey(prefix: string, key: string): string {
  return subnetsDir(prefix) + key;
}

function trimPrefix(prefix: string): string {
  return prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
}

/** "10.5.52.0-24", or "10.5.52.0-24&fc00:0:0:34::-64" with an IPv6 subnet (flannel's MakeSubnetKey). */
export function formatSubnetKey(subnet: IPv4Net, ipv6Subnet: IPv6Net | null = null): string {
  const v4 = `${formatIPv4(subnet.ip)}-${subnet.prefixLen}`;
  return ipv6Subnet === null ? v4 : `${v4}&${ipv6Subnet.ip}-${ipv6Subnet.prefixLen}`;
}

// flannel's subnetRegex, anchored at both ends (flannel's is unanchored at the start, which lets
// "x10.5.52.0-24" through; nothing legitimate writes that).
const SUBNET_KEY_RE = /^(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})-(\d{1,2})(?:&([0-9a-fA-F:]+)-(\d{1,3}))?$/;

/**
 * Parse a subnet key (the last path segment). Returns null unless it is a well-formed network
 * (host bits zero, prefix lengths in range), so a stray key under subnets/ is never mistaken
 * for a lease.
 */
export function parseSubnetKey(key: string): { subnet: IPv4Net; ipv6Subnet: IPv6Net | null } | null {
  const m = SUBNET_KEY_RE.exec(key);
  if (m === null) return null;
  const ip = parseIPv4(m[1]!);
  const prefixLen = Number(m[2]);
  if (ip === null || prefixLen > 32 || ((ip & maskOf(prefixLen)) >>> 0) !== ip) return null;
  let ipv6Subnet: IPv6Net | null = null;
  if (m[3] !== undefined) {
    const len6 = Number(m[4]);
    const { Address6 } = ip6();
    if (len6 > 128 || !Address6.isValid(m[3])) return null;
    const net = new Address6(`${m[3]}/${len6}`);
    const canonical = new Address6(m[3]).correctForm();
    if (net.startAddress().correctForm() !== canonical) return null; // host bits set
    ipv6Subnet = { ip: canonical, prefixLen: len6 };
  }
  return { subnet: { ip, prefixLen }, ipv6Subnet };
}

/** The subnet key from a full etcd key under `subnetsDir(prefix)`, or null for anything else. */
export function subnetKeyOf(prefix: string, fullKey: string): string | null {
  const dir = subnetsDir(prefix);
  if (!fullKey.startsWith(dir)) return null;
  const key = fullKey.slice(dir.length);
  return key.length === 0 || key.includes('/') ? null : key;
}

/**
 * Encode a lease value exactly as flannel does. For vxlan, BackendData is normalised to
 * `{"VNI":n,"VtepMAC":"..."}` in that order (Go struct order) whatever the caller's key order.
 */
export function encodeLeaseAttrs(attrs: LeaseAttrs): string {
  let out = `{"PublicIP":${JSON.stringify(attrs.PublicIP)},"PublicIPv6":${attrs.PublicIPv6 === null ? 'null' : JSON.stringify(attrs.PublicIPv6)}`;
  if (attrs.BackendType !== '') out += `,"BackendType":${JSON.stringify(attrs.BackendType)}`;
  if (attrs.BackendData !== undefined) out += `,"BackendData":${encodeBackendData(attrs.BackendType, attrs.BackendData)}`;
  if (attrs.BackendV6Data !== undefined) out += `,"BackendV6Data":${encodeBackendData(attrs.BackendType, attrs.BackendV6Data)}`;
  return out + '}';
}

function encodeBackendData(backendType: string, data: unknown): string {
  if (backendType === 'vxlan') {
    const vx = decodeVxlanLeaseData(data);
    if (vx !== null) {
      const vni = vx.VNI === undefined ? '' : `"VNI":${vx.VNI},`;
      // weft's one addition, written only by a host on the user-space fallback: flannel decodes
      // BackendData into struct{VNI; VtepMAC} with encoding/json, which ignores unknown fields.
      const dp = isRecord(data) && typeof data.WeftDatapath === 'string' ? `,"WeftDatapath":${JSON.stringify(data.WeftDatapath)}` : '';
      return `{${vni}"VtepMAC":${JSON.stringify(vx.VtepMAC)}${dp}}`;
    }
  }
  return JSON.stringify(data);
}

export interface LeaseMeta {
  /** etcd lease ID as a decimal string; null (or "0") for a key without a lease (a reservation). */
  readonly etcdLeaseId: string | null;
  readonly modRevision: string;
  readonly expiration?: Date | null;
}

/**
 * Decode the value stored under subnet key `key` (the last segment, or a full key: only the
 * last segment is parsed). Throws WeftError('BAD_DATA') naming the key for a malformed key or value.
 * A vxlan lease must carry usable BackendData (a VtepMAC), otherwise it could not be programmed.
 */
export function decodeLease(key: string, value: string | Buffer, meta: LeaseMeta): Lease {
  const shortKey = key.slice(key.lastIndexOf('/') + 1);
  const parsedKey = parseSubnetKey(shortKey);
  if (parsedKey === null) throw bad(key, 'key is not "<ip>-<len>[&<ipv6>-<len>]" with host bits zero');
  const attrs = decodeLeaseAttrs(key, typeof value === 'string' ? value : value.toString('utf8'));
  const leaseId = meta.etcdLeaseId === null || meta.etcdLeaseId === '0' ? null : meta.etcdLeaseId;
  return {
    key: shortKey,
    subnet: parsedKey.subnet,
    ipv6Subnet: parsedKey.ipv6Subnet,
    attrs,
    expiration: meta.expiration ?? null,
    etcdLeaseId: leaseId,
    modRevision: meta.modRevision,
  };
}

/** Decode a lease value; `key` only names the object in the error. */
export function decodeLeaseAttrs(key: string, text: string): LeaseAttrs {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw bad(key, `value is not JSON: ${JSON.stringify(truncate(text))}`, err);
  }
  if (!isRecord(json)) throw bad(key, `value is not a JSON object: ${JSON.stringify(truncate(text))}`);
  const { PublicIP, PublicIPv6, BackendType, BackendData, BackendV6Data } = json;
  if (typeof PublicIP !== 'string' || parseIPv4(PublicIP) === null) {
    throw bad(key, `PublicIP ${JSON.stringify(PublicIP)} is not an IPv4 address`);
  }
  if (PublicIPv6 !== undefined && PublicIPv6 !== null && (typeof PublicIPv6 !== 'string' || !ip6().Address6.isValid(PublicIPv6))) {
    throw bad(key, `PublicIPv6 ${JSON.stringify(PublicIPv6)} is not an IPv6 address`);
  }
  // The udp backend never set BackendType: "" (what Go decodes) means "no backend data".
  if (BackendType !== undefined && typeof BackendType !== 'string') {
    throw bad(key, `BackendType ${JSON.stringify(BackendType)} is not a string`);
  }
  const backendType = BackendType ?? '';
  // An IPv6-only vxlan lease has no BackendData, only BackendV6Data (flannel's omitempty): one
  // usable half is enough. A bad BackendV6Data beside a good BackendData only costs the IPv6 half
  // (the IPv6 backend skips the lease with a warning).
  if (backendType === 'vxlan' && !(BackendData === undefined && decodeVxlanBackendData(BackendV6Data).ok)) {
    const vx = decodeVxlanBackendData(BackendData);
    if (!vx.ok) throw bad(key, `vxlan ${vx.reason}`);
  }
  const attrs: LeaseAttrs = {
    PublicIP,
    PublicIPv6: typeof PublicIPv6 === 'string' ? PublicIPv6 : null,
    BackendType: backendType,
    BackendData,
    ...(BackendV6Data === undefined ? {} : { BackendV6Data }),
  };
  return attrs;
}

const MAC_RE = /^[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}$/;

export type Decoded<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly reason: string };

/**
 * THE decoder of a vxlan lease's BackendData (every reader uses it: codec, backends, CLI), as
 * flannel's vxlanLeaseAttrs decodes it: VNI optional and `null` the same as absent (flannel v0.12
 * omitted it; Go's encoding/json leaves a field alone on null), VtepMAC a string holding exactly a
 * MAC — no whitespace trimmed (Go's net.ParseMAC trims nothing) — returned lower-cased, as Go
 * prints a net.HardwareAddr. flannel's VNI is at most 24 bits on the wire; anything else is refused.
 */
export function decodeVxlanBackendData(data: unknown): Decoded<VxlanLeaseData> {
  if (!isRecord(data)) return { ok: false, reason: `BackendData ${clip(JSON.stringify(data) ?? 'undefined')} is not an object` };
  const { VNI, VtepMAC } = data;
  if (typeof VtepMAC !== 'string' || !MAC_RE.test(VtepMAC)) {
    return { ok: false, reason: `VtepMAC ${clip(JSON.stringify(VtepMAC) ?? 'undefined')} is not a MAC address` };
  }
  if (VNI === undefined || VNI === null) return { ok: true, value: { VtepMAC: VtepMAC.toLowerCase() } };
  if (typeof VNI !== 'number' || !Number.isInteger(VNI) || VNI < 0 || VNI > 0xffffff) {
    return { ok: false, reason: `VNI ${clip(JSON.stringify(VNI) ?? 'undefined')} is not a 24-bit integer` };
  }
  return { ok: true, value: { VNI, VtepMAC: VtepMAC.toLowerCase() } };
}

/** decodeVxlanBackendData's value, or null when the data is not usable. */
export function decodeVxlanLeaseData(data: unknown): VxlanLeaseData | null {
  const d = decodeVxlanBackendData(data);
  return d.ok ? d.value : null;
}

/** A value quoted in a reason is cut short: a 1 MB string in etcd must not become a 1 MB log line. */
function clip(text: string): string {
  return text.length > 80 ? `${text.slice(0, 80)}...(${text.length} chars)` : text;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function truncate(text: string): string {
  return text.length > 200 ? `${text.slice(0, 200)}...` : text;
}

function bad(key: string, what: string, cause?: unknown): WeftError {
  // Keys are etcd data too: one of 1 MB must not become a 1 MB error message and log line.
  const k = key.length > 120 ? `${key.slice(0, 120)}...(${key.length} chars)` : key;
  return new WeftError('BAD_DATA', `decode lease ${k}: ${what}`, cause === undefined ? {} : { cause });
}
