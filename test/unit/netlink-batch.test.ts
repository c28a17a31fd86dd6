/**
 * Batched writes without a kernel: NetlinkClient.applyWrites over a scripted raw socket that
 * answers like the kernel does (in order, an NLMSG_ERROR for each request that failed or asked
 * for an ACK, each in a datagram of its own), and the reconciler's per-change accounting over
 * batches.
 * The real kernel is in test/e2e/netlink-batch.test.ts.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';
import type { DesiredState, Underlay } from '../../src/backend/backend';
import { Reconciler } from '../../src/daemon/reconciler';
import { parseIPv4, parseIPv4Cidr } from '../../src/ip';
import { silentLogger } from '../../src/log';
import { ACK_RCVBUF_ALLOWANCE, chunkLimit, chunkRanges, datagramLimit, MAX_DATAGRAM_BYTES, MAX_REQUESTS_PER_DATAGRAM, type RawSocket } from '../../src/netlink/batch';
import { NetlinkClient } from '../../src/netlink/client';
import { NetlinkError } from '../../src/netlink/errors';
import type { KernelWrite } from '../../src/netlink/types';
import { FakeBackend, ManualClock } from './helpers/fakes';
import { ScriptedKernel } from './helpers/scripted-kernel';

interface SentRequest {
  readonly seq: number;
  readonly type: number;
  readonly flags: number;
}

/** A raw socket that records each datagram's requests and answers them as `answer` says. */
class ScriptedRawSocket extends EventEmitter implements RawSocket {
  readonly datagrams: SentRequest[][] = [];
  closed = false;
  constructor(
    private readonly recvBuffer: number,
    /** errno for the n-th request ever sent (0: ACK), or 'silent' for no answer. */
    private readonly answer: (n: number, req: SentRequest) => number | 'silent',
  ) {
    super();
  }
  private sent = 0;
  send(msg: Uint8Array, _options?: { port?: number }, callback?: (error?: Error) => void): void {
    const b = Buffer.from(msg);
    const reqs: SentRequest[] = [];
    for (let off = 0; off < b.length; ) {
      const len = b.readUInt32LE(off);
      reqs.push({ seq: b.readUInt32LE(off + 8), type: b.readUInt16LE(off + 4), flags: b.readUInt16LE(off + 6) });
      off += (len + 3) & ~3;
    }
    this.datagrams.push(reqs);
    const answers = reqs.map((r) => [r, this.answer(this.sent++, r)] as const);
    setImmediate(() => {
      callback?.();
      for (const [r, errno] of answers) {
        if (errno === 'silent' || this.closed) continue;
        if (errno === 0 && (r.flags & NLM_F_ACK) === 0) continue; // the kernel acks only on request
        const a = Buffer.alloc(36);
        a.writeUInt32LE(36, 0);
        a.writeUInt16LE(2, 4);
        a.writeUInt32LE(r.seq, 8);
        a.writeInt32LE(-errno, 16);
        this.emit('message', a, { port: 0 });
      }
    });
  }
  close(): void {
    this.closed = true;
  }
  address(): { port: number } {
    return { port: 777 };
  }
  getRecvBufferSize(): number {
    return this.recvBuffer;
  }
  setRecvBufferSize(): void {}
  getSendBufferSize(): number {
    return 212992; // net.core.wmem_default here
  }
  ref(): void {}
  unref(): void {}
}

const EEXIST = 17;
const NLM_F_ACK = 0x4;
const link = { index: 7, name: 'flannel.1' };
const route = (n: number): KernelWrite => ({
  op: 'addRoute',
  spec: { dst: { ip: parseIPv4(`10.5.${n}.0`)!, prefixLen: 24 }, gateway: `10.5.${n}.0`, oif: 7, onlink: true },
});

function client(sockets: ScriptedRawSocket[], timeoutMs = 5000): { nl: NetlinkClient; resets: string[] } {
  const resets: string[] = [];
  let i = 0;
  const nl = new NetlinkClient(
    { ...silentLogger, warn: (msg: string) => void resets.push(msg) },
    { requestTimeoutMs: timeoutMs, rawSocketFactory: () => sockets[i++]!, socketFactory: () => { throw new Error('no request sockets in this test'); } },
  );
  return { nl, resets };
}

