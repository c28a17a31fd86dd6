/**
 * The user-space VXLAN fallback's TypeScript side: the peer table it gives the pump, the device
 * it manages (with an in-process fake pump and fake netlink), when `auto` falls back, and the
 * reconciler handing the table over instead of touching kernel FDB.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { hasOnLinkPeers, type Backend, type DesiredState } from '../../src/backend/backend';
import {
  AutoVxlanBackend, PumpDevice, UserspaceVxlanBackend, deviceKindProblem, dropIncreases, fdbToPump, pumpEntries,
  type PumpFactory,
} from '../../src/backend/userspace';
import { VxlanBackend, type VxlanNetlink } from '../../src/backend/vxlan';
import type { VxlanBackendConfig } from '../../src/config/types';
import { parseIPv4Cidr } from '../../src/ip';
import { decodeLeaseAttrs, encodeLeaseAttrs } from '../../src/lease/codec';
import type { Lease } from '../../src/lease/types';
import type { NativePump, NativePumpCounters, NativePumpEntry, NativePumpOptions } from '../../src/native';
import { NetlinkError } from '../../src/netlink/errors';
import type { LinkInfo, VxlanSpec } from '../../src/netlink/types';
import { Reconciler, type ReconcilerNetlink } from '../../src/daemon/reconciler';
import { overlayDevices } from '../../src/cli/cleanup';

const net = (t: string) => parseIPv4Cidr(t)!;
const underlay = { ifName: 'eth0', ifIndex: 2, ipv4: '10.250.0.11', mtu: 1500 };
const vxConfig: VxlanBackendConfig = { vni: 1, port: 0, gbp: false, learning: false, directRouting: false, mtu: null };

function lease(subnet: string, publicIp: string, mac: string): Lease {
  return {
    key: subnet.replace('/', '-'), subnet: net(subnet), ipv6Subnet: null,
    attrs: { PublicIP: publicIp, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac } },
    expiration: null, etcdLeaseId: '7', modRevision: '1',
  };
}

const ZERO: NativePumpCounters = {
  framesIn: 0, packetsOut: 0, bytesOut: 0, packetsIn: 0, bytesIn: 0, framesOut: 0, coalesced: 0, dropNoPeer: 0,
  dropBroadcast: 0, dropMalformed: 0, dropSendError: 0, dropNotPeer: 0, dropBadVni: 0, dropBadPacket: 0,
  dropBadChecksum: 0, dropWriteError: 0, dropTtl: 0, icmpUnreachable: 0,
};

/** Links by name, as the kernel would keep them; the fake pump creates its device here. */
class FakeNl implements VxlanNetlink {
  links = new Map<string, LinkInfo>();
  calls: string[] = [];
  createError: Error | null = null;
  private next = 10;

  add(name: string, kind: string | null, mac: string | null, up = true): LinkInfo {
    const l: LinkInfo = { index: this.next++, name, up, mtu: 1500, mac, kind, vxlan: null };
    this.links.set(name, l);
    return l;
  }
  private byRef(ref: number | { index: number }): LinkInfo {
    const index = typeof ref === 'number' ? ref : ref.index;
    const l = [...this.links.values()].find((x) => x.index === index);
    if (!l) throw new NetlinkError('link', 'ENODEV', new Error('no such device'));
    return l;
  }
  private set(l: LinkInfo, patch: Partial<LinkInfo>): void {
    this.links.set(l.name, { ...l, ...patch });
  }
  async getLink(name: string) { return this.links.get(name) ?? null; }
  async createVxlan(spec: VxlanSpec): Promise<LinkInfo> {
    this.calls.push(`createVxlan ${spec.name}`);
    if (this.createError) throw this.createError;
    const l = this.add(spec.name, 'vxlan', spec.mac, false);
    const v: LinkInfo = { ...l, mtu: spec.mtu, vxlan: { vni: spec.vni, local: spec.localIP, underlayIndex: spec.underlayIndex, port: spec.port, learning: spec.learning, gbp: spec.gbp } };
    this.links.set(spec.name, v);
    return v;
  }
  async setLinkUp(ref: number | { index: number }) { this.calls.push('up'); this.set(this.byRef(ref), { up: true }); }
  async setLinkDown(ref: number | { index: number }) { this.set(this.byRef(ref), { up: false }); }
  async setLinkMtu(ref: number | { index: number }, mtu: number) { this.calls.push(`mtu ${mtu}`); this.set(this.byRef(ref), { mtu }); }
  async setLinkMac(ref: number | { index: number }, mac: string) { this.calls.push(`mac ${mac}`); this.set(this.byRef(ref), { mac }); }
  async deleteLink(ref: number | { index: number }) { const l = this.byRef(ref); this.calls.push(`delete ${l.name}`); this.links.delete(l.name); }
  async isOnLink(_ip: string, _via?: number) { return false; }
}

