/**
 * MemoryKernel keeps the kernel rules weft relies on (so that whole-daemon tests over it mean
 * something): cascades, route keys, errnos of a missing object, notifications per family.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseCidr } from '../../src/ip';
import { isGone } from '../../src/netlink/client';
import { errnoOf } from '../../src/netlink/errors';
import { MemoryKernel } from '../../src/netlink/memory-kernel';
import type { ChangeEvent } from '../../src/netlink/types';
import { settle } from './helpers/fakes';

const net = (s: string) => parseCidr(s, false)!;

async function kernelWithVxlan() {
  const k = new MemoryKernel();
  const eth0 = k.addLink({ name: 'eth0' });
  await k.addAddress(eth0, '192.168.1.10', 24);
  await k.replaceRoute({ dst: net('0.0.0.0/0'), gateway: '192.168.1.1', oif: eth0.index, onlink: false });
  const vx = await k.createVxlan({ name: 'flannel.1', vni: 1, localIP: '192.168.1.10', underlayIndex: eth0.index, port: 8472, learning: false, gbp: false, mtu: 1450, mac: '02:aa:00:00:00:01' });
  return { k, eth0, vx };
}

describe('MemoryKernel', () => {
  it('creates a vxlan device down, with its spec, and refuses a taken name with EEXIST', async () => {
    const { k, vx } = await kernelWithVxlan();
    assert.equal(vx.up, false);
    assert.deepEqual(vx.vxlan, { vni: 1, local: '192.168.1.10', underlayIndex: 2, port: 8472, learning: false, gbp: false });
    await assert.rejects(k.createVxlan({ name: 'flannel.1', vni: 1, localIP: '192.168.1.10', underlayIndex: 2, port: 8472, learning: false, gbp: false, mtu: 1450, mac: '02:aa:00:00:00:02' }),
      (e: unknown) => errnoOf(e) === 'EEXIST');
  });

  it('keys routes by (table, dst, metric): addRoute refuses a taken key, replaceRoute replaces it; IPv6 without a metric gets 1024', async () => {
    const { k, vx } = await kernelWithVxlan();
    const spec = { dst: net('10.5.2.0/24'), gateway: '10.5.2.0', oif: vx.index, onlink: true };
    await k.addRoute(spec);
    await assert.rejects(k.addRoute(spec), (e: unknown) => errnoOf(e) === 'EEXIST');
    await k.replaceRoute({ ...spec, gateway: '10.5.2.9' });
    assert.deepEqual((await k.listRoutes()).filter((r) => r.oif === vx.index).map((r) => r.gateway), ['10.5.2.9']);
    await k.replaceRoute({ dst: net('fd00:5:0:2::/64'), gateway: null, oif: vx.index, onlink: false });
    assert.equal((await k.listRoutes(254, 6))[0]!.priority, 1024);
    assert.equal((await k.listRoutes(254, 4)).some((r) => r.dst.prefixLen === 64), false, 'families apart');
  });

  it('rejects deleting what is not there with an errno isGone() accepts', async () => {
    const { k, vx } = await kernelWithVxlan();
    for (const call of [
      () => k.deleteRoute({ dst: net('10.5.9.0/24'), gateway: null, oif: vx.index, onlink: false }),
      () => k.deleteNeighbour(vx, '10.5.9.0'),
      () => k.deleteFdb(vx, '02:00:00:00:00:09', null),
      () => k.deleteAddress(vx, '10.5.1.0', 32),
      () => k.setLinkUp(99),
    ]) await assert.rejects(call(), (e: unknown) => isGone(e));
  });

  it('adds the connected route of an address and answers route lookups by longest prefix', async () => {
    const { k, eth0, vx } = await kernelWithVxlan();
    assert.ok((await k.listRoutes()).some((r) => r.oif === eth0.index && r.dst.prefixLen === 24 && r.protocol === 2));
    assert.equal(await k.isOnLink('192.168.1.20', eth0.index), true);
    assert.equal(await k.isOnLink('8.8.8.8'), false, 'via the default gateway');
    await k.replaceRoute({ dst: net('10.5.2.0/24'), gateway: '10.5.2.0', oif: vx.index, onlink: true });
    assert.deepEqual(await k.getRouteTo('10.5.2.7'), { oif: vx.index, gateway: '10.5.2.0', prefsrc: null });
    assert.equal(await k.defaultRouteInterface(), eth0.index);
    assert.equal(await k.defaultRouteInterface(6), null);
  });

  it('takes a deleted link\'s neighbours, FDB entries and routes with it, and notifies each', async () => {
    const { k, vx } = await kernelWithVxlan();
    await k.replaceNeighbour(vx, '10.5.2.0', '02:bb:00:00:00:02');
    await k.replaceFdb(vx, '02:bb:00:00:00:02', '192.168.1.20');
    await k.replaceRoute({ dst: net('10.5.2.0/24'), gateway: '10.5.2.0', oif: vx.index, onlink: true });
    const seen: ChangeEvent[] = [];
    k.monitor((b) => seen.push(...b.events));
    await k.deleteLink(vx);
    await settle();
    assert.equal(await k.getLink('flannel.1'), null);
    assert.deepEqual([await k.listNeighbours(), await k.listFdb(), (await k.listRoutes()).filter((r) => r.oif === vx.index)], [[], [], []]);
    assert.deepEqual(seen.map((e) => `${e.kind} ${e.removed}`), ['neighbour true', 'fdb true', 'route true', 'link true']);
  });

  it('notifies in batches, asynchronously, addresses and routes only of the monitor\'s family', async () => {
    const { k, vx } = await kernelWithVxlan();
    const v4: ChangeEvent[][] = [];
    const v6: ChangeEvent[][] = [];
    k.monitor((b) => v4.push([...b.events]));
    k.monitor((b) => v6.push([...b.events]), 6);
    await k.replaceRoute({ dst: net('10.5.2.0/24'), gateway: '10.5.2.0', oif: vx.index, onlink: true });
    await k.replaceRoute({ dst: net('fd00:5:0:2::/64'), gateway: null, oif: vx.index, onlink: false });
    await k.setLinkUp(vx);
    assert.equal(v4.length + v6.length, 0, 'not delivered synchronously');
    await settle();
    assert.deepEqual(v4.map((b) => b.map((e) => e.kind)), [['route', 'link']]);
    assert.deepEqual(v6.map((b) => b.map((e) => e.kind)), [['route', 'link']]);
  });

  it('fails the next call of a method on demand, once', async () => {
    const { k } = await kernelWithVxlan();
    k.failNext('listRoutes', 'ENOBUFS');
    await assert.rejects(k.listRoutes(), (e: unknown) => errnoOf(e) === 'ENOBUFS');
    assert.ok((await k.listRoutes()).length > 0);
  });
});
