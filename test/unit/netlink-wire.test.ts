/**
 * src/netlink/wire.ts against the `netlink` package's own encoder: for each write weft batches,
 * the bytes must be exactly those the package sends for the same request through NetlinkClient's
 * single methods (same header fields, attribute order, flags). Also the ACK walk and the
 * monitor's decode-only-what-matters filter on captured layouts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FlagsNew, formatMessage, rt } from 'netlink';
import { AttrStream } from 'netlink/dist/structs';
import { parseIPv4 } from '../../src/ip';
import { decodeNotifications, type NotificationFilter } from '../../src/netlink/monitor';
import type { ChangeEvent, KernelWrite, RouteSpec } from '../../src/netlink/types';
import { encodeWrite, encodeWrites, fdbEchoKey, forEachAck, i32le, setU16le, setU32le, stampMessage, u16le, u32le } from '../../src/netlink/wire';

const REQUEST_ACK = 1 | 4;
const CREATE_REPLACE = FlagsNew.CREATE | FlagsNew.REPLACE;
const SEQ = 0x01020304;
const PORT = 0x0a0b0c0d;

/**
 * The package's message padded to 4 bytes, nlmsg_len included, as iproute2 writes it (addattr_l:
 * nlmsg_len = NLMSG_ALIGN(nlmsg_len) + RTA_ALIGN(rta_len)) and the kernel sends it. The package
 * leaves a last attribute of 6 bytes (a MAC) unpadded, which is fine alone in a datagram, but in
 * a batch the next message must start aligned.
 */
function padded(b: Buffer): Buffer {
  if (b.length % 4 === 0) return b;
  const out = Buffer.concat([b, Buffer.alloc(4 - (b.length % 4))]);
  out.writeUInt32LE(out.length, 0);
  return out;
}

/** What the package sends: its formatter for the message kind, then formatMessage with the request flags (padded). */
function packageBytes(type: number, flags: number, format: (s: AttrStream) => void): Buffer {
  const s = new AttrStream();
  format(s);
  return padded(Buffer.concat(formatMessage({ type, flags: flags | REQUEST_ACK, seq: SEQ, port: PORT, data: s.bufs })));
}

function ours(w: KernelWrite): Buffer {
  const b = encodeWrite(w);
  stampMessage(b, SEQ, PORT);
  return b;
}

const ip4 = (s: string): Buffer => Buffer.from(s.split('.').map(Number));
const ip6 = (hex: string): Buffer => Buffer.from(hex, 'hex');
const mac = (s: string): Buffer => Buffer.from(s.split(':').map((h) => parseInt(h, 16)));
const u32be = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};

