/** Byte-level conversions between netlink attributes and weft's text forms. */
import { formatIPv4, formatIPv6, parseIPv4, parseIPv6 } from '../ip';

/** 4 bytes for an IPv4 address, 16 for an IPv6 one (network order). */
export function ipToBuffer(ip: string): Buffer {
  const n = parseIPv4(ip);
  if (n !== null) {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n, 0);
    return b;
  }
  const v6 = parseIPv6(ip);
  if (v6 === null) throw new TypeError(`not an IP address: ${JSON.stringify(ip)}`);
  const b = Buffer.alloc(16);
  b.writeBigUInt64BE(v6 >> 64n, 0);
  b.writeBigUInt64BE(v6 & 0xffffffffffffffffn, 8);
  return b;
}

export function uint32ToBuffer(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
}

/** An address attribute: 4 bytes IPv4, 16 bytes IPv6, anything else null. */
export function ipAt(buf: Buffer, at: number, end: number): string | null {
  if (end - at === 4) return formatIPv4(buf.readUInt32BE(at));
  if (end - at === 16) return formatIPv6((buf.readBigUInt64BE(at) << 64n) | buf.readBigUInt64BE(at + 8));
  return null;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** A 6-byte hardware address as "aa:bb:cc:dd:ee:ff"; any other size null. */
export function macAt(buf: Buffer, at: number, end: number): string | null {
  if (end - at !== 6) return null;
  return `${HEX[buf[at]!]}:${HEX[buf[at + 1]!]}:${HEX[buf[at + 2]!]}:${HEX[buf[at + 3]!]}:${HEX[buf[at + 4]!]}:${HEX[buf[at + 5]!]}`;
}

/** 4 bytes: an IPv4 address, 16 bytes: an IPv6 one (canonical text); anything else is null. */
export function bufferToIp(b: Buffer | undefined): string | null {
  return b ? ipAt(b, 0, b.length) : null;
}

export function bufferToUint32(b: Buffer | undefined): number | null {
  if (!b || b.length !== 4) return null;
  return b.readUInt32BE(0);
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** Lower-case canonical form, or null when `text` is not a 48-bit MAC written with colons. */
export function normalizeMac(text: string): string | null {
  const lower = text.trim().toLowerCase();
  return MAC_RE.test(lower) ? lower : null;
}

export function macToBuffer(mac: string): Buffer {
  const norm = normalizeMac(mac);
  if (norm === null) throw new TypeError(`not a MAC address: ${JSON.stringify(mac)}`);
  return Buffer.from(norm.split(':').map((h) => parseInt(h, 16)));
}

export function bufferToMac(b: Buffer | undefined): string | null {
  return b ? macAt(b, 0, b.length) : null;
}
