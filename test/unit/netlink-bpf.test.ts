/**
 * The monitor socket's classic-BPF filter (src/netlink/bpf.ts), run in a small interpreter of
 * classic BPF written here from linux/filter.h's semantics (loads of 16/32 bits in network order,
 * a load past the end drops the packet, forward jumps only). Every case is a real rtnetlink
 * notification's layout; the filter must never drop what monitor.ts's own checks keep.
 * test/e2e/netlink-bpf.test.ts attaches the same program to a kernel socket.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  BPF_ABS, BPF_ALU, BPF_H, BPF_IMM, BPF_IND, BPF_JMP, BPF_LD, BPF_LDX, BPF_LEN, BPF_MEM, BPF_MISC, BPF_RET, BPF_ST, BPF_STX, BPF_W,
  decodeProgram, encodeProgram, monitorFilter, monitorFilterProgram, asLoaded16, asLoaded32, KEEP_ALL, type BpfInstruction,
} from '../../src/netlink/bpf';
import { decodeNotifications, type NotificationFilter } from '../../src/netlink/monitor';
import type { ChangeEvent } from '../../src/netlink/types';

/** Classic BPF as the kernel runs a socket filter: returns the verdict (0: drop). */
function runBpf(program: readonly BpfInstruction[], pkt: Buffer): number {
  let A = 0;
  let X = 0;
  const M = new Array<number>(16).fill(0);
  const load = (size: number, at: number): number | null => {
    const n = size === BPF_W ? 4 : size === BPF_H ? 2 : 1;
    if (at < 0 || at + n > pkt.length) return null;
    return n === 4 ? pkt.readUInt32BE(at) : n === 2 ? pkt.readUInt16BE(at) : pkt[at]!;
  };
  for (let pc = 0, steps = 0; pc < program.length; pc++, steps++) {
    assert.ok(steps <= program.length, 'a classic program cannot loop');
    const { code, jt, jf, k } = program[pc]!;
    const cls = code & 0x07;
    switch (cls) {
      case BPF_LD: {
        const mode = code & 0xe0;
        const size = code & 0x18;
        if (mode === BPF_ABS || mode === BPF_IND) {
          const v = load(size, (mode === BPF_IND ? X : 0) + k);
          if (v === null) return 0;
          A = v;
        } else if (mode === BPF_LEN) A = pkt.length;
        else if (mode === BPF_IMM) A = k;
        else if (mode === BPF_MEM) A = M[k]!;
        else assert.fail(`ld mode ${mode}`);
        break;
      }
      case BPF_LDX: {
        const mode = code & 0xe0;
        if (mode === BPF_LEN) X = pkt.length;
        else if (mode === BPF_IMM) X = k;
        else if (mode === BPF_MEM) X = M[k]!;
        else assert.fail(`ldx mode ${mode}`);
        break;
      }
      case BPF_ST: M[k] = A; break;
      case BPF_STX: M[k] = X; break;
      case BPF_ALU: {
        const src = code & 0x08 ? X : k;
        switch (code & 0xf0) {
          case 0x00: A = (A + src) >>> 0; break;
          case 0x10: A = (A - src) >>> 0; break;
          case 0x40: A = (A | src) >>> 0; break;
          case 0x50: A = (A & src) >>> 0; break;
          case 0x60: A = (A << src) >>> 0; break;
          case 0x70: A = A >>> src; break;
          default: assert.fail(`alu op ${code & 0xf0}`);
        }
        break;
      }
      case BPF_JMP: {
        const src = code & 0x08 ? X : k;
        const op = code & 0xf0;
        if (op === 0x00) { pc += k; break; }
        const taken = op === 0x10 ? A === src : op === 0x20 ? A > src : op === 0x30 ? A >= src : op === 0x40 ? (A & src) !== 0 : assert.fail(`jmp op ${op}`);
        pc += taken ? jt : jf;
        break;
      }
      case BPF_RET: return (code & 0x18) === 0x10 ? A : k;
      case BPF_MISC: if ((code & 0xf8) === 0x00) X = A; else A = X; break;
      default: assert.fail(`class ${cls}`);
    }
  }
  assert.fail('fell off the end of the program');
}

// ---- notifications laid out as the kernel sends them (host order: this test runs on LE hosts) ----

function nlmsg(type: number, body: Buffer): Buffer {
  const h = Buffer.alloc(16);
  h.writeUInt32LE(16 + body.length, 0);
  h.writeUInt16LE(type, 4);
  const m = Buffer.concat([h, body]);
  return m.length % 4 === 0 ? m : Buffer.concat([m, Buffer.alloc(4 - (m.length % 4))]);
}
function attr(type: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(4);
  h.writeUInt16LE(4 + payload.length, 0);
  h.writeUInt16LE(type, 2);
  const a = Buffer.concat([h, payload]);
  return a.length % 4 === 0 ? a : Buffer.concat([a, Buffer.alloc(4 - (a.length % 4))]);
}
const u32 = (v: number): Buffer => { const b = Buffer.alloc(4); b.writeUInt32LE(v); return b; };
const ip4 = (s: string): Buffer => Buffer.from(s.split('.').map(Number));

