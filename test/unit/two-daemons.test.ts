/**
 * Whole daemons in one process (wireguard-go's TestTwoDevicePing, for weft): three `Weftd`
 * instances, one in-memory kernel per "host" and one `MemoryLeaseRegistry` between them. No
 * root, no sockets, no etcd: what it proves is the wiring of lease → backend → reconciler end to
 * end — each host programs the others (route, neighbour, FDB), a route deleted by hand comes
 * back, a host whose lease goes is removed everywhere. Runs in well under a second.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseDaemonOptions } from '../../src/config/options';
import { Weftd } from '../../src/daemon/weftd';
import { formatIPv4, parseCidr } from '../../src/ip';
import { MemoryLeaseRegistry } from '../../src/lease/memory-registry';
import type { Lease } from '../../src/lease/types';
import { silentLogger } from '../../src/log';
import { MemoryKernel } from '../../src/netlink/memory-kernel';
import { hostView, RecordingNotifier, waitFor } from './helpers/fakes';

const CONFIG = JSON.stringify({ Network: '10.5.0.0/16', SubnetLen: 24, Backend: { Type: 'vxlan', VNI: 1 } });

interface Host {
  readonly name: string;
  readonly ip: string;
  readonly kernel: MemoryKernel;
  readonly daemon: Weftd;
  readonly stop: AbortController;
  readonly done: Promise<void>;
  readonly subnetFile: string;
}

/** A host with an underlay eth0 (its /24 and a default route) and a weftd on it, started. */
function startHost(store: MemoryLeaseRegistry, dir: string, n: number): Host {
  const kernel = new MemoryKernel();
  const ip = `192.168.50.${n}`;
  const eth0 = kernel.addLink({ name: 'eth0', mtu: 1500 });
  void kernel.addAddress(eth0, ip, 24);
  void kernel.replaceRoute({ dst: parseCidr('0.0.0.0/0')!, gateway: '192.168.50.254', oif: eth0.index, onlink: false });
  const subnetFile = join(dir, `host${n}.env`);
  const parsed = parseDaemonOptions(
    ['--iface=eth0', `--subnet-file=${subnetFile}`, '--vxlan-fallback=off', '--etcd-endpoints=http://127.0.0.1:2379'], {},
  );
  assert.equal(parsed.kind, 'run');
  const daemon = new Weftd(parsed.options, {
    log: silentLogger,
    notifier: new RecordingNotifier(),
    makeRegistry: () => hostView(store),
    makeNetlink: () => kernel,
    // A departed peer goes at once (the 3 s grace is departed.ts's own test).
    departedGraceMs: 0,
  });
  const stop = new AbortController();
  return { name: `host${n}`, ip, kernel, daemon, stop, done: daemon.run(stop.signal), subnetFile };
}

function leaseOf(h: Host): Lease {
  const l = h.daemon.snapshot().lease;
  assert.ok(l, `${h.name} holds a lease`);
  return l;
}

/** What `h` must have programmed for `peer`: route via its VTEP address, neighbour, FDB. */
async function programs(h: Host, peer: Host): Promise<boolean> {
  const lease = peer.daemon.snapshot().lease;
  if (!lease) return false;
  const data = lease.attrs.BackendData as { VtepMAC: string };
  const vtep = formatIPv4(lease.subnet.ip);
  const dev = await h.kernel.getLink('flannel.1');
  if (!dev) return false;
  const routes = await h.kernel.listRoutes();
  const neigh = await h.kernel.listNeighbours(dev.index);
  const fdb = await h.kernel.listFdb(dev.index);
  return (
    routes.some((r) => r.dst.ip === lease.subnet.ip && r.dst.prefixLen === 24 && r.gateway === vtep && r.oif === dev.index && r.onlink) &&
    neigh.some((x) => x.ip === vtep && x.mac === data.VtepMAC) &&
    fdb.some((f) => f.mac === data.VtepMAC && f.dst === peer.ip)
  );
}

/** Nothing of `gone`'s lease left in `h`'s kernel. */
async function forgot(h: Host, gone: Lease): Promise<boolean> {
  const mac = (gone.attrs.BackendData as { VtepMAC: string }).VtepMAC;
  const vtep = formatIPv4(gone.subnet.ip);
  return (
    !(await h.kernel.listRoutes()).some((r) => r.dst.ip === gone.subnet.ip) &&
    !(await h.kernel.listNeighbours()).some((x) => x.ip === vtep) &&
    !(await h.kernel.listFdb()).some((f) => f.mac === mac)
  );
}

