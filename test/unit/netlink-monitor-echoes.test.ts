/**
 * Which notifications of our own writes reach the monitor's listener (src/netlink/client.ts
 * isOwnWrite, src/netlink/monitor.ts decodeNotifications), with the bytes the kernel sent on a lab
 * host (kernel 6.18, `weft lab up --hosts 3`, a raw listener on RTNLGRP_LINK/NEIGH/IPV4_*):
 * - a peer's join is 3 notifications: the neighbour and the route with our batch socket's port,
 *   the FDB entry with pid 0 (matched by content);
 * - a peer's leave is 4: the route with our port, the FDB entry with pid 0, then the neighbour
 *   twice — neigh_delete marks it NUD_FAILED (RTM_NEWNEIGH, our port) and unlinks it
 *   (RTM_DELNEIGH, pid 0). That last one used to reach the reconciler, 10 ms later, as a
 *   removal it had not made: a full reconcile (four dumps) per leave for nothing;
 * - an operator's `ip neigh del` is the same pair with ip's port and pid 0, and must get through.
 * The monitor must deliver nothing for ours and everything for someone else's.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';
import { parseIPv4Cidr } from '../../src/ip';
import { silentLogger } from '../../src/log';
import type { RawSocket } from '../../src/netlink/batch';
import { NetlinkClient, pidZeroEchoKey } from '../../src/netlink/client';
import { decodeNotifications, type MonitorRawSocket, type NotificationFilter } from '../../src/netlink/monitor';
import type { ChangeBatch, ChangeEvent, KernelWrite } from '../../src/netlink/types';

/** Our batch socket's port on the lab host: the nlmsg_pid of our writes' notifications below. */
const OUR_PORT = 0xf1616ab3; // 4049693363
const DEV = 3; // flannel.1 on that host

/** Captured on h1 (hex of one datagram each), in the order the kernel queued them. */
const CAPTURED = {
  join: [
    // RTM_NEWNEIGH pid OUR_PORT: 10.5.150.0 lladdr 0e:be:00:00:01:01 permanent
    '4c0000001c00000000000000b36a61f1020000000300000080000001080001000a0596000a0002000ebe00000101000008000400000000001400030000000000000000000000000001000000',
    // RTM_NEWNEIGH pid 0, AF_BRIDGE: 0e:be:00:00:01:01 dst 10.251.1.1 self permanent
    '440000001c00000000000000000000000700000003000000800002010a0002000ebe000001010000080001000afb01011400030000000000000000000000000000000000',
    // RTM_NEWROUTE pid OUR_PORT: 10.5.150.0/24 via 10.5.150.0 dev flannel.1 onlink
    '3c0000001800000636010000b36a61f102180000fe0300010400000008000f00fe000000080001000a059600080005000a0596000800040003000000',
  ],
  leave: [
    // RTM_DELROUTE pid OUR_PORT
    '3c0000001900000037010000b36a61f102180000fe0300010400000008000f00fe000000080001000a059600080005000a0596000800040003000000',
    // RTM_DELNEIGH pid 0, AF_BRIDGE: the FDB entry
    '440000001d00000000000000000000000700000003000000800002010a0002000ebe000001010000080001000afb01011400030000000000970100009701000000000000',
    // RTM_NEWNEIGH pid OUR_PORT: 10.5.150.0 NUD_FAILED, no lladdr (neigh_delete's __neigh_update)
    '400000001c00000000000000b36a61f1020000000300000020000001080001000a05960008000400000000001400030097010000970100009701000001000000',
    // RTM_DELNEIGH pid 0: 10.5.150.0 unlinked (neigh_cleanup_and_release)
    '400000001d0000000000000000000000020000000300000020000001080001000a05960008000400000000001400030097010000970100009701000000000000',
  ],
  /** `ip neigh del 10.5.6.0 dev flannel.1` by hand: ip's port (32485), then pid 0. */
  operatorNeighDel: [
    '400000001c00000000000000e57e0000020000000300000020000001080001000a05060008000400000000001400030020210000c32000002021000001000000',
    '400000001d0000000000000000000000020000000300000020000001080001000a05060008000400000000001400030020210000c32000002021000000000000',
  ],
};
const bytes = (hex: string): Buffer => Buffer.from(hex, 'hex');