describe('chunking bounded by the receive buffer', () => {
  it('lets the acknowledgements of one datagram fill at most half the receive buffer, up to a cap', () => {
    assert.equal(chunkLimit(8 << 20), MAX_REQUESTS_PER_DATAGRAM);
    assert.equal(chunkLimit(16 * ACK_RCVBUF_ALLOWANCE), 8);
    assert.equal(chunkLimit(100), 1);
  });
  it('splits by request count and by bytes, never leaving a request out', () => {
    assert.deepEqual(chunkRanges([60, 60, 60, 60, 60], 2), [[0, 2], [2, 4], [4, 5]]);
    assert.deepEqual(chunkRanges([60, 60, 60], 10, 130), [[0, 2], [2, 3]]);
    assert.deepEqual(chunkRanges([500, 60], 10, 100), [[0, 1], [1, 2]], 'a request larger than the byte bound goes alone');
    assert.deepEqual(chunkRanges([], 10), []);
  });
  it('keeps a datagram under what SO_SNDBUF lets one sendmsg carry', () => {
    assert.equal(datagramLimit(212992), MAX_DATAGRAM_BYTES);
    assert.ok(datagramLimit(16384) <= 16384 - 32);
  });
});

describe('NetlinkClient.applyWrites: ACKs matched by sequence number', () => {
  it('sends a phase in one datagram and fails only the write the kernel rejected (in the middle)', async () => {
    const sock = new ScriptedRawSocket(8 << 20, (n) => (n === 2 ? EEXIST : 0));
    const { nl } = client([sock]);
    const writes = [
      { op: 'replaceNeighbour', link, ip: '10.5.1.0', mac: '02:00:00:00:00:01' },
      route(1),
      route(2),
      route(3),
      { op: 'deleteFdb', link, mac: '02:00:00:00:00:09', dst: null },
    ] as const satisfies readonly KernelWrite[];
    const out = await nl.applyWrites(writes);
    assert.equal(sock.datagrams.length, 1);
    assert.equal(sock.datagrams[0]!.length, 5);
    assert.equal(new Set(sock.datagrams[0]!.map((r) => r.seq)).size, 5, 'distinct sequence numbers');
    assert.ok(sock.datagrams[0]!.every((r) => (r.flags & 0x1) === 0x1), 'NLM_F_REQUEST on each');
    assert.deepEqual(sock.datagrams[0]!.map((r) => (r.flags & NLM_F_ACK) !== 0), [false, false, false, false, true], 'NLM_F_ACK on the last only');
    assert.deepEqual(out.map((e) => e === null), [true, true, false, true, true]);
    const err = out[2];
    assert.ok(err instanceof NetlinkError);
    assert.equal(err.errno, 'EEXIST');
    assert.equal(err.message, 'add route 10.5.2.0/24 via 10.5.2.0 dev #7 onlink: EEXIST');
    nl.close();
  });

  it('splits a batch larger than the receive buffer allows into datagrams sent one after another', async () => {
    const sock = new ScriptedRawSocket(16 * ACK_RCVBUF_ALLOWANCE, (n) => (n === 13 ? EEXIST : 0));
    const { nl } = client([sock]);
    const out = await nl.applyWrites(Array.from({ length: 20 }, (_, i) => route(i)));
    assert.deepEqual(sock.datagrams.map((d) => d.length), [8, 8, 4]);
    assert.equal(new Set(sock.datagrams.flat().map((r) => r.seq)).size, 20);
    assert.deepEqual(out.flatMap((e, i) => (e === null ? [] : [i])), [13]);
    nl.close();
  });

  it('fails with ETIMEDOUT only the writes left unanswered, replaces the socket and asks for a resync', async () => {
    // The first request's error is answered; the final ACK never comes: the others are unknown.
    const first = new ScriptedRawSocket(8 << 20, (n) => (n === 0 ? EEXIST : n === 2 ? 'silent' : 0));
    const second = new ScriptedRawSocket(8 << 20, () => 0);
    const { nl, resets } = client([first, second], 50);
    const out = await nl.applyWrites([route(1), route(2), route(3)]);
    assert.deepEqual(out.map((e) => (e === null ? null : (e as NetlinkError).errno)), ['EEXIST', 'ETIMEDOUT', 'ETIMEDOUT']);
    assert.ok(first.closed, 'the socket that missed an answer is closed');
    assert.ok(resets.some((m) => /replaced/.test(m)), resets.join('; '));
    assert.deepEqual(await nl.applyWrites([route(4)]), [null]);
    assert.equal(second.datagrams.length, 1, 'the next batch went out on a fresh socket');
    nl.close();
  });

  it('fails with ESOCKCLOSED the unanswered writes when the socket errs, and carries on with a fresh one', async () => {
    const first = new ScriptedRawSocket(8 << 20, () => 'silent');
    const second = new ScriptedRawSocket(8 << 20, () => 0);
    const { nl } = client([first, second]);
    const pending = nl.applyWrites([route(1), route(2)]);
    setImmediate(() => first.emit('error', Object.assign(new Error('error when polling socket: no buffer space available'), { code: 'ENOBUFS' })));
    const out = await pending;
    assert.deepEqual(out.map((e) => (e as NetlinkError).errno), ['ESOCKCLOSED', 'ESOCKCLOSED']);
    assert.deepEqual(await nl.applyWrites([route(3)]), [null]);
    nl.close();
  });

  it('sends an idle client\'s batch within applyWrites (no promise step before the sendmsg); a batch given meanwhile waits for the answer', async () => {
    const sock = new ScriptedRawSocket(16 * ACK_RCVBUF_ALLOWANCE, () => 0);
    const { nl } = client([sock]);
    const first = nl.applyWrites(Array.from({ length: 10 }, (_, i) => route(i))); // two datagrams: 8 + 2
    assert.deepEqual(sock.datagrams.map((d) => d.length), [8], 'the first datagram left within the call');
    const second = nl.applyWrites([route(20)]);
    assert.equal(sock.datagrams.length, 1, 'the second batch waits for the first');
    const [a, b] = await Promise.all([first, second]);
    assert.deepEqual(sock.datagrams.map((d) => d.length), [8, 2, 1], 'in order, one datagram in flight at a time');
    assert.ok(a.every((e) => e === null) && b.every((e) => e === null));
    nl.close();
  });

  it('fails with ESOCKCLOSED a batch waiting behind another when the client closes', async () => {
    const sock = new ScriptedRawSocket(8 << 20, () => 'silent');
    const { nl } = client([sock]);
    const first = nl.applyWrites([route(1)]);
    const second = nl.applyWrites([route(2)]);
    nl.close();
    assert.deepEqual((await first).map((e) => (e as NetlinkError).errno), ['ESOCKCLOSED']);
    assert.deepEqual((await second).map((e) => (e as NetlinkError).errno), ['ESOCKCLOSED']);
    assert.equal(sock.datagrams.length, 1, 'the waiting batch was never sent');
  });

  it('a malformed write fails alone, without being sent', async () => {
    const sock = new ScriptedRawSocket(8 << 20, () => 0);
    const { nl } = client([sock]);
    const out = await nl.applyWrites([route(1), { op: 'replaceFdb', link, mac: 'not-a-mac', dst: '10.0.0.1' }, route(2)]);
    assert.deepEqual(out.map((e) => e === null), [true, false, true]);
    assert.match(String(out[1]), /not a MAC address/);
    assert.equal(sock.datagrams[0]!.length, 2);
    nl.close();
  });
});

