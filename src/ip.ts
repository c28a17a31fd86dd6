/**
 * IPv4 arithmetic on unsigned 32-bit integers: subnets are walked and compared as numbers,
 * which keeps allocation and diffing simple and fast. Parsing goes through `ip-address` so that
 * every accepted text form is one a standard parser accepts.
 */
import { Address4 } from 'ip-address';
import type { IPv4Net } from './lease/types';

export function parseIPv4(text: string): number | null {
  if (!Address4.isValid(text) || text.includes('/')) return null;
  const parts = new Address4(text).toArray();
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
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

export function formatIPv4Cidr(net: IPv4Net): string {
  return `${formatIPv4(net.ip)}/${net.prefixLen}`;
}

export function netContains(outer: IPv4Net, ip: number): boolean {
  return ((ip & maskOf(outer.prefixLen)) >>> 0) === outer.ip;
}

/** True when `inner` lies wholly inside `outer`. */
export function netContainsNet(outer: IPv4Net, inner: IPv4Net): boolean {
  return inner.prefixLen >= outer.prefixLen && netContains(outer, inner.ip);
}

export function netsOverlap(a: IPv4Net, b: IPv4Net): boolean {
  return netContainsNet(a, b) || netContainsNet(b, a);
}

export function sameNet(a: IPv4Net, b: IPv4Net): boolean {
  return a.ip === b.ip && a.prefixLen === b.prefixLen;
}

/** Address at offset `n` inside `net` (n = 0: the network address, 1: the first host). */
export function hostAt(net: IPv4Net, n: number): number {
  return (net.ip + n) >>> 0;
}