class FakePump implements NativePump {
  tables: NativePumpEntry[][] = [];
  running = true;
  error: string | null = null;
  closed = false;
  counts: NativePumpCounters = { ...ZERO };
  constructor(readonly opts: NativePumpOptions) {}
  setPeers(entries: readonly NativePumpEntry[]) { this.tables.push([...entries]); }
  counters() { return { ...this.counts }; }
  status() { return { running: this.running && !this.closed, error: this.error, lastNotPeer: null, vnetHdr: true }; }
  close() { this.closed = true; }
}

function fakePumps(nl: FakeNl): { factory: PumpFactory; opened: FakePump[] } {
  const opened: FakePump[] = [];
  const factory: PumpFactory = (opts) => {
    const p = new FakePump(opts);
    opened.push(p);
    // Like TUNSETIFF: create the device if missing (a TAP gets a random MAC from the kernel).
    if (!nl.links.has(opts.device)) nl.add(opts.device, 'tun', opts.mode === 'vxlan' ? '5a:00:00:00:00:99' : null, false);
    return p;
  };
  return { factory, opened };
}

describe('pump peer table', () => {
  it('passes MAC entries lower-cased and subnets as address and prefix length', () => {
    assert.deepEqual(pumpEntries([
      { kind: 'mac', mac: '0A:BB:CC:DD:EE:02', dst: '10.250.0.12' },
      { kind: 'subnet', subnet: net('10.5.7.0/24'), dst: '10.250.0.13' },
    ]), [
      { mac: '0a:bb:cc:dd:ee:02', dst: '10.250.0.12' },
      { subnet: '10.5.7.0', prefixLen: 24, dst: '10.250.0.13' },
    ]);
  });

  it('moves kernel VXLAN FDB entries to the pump and keeps neighbours and routes as they are', () => {
    const d: DesiredState = {
      addresses: [net('10.5.1.0/32')],
      neighbours: [{ ip: '10.5.2.0', mac: '0a:00:00:00:00:02' }],
      fdb: [{ mac: '0A:00:00:00:00:02', dst: '10.250.0.12' }],
      routes: [{ dst: net('10.5.2.0/24'), gateway: '10.5.2.0', onlink: true, via: 'overlay' }],
      skipped: [],
    };
    const p = fdbToPump(d);
    assert.deepEqual(p.fdb, []);
    assert.deepEqual(p.pump, [{ kind: 'mac', mac: '0a:00:00:00:00:02', dst: '10.250.0.12' }]);
    assert.deepEqual([p.addresses, p.neighbours, p.routes], [d.addresses, d.neighbours, d.routes]);
  });

  it('reports only the drop counters that grew, not broadcasts', () => {
    const after = { ...ZERO, dropNotPeer: 5, dropBroadcast: 9, packetsIn: 100 };
    assert.deepEqual(dropIncreases(null, after), { dropNotPeer: 5 });
    assert.deepEqual(dropIncreases(after, { ...after, dropNotPeer: 7, dropBadVni: 1 }), { dropNotPeer: 2, dropBadVni: 1 });
    assert.deepEqual(dropIncreases(after, after), {});
  });
});

