/**
 * A classic-BPF socket filter for the netlink monitor socket (SO_ATTACH_FILTER): the kernel drops
 * the notifications the monitor would drop anyway, so they never wake weftd.
 *
 * Why: on a host whose underlay talks to many peers, the underlay's neighbour entries cycle
 * through REACHABLE → STALE → PROBE → deleted all the time, and every step is an RTM_NEWNEIGH /
 * RTM_DELNEIGH on RTNLGRP_NEIGH. Without a filter each one is a wake-up of the event loop, a read
 * and a decode in JavaScript, only for the reconciler to find it is not about its device.
 *
 * What the program sees: a netlink socket filter runs on the skb of one multicast delivery, data
 * starting at the nlmsghdr. rtnetlink sends one message per notification skb; a datagram holding
 * more than one message (nlmsg_len differs from the skb length) is always kept, and so is anything
 * too short to judge — the monitor's own checks (monitor.ts) then decide as before. The filter is
 * only ever an earlier copy of those checks, never a stricter one:
 *
 *   - neighbours and FDB entries (RTM_NEWNEIGH/DELNEIGH): kept when ndm_family is AF_BRIDGE or the
 *     monitor's IP family, and ndm_ifindex is one of `objectIfindexes` (or that set is null);
 *   - addresses (RTM_NEWADDR/DELADDR): kept when ifa_index is one of `objectIfindexes` (or null);
 *   - routes (RTM_NEWROUTE/DELROUTE): kept when `table` is unset, or rtm_table is `table`, or
 *     rtm_table is RT_TABLE_COMPAT (the real table id, > 255, is in RTA_TABLE, which the filter
 *     does not walk to); the output interface is left to the monitor;
 *   - everything else (links above all) kept.
 *
 * Byte order: BPF_ABS loads of 16 and 32 bits read network (big-endian) order, while netlink
 * fields are in host order; constants compared with such a load are swapped on little-endian
 * hosts (`asLoaded16` / `asLoaded32`). nlmsg_len is rebuilt from its two low bytes.
 */
import { AF_BRIDGE, AF_INET, AF_INET6, NLMSG_HDRLEN, RTM_DELADDR, RTM_DELNEIGH, RTM_DELROUTE, RTM_NEWADDR, RTM_NEWNEIGH, RTM_NEWROUTE } from './wire';
import type { IPFamily } from '../ip';

/** This CPU's byte order, as os.endianness() says it (without loading node:os at start-up). */
const HOST_ORDER: 'LE' | 'BE' = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 ? 'LE' : 'BE';
const endianness = (): 'LE' | 'BE' => HOST_ORDER;

// linux/bpf_common.h and linux/filter.h
export const BPF_LD = 0x00;
export const BPF_LDX = 0x01;
export const BPF_ST = 0x02;
export const BPF_STX = 0x03;
export const BPF_ALU = 0x04;
export const BPF_JMP = 0x05;
export const BPF_RET = 0x06;
export const BPF_MISC = 0x07;
export const BPF_W = 0x00;
export const BPF_H = 0x08;
export const BPF_B = 0x10;
export const BPF_IMM = 0x00;
export const BPF_ABS = 0x20;
export const BPF_IND = 0x40;
export const BPF_MEM = 0x60;
export const BPF_LEN = 0x80;
export const BPF_ADD = 0x00;
export const BPF_SUB = 0x10;
export const BPF_OR = 0x40;
export const BPF_AND = 0x50;
export const BPF_LSH = 0x60;
export const BPF_RSH = 0x70;
export const BPF_JA = 0x00;
export const BPF_JEQ = 0x10;
export const BPF_JGT = 0x20;
export const BPF_JGE = 0x30;
export const BPF_JSET = 0x40;
export const BPF_K = 0x00;
export const BPF_X = 0x08;
export const BPF_A = 0x10;
export const BPF_TAX = 0x00;
export const BPF_TXA = 0x80;

/** The kernel's limit on a classic program (BPF_MAXINSNS). */
export const BPF_MAXINSNS = 4096;
/** A socket filter's verdict: the number of bytes to keep; this keeps the whole datagram. */
export const KEEP_ALL = 0xffffffff;
/** ... and this drops it. */
export const DROP = 0;
/** rtm_table when the table id does not fit in a byte (the id is in RTA_TABLE). */
export const RT_TABLE_COMPAT = 252;

/** One `struct sock_filter`. */
export interface BpfInstruction {
  readonly code: number;
  readonly jt: number;
  readonly jf: number;
  readonly k: number;
}

