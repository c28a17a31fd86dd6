/**
 * Per-event cost of one daemon (issue #14, "O(change) per event"): one `Weftd` against an
 * in-memory kernel and an in-memory lease registry, N peers already programmed, then J peer
 * joins one after another, each timed from the lease write to its route in the kernel. What is
 * printed is the daemon's CPU per join (process CPU over the joins ÷ joins; this process runs
 * nothing else) and the wall time per join, for N = 10 / 100 / 1000: a per-event cost that does
 * not grow with N is what the issue asks for. No root, no sockets, no etcd: the real-kernel
 * figure is `npm run bench` ("1000 peers programmed").
 *
 * MemoryKernel is a model that copies and scans arrays (a route add is O(routes) there and
 * allocates a new array: its own CPU and garbage grow with N, and are not the daemon's). So the
 * per-peer objects (neighbours, FDB entries, routes into the Network) live here in maps
 * (MapKernel, O(1) per write, notifications as MemoryKernel sends them), and the time spent inside
 * the kernel's methods is measured (wall time of each outermost call: they are synchronous up to
 * their first await) and printed apart: "daemon CPU/join" is the process's CPU per join minus it.
 * `--kernel=memory` runs the plain MemoryKernel instead.
 *
 *   node dist/bench/hot-path.js [--peers=10,100,1000] [--joins=200] [--kernel=map|memory] [--json]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseDaemonOptions } from '../src/config/options';
import { Weftd } from '../src/daemon/weftd';
import { parseCidr } from '../src/ip';
import { MemoryLeaseRegistry } from '../src/lease/memory-registry';
import type { LeaseRegistry } from '../src/lease/registry';
import { silentLogger } from '../src/log';
import { MemoryKernel } from '../src/netlink/memory-kernel';
import type { LinkRef } from '../src/netlink/client';
import type { NetlinkError } from '../src/netlink/errors';
import { MAIN_TABLE, RTN_UNICAST, type ChangeEvent, type FdbEntry, type NeighbourEntry, type RouteEntry, type RouteSpec } from '../src/netlink/types';
import type { IPFamily } from '../src/ip';
import type { Notifier } from '../src/daemon/notify';

const CONFIG = JSON.stringify({ Network: '10.0.0.0/8', SubnetLen: 24, Backend: { Type: 'vxlan', VNI: 1 } });

/** The n-th peer's subnet key and lease value (10.<hi>.<lo>.0/24, public 172.16.x.y). */
function peer(n: number): { key: string; value: string; dst: string } {
  const hi = 1 + Math.floor(n / 256);
  const lo = n % 256;
  const mac = `aa:bb:cc:${(n >> 16 & 255).toString(16).padStart(2, '0')}:${(n >> 8 & 255).toString(16).padStart(2, '0')}:${(n & 255).toString(16).padStart(2, '0')}`;
  return {
    key: `10.${hi}.${lo}.0-24`,
    dst: `10.${hi}.${lo}.0`,
    value: `{"PublicIP":"172.16.${hi}.${lo}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"${mac}"}}`,
  };
}

