/**
 * transport.ts's native netlink socket (addon/src/nlsock.cc) on the real kernel: it only sends
 * read-only requests (RTM_GETLINK for the loopback device and link dumps), so it runs in the
 * test's own network namespace without changing anything. Needs the addon (npm run build:addon).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { openNetlinkSocket, type MonitorRawSocket } from '../../src/netlink/transport';

const NETLINK_ROUTE = 0;
const RTM_GETLINK = 18;
const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const NLM_F_REQUEST = 0x1;
const NLM_F_ACK = 0x4;
const NLM_F_DUMP = 0x300;

/** RTM_GETLINK (nlmsghdr + ifinfomsg) for `ifindex`, or a dump of every link when ifindex is 0. */
function getLink(seq: number, ifindex: number, flags: number): Buffer {
  const b = Buffer.alloc(32);
  b.writeUInt32LE(32, 0);
  b.writeUInt16LE(RTM_GETLINK, 4);
  b.writeUInt16LE(flags, 6);
  b.writeUInt32LE(seq, 8);
  b.writeInt32LE(ifindex, 20);
  return b;
}

interface Received {
  readonly type: number;
  readonly seq: number;
  readonly pid: number;
  readonly errno: number;
}

function messages(datagram: Buffer): Received[] {
  const out: Received[] = [];
  for (let off = 0; off + 16 <= datagram.length; ) {
    const len = datagram.readUInt32LE(off);
    const type = datagram.readUInt16LE(off + 4);
    out.push({ type, seq: datagram.readUInt32LE(off + 8), pid: datagram.readUInt32LE(off + 12), errno: type === NLMSG_ERROR ? -datagram.readInt32LE(off + 16) : 0 });
    if (len < 16) break;
    off += (len + 3) & ~3;
  }
  return out;
}

function withSocket<T>(recvBufferBytes: number, body: (sock: MonitorRawSocket) => Promise<T>): Promise<T> {
  // Referenced: the test waits for nothing else.
  const sock = openNetlinkSocket(NETLINK_ROUTE, { recvBufferBytes, ref: true });
  return body(sock).finally(() => sock.close());
}

describe('native netlink socket (transport.ts)', () => {
  it('binds to a kernel-chosen port id and answers a dump: every part from port 0, addressed to that port, ending in NLMSG_DONE', () =>
    withSocket(1 << 20, async (sock) => {
      const port = sock.address().port;
      assert.ok(port > 0, `port id ${port}`);
      const got: Received[] = [];
      const done = new Promise<void>((resolve) => {
        sock.on('message', (msg, rinfo) => {
          assert.equal(rinfo.port, 0, 'from the kernel');
          got.push(...messages(msg));
          if (got.some((m) => m.type === NLMSG_DONE)) resolve();
        });
      });
      sock.send(getLink(7, 0, NLM_F_REQUEST | NLM_F_DUMP));
      await done;
      assert.ok(got.some((m) => m.type === 16), 'at least one RTM_NEWLINK (lo)');
      assert.ok(got.every((m) => m.seq === 7 && m.pid === port));
    }));

  it('delivers every datagram of one wake-up in the same turn: no microtask runs between them', () =>
    withSocket(1 << 20, async (sock) => {
      const N = 20;
      let microtaskRan = false;
      let before = 0;
      let total = 0;
      const all = new Promise<void>((resolve) => {
        sock.on('message', (msg) => {
          if (total === 0) queueMicrotask(() => void (microtaskRan = true));
          if (!microtaskRan) before++;
          total += messages(msg).length;
          if (total === N) resolve();
        });
      });
      // Twenty separate sendto(2): twenty answers queued before the loop polls the socket.
      for (let i = 1; i <= N; i++) sock.send(getLink(i, 1, NLM_F_REQUEST));
      await all;
      assert.equal(before, N, `${before} of ${N} datagrams before the first microtask`);
    }));

  it('reports a kernel error as NLMSG_ERROR with the errno, and sends nothing more', () =>
    withSocket(1 << 20, async (sock) => {
      const answer = new Promise<Received[]>((resolve) => sock.on('message', (msg) => resolve(messages(msg))));
      sock.send(getLink(9, 0x7ffffff0, NLM_F_REQUEST | NLM_F_ACK));
      const got = await answer;
      assert.deepEqual(got.map((m) => [m.type, m.seq, m.errno]), [[NLMSG_ERROR, 9, 19]], 'ENODEV');
    }));

  it('reports a receive-buffer overflow as an error with code ENOBUFS (NETLINK_NO_ENOBUFS is not set)', () =>
    withSocket(1, async (sock) => {
      // The smallest buffer (the kernel's minimum, ~2 KiB) and 50 answers of ~1 KiB queued at once.
      const error = new Promise<Error & { code?: string }>((resolve) => sock.on('error', resolve));
      let received = 0;
      sock.on('message', () => void received++);
      for (let i = 1; i <= 50; i++) sock.send(getLink(i, 1, NLM_F_REQUEST));
      const err = await error;
      assert.equal(err.code, 'ENOBUFS');
      assert.match(err.message, /receive buffer overflowed/);
      assert.ok(received < 50, `${received} answers got through`);
    }));

  it('raises the receive buffer past net.core.rmem_max with SO_RCVBUFFORCE when privileged', () =>
    withSocket(4 << 20, async (sock) => {
      if (process.getuid?.() !== 0) {
        assert.ok(sock.getRecvBufferSize() > 0);
        return;
      }
      assert.equal(sock.getRecvBufferSize(), 8 << 20, 'the kernel doubles what it was given');
      assert.ok(sock.getSendBufferSize() > 0);
    }));

  it('joins multicast groups and takes a socket filter; a filter that drops everything lets nothing through', () =>
    withSocket(1 << 20, async (sock) => {
      sock.addMembership(1); // RTNLGRP_LINK
      assert.throws(() => sock.attachFilter!(new Uint8Array(7)), /instructions of 8 bytes/);
      const dropAll = Buffer.alloc(8);
      dropAll.writeUInt16LE(0x06, 0); // BPF_RET | BPF_K, k = 0: keep 0 bytes
      sock.attachFilter!(dropAll);
      let received = 0;
      sock.on('message', () => void received++);
      sock.send(getLink(1, 1, NLM_F_REQUEST));
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(received, 0);
    }));

  it('a process that exits with an answer still queued on an open socket exits cleanly (no JS call during teardown)', () => {
    // Node polls the loop once more while tearing the environment down, when JavaScript can no
    // longer run: the socket must not try (node-addon-api would abort the process there).
    const script = `
      const { openNetlinkSocket } = require(${JSON.stringify(require.resolve('../../src/netlink/transport'))});
      const sock = openNetlinkSocket(0, { recvBufferBytes: 1 << 16 });
      sock.on('message', () => { throw new Error('no JavaScript after the end'); });
      const b = Buffer.alloc(32); b.writeUInt32LE(32, 0); b.writeUInt16LE(18, 4); b.writeUInt16LE(1, 6); b.writeInt32LE(1, 20);
      sock.send(b);`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 10_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /FATAL|Aborted/);
  });

  it('close is idempotent; a send after it fails through its callback with EBADF; other calls throw', async () => {
    const sock = openNetlinkSocket(NETLINK_ROUTE, { recvBufferBytes: 1 << 16 });
    sock.close();
    sock.close();
    const err = await new Promise<Error | undefined>((resolve) => sock.send(getLink(1, 1, NLM_F_REQUEST), {}, resolve));
    assert.equal((err as Error & { code?: string }).code, 'EBADF');
    assert.throws(() => sock.getRecvBufferSize(), /closed/);
  });
});