describe('three weftd in one process (in-memory kernel and lease registry)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-two-daemons-'));
  const store = new MemoryLeaseRegistry();
  let hosts: Host[] = [];

  before(() => {
    store.setConfig(CONFIG);
    hosts = [1, 2, 3].map((n) => startHost(store, dir, n));
  });
  after(async () => {
    for (const h of hosts) h.stop.abort();
    await Promise.allSettled(hosts.map((h) => h.done));
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('converges: every host is ready, in its own subnet, and has each other host\'s route, neighbour and FDB entry', async () => {
    await waitFor(() => hosts.every((h) => h.daemon.phase === 'ready'), 'all three daemons ready');
    const subnets = hosts.map((h) => leaseOf(h).subnet.ip);
    assert.equal(new Set(subnets).size, 3, 'three distinct subnets');
    for (const h of hosts) for (const peer of hosts) if (peer !== h) await waitFor(() => programs(h, peer), `${h.name} programs ${peer.name}`);
    for (const h of hosts) {
      const dev = await h.kernel.getLink('flannel.1');
      assert.ok(dev?.up, `${h.name}: flannel.1 up`);
      assert.equal(dev.mtu, 1450);
      assert.equal(dev.mac, (leaseOf(h).attrs.BackendData as { VtepMAC: string }).VtepMAC, `${h.name}: the lease carries the device's MAC`);
      const env = readFileSync(h.subnetFile, 'utf8');
      assert.match(env, /^FLANNEL_NETWORK=10\.5\.0\.0\/16$/m);
      assert.match(env, new RegExp(`^FLANNEL_SUBNET=${formatIPv4(leaseOf(h).subnet.ip + 1).replace(/\./g, '\\.')}/24$`, 'm'));
      assert.match(env, /^FLANNEL_MTU=1450$/m);
    }
  });

  it('heals: a route, a neighbour and an FDB entry deleted from a host\'s kernel come back', async () => {
    const [a, b] = [hosts[0]!, hosts[1]!];
    const lease = leaseOf(b);
    const dev = (await a.kernel.getLink('flannel.1'))!;
    const route = (await a.kernel.listRoutes()).find((r) => r.dst.ip === lease.subnet.ip)!;
    const mac = (lease.attrs.BackendData as { VtepMAC: string }).VtepMAC;
    await a.kernel.deleteRoute({ dst: route.dst, gateway: route.gateway, oif: dev.index, onlink: route.onlink });
    await a.kernel.deleteNeighbour(dev, formatIPv4(lease.subnet.ip));
    await a.kernel.deleteFdb(dev, mac, b.ip);
    assert.equal(await programs(a, b), false, 'the deletions took');
    await waitFor(() => programs(a, b), `${a.name} repairs its objects for ${b.name}`);
  });

  it('heals: the vxlan device deleted by hand is recreated with the same MAC and reprogrammed', async () => {
    const a = hosts[0]!;
    const mac = (await a.kernel.getLink('flannel.1'))!.mac;
    await a.kernel.deleteLink((await a.kernel.getLink('flannel.1'))!);
    await waitFor(async () => (await a.kernel.getLink('flannel.1'))?.up === true, 'flannel.1 back and up');
    assert.equal((await a.kernel.getLink('flannel.1'))!.mac, mac);
    for (const peer of hosts.slice(1)) await waitFor(() => programs(a, peer), `${a.name} programs ${peer.name} again`);
  });

  it('departs: a host that stops and whose lease is deleted is removed from the others\' kernels', async () => {
    const gone = hosts[2]!;
    const lease = leaseOf(gone);
    gone.stop.abort();
    await gone.done;
    // Shutdown leaves the lease (a restart re-adopts it): the host is gone when its key is.
    assert.ok(store.deleteRaw(lease.key), 'the lease key existed');
    for (const h of hosts.slice(0, 2)) await waitFor(() => forgot(h, lease), `${h.name} forgets ${gone.name}`);
    // The two left still program each other.
    assert.ok(await programs(hosts[0]!, hosts[1]!));
    assert.ok(await programs(hosts[1]!, hosts[0]!));
  });
});