describe('wire: requests byte for byte as the netlink package encodes them', () => {
  const v4route: RouteSpec = { dst: { ip: parseIPv4('10.5.2.0')!, prefixLen: 24 }, gateway: '10.5.2.0', oif: 7, onlink: true };
  const routeHeader = (forAdd: boolean, onlink: boolean, gateway: boolean, family = 2, dstLen = 24): rt.Route => ({
    family, dstLen, table: 254,
    ...(forAdd ? { protocol: rt.RouteProtocol.BOOT, scope: gateway ? rt.RouteScope.UNIVERSE : rt.RouteScope.LINK, type: rt.RouteType.UNICAST } : {}),
    ...(onlink ? { flags: { __unknown: 4 } } : {}),
  });

  it('RTM_NEWROUTE add (CREATE|EXCL), replace (CREATE|REPLACE) and RTM_DELROUTE, IPv4 onlink via a gateway', () => {
    const attrs = { dst: u32be(parseIPv4('10.5.2.0')!), oif: 7, gateway: ip4('10.5.2.0') };
    assert.deepEqual(ours({ op: 'addRoute', spec: v4route }),
      packageBytes(24, FlagsNew.CREATE | FlagsNew.EXCL, (s) => rt.formatRouteMessage({ kind: 'route', data: routeHeader(true, true, true), attrs }, s)));
    assert.deepEqual(ours({ op: 'replaceRoute', spec: v4route }),
      packageBytes(24, CREATE_REPLACE, (s) => rt.formatRouteMessage({ kind: 'route', data: routeHeader(true, true, true), attrs }, s)));
    assert.deepEqual(ours({ op: 'deleteRoute', spec: v4route }),
      packageBytes(25, 0, (s) => rt.formatRouteMessage({ kind: 'route', data: routeHeader(false, true, true), attrs }, s)));
  });

  it('a direct route (no gateway, scope link) with a metric; an IPv6 route', () => {
    const direct: RouteSpec = { dst: { ip: parseIPv4('10.5.3.0')!, prefixLen: 24 }, gateway: null, oif: 3, onlink: false, priority: 100 };
    assert.deepEqual(ours({ op: 'replaceRoute', spec: direct }),
      packageBytes(24, CREATE_REPLACE, (s) => rt.formatRouteMessage({ kind: 'route', data: routeHeader(true, false, false), attrs: { dst: u32be(parseIPv4('10.5.3.0')!), oif: 3, priority: 100 } }, s)));
    const v6: RouteSpec = { dst: { ip: 'fd00:5:2::', prefixLen: 64 }, gateway: 'fd00:5:2::', oif: 9, onlink: true };
    const dst6 = ip6('fd000005000200000000000000000000');
    assert.deepEqual(ours({ op: 'addRoute', spec: v6 }),
      packageBytes(24, FlagsNew.CREATE | FlagsNew.EXCL, (s) => rt.formatRouteMessage({ kind: 'route', data: routeHeader(true, true, true, 10, 64), attrs: { dst: dst6, oif: 9, gateway: dst6 } }, s)));
  });

  it('RTM_NEWNEIGH / RTM_DELNEIGH for ARP and NDP (nud permanent)', () => {
    assert.deepEqual(ours({ op: 'replaceNeighbour', link: 7, ip: '10.5.2.0', mac: '02:aa:bb:cc:dd:02' }),
      packageBytes(28, CREATE_REPLACE, (s) => rt.formatNeighborMessage({ kind: 'neighbor', data: { family: 2, ifindex: 7, state: { permanent: true } }, attrs: { dst: ip4('10.5.2.0'), lladdr: mac('02:aa:bb:cc:dd:02') } }, s)));
    assert.deepEqual(ours({ op: 'deleteNeighbour', link: { index: 7, name: 'flannel.1' }, ip: '10.5.2.0' }),
      packageBytes(29, 0, (s) => rt.formatNeighborMessage({ kind: 'neighbor', data: { family: 2, ifindex: 7 }, attrs: { dst: ip4('10.5.2.0') } }, s)));
    assert.deepEqual(ours({ op: 'replaceNeighbour', link: 8, ip: 'fd00:5:2::', mac: '02:aa:bb:cc:dd:02' }),
      packageBytes(28, CREATE_REPLACE, (s) => rt.formatNeighborMessage({ kind: 'neighbor', data: { family: 10, ifindex: 8, state: { permanent: true } }, attrs: { dst: ip6('fd000005000200000000000000000000'), lladdr: mac('02:aa:bb:cc:dd:02') } }, s)));
  });

  it('AF_BRIDGE FDB entries (self permanent), deletion with and without dst', () => {
    assert.deepEqual(ours({ op: 'replaceFdb', link: 7, mac: '02:aa:bb:cc:dd:02', dst: '192.168.1.2' }),
      packageBytes(28, CREATE_REPLACE, (s) => rt.formatNeighborMessage({ kind: 'neighbor', data: { family: 7, ifindex: 7, state: { permanent: true }, flags: { self: true } }, attrs: { lladdr: mac('02:aa:bb:cc:dd:02'), dst: ip4('192.168.1.2') } }, s)));
    assert.deepEqual(ours({ op: 'deleteFdb', link: 7, mac: '02:aa:bb:cc:dd:02', dst: '192.168.1.2' }),
      packageBytes(29, 0, (s) => rt.formatNeighborMessage({ kind: 'neighbor', data: { family: 7, ifindex: 7, flags: { self: true } }, attrs: { lladdr: mac('02:aa:bb:cc:dd:02'), dst: ip4('192.168.1.2') } }, s)));
    assert.deepEqual(ours({ op: 'deleteFdb', link: 7, mac: '02:aa:bb:cc:dd:02', dst: null }),
      packageBytes(29, 0, (s) => rt.formatNeighborMessage({ kind: 'neighbor', data: { family: 7, ifindex: 7, flags: { self: true } }, attrs: { lladdr: mac('02:aa:bb:cc:dd:02') } }, s)));
  });

  it('RTM_NEWADDR / RTM_DELADDR: IPv4 with IFA_LOCAL and IFA_ADDRESS, IPv6 with IFA_ADDRESS only', () => {
    assert.deepEqual(ours({ op: 'addAddress', link: 7, ip: '10.5.1.0', prefixLen: 32 }),
      packageBytes(20, CREATE_REPLACE, (s) => rt.formatAddressMessage({ kind: 'address', data: { family: 2, prefixlen: 32, index: 7 }, attrs: { local: ip4('10.5.1.0'), address: ip4('10.5.1.0') } }, s)));
    assert.deepEqual(ours({ op: 'deleteAddress', link: 7, ip: '10.5.1.0', prefixLen: 32 }),
      packageBytes(21, 0, (s) => rt.formatAddressMessage({ kind: 'address', data: { family: 2, prefixlen: 32, index: 7 }, attrs: { local: ip4('10.5.1.0'), address: ip4('10.5.1.0') } }, s)));
    assert.deepEqual(ours({ op: 'addAddress', link: 7, ip: 'fd00:5:1::', prefixLen: 128 }),
      packageBytes(20, CREATE_REPLACE, (s) => rt.formatAddressMessage({ kind: 'address', data: { family: 10, prefixlen: 128, index: 7 }, attrs: { address: ip6('fd000005000100000000000000000000') } }, s)));
  });

  it('encodes a batch back to back, each message as alone; a write that cannot be encoded is left out and reported', () => {
    const writes: KernelWrite[] = [
      { op: 'replaceNeighbour', link: 7, ip: '10.5.2.0', mac: '02:AA:BB:CC:DD:02' },
      { op: 'replaceFdb', link: 7, mac: '02:aa:bb:cc:dd:02', dst: '010.1.1.1' },
      { op: 'addRoute', spec: v4route },
      { op: 'replaceFdb', link: 7, mac: '02:aa:bb:cc:dd:0g', dst: '10.1.1.1' },
      { op: 'deleteNeighbour', link: 7, ip: 'fd00:5:2::' },
    ];
    const errors: number[] = [];
    const batch = encodeWrites(writes, (i, err) => {
      assert.ok(err instanceof TypeError);
      errors.push(i);
    });
    assert.deepEqual(errors, [1, 3], "'010.1.1.1' is not an address weft writes (codec.ts rejects it too), nor is a MAC with a 'g'");
    assert.deepEqual(batch.indices, [0, 2, 4]);
    assert.equal(batch.offsets.length, 4);
    [0, 2, 4].forEach((i, j) => {
      assert.deepEqual(batch.buffer.subarray(batch.offsets[j]!, batch.offsets[j + 1]!), encodeWrite(writes[i]!));
    });
    assert.deepEqual(encodeWrite(writes[0]!), encodeWrite({ op: 'replaceNeighbour', link: 7, ip: '10.5.2.0', mac: '02:aa:bb:cc:dd:02' }), 'MAC case does not matter');
  });

  it('a batch larger than the first buffer of the writer grows it without losing a byte', () => {
    // IPv6 routes via a gateway (84 bytes each) outgrow the writer's first guess (72 bytes per write).
    const writes: KernelWrite[] = Array.from({ length: 1000 }, (_, i) => ({
      op: 'addRoute', spec: { dst: { ip: `fd00:5:${i.toString(16)}::`, prefixLen: 64 }, gateway: `fd00:5:${i.toString(16)}::`, oif: 7, onlink: true },
    }));
    const batch = encodeWrites(writes, () => assert.fail('every write encodes'));
    assert.ok(batch.buffer.length > writes.length * 72, `${batch.buffer.length} bytes`);
    for (let i = 0; i < writes.length; i++) assert.deepEqual(batch.buffer.subarray(batch.offsets[i]!, batch.offsets[i + 1]!), encodeWrite(writes[i]!));
  });

  it('a malformed address or MAC throws a TypeError naming it', () => {
    assert.throws(() => encodeWrite({ op: 'replaceNeighbour', link: 7, ip: '10.5.2', mac: '02:aa:bb:cc:dd:02' }), /not an IP address: "10.5.2"/);
    assert.throws(() => encodeWrite({ op: 'replaceFdb', link: 7, mac: 'zz', dst: '10.0.0.1' }), /not a MAC address/);
  });
});