const PEER = { ip: '10.5.150.0', mac: '0e:be:00:00:01:01', publicIp: '10.251.1.1' };
const route = { dst: parseIPv4Cidr('10.5.150.0/24')!, gateway: '10.5.150.0', oif: DEV, onlink: true };
const joinWrites: KernelWrite[] = [
  { op: 'replaceNeighbour', link: DEV, ip: PEER.ip, mac: PEER.mac },
  { op: 'replaceFdb', link: DEV, mac: PEER.mac, dst: PEER.publicIp },
  { op: 'replaceRoute', spec: route },
];
const leaveWrites: KernelWrite[] = [
  { op: 'deleteRoute', spec: route },
  { op: 'deleteFdb', link: DEV, mac: PEER.mac, dst: PEER.publicIp },
  { op: 'deleteNeighbour', link: DEV, ip: PEER.ip },
];

const NLM_F_ACK = 4;

/** The batch socket: acknowledges like the kernel (errno for the n-th request of `fail`, else an ACK when asked). */
class ScriptedBatchSocket extends EventEmitter implements RawSocket {
  private sent = 0;
  constructor(private readonly fail: ReadonlyMap<number, number> = new Map()) {
    super();
  }
  send(msg: Uint8Array, _options?: { port?: number }, _callback?: (error?: Error) => void): void {
    const b = Buffer.from(msg);
    const answers: Buffer[] = [];
    for (let off = 0; off < b.length; ) {
      const len = b.readUInt32LE(off);
      const errno = this.fail.get(this.sent++) ?? 0;
      if (errno !== 0 || (b.readUInt16LE(off + 6) & NLM_F_ACK) !== 0) {
        const a = Buffer.alloc(36);
        a.writeUInt32LE(36, 0);
        a.writeUInt16LE(2, 4); // NLMSG_ERROR
        a.writeUInt32LE(b.readUInt32LE(off + 8), 8);
        a.writeInt32LE(-errno, 16);
        answers.push(a);
      }
      off += (len + 3) & ~3;
    }
    setImmediate(() => {
      for (const a of answers) this.emit('message', a, { port: 0 });
    });
  }
  close(): void {}
  address(): { port: number } {
    return { port: OUR_PORT };
  }
  getRecvBufferSize(): number {
    return 1 << 22;
  }
  setRecvBufferSize(): void {}
  getSendBufferSize(): number {
    return 212992;
  }
  ref(): void {}
  unref(): void {}
}