describe('PumpDevice', () => {
  const spec = { mode: 'vxlan' as const, name: 'flannel.1', mtu: 1450, localIp: '10.250.0.11', port: 8472, vni: 1 };

  it('tells a TAP from a TUN and from other kinds', () => {
    const l = (kind: string | null, mac: string | null): LinkInfo => ({ index: 1, name: 'x', up: true, mtu: 1450, mac, kind, vxlan: null });
    assert.equal(deviceKindProblem(l('tun', '02:00:00:00:00:01'), 'vxlan'), null);
    assert.equal(deviceKindProblem(l('tun', null), 'udp'), null);
    assert.match(deviceKindProblem(l('vxlan', '02:00:00:00:00:01'), 'vxlan')!, /a vxlan device, want a TAP/);
    assert.match(deviceKindProblem(l('tun', null), 'vxlan')!, /TUN device, want a TAP/);
    assert.match(deviceKindProblem(l('tun', '02:00:00:00:00:01'), 'udp')!, /TAP device, want a TUN/);
  });

  it('opens the pump, then sets MAC, MTU and up over netlink, and hands over the peer table', async () => {
    const nl = new FakeNl();
    const { factory, opened } = fakePumps(nl);
    const dev = new PumpDevice({ nl, pumps: factory, reportIntervalMs: 0 });
    dev.setPeers([{ kind: 'mac', mac: '02:00:00:00:00:02', dst: '10.250.0.12' }]);
    const link = await dev.ensure(spec, '02:aa:00:00:00:01');
    assert.equal(opened.length, 1);
    assert.deepEqual({ ...opened[0]!.opts }, { mode: 'vxlan', device: 'flannel.1', localIp: '10.250.0.11', port: 8472, mtu: 1450, vni: 1, offloads: true });
    assert.deepEqual(opened[0]!.tables, [[{ mac: '02:00:00:00:00:02', dst: '10.250.0.12' }]]);
    assert.deepEqual([link.mac, link.mtu, link.up], ['02:aa:00:00:00:01', 1450, true]);
    assert.equal(dev.mac, '02:aa:00:00:00:01');
    assert.equal(dev.problem(link), null);
    await dev.close();
  });

  it('replaces a kernel VXLAN device of the same name and keeps its MAC as the VtepMAC', async () => {
    const nl = new FakeNl();
    nl.add('flannel.1', 'vxlan', '0e:11:22:33:44:55');
    const { factory } = fakePumps(nl);
    const dev = new PumpDevice({ nl, pumps: factory, reportIntervalMs: 0 });
    const link = await dev.ensure(spec);
    assert.ok(nl.calls.includes('delete flannel.1'));
    assert.equal(link.kind, 'tun');
    assert.equal(link.mac, '0e:11:22:33:44:55');
    await dev.close();
  });

  it('reopens a pump whose thread died and recreates a deleted device with the same MAC and table', async () => {
    const nl = new FakeNl();
    const { factory, opened } = fakePumps(nl);
    const dev = new PumpDevice({ nl, pumps: factory, reportIntervalMs: 0 });
    dev.setPeers([{ kind: 'mac', mac: '02:00:00:00:00:02', dst: '10.250.0.12' }]);
    const first = await dev.ensure(spec);
    nl.links.delete('flannel.1');          // ip link del flannel.1
    opened[0]!.running = false;            // the thread saw EBADFD and stopped
    opened[0]!.error = 'read from flannel.1: File descriptor in bad state';
    assert.match(dev.problem(first)!, /not running: read from flannel.1/);
    const again = await dev.ensure(spec);
    assert.equal(opened.length, 2);
    assert.ok(opened[0]!.closed);
    assert.equal(again.mac, first.mac);
    assert.deepEqual(opened[1]!.tables.at(-1), [{ mac: '02:00:00:00:00:02', dst: '10.250.0.12' }]);
    await dev.close();
    assert.ok(opened[1]!.closed);
  });

  it('does not push an unchanged table again (the reconciler calls on every run)', async () => {
    const nl = new FakeNl();
    const { factory, opened } = fakePumps(nl);
    const dev = new PumpDevice({ nl, pumps: factory, reportIntervalMs: 0 });
    await dev.ensure(spec);
    const t = [{ kind: 'mac' as const, mac: '02:00:00:00:00:02', dst: '10.250.0.12' }];
    dev.setPeers(t);
    dev.setPeers(t);
    dev.setPeers([]);
    assert.equal(opened[0]!.tables.length, 3); // the empty table at open, t, then []
    await dev.close();
  });

  it('names the port in use when the socket cannot bind', async () => {
    const nl = new FakeNl();
    const factory: PumpFactory = () => {
      throw Object.assign(new Error('open vxlan pump on flannel.1: bind UDP 10.250.0.11:8472: Address already in use'), { code: 'EADDRINUSE' });
    };
    const dev = new PumpDevice({ nl, pumps: factory, reportIntervalMs: 0 });
    await assert.rejects(dev.ensure(spec), /user-space data path on flannel.1: .*Address already in use \(another program, or a kernel VXLAN device, uses UDP port 8472\)/);
  });
});