/** The registry as a host sees it: close() leaves the shared store open. */
function hostView(store: MemoryLeaseRegistry): LeaseRegistry {
  return new Proxy(store, {
    get(target, prop) {
      if (prop === 'close') return async (): Promise<void> => undefined;
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

const quietNotifier: Notifier = { ready: () => undefined, status: () => undefined, stopping: () => undefined };

/** MemoryKernel's private helpers this subclass reuses (notifications as it batches them, its errors). */
interface KernelInternals {
  notify(event: ChangeEvent): void;
  error(operation: string, errno: string): NetlinkError;
}

/**
 * MemoryKernel with the peers' objects in maps: neighbours, FDB entries and the /24 routes inside
 * 10.0.0.0/8 (the bench's Network); everything else (links, addresses, the default route) is
 * MemoryKernel's. Same answers and notifications for what weft does here, O(1) per write.
 */
class MapKernel extends MemoryKernel {
  private readonly neighbourMap = new Map<string, NeighbourEntry>();
  private readonly fdbMap = new Map<string, FdbEntry>();
  private readonly routeMap = new Map<string, RouteEntry>();
  private get internals(): KernelInternals { return this as unknown as KernelInternals; }
  private static index(link: LinkRef): number { return typeof link === 'number' ? link : link.index; }
  private static peerRoute(spec: RouteSpec): boolean { return spec.dst.prefixLen === 24 && typeof spec.dst.ip === 'number' && spec.dst.ip >>> 24 === 10; }

  override async listNeighbours(ifindex?: number, family: IPFamily = 4): Promise<NeighbourEntry[]> {
    const mine = [...this.neighbourMap.values()].filter((n) => family === 4 && (ifindex === undefined || n.ifindex === ifindex));
    return [...await super.listNeighbours(ifindex, family), ...mine];
  }
  override async replaceNeighbour(link: LinkRef, ip: string, mac: string): Promise<void> {
    const ifindex = MapKernel.index(link);
    this.neighbourMap.set(`${ifindex} ${ip}`, { ifindex, ip, mac, permanent: true });
    this.internals.notify({ kind: 'neighbour', removed: false, ifindex, ip, mac, permanent: true });
  }
  override async deleteNeighbour(link: LinkRef, ip: string): Promise<void> {
    const ifindex = MapKernel.index(link);
    const found = this.neighbourMap.get(`${ifindex} ${ip}`);
    if (!found) throw this.internals.error(`delete neighbour ${ip}`, 'ENOENT');
    this.neighbourMap.delete(`${ifindex} ${ip}`);
    this.internals.notify({ kind: 'neighbour', removed: true, ifindex, ip, mac: found.mac });
  }
  override async listFdb(ifindex?: number): Promise<FdbEntry[]> {
    return [...await super.listFdb(ifindex), ...[...this.fdbMap.values()].filter((f) => ifindex === undefined || f.ifindex === ifindex)];
  }
  override async replaceFdb(link: LinkRef, mac: string, dst: string): Promise<void> {
    const ifindex = MapKernel.index(link);
    this.fdbMap.set(`${ifindex} ${mac}`, { ifindex, mac, dst, permanent: true, self: true });
    this.internals.notify({ kind: 'fdb', removed: false, ifindex, mac, dst, permanent: true });
  }
  override async deleteFdb(link: LinkRef, mac: string, dst: string | null): Promise<void> {
    const ifindex = MapKernel.index(link);
    const found = this.fdbMap.get(`${ifindex} ${mac}`);
    if (!found || (dst !== null && found.dst !== dst)) throw this.internals.error(`delete FDB entry ${mac}`, 'ENOENT');
    this.fdbMap.delete(`${ifindex} ${mac}`);
    this.internals.notify({ kind: 'fdb', removed: true, ifindex, mac, dst: found.dst });
  }
  override async listRoutes(table: number = MAIN_TABLE, family: IPFamily = 4): Promise<RouteEntry[]> {
    return [...await super.listRoutes(table, family), ...(table === MAIN_TABLE && family === 4 ? this.routeMap.values() : [])];
  }
  override async replaceRoute(spec: RouteSpec): Promise<void> {
    if (!MapKernel.peerRoute(spec)) return super.replaceRoute(spec);
    this.putPeerRoute(spec);
  }
  override async addRoute(spec: RouteSpec): Promise<void> {
    if (!MapKernel.peerRoute(spec)) return super.addRoute(spec);
    if (this.routeMap.has(String(spec.dst.ip))) throw this.internals.error('add route', 'EEXIST');
    this.putPeerRoute(spec);
  }
  override async deleteRoute(spec: RouteSpec): Promise<void> {
    if (!MapKernel.peerRoute(spec)) return super.deleteRoute(spec);
    const found = this.routeMap.get(String(spec.dst.ip));
    if (!found) throw this.internals.error('delete route', 'ESRCH');
    this.routeMap.delete(String(spec.dst.ip));
    this.internals.notify({ kind: 'route', removed: true, table: MAIN_TABLE, oif: found.oif, dst: found.dst, gateway: found.gateway });
  }
  private putPeerRoute(spec: RouteSpec): void {
    const r: RouteEntry = { dst: spec.dst, gateway: spec.gateway, oif: spec.oif, onlink: spec.onlink, table: MAIN_TABLE, priority: 0, protocol: 3, type: RTN_UNICAST };
    this.routeMap.set(String(spec.dst.ip), r);
    this.internals.notify({ kind: 'route', removed: false, table: MAIN_TABLE, oif: r.oif, dst: r.dst, gateway: r.gateway });
  }
}

interface Figure {
  peers: number; joins: number; cpuUsPerJoin: number; kernelModelUsPerJoin: number; daemonUsPerJoin: number;
  wallUsP50: number; wallUsP99: number; load1: number;
}

/** Time (µs) spent inside `kernel`'s methods, outermost calls only (a method calling another counts once). */
function meterKernel(kernel: MemoryKernel): { readonly us: () => number } {
  let us = 0;
  let depth = 0;
  const target = kernel as unknown as Record<string, unknown>;
  const names = new Set([...Object.getOwnPropertyNames(MemoryKernel.prototype), ...Object.getOwnPropertyNames(Object.getPrototypeOf(kernel))]);
  for (const name of names) {
    const fn = target[name];
    if (name === 'constructor' || typeof fn !== 'function') continue;
    const method = fn as (...args: unknown[]) => unknown;
    target[name] = function metered(this: unknown, ...args: unknown[]): unknown {
      if (depth > 0) return method.apply(this, args);
      depth++;
      // Wall time of the synchronous part (where the async methods do all their work): a clock
      // read costs ~50 ns, getrusage() a system call per read.
      const t0 = performance.now();
      try {
        return method.apply(this, args);
      } finally {
        us += (performance.now() - t0) * 1000;
        depth--;
      }
    };
  }
  return { us: () => us };
}

async function run(peers: number, joins: number, kernelKind: 'map' | 'memory'): Promise<Figure> {
  const dir = mkdtempSync(join(tmpdir(), 'weft-hotpath-'));
  const store = new MemoryLeaseRegistry();
  store.setConfig(CONFIG);
  for (let i = 0; i < peers; i++) { const p = peer(i); store.putRaw(p.key, p.value); }
  const kernel = kernelKind === 'map' ? new MapKernel() : new MemoryKernel();
  const meter = meterKernel(kernel);
  const eth0 = kernel.addLink({ name: 'eth0', mtu: 1500 });
  await kernel.addAddress(eth0, '192.168.50.1', 24);
  await kernel.replaceRoute({ dst: parseCidr('0.0.0.0/0')!, gateway: '192.168.50.254', oif: eth0.index, onlink: false });
  // Resolve the waiter of a join when its route is written (no polling: polling would be O(peers)).
  const waiting = new Map<string, () => void>();
  const seen = (spec: RouteSpec): void => {
    const k = String(spec.dst.ip);
    const w = waiting.get(k);
    if (w) { waiting.delete(k); w(); }
  };
  const replaceRoute = kernel.replaceRoute.bind(kernel);
  const addRoute = kernel.addRoute.bind(kernel);
  kernel.replaceRoute = async (spec: RouteSpec): Promise<void> => { await replaceRoute(spec); seen(spec); };
  kernel.addRoute = async (spec: RouteSpec): Promise<void> => { await addRoute(spec); seen(spec); };
  const parsed = parseDaemonOptions(['--iface=eth0', `--subnet-file=${join(dir, 'subnet.env')}`, '--vxlan-fallback=off', '--etcd-endpoints=http://127.0.0.1:2379'], {});
  if (parsed.kind !== 'run') throw new Error('options did not parse');
  const daemon = new Weftd(parsed.options, { log: silentLogger, notifier: quietNotifier, makeRegistry: () => hostView(store), makeNetlink: () => kernel, departedGraceMs: 0 });
  const stop = new AbortController();
  const done = daemon.run(stop.signal);
  const t0 = Date.now();
  while (daemon.snapshot().phase !== 'ready') {
    if (Date.now() - t0 > 60_000) throw new Error(`daemon not ready after 60 s with ${peers} peers`);
    await new Promise((r) => setTimeout(r, 5));
  }
  const join1 = async (n: number): Promise<number> => {
    const p = peer(n);
    const programmed = new Promise<void>((resolve) => waiting.set(String(parseCidr(`${p.dst}/24`)!.ip), resolve));
    const start = process.hrtime.bigint();
    store.putRaw(p.key, p.value);
    await programmed;
    return Number(process.hrtime.bigint() - start) / 1000;
  };
  const warm = Math.min(50, joins);
  for (let i = 0; i < warm; i++) await join1(peers + i);
  const walls: number[] = [];
  const cpu0 = process.cpuUsage();
  const kernel0 = meter.us();
  for (let i = 0; i < joins; i++) walls.push(await join1(peers + warm + i));
  const cpu = process.cpuUsage(cpu0);
  const kernelUs = meter.us() - kernel0;
  stop.abort();
  await done.catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
  walls.sort((a, b) => a - b);
  return {
    peers, joins,
    cpuUsPerJoin: (cpu.user + cpu.system) / joins,
    kernelModelUsPerJoin: kernelUs / joins,
    daemonUsPerJoin: (cpu.user + cpu.system - kernelUs) / joins,
    wallUsP50: walls[Math.floor(walls.length / 2)]!,
    wallUsP99: walls[Math.min(walls.length - 1, Math.floor(walls.length * 0.99))]!,
    load1: loadavg()[0]!,
  };
}

async function main(): Promise<void> {
  const arg = (name: string): string | undefined => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
  const sizes = (arg('peers') ?? '10,100,1000').split(',').map(Number);
  const joins = Number(arg('joins') ?? '200');
  const figures: Figure[] = [];
  const kernelKind = arg('kernel') === 'memory' ? 'memory' : 'map';
  for (const n of sizes) figures.push(await run(n, joins, kernelKind));
  if (process.argv.includes('--json')) { console.log(JSON.stringify(figures)); return; }
  console.log('peers  joins  CPU/join (µs)  of which kernel model  daemon CPU/join (µs)  wall p50 (µs)  wall p99 (µs)  load1');
  for (const f of figures) {
    console.log(`${String(f.peers).padStart(5)}  ${String(f.joins).padStart(5)}  ${f.cpuUsPerJoin.toFixed(0).padStart(13)}  ${f.kernelModelUsPerJoin.toFixed(0).padStart(21)}  ` +
      `${f.daemonUsPerJoin.toFixed(0).padStart(20)}  ${f.wallUsP50.toFixed(0).padStart(13)}  ${f.wallUsP99.toFixed(0).padStart(13)}  ${f.load1.toFixed(2)}`);
  }
  console.log('target: daemon CPU/join <= 300 µs, flat in peers (issue #14)');
}

main().catch((err: unknown) => { console.error(err); process.exitCode = 1; });
