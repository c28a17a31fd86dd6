/**
 * weft's request path without the `netlink` package: the request encoders of wire.ts against the
 * package's encoder (the oracle), and socket.ts's RequestSocket over a scripted raw socket that
 * answers like the kernel (dumps in several datagrams ending with NLMSG_DONE, a GET's reply then
 * its ACK, NLMSG_ERROR with an errno, silence, a socket error, garbage), and NftGeneration on it
 * (NETLINK_NETFILTER). The real kernel's bytes
 * are in netlink-decode-kernel.test.ts; the whole client on the real kernel in the e2e tests.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';
import { FlagsGet, FlagsNew, formatMessage, ifla, rt } from 'netlink';
import { AttrStream } from 'netlink/dist/structs';
import { silentLogger } from '../../src/log';
import { NetlinkError } from '../../src/netlink/errors';
import { NFNLGRP_NFTABLES, NftGeneration } from '../../src/netlink/nft-generation';
import { RequestSocket } from '../../src/netlink/socket';
import type { RawSocket } from '../../src/netlink/transport';
import {
  encodeCreateVxlan,
  encodeDeleteLink,
  encodeDump,
  encodeGetLink,
  encodeGetRoute,
  encodeSetLink,
  RTM_GETADDR,
  RTM_GETLINK,
  RTM_GETNEIGH,
  RTM_GETROUTE,
  stampMessage,
} from '../../src/netlink/wire';

const SEQ = 0x01020304;
const PORT = 0x0a0b0c0d;
const REQUEST_ACK = 1 | 4;

/** The package's bytes for a request, padded to 4 as the kernel expects in a stream. */
function packageBytes(type: number, flags: number, format: (s: AttrStream) => void): Buffer {
  const s = new AttrStream();
  format(s);
  const b = Buffer.concat(formatMessage({ type, flags: flags | REQUEST_ACK, seq: SEQ, port: PORT, data: s.bufs }));
  if (b.length % 4 === 0) return b;
  const out = Buffer.concat([b, Buffer.alloc(4 - (b.length % 4))]);
  out.writeUInt32LE(out.length, 0);
  return out;
}

function stamped(b: Buffer): Buffer {
  stampMessage(b, SEQ, PORT);
  return Buffer.from(b);
}