/** A monitor socket without a kernel filter (monitor.ts's own checks alone); the test emits the kernel's datagrams. */
class ScriptedMonitorSocket extends EventEmitter {
  kernelSends(hex: readonly string[]): void {
    for (const h of hex) this.emit('message', bytes(h), { port: 0 });
  }
  send(): void {}
  close(): void {}
  address(): { port: number } {
    return { port: 1234 };
  }
  getRecvBufferSize(): number {
    return 1 << 22;
  }
  setRecvBufferSize(): void {}
  getSendBufferSize(): number {
    return 1 << 16;
  }
  addMembership(): void {}
  ref(): void {}
  unref(): void {}
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function setup(fail?: ReadonlyMap<number, number>): { nl: NetlinkClient; monitors: ScriptedMonitorSocket[]; batches: ChangeBatch[][]; watch: (family?: 4 | 6, device?: number) => void } {
  const monitors: ScriptedMonitorSocket[] = [];
  const batches: ChangeBatch[][] = [];
  const nl = new NetlinkClient(silentLogger, {
    monitorCoalesceMs: 1,
    rawSocketFactory: () => new ScriptedBatchSocket(fail),
    monitorSocketFactory: () => {
      const s = new ScriptedMonitorSocket();
      monitors.push(s);
      return s as unknown as MonitorRawSocket;
    },
  });
  const watch = (family: 4 | 6 = 4, device = DEV): void => {
    const mine: ChangeBatch[] = [];
    batches.push(mine);
    // The reconciler's interest: main table, its device (the underlay, #2, for routes).
    nl.monitor((b) => mine.push(b), family, { table: 254, ifindexes: () => new Set([device, 2]), objectIfindexes: () => new Set([device]) });
  };
  return { nl, monitors, batches, watch };
}

const events = (batches: readonly ChangeBatch[]): unknown[] => batches.flatMap((b) => b.events);

describe('monitor: the echoes of our own writes, by the kernel bytes of a join and a leave', () => {
  it('a join and a leave of ours deliver nothing (no batch, so no flush timer and no reconcile)', async () => {
    const { nl, monitors, batches, watch } = setup();
    watch();
    assert.deepEqual(await nl.applyWrites(joinWrites), [null, null, null]);
    monitors[0]!.kernelSends(CAPTURED.join);
    assert.deepEqual(await nl.applyWrites(leaveWrites), [null, null, null]);
    monitors[0]!.kernelSends(CAPTURED.leave);
    await sleep(20);
    assert.deepEqual(batches[0], []);
    nl.close();
  });

  it("keeps someone else's removal: of a neighbour we did not touch, and of ours once our own echo was consumed", async () => {
    const { nl, monitors, batches, watch } = setup();
    watch();
    await nl.applyWrites(leaveWrites);
    monitors[0]!.kernelSends(CAPTURED.leave);
    monitors[0]!.kernelSends(CAPTURED.operatorNeighDel);
    // The same bytes as our own neighbour removal's pid-0 notification, once more: not ours this time.
    monitors[0]!.kernelSends([CAPTURED.leave[3]!]);
    await sleep(20);
    assert.deepEqual(events(batches[0]!), [
      { kind: 'neighbour', removed: false, ifindex: DEV, ip: '10.5.6.0', mac: null, permanent: false },
      { kind: 'neighbour', removed: true, ifindex: DEV, ip: '10.5.6.0', mac: null, permanent: false },
      { kind: 'neighbour', removed: true, ifindex: DEV, ip: '10.5.150.0', mac: null, permanent: false },
    ]);
    nl.close();
  });

  it('a removal that failed (ENOENT: someone else was first) expects no echo: the pid-0 removal is delivered', async () => {
    const { nl, monitors, batches, watch } = setup(new Map([[2, 2]])); // the 3rd request: ENOENT
    watch();
    const outcomes = await nl.applyWrites(leaveWrites);
    assert.equal((outcomes[2] as { errno?: string } | null)?.errno, 'ENOENT');
    monitors[0]!.kernelSends([CAPTURED.leave[3]!]);
    await sleep(20);
    assert.equal(events(batches[0]!).length, 1);
    nl.close();
  });

  it('a neighbour written again forgets its removal still expected (the kernel may have kept the entry: no RTM_DELNEIGH would come)', async () => {
    const { nl, monitors, batches, watch } = setup();
    watch();
    await nl.applyWrites([leaveWrites[2]!]);
    await nl.applyWrites([joinWrites[0]!]);
    monitors[0]!.kernelSends([CAPTURED.leave[3]!]); // an operator's removal of the re-added entry
    await sleep(20);
    assert.deepEqual(events(batches[0]!), [{ kind: 'neighbour', removed: true, ifindex: DEV, ip: '10.5.150.0', mac: null, permanent: false }]);
    nl.close();
  });

  it("two monitors of one client (IPv4 and IPv6 reconcilers, each its device): the other one does not consume the echoes", async () => {
    const { nl, monitors, batches, watch } = setup();
    watch(6, 9); // flannel-v6.1
    watch(4);
    await nl.applyWrites(leaveWrites);
    // Both sockets get every notification (no kernel filter here); the IPv6 one reads first and
    // drops the IPv4 neighbour and the FDB entry of flannel.1 as not its own before asking
    // whether they are echoes: the IPv4 monitor still recognises both.
    monitors[0]!.kernelSends(CAPTURED.leave);
    monitors[1]!.kernelSends(CAPTURED.leave);
    await sleep(20);
    assert.deepEqual(events(batches[0]!), []);
    assert.deepEqual(events(batches[1]!), []);
    nl.close();
  });

  it('pidZeroEchoKey: the same key for our request and for the kernel notification; none for what never comes back with pid 0', () => {
    const removal = bytes(CAPTURED.leave[3]!).subarray(16);
    assert.equal(pidZeroEchoKey(29, removal), 'ndel 2 3 0a059600');
    assert.equal(pidZeroEchoKey(28, bytes(CAPTURED.join[0]!).subarray(16)), null, 'an added neighbour comes back with our port');
    assert.equal(pidZeroEchoKey(29, bytes(CAPTURED.leave[1]!).subarray(16)), 'del 3 0ebe00000101');
    assert.equal(pidZeroEchoKey(24, bytes(CAPTURED.join[2]!).subarray(16)), null);
  });
});

describe('monitor: link notifications of other interfaces (MonitorInterest.linkNames)', () => {
  /** RTM_NEWLINK as the kernel sends it: nlmsghdr, ifinfomsg (index, IFF_UP), IFLA_IFNAME. */
  function linkNote(index: number, name: string): Buffer {
    const ifname = Buffer.concat([Buffer.from(name), Buffer.alloc(1)]);
    const attr = Buffer.alloc(4 + ((ifname.length + 3) & ~3));
    attr.writeUInt16LE(4 + ifname.length, 0);
    attr.writeUInt16LE(3, 2); // IFLA_IFNAME
    ifname.copy(attr, 4);
    const m = Buffer.concat([Buffer.alloc(32), attr]);
    m.writeUInt32LE(m.length, 0);
    m.writeUInt16LE(16, 4); // RTM_NEWLINK
    m.writeInt32LE(index, 16 + 4);
    m.writeUInt32LE(0x1043, 16 + 8); // UP|BROADCAST|MULTICAST|RUNNING
    return m;
  }
  const interest = (linkNames?: string[]): NotificationFilter => ({
    family: 4,
    interest: {
      table: 254,
      ifindexes: () => new Set([DEV, 2]),
      ...(linkNames ? { linkNames: () => new Set(linkNames) } : {}),
    },
    isOwnWrite: () => false,
  });
  const decode = (datagram: Buffer, f: NotificationFilter): ChangeEvent[] => {
    const out: ChangeEvent[] = [];
    decodeNotifications(datagram, f, out);
    return out;
  };

  it("drops a container's veth and the bridge; keeps the device and the underlay by ifindex, and a re-created device by name", () => {
    const f = interest(['flannel.1', 'eth0']);
    assert.deepEqual(decode(linkNote(5, 'c1'), f), []);
    assert.deepEqual(decode(linkNote(4, 'weft0'), f), []);
    assert.deepEqual(decode(linkNote(DEV, 'flannel.1'), f), [{ kind: 'link', removed: false, ifindex: DEV, name: 'flannel.1' }]);
    assert.deepEqual(decode(linkNote(2, 'eth0'), f), [{ kind: 'link', removed: false, ifindex: 2, name: 'eth0' }]);
    assert.deepEqual(decode(linkNote(17, 'flannel.1'), f), [{ kind: 'link', removed: false, ifindex: 17, name: 'flannel.1' }]);
    assert.deepEqual(decode(linkNote(18, 'eth0'), f), [{ kind: 'link', removed: false, ifindex: 18, name: 'eth0' }]);
  });

  it('without linkNames, or before the device is known (ifindexes null), every link passes', () => {
    assert.equal(decode(linkNote(5, 'c1'), interest()).length, 1);
    const unknown: NotificationFilter = { family: 4, interest: { ifindexes: () => null, linkNames: () => new Set(['flannel.1']) }, isOwnWrite: () => false };
    assert.equal(decode(linkNote(5, 'c1'), unknown).length, 1);
  });
});
