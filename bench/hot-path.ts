/**
 * Per-event cost of one daemon (issue #14, "O(change) per event"): one `Weftd` against an
 * in-memory kernel and an in-memory lease registry, N peers already programmed, then J peer
 * joins one after another, each timed from the lease write to its route in the kernel. What is
 * printed is the daemon's CPU per join (process CPU over the joins ÷ joins; this process runs
 * nothing else) and the wall time per join, for N = 10 / 100 / 1000: a per-event cost that does
 * not grow with N is what the issue asks for. No root, no sockets, no etcd: the real-kernel
 * figure is `npm run bench` ("1000 peers programmed").
 *
 * The in-memory kernel is a model that scans arrays (a route add is O(routes) there, O(1)-ish in
 * Linux's FIB trie), so its own CPU grows with N and is not the daemon's: the CPU spent inside its
 * methods is measured (process.cpuUsage around each outermost call) and printed apart; "daemon
 * CPU/join" is the process's CPU per join minus that.
 *
 *   node dist/bench/hot-path.js [--peers=10,100,1000] [--joins=200] [--json]
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
import type { RouteSpec } from '../src/netlink/types';
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

interface Figure {
  peers: number; joins: number; cpuUsPerJoin: number; kernelModelUsPerJoin: number; daemonUsPerJoin: number;
  wallUsP50: number; wallUsP99: number; load1: number;
}

/** CPU (µs) spent inside `kernel`'s methods, outermost calls only (a method calling another counts once). */
function meterKernel(kernel: MemoryKernel): { readonly us: () => number } {
  let us = 0;
  let depth = 0;
  const target = kernel as unknown as Record<string, unknown>;
  for (const name of Object.getOwnPropertyNames(MemoryKernel.prototype)) {
    const fn = target[name];
    if (name === 'constructor' || typeof fn !== 'function') continue;
    const method = fn as (...args: unknown[]) => unknown;
    target[name] = function metered(this: unknown, ...args: unknown[]): unknown {
      if (depth > 0) return method.apply(this, args);
      depth++;
      const t0 = process.cpuUsage();
      try {
        return method.apply(this, args); // the async methods' work happens before their first await
      } finally {
        const d = process.cpuUsage(t0);
        us += d.user + d.system;
        depth--;
      }
    };
  }
  return { us: () => us };
}

async function run(peers: number, joins: number): Promise<Figure> {
  const dir = mkdtempSync(join(tmpdir(), 'weft-hotpath-'));
  const store = new MemoryLeaseRegistry();
  store.setConfig(CONFIG);
  for (let i = 0; i < peers; i++) { const p = peer(i); store.putRaw(p.key, p.value); }
  const kernel = new MemoryKernel();
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
  for (const n of sizes) figures.push(await run(n, joins));
  if (process.argv.includes('--json')) { console.log(JSON.stringify(figures)); return; }
  console.log('peers  joins  CPU/join (µs)  of which kernel model  daemon CPU/join (µs)  wall p50 (µs)  wall p99 (µs)  load1');
  for (const f of figures) {
    console.log(`${String(f.peers).padStart(5)}  ${String(f.joins).padStart(5)}  ${f.cpuUsPerJoin.toFixed(0).padStart(13)}  ${f.kernelModelUsPerJoin.toFixed(0).padStart(21)}  ` +
      `${f.daemonUsPerJoin.toFixed(0).padStart(20)}  ${f.wallUsP50.toFixed(0).padStart(13)}  ${f.wallUsP99.toFixed(0).padStart(13)}  ${f.load1.toFixed(2)}`);
  }
  console.log('target: daemon CPU/join <= 300 µs, flat in peers (issue #14)');
}

main().catch((err: unknown) => { console.error(err); process.exitCode = 1; });