describe('Reconciler over batches', () => {
  const UNDERLAY: Underlay = { ifName: 'eth0', ifIndex: 3, ipv4: '10.250.0.1', mtu: 1500 };
  const peers = (ns: number[]): DesiredState => ({
    addresses: [{ ip: parseIPv4('10.5.1.0')!, prefixLen: 32 }],
    neighbours: ns.map((n) => ({ ip: `10.5.${n}.0`, mac: `02:00:00:00:00:${n.toString(16).padStart(2, '0')}` })),
    fdb: ns.map((n) => ({ mac: `02:00:00:00:00:${n.toString(16).padStart(2, '0')}`, dst: `10.250.0.${n}` })),
    routes: ns.map((n) => ({ dst: parseIPv4Cidr(`10.5.${n}.0/24`)!, gateway: `10.5.${n}.0`, onlink: true, via: 'overlay' as const })),
  });

  it('issues a whole run as one batch, in diffState order; a route rejected in the middle fails only its change', async () => {
    const k = new ScriptedKernel();
    k.createDevice();
    const r = new Reconciler({ nl: k, backend: new FakeBackend(), underlay: UNDERLAY, clock: new ManualClock() });
    r.setDesired(peers([2, 3, 4]));
    k.failRouteTo = '10.5.3.0/24';
    await assert.rejects(r.reconcile(), /reconcile flannel\.1: 1 of 10 changes failed: add route 10\.5\.3\.0\/24: EEXIST/);
    assert.deepEqual(k.batches, [10], 'address, neighbours, FDB entries, routes: one batch');
    assert.deepEqual(k.calls.slice(0, 5), ['add address 10.5.1.0/32', 'set neighbour 10.5.2.0', 'set neighbour 10.5.3.0', 'set neighbour 10.5.4.0', 'set fdb 02:00:00:00:00:02']);
    assert.deepEqual(k.routes.map((x) => x.gateway).sort(), ['10.5.2.0', '10.5.4.0']);
    k.failRouteTo = null;
    k.batches = [];
    assert.equal((await r.reconcile()).changes, 1, 'the next run adds only the route that failed');
    assert.deepEqual(k.batches, [1]);
  });

  it('a removal of what is already gone counts as applied, inside a batch', async () => {
    const k = new ScriptedKernel();
    k.createDevice();
    const r = new Reconciler({ nl: k, backend: new FakeBackend(), underlay: UNDERLAY, clock: new ManualClock() });
    r.setDesired(peers([2, 3]));
    await r.reconcile();
    r.setDesired(peers([]));
    k.failDeletesWith = 'ENOENT';
    assert.equal((await r.reconcile()).changes, 6);
  });
});