/** An NLMSG_ERROR as the kernel writes it: header (seq), error (-errno), the request's header. */
function ack(seq: number, errno: number): Buffer {
  const b = Buffer.alloc(36);
  b.writeUInt32LE(36, 0);
  b.writeUInt16LE(2, 4);
  b.writeUInt16LE(0x100, 6); // NLM_F_CAPPED-like flags must not matter
  b.writeUInt32LE(seq, 8);
  b.writeInt32LE(-errno, 16);
  b.writeUInt32LE(seq, 28);
  return b;
}

describe('wire: forEachAck', () => {
  it('reports every acknowledgement of a datagram with its seq and errno, stops at a truncated tail', () => {
    const seen: [number, number][] = [];
    forEachAck(Buffer.concat([ack(7, 0), ack(8, 17), ack(9, 0), Buffer.from([1, 2, 3])]), (seq, errno) => seen.push([seq, errno]));
    assert.deepEqual(seen, [[7, 0], [8, 17], [9, 0]]);
    const truncated: number[] = [];
    forEachAck(ack(10, 0).subarray(0, 20), (seq) => truncated.push(seq));
    assert.deepEqual(truncated, []);
  });
});

describe('monitor: decode only what matters', () => {
  /** A notification as the kernel sends it: the package's encoding of the object, with a sender port. */
  function notification(type: number, pid: number, format: (s: AttrStream) => void): Buffer {
    const s = new AttrStream();
    format(s);
    return padded(Buffer.concat(formatMessage({ type, flags: 0, seq: 0, port: pid, data: s.bufs })));
  }
  const routeOn = (oif: number, table: number, pid = 0, dst = '10.5.2.0'): Buffer =>
    notification(24, pid, (s) => rt.formatRouteMessage({ kind: 'route', data: { family: 2, dstLen: 24, table: table > 255 ? 252 : table, type: rt.RouteType.UNICAST },
      attrs: { ...(table > 255 ? { table } : {}), dst: ip4(dst), oif, gateway: ip4(dst) } }, s));
  const neighOn = (family: number, ifindex: number, pid = 0): Buffer =>
    notification(28, pid, (s) => rt.formatNeighborMessage({ kind: 'neighbor', data: { family, ifindex, state: { permanent: true } },
      attrs: family === 7 ? { lladdr: mac('02:00:00:00:00:02'), dst: ip4('192.168.1.2') } : { dst: family === 10 ? ip6('fd000005000200000000000000000000') : ip4('10.5.2.0'), lladdr: mac('02:00:00:00:00:02') } }, s));
  const linkEvent = (index: number, pid = 0): Buffer => notification(16, pid, (s) => rt.formatLinkMessage({ kind: 'link', data: { index }, attrs: { ifname: 'eth9' } }, s));

  const OWN = 4242;
  const filter = (ifindexes: number[] | null): NotificationFilter => ({
    family: 4,
    interest: { table: 254, ifindexes: () => (ifindexes === null ? null : new Set(ifindexes)) },
    isOwnWrite: (pid) => pid === OWN,
  });
  const decode = (datagram: Buffer, f: NotificationFilter): ChangeEvent[] => {
    const out: ChangeEvent[] = [];
    decodeNotifications(datagram, f, out);
    return out;
  };

  it("drops our own writes' echoes by nlmsg_pid, keeps the same change made by someone else (pid 0 or another port)", () => {
    assert.deepEqual(decode(routeOn(7, 254, OWN), filter([7])), []);
    assert.equal(decode(routeOn(7, 254, 0), filter([7])).length, 1);
    assert.equal(decode(routeOn(7, 254, 999), filter([7])).length, 1);
    assert.deepEqual(decode(neighOn(2, 7, OWN), filter(null)), []);
  });

  it('drops routes of other tables (u8 and RTA_TABLE) and off-device objects; links always pass', () => {
    assert.deepEqual(decode(routeOn(7, 255), filter([7])), []);
    assert.deepEqual(decode(routeOn(7, 1000), filter([7])), []);
    assert.deepEqual(decode(routeOn(8, 254), filter([7])), []);
    assert.deepEqual(decode(neighOn(2, 8), filter([7])), []);
    assert.deepEqual(decode(neighOn(7, 8), filter([7])), []);
    assert.deepEqual(decode(neighOn(10, 7), filter([7])), [], 'an IPv4 monitor drops NDP entries');
    assert.deepEqual(decode(linkEvent(99), filter([7])), [{ kind: 'link', removed: false, ifindex: 99, name: 'eth9' }]);
    const kept = decode(Buffer.concat([routeOn(7, 254), neighOn(2, 7), neighOn(7, 7), routeOn(8, 254)]), filter([7]));
    assert.deepEqual(kept.map((e) => e.kind), ['route', 'neighbour', 'fdb']);
    assert.deepEqual(kept[2], { kind: 'fdb', removed: false, ifindex: 7, mac: '02:00:00:00:00:02', dst: '192.168.1.2', permanent: true });
  });

  it('an FDB change is recognised by content: the same key for our request and the kernel notification of it', () => {
    const body = (b: Buffer): Buffer => b.subarray(16);
    const req = encodeWrite({ op: 'replaceFdb', link: 7, mac: '02:00:00:00:00:02', dst: '192.168.1.2' });
    const note = neighOn(7, 7); // RTM_NEWNEIGH AF_BRIDGE, permanent, lladdr then dst: what the kernel sends (plus attributes that do not matter)
    const withSelf = Buffer.from(note);
    withSelf.writeUInt8(2, 16 + 10); // NTF_SELF, as the VXLAN driver reports it
    assert.equal(fdbEchoKey(28, body(withSelf)), fdbEchoKey(28, body(req)));
    assert.notEqual(fdbEchoKey(28, body(note)), fdbEchoKey(28, body(req)), 'an entry in a bridge master, not the device: not ours');
    const otherDst = encodeWrite({ op: 'replaceFdb', link: 7, mac: '02:00:00:00:00:02', dst: '192.168.1.3' });
    assert.notEqual(fdbEchoKey(28, body(otherDst)), fdbEchoKey(28, body(req)));
    const del = encodeWrite({ op: 'deleteFdb', link: 7, mac: '02:00:00:00:00:02', dst: null });
    assert.equal(fdbEchoKey(29, body(del)), 'del 7 020000000002');
    assert.equal(fdbEchoKey(28, body(neighOn(2, 7))), null, 'ARP entries are not FDB entries');
  });

  it('with no interest (ifindexes null, device not known yet) every object is decoded', () => {
    assert.equal(decode(Buffer.concat([routeOn(8, 254), neighOn(2, 9)]), filter(null)).length, 2);
  });
});

