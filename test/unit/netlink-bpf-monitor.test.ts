/**
 * MonitorSocket and its kernel filter (src/netlink/monitor.ts + bpf.ts) with a scripted socket:
 * the program is attached before anything is read, rebuilt when the owner's interest changes
 * (with a resync when the old program was narrower), and a socket that refuses a replacement is
 * reopened without one. The program itself: netlink-bpf.test.ts (interpreter) and
 * test/e2e/netlink-bpf.test.ts (kernel).
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';
import { monitorFilterProgram } from '../../src/netlink/bpf';
import { MonitorSocket, type MonitorRawSocket } from '../../src/netlink/monitor';
import type { ChangeBatch } from '../../src/netlink/types';
import { silentLogger } from '../../src/log';

class ScriptedSocket extends EventEmitter {
  readonly programs: Buffer[] = [];
  refuse = false;
  closed = false;
  constructor(withFilter: boolean) {
    super();
    if (!withFilter) (this as { attachFilter?: unknown }).attachFilter = undefined;
  }
  attachFilter(program: Uint8Array): void {
    if (this.refuse) throw Object.assign(new Error('setsockopt(SO_ATTACH_FILTER): Invalid argument'), { code: 'EINVAL' });
    this.programs.push(Buffer.from(program));
  }
  send(): void {}
  close(): void { this.closed = true; }
  address(): { port: number } { return { port: 1234 }; }
  getRecvBufferSize(): number { return 1 << 22; }
  setRecvBufferSize(): void {}
  getSendBufferSize(): number { return 1 << 16; }
  addMembership(): void {}
  ref(): void {}
  unref(): void {}
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function monitorWith(sockets: ScriptedSocket[], device: { index: number | null }, batches: ChangeBatch[], withFilter = true): MonitorSocket {
  return new MonitorSocket((b) => batches.push(b), {
    coalesceMs: 1,
    log: silentLogger,
    onClose: () => undefined,
    factory: () => {
      const s = new ScriptedSocket(withFilter);
      sockets.push(s);
      return s as unknown as MonitorRawSocket;
    },
    interest: { table: 254, ifindexes: () => (device.index === null ? null : new Set([device.index, 2])), objectIfindexes: () => (device.index === null ? null : new Set([device.index])) },
  });
}

describe('netlink monitor: the kernel filter on its socket', () => {
  it('attaches the program for the current interest at open, rebuilds it when the device changes, resyncs only after a narrower one', async () => {
    const sockets: ScriptedSocket[] = [];
    const batches = [] as ChangeBatch[];
    const device = { index: null as number | null };
    const m = monitorWith(sockets, device, batches);
    assert.equal(sockets.length, 1);
    assert.deepEqual(sockets[0]!.programs, [monitorFilterProgram({ family: 4, table: 254, objectIfindexes: null })]);

    device.index = 7; // the device is created: the open program kept every interface, nothing lost
    m.interestChanged();
    assert.deepEqual(sockets[0]!.programs.at(-1), monitorFilterProgram({ family: 4, table: 254, objectIfindexes: new Set([7]) }));
    await sleep(10);
    assert.deepEqual(batches, [], 'no resync: the old program dropped nothing of the new device');

    m.interestChanged(); // nothing changed: not attached again
    assert.equal(sockets[0]!.programs.length, 2);

    device.index = 9; // the device was made again: the old program dropped its objects until now
    m.interestChanged();
    assert.deepEqual(sockets[0]!.programs.at(-1), monitorFilterProgram({ family: 4, table: 254, objectIfindexes: new Set([9]) }));
    await sleep(10);
    assert.equal(batches.length, 1);
    assert.equal((batches as ChangeBatch[])[0]!.resync, true);
    m.close();
  });

  it('a socket that refuses a replacement is reopened without a filter (the stale program must not stay), and a resync follows', async () => {
    const sockets: ScriptedSocket[] = [];
    const batches: ChangeBatch[] = [];
    const device = { index: 7 as number | null };
    const m = monitorWith(sockets, device, batches);
    assert.equal(sockets[0]!.programs.length, 1);
    sockets[0]!.refuse = true;
    device.index = 9;
    m.interestChanged();
    await sleep(30);
    assert.equal(sockets[0]!.closed, true, 'the socket with the stale program is closed');
    assert.equal(sockets.length, 2, 'and a new one opened');
    assert.deepEqual(sockets[1]!.programs, [], 'without a filter: the JavaScript checks alone');
    assert.ok(batches.some((b) => b.resync), 'what the stale program dropped is re-read');
    m.close();
  });

  it('without attachFilter on the socket (an older transport) the monitor works as before', async () => {
    const sockets: ScriptedSocket[] = [];
    const batches: ChangeBatch[] = [];
    const m = monitorWith(sockets, { index: 7 }, batches, false);
    m.interestChanged();
    // A neighbour on the device still arrives through the JavaScript checks.
    const msg = Buffer.alloc(28 + 12);
    msg.writeUInt32LE(msg.length, 0);
    msg.writeUInt16LE(28, 4); // RTM_NEWNEIGH
    msg.writeUInt8(2, 16); // AF_INET
    msg.writeInt32LE(7, 20);
    msg.writeUInt16LE(0x80, 24); // NUD_PERMANENT
    msg.writeUInt16LE(8, 28); // NDA_DST
    msg.writeUInt16LE(1, 30);
    msg.writeUInt32BE(0x0a050700, 32);
    msg.writeUInt16LE(4, 36); // an empty NDA_LLADDR
    msg.writeUInt16LE(2, 38);
    sockets[0]!.emit('message', msg, { port: 0 });
    await sleep(10);
    assert.equal(batches.length, 1);
    assert.equal(batches[0]!.events[0]?.kind, 'neighbour');
    m.close();
  });
});