describe('wire: the request socket\'s requests as the netlink package encodes them', () => {
  it('dumps of links, addresses, routes, neighbours and FDB', () => {
    const dump = FlagsGet.DUMP;
    assert.deepEqual(stamped(encodeDump(RTM_GETLINK, 0)), packageBytes(RTM_GETLINK, dump, (s) => rt.formatLinkMessage({ kind: 'link', data: {}, attrs: {} }, s)));
    for (const family of [2, 10]) {
      assert.deepEqual(stamped(encodeDump(RTM_GETADDR, family)), packageBytes(RTM_GETADDR, dump, (s) => rt.formatAddressMessage({ kind: 'address', data: { family }, attrs: {} }, s)));
      assert.deepEqual(stamped(encodeDump(RTM_GETROUTE, family)), packageBytes(RTM_GETROUTE, dump, (s) => rt.formatRouteMessage({ kind: 'route', data: { family }, attrs: {} }, s)));
    }
    for (const family of [2, 10, 7]) {
      assert.deepEqual(stamped(encodeDump(RTM_GETNEIGH, family)), packageBytes(RTM_GETNEIGH, dump, (s) => rt.formatNeighborMessage({ kind: 'neighbor', data: { family }, attrs: {} }, s)));
    }
  });

  it('get link by index and by name, get route to an address of either family', () => {
    assert.deepEqual(stamped(encodeGetLink({ index: 9 })), packageBytes(RTM_GETLINK, 0, (s) => rt.formatLinkMessage({ kind: 'link', data: { index: 9 }, attrs: {} }, s)));
    // The package writes IFLA_IFNAME without its NUL; the kernel takes both (nla_strscpy), iproute2 sends the NUL.
    const byName = stamped(encodeGetLink({ name: 'flannel.1' }));
    const parsed = rt.parseMessage(RTM_GETLINK, byName.subarray(16));
    assert.equal(parsed.kind === 'link' && parsed.attrs.ifname, 'flannel.1');
    assert.equal(byName.readUInt16LE(16 + 16), 4 + 'flannel.1'.length + 1, 'NUL-terminated as iproute2 sends it');
    assert.deepEqual(
      stamped(encodeGetRoute('10.5.2.9')),
      packageBytes(RTM_GETROUTE, 0, (s) => rt.formatRouteMessage({ kind: 'route', data: { family: 2, dstLen: 32 }, attrs: { dst: Buffer.from([10, 5, 2, 9]) } }, s)),
    );
    const v6 = stamped(encodeGetRoute('fd00::9'));
    assert.equal(v6[16], 10);
    assert.equal(v6[17], 128);
    assert.throws(() => encodeGetRoute('10.5.2'), TypeError);
  });

  it('set link up, down, MTU, MAC; delete link', () => {
    const setLink = (data: rt.Link, attrs: Parameters<typeof rt.formatLinkMessage>[0]['attrs'] = {}): Buffer => packageBytes(19, 0, (s) => rt.formatLinkMessage({ kind: 'link', data, attrs }, s));
    assert.deepEqual(stamped(encodeSetLink(7, { up: true })), setLink({ index: 7, change: { up: true }, flags: { up: true } }));
    assert.deepEqual(stamped(encodeSetLink(7, { up: false })), setLink({ index: 7, change: { up: true }, flags: {} }));
    assert.deepEqual(stamped(encodeSetLink(7, { mtu: 1400 })), setLink({ index: 7 }, { mtu: 1400 }));
    assert.deepEqual(stamped(encodeSetLink(7, { mac: '02:AA:bb:cc:dd:ee' })), setLink({ index: 7 }, { address: Buffer.from([2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]) }));
    assert.deepEqual(stamped(encodeDeleteLink(7)), packageBytes(17, 0, (s) => rt.formatLinkMessage({ kind: 'link', data: { index: 7 }, attrs: {} }, s)));
  });

  it('create vxlan: the attributes client.ts used to send through ifla.formatVxlan, IPv4 and IPv6 underlay, gbp', () => {
    for (const [localIP, gbp] of [['10.66.0.1', false], ['fd00:66::1', true]] as const) {
      const b = stamped(encodeCreateVxlan({ name: 'flannel.1', vni: 42, localIP, underlayIndex: 3, port: 8472, learning: false, gbp, mtu: 1450, mac: '02:42:0a:05:01:00' }));
      assert.equal(b.readUInt32LE(0), b.length);
      assert.equal(b.readUInt16LE(4), 16);
      assert.equal(b.readUInt16LE(6), REQUEST_ACK | FlagsNew.CREATE | FlagsNew.EXCL);
      const m = rt.parseMessage(16, b.subarray(16));
      if (m.kind !== 'link') assert.fail('not a link message');
      assert.equal(m.attrs.ifname, 'flannel.1');
      assert.equal(m.attrs.mtu, 1450);
      assert.deepEqual(m.attrs.address, Buffer.from([2, 0x42, 10, 5, 1, 0]));
      const info = ifla.parseInfo(m.attrs.linkinfo!);
      assert.equal(info.kind, 'vxlan', 'NUL-terminated: the package reads up to the NUL');
      const v = ifla.parseVxlan(info.data!);
      assert.equal(v.id, 42);
      assert.equal(v.link, 3);
      assert.deepEqual(v.port, Buffer.from([0x21, 0x18]));
      assert.equal(v.learning, 0);
      assert.equal(v.gbp === true, gbp);
      if (localIP.includes(':')) assert.equal(v.local6?.length, 16);
      else assert.deepEqual(v.local, Buffer.from([10, 66, 0, 1]));
    }
  });
});

// ---------------------------------------------------------------- RequestSocket

/** What the scripted kernel does with a request: reply with these datagrams (built from its seq), or stay silent. */
type Script = (req: { seq: number; type: number; flags: number }) => Buffer[] | 'silent';

