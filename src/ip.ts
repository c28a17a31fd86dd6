/**
 * IP arithmetic. IPv4 on unsigned 32-bit integers: subnets are walked and compared as numbers,
 * which keeps allocation and diffing simple and fast. IPv4 text is parsed here with the grammar
 * of `ip-address`'s Address4 (four decimal octets 0–255, no leading zero: a leading zero is octal
 * to inet_aton and the URL parser, so accepting it would disagree with the network stack);
 * IPv6 text goes through `ip-address`'s Address6, loaded at the first IPv6 address (`ip6()`), so
 * an IPv4-only weftd never evaluates the package (issue #14, start-up).
 * test/unit/ip.test.ts holds parseIPv4 to Address4 on every kind of input.
 */
import type { IPv4Net, IPv6Net } from './lease/types';

/** `ip-address`'s Address6, loaded on first use. */
export function ip6(): typeof import('ip-address') {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (ipAddressPackage ??= require('ip-address') as typeof import('ip-address'));
}
let ipAddressPackage: typeof import('ip-address') | undefined;

/** An octet as Address4 takes it: 0–255, no leading zero. */
const OCTET = '(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])';
const IPV4_TEXT = new RegExp(`^${OCTET}\\.${OCTET}\\.${OCTET}\\.${OCTET}$`);

// Screening every peer lease on each recompute parses the same few addresses (ours, etcd's, each
// peer's) again and again: a small memo keeps a 1000-peer recompute from spending most of its
// time here. Pure, so safe to cache.
const v4Memo = new Map<string, number | null>();

export function parseIPv4(text: string): number | null {
  const hit = v4Memo.get(text);
  if (hit !== undefined) return hit;
  const m = typeof text === 'string' ? IPV4_TEXT.exec(text) : null;
  const value = m === null ? null : ((Number(m[1]) << 24) | (Number(m[2]) << 16) | (Number(m[3]) << 8) | Number(m[4])) >>> 0;
  if (v4Memo.size >= 8192) v4Memo.clear();
  if (typeof text === 'string' && text.length <= 64) v4Memo.set(text, value);
  return value;
}

export function formatIPv4(ip: number): string {
  return `${ip >>> 24}.${(ip >>> 16) & 255}.${(ip >>> 8) & 255}.${ip & 255}`;
}

export function maskOf(prefixLen: number): number {
  return prefixLen === 0 ? 0 : (0xffffffff << (32 - prefixLen)) >>> 0;
}

/**
 * Parse "a.b.c.d/len". With `strict`, host bits must be zero (a network, not an address in one).
 * Returns null on any malformed input.
 */
export function parseIPv4Cidr(text: string, strict = true): IPv4Net | null {
  const slash = text.indexOf('/');
  if (slash < 0) return null;
  const ip = parseIPv4(text.slice(0, slash));
  const lenText = text.slice(slash + 1);
  if (ip === null || !/^\d{1,2}$/.test(lenText)) return null;
  const prefixLen = Number(lenText);
  if (prefixLen > 32) return null;
  const network = (ip & maskOf(prefixLen)) >>> 0;
  if (strict && network !== ip) return null;
  return { ip: network, prefixLen };
}

/** "a.b.c.d/len"; given an IPv6Net (a route or address of either family), its "addr/len". */
export function formatIPv4Cidr(net: IPNet): string {
  return typeof net.ip === 'number' ? `${formatIPv4(net.ip)}/${net.prefixLen}` : `${net.ip}/${net.prefixLen}`;
}

export function netContains(outer: IPv4Net, ip: number): boolean {
  return ((ip & maskOf(outer.prefixLen)) >>> 0) === outer.ip;
}

// The three below take either family (never matching across families), so code written for
// IPv4 stays right when a route or address list carries IPv6 entries too.

/** True when `inner` lies wholly inside `outer`. */
export function netContainsNet(outer: IPNet, inner: IPNet): boolean {
  if (typeof outer.ip === 'number' && typeof inner.ip === 'number') {
    return inner.prefixLen >= outer.prefixLen && netContains(outer as IPv4Net, inner.ip);
  }
  return ipNetContainsNet(outer, inner);
}