describe('little-endian fields byte by byte', () => {
  it('read and write what Buffer\'s own methods do, at every kind of value and offset', () => {
    const values32 = [0, 1, 0xff, 0x100, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff, 0x12345678];
    for (const at of [0, 1, 3]) {
      for (const v of values32) {
        const ours = Buffer.alloc(8, 0xaa);
        const node = Buffer.alloc(8, 0xaa);
        setU32le(ours, v, at);
        node.writeUInt32LE(v, at);
        assert.deepEqual(ours, node, `setU32le(${v}) at ${at}`);
        assert.equal(u32le(node, at), node.readUInt32LE(at));
        assert.equal(i32le(node, at), node.readInt32LE(at));
        // Negative int32 (an ifindex field is signed) writes the same bytes as writeInt32LE.
        const signed = v | 0;
        setU32le(ours, signed, at);
        node.writeInt32LE(signed, at);
        assert.deepEqual(ours, node, `setU32le(${signed}) at ${at}`);
      }
      for (const v of [0, 1, 0xff, 0x100, 0x7fff, 0x8000, 0xffff]) {
        const ours = Buffer.alloc(6, 0x55);
        const node = Buffer.alloc(6, 0x55);
        setU16le(ours, v, at);
        node.writeUInt16LE(v, at);
        assert.deepEqual(ours, node, `setU16le(${v}) at ${at}`);
        assert.equal(u16le(node, at), node.readUInt16LE(at));
      }
    }
  });
});