class ScriptedSocket extends EventEmitter implements RawSocket {
  readonly sent: { seq: number; type: number; flags: number }[] = [];
  closed = false;
  refs = 0;
  constructor(private readonly script: Script) {
    super();
  }
  send(msg: Uint8Array, _o?: { port?: number }, callback?: (error?: Error) => void): void {
    const b = Buffer.from(msg);
    const req = { seq: b.readUInt32LE(8), type: b.readUInt16LE(4), flags: b.readUInt16LE(6) };
    this.sent.push(req);
    const answer = this.script(req);
    setImmediate(() => {
      callback?.();
      if (answer === 'silent') return;
      for (const d of answer) if (!this.closed) this.emit('message', d, { port: 0 });
    });
  }
  close(): void {
    this.closed = true;
  }
  address(): { port: number } {
    return { port: 4242 };
  }
  getRecvBufferSize(): number {
    return 8 << 20;
  }
  setRecvBufferSize(): void {}
  getSendBufferSize(): number {
    return 212992;
  }
  ref(): void {
    this.refs++;
  }
  unref(): void {
    this.refs = Math.max(0, this.refs - 1);
  }
}

function msg(type: number, seq: number, body: Buffer, flags = 0): Buffer {
  const b = Buffer.alloc(16 + ((body.length + 3) & ~3));
  b.writeUInt32LE(16 + body.length, 0);
  b.writeUInt16LE(type, 4);
  b.writeUInt16LE(flags, 6);
  b.writeUInt32LE(seq, 8);
  body.copy(b, 16);
  return b;
}
const int32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeInt32LE(n);
  return b;
};
const ack = (seq: number, errno = 0): Buffer => msg(2, seq, Buffer.concat([int32(-errno), Buffer.alloc(16)]));
const done = (seq: number, errno = 0): Buffer => msg(3, seq, int32(-errno), 2);
/** An ifinfomsg with only its index, as the body of a reply. */
const linkBody = (index: number): Buffer => {
  const b = Buffer.alloc(16);
  b.writeInt32LE(index, 4);
  return b;
};

function requestSocket(scripts: Script[], timeoutMs = 1000): { rs: RequestSocket; sockets: ScriptedSocket[]; resets: string[] } {
  const sockets: ScriptedSocket[] = [];
  const resets: string[] = [];
  let i = 0;
  const rs = new RequestSocket('test', silentLogger, timeoutMs, (why) => resets.push(why), () => {
    const s = new ScriptedSocket(scripts[Math.min(i++, scripts.length - 1)]!);
    sockets.push(s);
    return s;
  });
  return { rs, sockets, resets };
}