/** RTM_NEWNEIGH (28) / DELNEIGH (29): ndmsg + NDA_DST + NDA_LLADDR. */
function neigh(type: 28 | 29, family: number, ifindex: number, state = 0x02): Buffer {
  const ndm = Buffer.alloc(12);
  ndm.writeUInt8(family, 0);
  ndm.writeInt32LE(ifindex, 4);
  ndm.writeUInt16LE(state, 8);
  const dst = family === 10 ? Buffer.alloc(16, 0xfd) : ip4('10.250.0.35');
  return nlmsg(type, Buffer.concat([ndm, attr(1, dst), attr(2, Buffer.from([2, 0, 0, 0, 0, 1]))]));
}
/** RTM_NEWADDR (20): ifaddrmsg + IFA_LOCAL. */
function addr(ifindex: number): Buffer {
  const ifa = Buffer.from([2, 24, 0, 0, 0, 0, 0, 0]);
  ifa.writeUInt32LE(ifindex, 4);
  return nlmsg(20, Buffer.concat([ifa, attr(2, ip4('10.5.1.0'))]));
}
/** RTM_NEWROUTE (24): rtmsg with the u8 table, RTA_TABLE, RTA_DST, RTA_OIF. */
function route(table: number, oif: number): Buffer {
  const rtm = Buffer.from([2, 24, 0, 0, table > 255 ? 252 : table, 3, 0, 1, 0, 0, 0, 0]);
  return nlmsg(24, Buffer.concat([rtm, attr(15, u32(table)), attr(1, ip4('10.5.9.0')), attr(4, u32(oif))]));
}
/** RTM_NEWLINK (16): ifinfomsg + IFLA_IFNAME. */
function link(ifindex: number): Buffer {
  const ifi = Buffer.alloc(16);
  ifi.writeInt32LE(ifindex, 4);
  return nlmsg(16, Buffer.concat([ifi, attr(3, Buffer.from('flannel.1\0'))]));
}

const DEVICE = 7;
const UNDERLAY = 2;
const spec = { family: 4 as const, table: 254, objectIfindexes: new Set([DEVICE]) };
const program = monitorFilter(spec, 'LE');
const keeps = (pkt: Buffer, p: readonly BpfInstruction[] = program): boolean => runBpf(p, pkt) !== 0;

/** What monitor.ts's own checks keep of `pkt`, with the reconciler's interest. */
function monitorKeeps(pkt: Buffer): boolean {
  const filter: NotificationFilter = {
    family: 4,
    interest: { table: 254, ifindexes: () => new Set([DEVICE, UNDERLAY]), objectIfindexes: () => new Set([DEVICE]) },
    isOwnWrite: () => false,
  };
  const out: ChangeEvent[] = [];
  decodeNotifications(pkt, filter, out);
  return out.length > 0;
}