/** `struct sock_filter` array as setsockopt(SO_ATTACH_FILTER) wants it: 8 bytes each, host order. */
export function encodeProgram(program: readonly BpfInstruction[], byteOrder: 'LE' | 'BE' = endianness()): Buffer {
  if (program.length === 0 || program.length > BPF_MAXINSNS) throw new RangeError(`a classic BPF program has 1..${BPF_MAXINSNS} instructions, not ${program.length}`);
  const out = Buffer.alloc(program.length * 8);
  program.forEach((insn, i) => {
    const at = i * 8;
    if (byteOrder === 'LE') {
      out.writeUInt16LE(insn.code, at);
      out.writeUInt32LE(insn.k >>> 0, at + 4);
    } else {
      out.writeUInt16BE(insn.code, at);
      out.writeUInt32BE(insn.k >>> 0, at + 4);
    }
    out.writeUInt8(insn.jt, at + 2);
    out.writeUInt8(insn.jf, at + 3);
  });
  return out;
}

/** The inverse of encodeProgram (tests, diagnostics). */
export function decodeProgram(bytes: Buffer, byteOrder: 'LE' | 'BE' = endianness()): BpfInstruction[] {
  const out: BpfInstruction[] = [];
  for (let at = 0; at + 8 <= bytes.length; at += 8) {
    out.push({
      code: byteOrder === 'LE' ? bytes.readUInt16LE(at) : bytes.readUInt16BE(at),
      jt: bytes.readUInt8(at + 2),
      jf: bytes.readUInt8(at + 3),
      k: byteOrder === 'LE' ? bytes.readUInt32LE(at + 4) : bytes.readUInt32BE(at + 4),
    });
  }
  return out;
}

/** What a BPF_H|BPF_ABS load yields for a host-order u16 field holding `v`. */
export function asLoaded16(v: number, byteOrder: 'LE' | 'BE' = endianness()): number {
  return byteOrder === 'BE' ? v & 0xffff : ((v & 0xff) << 8) | ((v >>> 8) & 0xff);
}