describe('RequestSocket (socket.ts) over a scripted kernel', () => {
  it('collects a dump across datagrams until NLMSG_DONE, ignoring other sequence numbers', async () => {
    const { rs, sockets } = requestSocket([
      ({ seq }) => [
        Buffer.concat([msg(16, seq - 1, linkBody(99), 2), msg(16, seq, linkBody(1), 2), msg(16, seq, linkBody(2), 2)]),
        msg(16, seq, linkBody(3), 2),
        Buffer.concat([msg(16, seq, linkBody(4), 2), done(seq)]),
      ],
    ]);
    const replies = await rs.request('list links', encodeDump(RTM_GETLINK, 0));
    assert.deepEqual(replies.map((m) => m.body.readInt32LE(4)), [1, 2, 3, 4]);
    assert.equal(sockets.length, 1);
    assert.equal(sockets[0]!.refs, 0, 'unreferenced once idle');
    rs.close();
  });

  it('a GET resolves at its ACK with its one reply; a write with nothing', async () => {
    const { rs } = requestSocket([({ seq, type }) => (type === RTM_GETLINK ? [msg(16, seq, linkBody(7)), ack(seq)] : [ack(seq)])]);
    const got = await rs.request('get link #7', encodeGetLink({ index: 7 }));
    assert.equal(got.length, 1);
    assert.equal(got[0]!.body.readInt32LE(4), 7);
    assert.deepEqual(await rs.request('set link #7 up', encodeSetLink(7, { up: true })), []);
    rs.close();
  });

  it('NLMSG_ERROR with an errno rejects with a NetlinkError naming the operation and the errno', async () => {
    const { rs, resets } = requestSocket([({ seq }) => [ack(seq, 17)]]);
    const err = await rs.request('create vxlan device flannel.1', encodeDeleteLink(3)).catch((e: unknown) => e);
    assert.ok(err instanceof NetlinkError);
    assert.equal(err.errno, 'EEXIST');
    assert.equal(err.message, 'create vxlan device flannel.1: EEXIST');
    assert.equal((err.cause as Error).message, 'Request rejected: EEXIST');
    assert.deepEqual(resets, [], 'a refusal is not a broken socket');
    rs.close();
  });

  it('a dump whose NLMSG_DONE carries an errno rejects', async () => {
    const { rs } = requestSocket([({ seq }) => [Buffer.concat([msg(16, seq, linkBody(1), 2), done(seq, 4)])]]);
    const err = await rs.request('list links', encodeDump(RTM_GETLINK, 0)).catch((e: unknown) => e);
    assert.ok(err instanceof NetlinkError);
    assert.equal(err.errno, 'EINTR');
    rs.close();
  });

  it('no answer: ETIMEDOUT, the socket is replaced and the owner told; the next request goes out on a fresh one', async () => {
    const { rs, sockets, resets } = requestSocket([() => 'silent', ({ seq }) => [ack(seq)]], 50);
    const err = await rs.request('delete link flannel.1', encodeDeleteLink(3)).catch((e: unknown) => e);
    assert.ok(err instanceof NetlinkError);
    assert.equal(err.errno, 'ETIMEDOUT');
    assert.equal(err.retryable, true);
    assert.equal(resets.length, 1);
    assert.ok(sockets[0]!.closed);
    assert.deepEqual(await rs.request('delete link flannel.1', encodeDeleteLink(3)), []);
    assert.equal(sockets.length, 2);
    rs.close();
  });

  it('a socket error rejects the request in flight with ESOCKCLOSED and resets', async () => {
    const { rs, sockets, resets } = requestSocket([() => 'silent', ({ seq }) => [ack(seq)]]);
    const pending = rs.request('list links', encodeDump(RTM_GETLINK, 0));
    await new Promise((r) => setImmediate(r));
    sockets[0]!.emit('error', Object.assign(new Error('no buffer space available'), { code: 'ENOBUFS' }));
    const err = await pending.catch((e: unknown) => e);
    assert.ok(err instanceof NetlinkError);
    assert.equal(err.errno, 'ESOCKCLOSED');
    assert.equal(resets.length, 1);
    assert.deepEqual(await rs.request('set link #1 up', encodeSetLink(1, { up: true })), []);
    rs.close();
  });

  it('an undecodable reply rejects with EBADMSG and resets (the stream is not trusted)', async () => {
    const { rs, resets } = requestSocket([
      ({ seq }) => {
        const bad = msg(16, seq, linkBody(1), 2);
        bad.writeUInt32LE(9999, 0);
        return [bad];
      },
    ]);
    const err = await rs.request('list links', encodeDump(RTM_GETLINK, 0)).catch((e: unknown) => e);
    assert.ok(err instanceof NetlinkError);
    assert.equal(err.errno, 'EBADMSG');
    assert.match(err.message, /^list links: EBADMSG/);
    assert.equal(resets.length, 1);
    rs.close();
  });

  it('serializes: the second request is sent only once the first is answered; close() rejects what is queued', async () => {
    let release: (() => void) | null = null;
    const { rs, sockets } = requestSocket([
      ({ seq }) => {
        if (sockets[0]!.sent.length === 1) {
          // Answer the first request later, by hand.
          release = () => sockets[0]!.emit('message', ack(seq), { port: 0 });
          return 'silent';
        }
        return 'silent';
      },
    ]);
    const first = rs.request('set link #1 up', encodeSetLink(1, { up: true }));
    const second = rs.request('set link #2 up', encodeSetLink(2, { up: true }));
    await new Promise((r) => setImmediate(r));
    assert.equal(sockets[0]!.sent.length, 1);
    assert.equal(rs.load, 2);
    release!();
    await first;
    await new Promise((r) => setImmediate(r));
    assert.equal(sockets[0]!.sent.length, 2);
    rs.close();
    const err = await second.catch((e: unknown) => e);
    assert.ok(err instanceof NetlinkError);
    assert.equal(err.errno, 'ESOCKCLOSED');
    const after = await rs.request('set link #3 up', encodeSetLink(3, { up: true })).catch((e: unknown) => e);
    assert.ok(after instanceof NetlinkError && after.errno === 'ESOCKCLOSED');
  });
});