describe('UserspaceVxlanBackend (--vxlan-fallback=force)', () => {
  it('announces itself as vxlan with its VtepMAC and WeftDatapath, MTU underlay − 50', async () => {
    const nl = new FakeNl();
    const { factory } = fakePumps(nl);
    const b = new UserspaceVxlanBackend({ nl, config: vxConfig, pumps: factory, vtepMac: '02:aa:00:00:00:01', reportIntervalMs: 0 });
    const setup = await b.ensureDevice(underlay);
    assert.deepEqual(setup, { backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: '02:aa:00:00:00:01', WeftDatapath: 'userspace' }, mtu: 1450 });
    assert.equal(b.dataPath, 'userspace');
    assert.ok(hasOnLinkPeers(b), 'DirectRouting lookups find the capability (it is no VxlanBackend)');
    await b.close();
  });

  it('wants kernel VXLAN\'s neighbours and routes, with the FDB in the pump', () => {
    const nl = new FakeNl();
    const b = new UserspaceVxlanBackend({ nl, config: vxConfig, reportIntervalMs: 0 });
    const own = lease('10.5.1.0/24', '10.250.0.11', '02:00:00:00:00:01');
    const peer = lease('10.5.2.0/24', '10.250.0.12', '02:00:00:00:00:02');
    const d = b.desired(own, [peer]);
    assert.deepEqual(d.neighbours, [{ ip: '10.5.2.0', mac: '02:00:00:00:00:02' }]);
    assert.deepEqual(d.routes, [{ dst: net('10.5.2.0/24'), gateway: '10.5.2.0', onlink: true, via: 'overlay' }]);
    assert.deepEqual(d.fdb, []);
    assert.deepEqual(d.pump, [{ kind: 'mac', mac: '02:00:00:00:00:02', dst: '10.250.0.12' }]);
  });

  it('refuses GBP, which the fallback cannot speak', async () => {
    const b = new UserspaceVxlanBackend({ nl: new FakeNl(), config: { ...vxConfig, gbp: true }, reportIntervalMs: 0 });
    await assert.rejects(b.ensureDevice(underlay), /GBP is not supported by the user-space VXLAN fallback/);
  });
});