/** What a BPF_W|BPF_ABS load yields for a host-order u32 field holding `v`. */
export function asLoaded32(v: number, byteOrder: 'LE' | 'BE' = endianness()): number {
  if (byteOrder === 'BE') return v >>> 0;
  return (((v & 0xff) << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | ((v >>> 24) & 0xff)) >>> 0;
}

/**
 * A tiny assembler: jumps name their targets by label and are resolved to the relative offsets
 * classic BPF wants (forward only, at most 255 instructions ahead).
 */
type Target = string | number; // a label, or 0 for "the next instruction"
type Item =
  | { readonly label: string }
  | { readonly code: number; readonly k: number; readonly jt?: Target; readonly jf?: Target };

function assemble(items: readonly Item[]): BpfInstruction[] {
  const labels = new Map<string, number>();
  let n = 0;
  for (const it of items) {
    if ('label' in it) {
      if (labels.has(it.label)) throw new Error(`BPF assembler: label ${it.label} defined twice`);
      labels.set(it.label, n);
    } else n++;
  }
  const out: BpfInstruction[] = [];
  const offset = (at: number, t: Target | undefined): number => {
    if (t === undefined || t === 0) return 0;
    if (typeof t === 'number') return t;
    const dest = labels.get(t);
    if (dest === undefined) throw new Error(`BPF assembler: no label ${t}`);
    const rel = dest - at - 1;
    if (rel < 0 || rel > 255) throw new Error(`BPF assembler: jump to ${t} out of range (${rel})`);
    return rel;
  };
  for (const it of items) {
    if ('label' in it) continue;
    const at = out.length;
    out.push({ code: it.code, k: it.k >>> 0, jt: offset(at, it.jt), jf: offset(at, it.jf) });
  }
  return out;
}

const ld = (size: number, k: number): Item => ({ code: BPF_LD | size | BPF_ABS, k });
const ldLen = (): Item => ({ code: BPF_LD | BPF_W | BPF_LEN, k: 0 });
const jeq = (k: number, jt: Target, jf: Target = 0): Item => ({ code: BPF_JMP | BPF_JEQ | BPF_K, k, jt, jf });
const jge = (k: number, jt: Target, jf: Target = 0): Item => ({ code: BPF_JMP | BPF_JGE | BPF_K, k, jt, jf });
const ret = (k: number): Item => ({ code: BPF_RET | BPF_K, k });
const label = (name: string): Item => ({ label: name });

/** What the monitor keeps, in the terms the filter can check. */
export interface MonitorFilterSpec {
  /** The monitor's IP family: neighbours of the other family are dropped (FDB, AF_BRIDGE, kept). */
  readonly family: IPFamily;
  /** Routes of this table only; undefined: every table. */
  readonly table?: number;
  /**
   * The interfaces whose neighbours, FDB entries and addresses matter; null: all. At most 64
   * (beyond that the filter keeps them all and lets the monitor judge).
   */
  readonly objectIfindexes: ReadonlySet<number> | null;
}

/** Above this many interfaces the program would grow for little gain: the check is left out. */
const MAX_FILTER_IFINDEXES = 64;

/**
 * The monitor socket's filter program for `spec` (see the file comment for what it keeps).
 * Deterministic: the same spec gives the same bytes, so a caller can compare before re-attaching.
 */
export function monitorFilter(spec: MonitorFilterSpec, byteOrder: 'LE' | 'BE' = endianness()): BpfInstruction[] {
  const ipFamily = spec.family === 6 ? AF_INET6 : AF_INET;
  const ifindexes = spec.objectIfindexes === null || spec.objectIfindexes.size > MAX_FILTER_IFINDEXES
    ? null
    : [...spec.objectIfindexes].sort((a, b) => a - b);
  const OFF_TYPE = 4;
  const OFF_FAMILY = NLMSG_HDRLEN; // ndm_family / ifa_family / rtm_family: the body's first byte
  const OFF_IFINDEX = NLMSG_HDRLEN + 4; // ndm_ifindex (s32) and ifa_index (u32) share it
  const OFF_TABLE = NLMSG_HDRLEN + 4; // rtm_table (u8)
  const items: Item[] = [];
  // Anything shorter than a header and an ifindex: not ours to judge.
  items.push(ldLen(), jge(OFF_IFINDEX + 4, 0, 'keep'));
  // One message per datagram, or keep: X = nlmsg_len (its low 16 bits, host order), A = skb length.
  if (byteOrder === 'LE') {
    items.push(
      { code: BPF_LD | BPF_B | BPF_ABS, k: 1 },
      { code: BPF_ALU | BPF_LSH | BPF_K, k: 8 },
      { code: BPF_MISC | BPF_TAX, k: 0 },
      { code: BPF_LD | BPF_B | BPF_ABS, k: 0 },
      { code: BPF_ALU | BPF_OR | BPF_X, k: 0 },
    );
  } else {
    items.push({ code: BPF_LD | BPF_H | BPF_ABS, k: 2 });
  }
  items.push({ code: BPF_MISC | BPF_TAX, k: 0 }, ldLen(), { code: BPF_JMP | BPF_JEQ | BPF_X, k: 0, jt: 0, jf: 'keep' });
  // Dispatch on nlmsg_type.
  items.push(
    ld(BPF_H, OFF_TYPE),
    jeq(asLoaded16(RTM_NEWNEIGH, byteOrder), 'neigh'),
    jeq(asLoaded16(RTM_DELNEIGH, byteOrder), 'neigh'),
    jeq(asLoaded16(RTM_NEWADDR, byteOrder), 'ifindex'),
    jeq(asLoaded16(RTM_DELADDR, byteOrder), 'ifindex'),
    jeq(asLoaded16(RTM_NEWROUTE, byteOrder), 'route'),
    jeq(asLoaded16(RTM_DELROUTE, byteOrder), 'route'),
    ret(KEEP_ALL),
  );
  // Neighbours and FDB: the family, then the interface.
  items.push(label('neigh'), ld(BPF_B, OFF_FAMILY), jeq(AF_BRIDGE, 'ifindex'), jeq(ipFamily, 'ifindex'), ret(DROP));
  items.push(label('ifindex'));
  if (ifindexes === null) {
    items.push(ret(KEEP_ALL));
  } else {
    items.push(ld(BPF_W, OFF_IFINDEX));
    for (const i of ifindexes) items.push(jeq(asLoaded32(i, byteOrder), 'keep'));
    items.push(ret(DROP));
  }
  // Routes: the u8 table, or the compat marker that sends the real id to RTA_TABLE.
  items.push(label('route'));
  if (spec.table === undefined) {
    items.push(ret(KEEP_ALL));
  } else if (spec.table > 255 || spec.table === RT_TABLE_COMPAT) {
    items.push(ld(BPF_B, OFF_TABLE), jeq(RT_TABLE_COMPAT, 'keep'), ret(DROP));
  } else {
    items.push(ld(BPF_B, OFF_TABLE), jeq(spec.table, 'keep'), jeq(RT_TABLE_COMPAT, 'keep'), ret(DROP));
  }
  items.push(label('keep'), ret(KEEP_ALL));
  return assemble(items);
}

/** monitorFilter, encoded for SO_ATTACH_FILTER. */
export function monitorFilterProgram(spec: MonitorFilterSpec, byteOrder: 'LE' | 'BE' = endianness()): Buffer {
  return encodeProgram(monitorFilter(spec, byteOrder), byteOrder);
}