describe('netlink monitor socket filter (classic BPF)', () => {
  it('drops the underlay neighbour churn and keeps the device neighbours and FDB entries', () => {
    for (const state of [0x02, 0x04, 0x08, 0x10, 0x20]) {
      assert.equal(keeps(neigh(28, 2, UNDERLAY, state)), false, `underlay neighbour, state ${state}`);
      assert.equal(keeps(neigh(29, 2, UNDERLAY, state)), false);
    }
    assert.equal(keeps(neigh(28, 2, DEVICE)), true, 'a neighbour on the device');
    assert.equal(keeps(neigh(29, 2, DEVICE)), true, 'its removal');
    assert.equal(keeps(neigh(28, 7, DEVICE)), true, 'an FDB entry (AF_BRIDGE) on the device');
    assert.equal(keeps(neigh(29, 7, DEVICE)), true);
    assert.equal(keeps(neigh(28, 7, UNDERLAY)), false, 'an FDB entry elsewhere');
    assert.equal(keeps(neigh(29, 10, DEVICE, 0x40)), false, 'an IPv6 neighbour in an IPv4 monitor');
    assert.equal(keeps(neigh(28, 10, DEVICE), monitorFilter({ ...spec, family: 6 }, 'LE')), true, 'an IPv6 neighbour in an IPv6 monitor');
  });

  it('keeps links always, addresses of the device, routes of the main table or a table id above 255', () => {
    assert.equal(keeps(link(UNDERLAY)), true);
    assert.equal(keeps(link(99)), true);
    assert.equal(keeps(addr(DEVICE)), true);
    assert.equal(keeps(addr(UNDERLAY)), false);
    assert.equal(keeps(route(254, DEVICE)), true);
    assert.equal(keeps(route(254, UNDERLAY)), true, 'the output interface is left to the monitor (direct routing)');
    assert.equal(keeps(route(255, DEVICE)), false, 'the local table');
    assert.equal(keeps(route(1000, DEVICE)), true, 'RT_TABLE_COMPAT: the real id is in RTA_TABLE, the monitor decides');
    assert.equal(keeps(route(255, DEVICE), monitorFilter({ ...spec, table: undefined }, 'LE')), true, 'no table asked: all');
  });

  it('keeps what it cannot judge: several messages in one datagram, short datagrams, unknown types', () => {
    assert.equal(keeps(Buffer.concat([neigh(28, 2, UNDERLAY), neigh(28, 2, UNDERLAY)])), true);
    assert.equal(keeps(nlmsg(28, Buffer.alloc(2))), true, 'too short to hold ndm_ifindex');
    assert.equal(keeps(nlmsg(3 /* NLMSG_DONE */, Buffer.alloc(8))), true);
    assert.equal(keeps(nlmsg(0x1234, Buffer.alloc(12))), true);
  });

  it('with no interface set (the device not known yet) keeps every interface, still by family', () => {
    const open = monitorFilter({ family: 4, table: 254, objectIfindexes: null }, 'LE');
    assert.equal(keeps(neigh(28, 2, UNDERLAY), open), true);
    assert.equal(keeps(addr(UNDERLAY), open), true);
    assert.equal(keeps(neigh(28, 10, UNDERLAY), open), false);
  });

  it('never drops what the monitor keeps (every case above, and a sweep of ifindexes and families)', () => {
    const cases: Buffer[] = [link(1), addr(DEVICE), addr(UNDERLAY), route(254, DEVICE), route(254, UNDERLAY), route(255, DEVICE), route(1000, DEVICE)];
    for (const ifi of [0, 1, UNDERLAY, 3, DEVICE, 256, 0x01000007, -1]) {
      for (const fam of [0, 2, 7, 10]) for (const t of [28, 29] as const) cases.push(neigh(t, fam, ifi));
      cases.push(addr(ifi >>> 0));
    }
    let dropped = 0;
    for (const c of cases) {
      if (monitorKeeps(c)) assert.equal(keeps(c), true, `monitor keeps ${c.toString('hex')} but the filter drops it`);
      if (!keeps(c)) dropped++;
    }
    assert.ok(dropped > 20, `the filter drops something (${dropped})`);
  });

  it('is valid for the kernel: forward jumps inside the program, ends in a return, encodes to 8 bytes per instruction', () => {
    const set = new Set(Array.from({ length: 64 }, (_, i) => i + 1));
    for (const p of [program, monitorFilter({ family: 6, objectIfindexes: set }, 'LE'), monitorFilter({ family: 4, table: 1000, objectIfindexes: null }, 'BE')]) {
      p.forEach((insn, pc) => {
        if ((insn.code & 0x07) === BPF_JMP) {
          assert.ok(pc + 1 + insn.jt < p.length && pc + 1 + insn.jf < p.length, `jump at ${pc} stays inside`);
        }
      });
      assert.equal(p[p.length - 1]!.code & 0x07, BPF_RET);
      assert.deepEqual(decodeProgram(encodeProgram(p, 'LE'), 'LE'), p);
    }
    assert.equal(monitorFilterProgram(spec, 'LE').length, program.length * 8);
    assert.equal(monitorFilterProgram(spec, 'LE').equals(monitorFilterProgram({ ...spec, objectIfindexes: new Set([DEVICE]) }, 'LE')), true, 'deterministic');
    assert.throws(() => encodeProgram([]), RangeError);
  });

  it('big-endian hosts: the same verdicts on big-endian notifications', () => {
    const be = monitorFilter(spec, 'BE');
    const swap = (pkt: Buffer): Buffer => {
      // nlmsghdr len/type and the ifindex word in host (big-endian) order.
      const b = Buffer.from(pkt);
      b.writeUInt32BE(pkt.readUInt32LE(0), 0);
      b.writeUInt16BE(pkt.readUInt16LE(4), 4);
      b.writeUInt32BE(pkt.readUInt32LE(20), 20);
      return b;
    };
    assert.equal(keeps(swap(neigh(28, 2, UNDERLAY)), be), false);
    assert.equal(keeps(swap(neigh(28, 2, DEVICE)), be), true);
    assert.equal(keeps(swap(link(3)), be), true);
    assert.equal(asLoaded16(28, 'LE'), 0x1c00);
    assert.equal(asLoaded32(7, 'LE'), 0x07000000);
    assert.equal(asLoaded32(0x01020304, 'BE'), 0x01020304);
    assert.equal(KEEP_ALL, 0xffffffff);
  });
});