describe('AutoVxlanBackend (--vxlan-fallback=auto)', () => {
  it('is plain kernel VXLAN when the kernel creates the device', async () => {
    const nl = new FakeNl();
    const { factory, opened } = fakePumps(nl);
    const b = new AutoVxlanBackend({ nl, config: vxConfig, pumps: factory, reportIntervalMs: 0 });
    const setup = await b.ensureDevice(underlay);
    assert.equal(nl.links.get('flannel.1')!.kind, 'vxlan');
    assert.equal((setup.backendData as Record<string, unknown>).WeftDatapath, undefined);
    assert.equal(b.dataPath, 'kernel');
    assert.equal(opened.length, 0);
    assert.equal(b.desired(lease('10.5.1.0/24', '10.250.0.11', '02:00:00:00:00:01'), []).pump, undefined);
  });

  it('falls back to the pump when creating the device fails, keeping the previous VtepMAC', async () => {
    const nl = new FakeNl();
    nl.createError = new NetlinkError('create vxlan device flannel.1', 'EOPNOTSUPP', new Error('Operation not supported'));
    const { factory, opened } = fakePumps(nl);
    const logged: string[] = [];
    const log = { debug() {}, info() {}, warn: (m: string) => logged.push(m), error() {}, child() { return log; } };
    const b = new AutoVxlanBackend({ nl, config: vxConfig, pumps: factory, vtepMac: '02:aa:00:00:00:07', log, reportIntervalMs: 0 });
    const setup = await b.ensureDevice(underlay);
    assert.equal(opened.length, 1);
    assert.deepEqual(setup.backendData, { VNI: 1, VtepMAC: '02:aa:00:00:00:07', WeftDatapath: 'userspace' });
    assert.equal(b.dataPath, 'userspace');
    assert.match(b.dataPathInfo().reason!, /kernel VXLAN unavailable: .*EOPNOTSUPP/);
    assert.ok(logged.some((m) => /cannot create the kernel VXLAN device flannel.1 .*falling back to the user-space VXLAN data path/.test(m)), logged.join('\n'));
    // Stays in user space: a later ensureDevice does not try the kernel again.
    nl.createError = null;
    await b.ensureDevice(underlay);
    assert.equal(nl.calls.filter((c) => c.startsWith('createVxlan')).length, 1);
    assert.equal(nl.links.get('flannel.1')!.kind, 'tun');
    await b.close();
  });

  it('delegates: DirectRouting on-link lookups go to the kernel backend, then to the fallback, and it is no VxlanBackend', async () => {
    const nl = new FakeNl();
    const onLink: string[] = [];
    nl.isOnLink = async (ip: string) => { onLink.push(ip); return ip === '10.250.0.12'; };
    nl.createError = new NetlinkError('create vxlan device flannel.1', 'EOPNOTSUPP', new Error('Operation not supported'));
    const { factory } = fakePumps(nl);
    const b = new AutoVxlanBackend({ nl, config: { ...vxConfig, directRouting: true }, pumps: factory, reportIntervalMs: 0 });
    assert.ok(hasOnLinkPeers(b));
    assert.equal((b as unknown) instanceof VxlanBackend, false);
    const peers = [lease('10.5.2.0/24', '10.250.0.12', '02:00:00:00:00:02'), lease('10.5.3.0/24', '10.250.0.13', '02:00:00:00:00:03')];
    assert.deepEqual([...await b.onLinkPeers(peers, underlay)], ['10.250.0.12']);
    await b.ensureDevice(underlay);
    assert.equal(b.dataPath, 'userspace');
    assert.deepEqual([...await b.onLinkPeers(peers, underlay)], ['10.250.0.12']);
    assert.equal(onLink.length, 4);
    // On-link peers get a direct route, the others the overlay (pump) route.
    const d = b.desired(lease('10.5.1.0/24', '10.250.0.11', '02:00:00:00:00:01'), peers, { onLinkPublicIPs: new Set(['10.250.0.12']) });
    assert.deepEqual(d.routes.map((r) => r.via ?? 'overlay'), ['underlay', 'overlay']);
    await b.close();
  });

  it('does not fall back for failures other than creating the device', async () => {
    const nl = new FakeNl();
    nl.getLink = async () => { throw new NetlinkError('get link flannel.1', 'ETIMEDOUT', new Error('timeout')); };
    const { factory, opened } = fakePumps(nl);
    const b = new AutoVxlanBackend({ nl, config: vxConfig, pumps: factory, reportIntervalMs: 0 });
    await assert.rejects(b.ensureDevice(underlay), /ETIMEDOUT/);
    assert.equal(opened.length, 0);
  });
});