export function netsOverlap(a: IPNet, b: IPNet): boolean {
  return netContainsNet(a, b) || netContainsNet(b, a);
}

export function sameNet(a: IPNet, b: IPNet): boolean {
  return typeof a.ip === 'number' && typeof b.ip === 'number' ? a.ip === b.ip && a.prefixLen === b.prefixLen : sameIPNet(a, b);
}

/** Address at offset `n` inside `net` (n = 0: the network address, 1: the first host). */
export function hostAt(net: IPv4Net, n: number): number {
  return (net.ip + n) >>> 0;
}

// ---------------------------------------------------------------------------------------------
// Both families. An IPv4 network keeps its address as a uint32 (`IPv4Net`), an IPv6 network as
// its canonical RFC 5952 text (`IPv6Net`, e.g. "fc00:0:0:22::", what Go's net.IP prints and
// flannel writes into keys); arithmetic on IPv6 is done on bigint. Code that handles either
// family takes an `IPNet` and asks `familyOf()`, so there is one code path per job, not two.

export type IPFamily = 4 | 6;
export type IPNet = IPv4Net | IPv6Net;

/** The family of a network: IPv4Net carries a number, IPv6Net a string. */
export function familyOf(net: IPNet): IPFamily {
  return typeof net.ip === 'number' ? 4 : 6;
}

export function isIPv6Net(net: IPNet): net is IPv6Net {
  return typeof net.ip === 'string';
}

/** The family of an address in text form, or null when it is neither. */
export function addressFamily(text: string): IPFamily | null {
  if (parseIPv4(text) !== null) return 4;
  if (parseIPv6(text) !== null) return 6;
  return null;
}

const V6_ALL = (1n << 128n) - 1n;

/** An IPv6 address (no prefix, no zone) as a 128-bit integer, or null. */
export function parseIPv6(text: string): bigint | null {
  if (text.includes('/') || text.includes('%') || !text.includes(':')) return null;
  const { Address6 } = ip6();
  return Address6.isValid(text) ? new Address6(text).bigInt() : null;
}

/** Canonical RFC 5952 text of a 128-bit integer ("fc00:0:0:22::"), as Go's net.IP prints it. */
export function formatIPv6(value: bigint): string {
  return ip6().Address6.fromBigInt(value & V6_ALL).correctForm();
}

export function maskOf6(prefixLen: number): bigint {
  return prefixLen === 0 ? 0n : (V6_ALL << BigInt(128 - prefixLen)) & V6_ALL;
}

/**
 * Parse "addr/len" for IPv6. With `strict`, host bits must be zero; without, they are masked off
 * (Go's net.ParseCIDR). Returns null on any malformed input.
 */
export function parseIPv6Cidr(text: string, strict = true): IPv6Net | null {
  const slash = text.indexOf('/');
  if (slash < 0) return null;
  const ip = parseIPv6(text.slice(0, slash));
  const lenText = text.slice(slash + 1);
  if (ip === null || !/^\d{1,3}$/.test(lenText)) return null;
  const prefixLen = Number(lenText);
  if (prefixLen > 128) return null;
  const network = ip & maskOf6(prefixLen);
  if (strict && network !== ip) return null;
  return { ip: formatIPv6(network), prefixLen };
}

/** Either family's "addr/len". */
export function parseCidr(text: string, strict = true): IPNet | null {
  return text.includes(':') ? parseIPv6Cidr(text, strict) : parseIPv4Cidr(text, strict);
}

/** The network address as a number on a common scale (IPv4: 0..2^32-1, IPv6: 0..2^128-1). */
function netValue(net: IPNet): bigint {
  return typeof net.ip === 'number' ? BigInt(net.ip) : parseIPv6(net.ip) ?? 0n;
}

function bitsOf(family: IPFamily): number {
  return family === 4 ? 32 : 128;
}