describe('NftGeneration (nft-generation.ts) on weft\'s request socket, over a scripted kernel', () => {
  const GETGEN = (10 << 8) | 16;
  const NEWGEN = (10 << 8) | 15;
  /** NEWGEN: nfgenmsg, then NFTA_GEN_ID (big-endian u32). */
  const newgen = (seq: number, id: number): Buffer => {
    const body = Buffer.alloc(12);
    body.writeUInt16LE(8, 4);
    body.writeUInt16LE(1, 6);
    body.writeUInt32BE(id, 8);
    return msg(NEWGEN, seq, body);
  };

  class GroupSocket extends ScriptedSocket {
    readonly groups: number[] = [];
    addMembership(group: number): void {
      this.groups.push(group);
    }
  }

  it('current(): NFT_MSG_GETGEN (nfgenmsg, REQUEST|ACK) answered by NEWGEN then ACK gives NFTA_GEN_ID', async () => {
    const sockets: GroupSocket[] = [];
    const gen = new NftGeneration(() => {
      const s = new GroupSocket(({ seq, type }) => (type === GETGEN ? [Buffer.concat([newgen(seq, 42), ack(seq)])] : [ack(seq, 95)]));
      sockets.push(s);
      return s;
    });
    assert.equal(await gen.current(), 42);
    assert.deepEqual(sockets[0]!.sent.map((r) => [r.type, r.flags]), [[GETGEN, REQUEST_ACK]]);
    gen.close();
  });

  it('a refusal rejects with a NetlinkError naming the read; the next query opens a fresh socket', async () => {
    const sockets: GroupSocket[] = [];
    let errno = 1; // EPERM, then success
    const gen = new NftGeneration(() => {
      const s = new GroupSocket(({ seq }) => (errno ? [ack(seq, errno)] : [newgen(seq, 7), ack(seq)]));
      sockets.push(s);
      return s;
    });
    const err = await gen.current().catch((e: unknown) => e);
    assert.ok(err instanceof NetlinkError);
    assert.equal(err.message, 'read the nf_tables ruleset generation: EPERM');
    errno = 0;
    assert.equal(await gen.current(), 7);
    assert.equal(sockets.length, 2);
    assert.ok(sockets[0]!.closed);
    gen.close();
  });

  it('watch(): joins NFNLGRP_NFTABLES; a commit (per-rule messages, then NEWGEN) is one change, rules alone none, a socket error one', () => {
    const sockets: GroupSocket[] = [];
    const gen = new NftGeneration(() => {
      const s = new GroupSocket(() => 'silent');
      sockets.push(s);
      return s;
    });
    let changes = 0;
    assert.equal(gen.watch(() => changes++), true);
    const events = sockets[0]!;
    assert.deepEqual(events.groups, [NFNLGRP_NFTABLES]);
    const rule = msg((10 << 8) | 6, 0, Buffer.alloc(8));
    events.emit('message', Buffer.concat([rule, rule]), { port: 0 });
    assert.equal(changes, 0);
    events.emit('message', Buffer.concat([rule, newgen(0, 9)]), { port: 0 });
    assert.equal(changes, 1);
    events.emit('message', newgen(0, 10), { port: 1234 });
    assert.equal(changes, 1, 'only the kernel speaks on the group');
    events.emit('error', Object.assign(new Error('no buffer space available'), { code: 'ENOBUFS' }));
    assert.equal(changes, 2, 'changes may have been lost: re-read');
    assert.ok(events.closed);
    gen.unwatch();
    gen.close();
  });
});