describe('lease JSON of a fallback host', () => {
  it('keeps WeftDatapath after VNI and VtepMAC, and kernel hosts stay byte-equal to flannel', () => {
    const data = { WeftDatapath: 'userspace', VtepMAC: '02:AA:00:00:00:01', VNI: 1 };
    const text = encodeLeaseAttrs({ PublicIP: '10.250.0.11', PublicIPv6: null, BackendType: 'vxlan', BackendData: data });
    assert.equal(text, '{"PublicIP":"10.250.0.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:aa:00:00:00:01","WeftDatapath":"userspace"}}');
    assert.deepEqual(decodeLeaseAttrs('k', text).BackendData, { VNI: 1, VtepMAC: '02:aa:00:00:00:01', WeftDatapath: 'userspace' });
    const kernel = encodeLeaseAttrs({ PublicIP: '10.250.0.12', PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: '02:aa:00:00:00:02' } });
    assert.equal(kernel, '{"PublicIP":"10.250.0.12","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:aa:00:00:00:02"}}');
  });
});

describe('Reconciler with a user-space data path', () => {
  it('hands the pump its table and neither lists nor writes kernel FDB entries', async () => {
    const tap: LinkInfo = { index: 5, name: 'flannel.1', up: true, mtu: 1450, mac: '02:00:00:00:00:01', kind: 'tun', vxlan: null };
    const ops: string[] = [];
    const nl: ReconcilerNetlink = {
      getLink: async () => tap,
      listAddresses: async () => [],
      listNeighbours: async () => [],
      listFdb: async () => { ops.push('listFdb'); return [{ ifindex: 5, mac: '33:33:00:00:00:01', dst: null, permanent: true, self: true }]; },
      listRoutes: async () => [],
      addAddress: async () => { ops.push('addAddress'); },
      deleteAddress: async () => { ops.push('deleteAddress'); },
      replaceNeighbour: async () => { ops.push('neighbour'); },
      deleteNeighbour: async () => { ops.push('deleteNeighbour'); },
      replaceFdb: async () => { ops.push('replaceFdb'); },
      deleteFdb: async () => { ops.push('deleteFdb'); },
      replaceRoute: async () => { ops.push('route'); },
      deleteRoute: async () => { ops.push('deleteRoute'); },
      monitor: () => ({ close() {} }),
    };
    const applied: unknown[] = [];
    const backend: Backend = {
      type: 'vxlan', deviceName: 'flannel.1',
      ensureDevice: async () => ({ backendType: 'vxlan', backendData: {}, mtu: 1450 }),
      desired: () => { throw new Error('unused'); },
      applyPump: (e) => { applied.push(e); ops.push('applyPump'); },
      close: async () => {},
    };
    const r = new Reconciler({ nl, backend, underlay });
    r.setDesired({
      addresses: [net('10.5.1.0/32')],
      neighbours: [{ ip: '10.5.2.0', mac: '02:00:00:00:00:02' }],
      fdb: [],
      routes: [{ dst: net('10.5.2.0/24'), gateway: '10.5.2.0', onlink: true, via: 'overlay' }],
      pump: [{ kind: 'mac', mac: '02:00:00:00:00:02', dst: '10.250.0.12' }],
    });
    await r.reconcile();
    assert.deepEqual(applied, [[{ kind: 'mac', mac: '02:00:00:00:00:02', dst: '10.250.0.12' }]]);
    assert.ok(!ops.includes('listFdb') && !ops.includes('deleteFdb') && !ops.includes('replaceFdb'), ops.join(' '));
    assert.ok(ops.indexOf('applyPump') < ops.indexOf('route'), 'the table is in before the route');
    await r.stop();
  });
});

describe('weft cleanup and the user-space data path', () => {
  it('removes the fallback\'s TAP flannel.<n> and legacy udp\'s TUN flannel0 too', () => {
    const l = (index: number, name: string, kind: string | null): LinkInfo => ({ index, name, up: true, mtu: 1450, mac: null, kind, vxlan: null });
    const links = [l(3, 'flannel.1', 'tun'), l(4, 'flannel0', 'tun'), l(5, 'flannel0', 'vxlan'), l(6, 'tap0', 'tun'), l(7, 'flannel.2', 'vxlan')];
    assert.deepEqual(overlayDevices(links, null).map((x) => x.index), [3, 4, 7]);
  });
});