function netMask(family: IPFamily, prefixLen: number): bigint {
  return family === 4 ? BigInt(maskOf(prefixLen)) : maskOf6(prefixLen);
}

function netOf(family: IPFamily, value: bigint, prefixLen: number): IPNet {
  return family === 4 ? { ip: Number(value), prefixLen } : { ip: formatIPv6(value), prefixLen };
}

/** The network address in text form: "10.5.34.0", "fc00:0:0:22::". */
export function netAddress(net: IPNet): string {
  return typeof net.ip === 'number' ? formatIPv4(net.ip) : net.ip;
}

/** "10.5.34.0/24", "fc00:0:0:22::/64". */
export function formatCidr(net: IPNet): string {
  return `${netAddress(net)}/${net.prefixLen}`;
}

/** Address at offset `n` inside `net`, as text (n = 1: the first host, "10.5.34.1" / "fc00:0:0:22::1"). */
export function hostAddress(net: IPNet, n: number): string {
  const family = familyOf(net);
  const value = netValue(net) + BigInt(n);
  return family === 4 ? formatIPv4(Number(value) >>> 0) : formatIPv6(value);
}

/** The same network: same family, address and length. */
export function sameIPNet(a: IPNet, b: IPNet): boolean {
  return familyOf(a) === familyOf(b) && netValue(a) === netValue(b) && a.prefixLen === b.prefixLen;
}

/** True when `inner` lies wholly inside `outer` (never across families). */
export function ipNetContainsNet(outer: IPNet, inner: IPNet): boolean {
  const family = familyOf(outer);
  if (familyOf(inner) !== family || inner.prefixLen < outer.prefixLen) return false;
  return (netValue(inner) & netMask(family, outer.prefixLen)) === netValue(outer);
}

/** True when `ip` (text) lies inside `net`. */
export function ipNetContainsAddress(net: IPNet, ip: string): boolean {
  const family = familyOf(net);
  const value = family === 4 ? (parseIPv4(ip) === null ? null : BigInt(parseIPv4(ip)!)) : parseIPv6(ip);
  return value !== null && (value & netMask(family, net.prefixLen)) === netValue(net);
}

export function ipNetsOverlap(a: IPNet, b: IPNet): boolean {
  return ipNetContainsNet(a, b) || ipNetContainsNet(b, a);
}

/** Compare network addresses (then lengths) numerically; families must match. */
export function compareIPNet(a: IPNet, b: IPNet): number {
  const d = netValue(a) - netValue(b);
  return d < 0n ? -1 : d > 0n ? 1 : a.prefixLen - b.prefixLen;
}

/**
 * Up to `limit` networks of length `len` walked from `min` to `max` (network addresses,
 * inclusive) in order, skipping those `taken` says are occupied — flannel's allocation walk
 * (`sn = sn.Next()`), for either family.
 */
export function walkSubnets(
  family: IPFamily, min: IPNet, max: IPNet, len: number, limit: number, taken: (candidate: IPNet) => boolean,
): IPNet[] {
  const step = 1n << BigInt(bitsOf(family) - len);
  const out: IPNet[] = [];
  const last = netValue(max);
  for (let v = netValue(min); v <= last && out.length < limit; v += step) {
    const candidate = netOf(family, v, len);
    if (!taken(candidate)) out.push(candidate);
  }
  return out;
}

/** How many networks of length `len` lie from `min` to `max` inclusive (for messages). */
export function countSubnets(family: IPFamily, min: IPNet, max: IPNet, len: number): bigint {
  return (netValue(max) - netValue(min)) / (1n << BigInt(bitsOf(family) - len)) + 1n;
}

/** `net` with its host bits cleared (either family). */
export function maskNet(net: IPNet): IPNet {
  const family = familyOf(net);
  return netOf(family, netValue(net) & netMask(family, net.prefixLen), net.prefixLen);
}

/** True for an IPv6 link-local address (fe80::/10): the kernel's own, never weft's to remove. */
export function isIPv6LinkLocal(ip: string): boolean {
  const v = parseIPv6(ip);
  return v !== null && v >> 118n === 0x3fan;
}
