/**
 * `weft cleanup`: remove what weftd created on this host, for decommissioning it (or moving it
 * to another network). weftd itself never removes any of it — stopping or restarting weftd must
 * not cut traffic — so this is the one place that does:
 *
 *   1. with --release-lease: this host's key in etcd (the subnet in subnet.env, only if its
 *      PublicIP is an address of this host) and the etcd lease holding it — first, so that an
 *      unreachable etcd stops the command before anything else is gone;
 *   2. the VXLAN device(s) flannel.<VNI>; the kernel removes the routes, neighbours and FDB
 *      entries on them with the device;
 *   3. DirectRouting and host-gw routes: main-table routes via a gateway into the flannel Network,
 *      and into the IPv6Network (FLANNEL_IPV6_NETWORK) on a dual-stack or IPv6-only host;
 *   4. weft's iptables chains WEFT-POSTRTG (nat) and WEFT-FWD (filter) and the jumps to them;
 *   5. the subnet file.
 *
 * Kernel objects go through NetlinkClient (no `ip` commands); iptables through the same runner
 * and planner the daemon uses. A weftd still running in this network namespace would put
 * everything back within a second, so cleanup refuses then (unless --force).
 */
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { DEFAULT_SUBNET_FILE, formatEtcdFlagsHelp, parseEtcdFlags } from '../config/options';
import type { EtcdFlags } from '../config/types';
import { readSubnetEnv } from '../daemon/subnetenv';
import { describeError, WeftError } from '../errors';
import { formatIPv4Cidr, netContainsNet, parseCidr, parseIPv4Cidr, type IPNet } from '../ip';
import { EMPTY_RULESET, parseIptablesSave, planRestore, WEFT_CHAINS } from '../iptables/rules';
import { BinaryIptablesRunner, type IptablesRunner } from '../iptables/runner';
import { formatSubnetKey } from '../lease/codec';
import type { LeaseRegistry } from '../lease/registry';
import { isReservation, type IPv4Net } from '../lease/types';
import { silentLogger } from '../log';
import { NetlinkClient } from '../netlink/client';
import { RTPROT_KERNEL, type LinkInfo, type RouteEntry } from '../netlink/types';
import type { CliIO } from './io';
import { createLeaseRegistry } from '../lease/create-registry';
import { DEFAULT_RUN_DIR as DEFAULT_WG_RUN_DIR, stopWireguardGo } from '../backend/wireguard/wggo';

export const CLEANUP_USAGE = `usage: weft cleanup [--release-lease] [--subnet-file FILE] [--device NAME] [--network CIDR]
                    [--ipv6-network CIDR] [--dry-run] [--force] [--etcd-* flags]

Removes what weftd created on this host: the VXLAN device flannel.<VNI> (with its routes,
neighbours and FDB entries), DirectRouting routes into the flannel network, the iptables chains
WEFT-POSTRTG and WEFT-FWD with the rules jumping to them, and the subnet file. Stop weftd first
(systemctl stop weftd); Docker keeps its bridge address until it is reconfigured.

  --release-lease     also delete this host's subnet lease in etcd (and revoke its etcd lease):
                      for a host that leaves for good
  --subnet-file FILE  the subnet file weftd wrote (default ${DEFAULT_SUBNET_FILE}); its
                      FLANNEL_NETWORK and FLANNEL_SUBNET say which routes and lease are ours
  --device NAME       the VXLAN device (default: every vxlan device named flannel.<number> or flannel-v6.<number>)
  --network CIDR      the flannel Network, when the subnet file is gone
  --ipv6-network CIDR the flannel IPv6Network (dual stack, IPv6-only), when the subnet file is gone
  --dry-run           print what would be removed, remove nothing
  --force             run even though a weftd is running in this network namespace

${formatEtcdFlagsHelp()}`;

/**
 * The overlay devices to remove: the named one, or every vxlan device called flannel.<n>, and the
 * persistent TUN/TAP devices of the user-space data path (flannel.<n> TAP, legacy udp's flannel0).
 */
export function overlayDevices(links: readonly LinkInfo[], name: string | null): LinkInfo[] {
  if (name !== null) return links.filter((l) => l.name === name);
  return links.filter((l) =>
    // flannel-v6.<n>: dual stack's / IPv6-only's IPv6 VXLAN device (docs/ipv6.md).
    (l.kind === 'vxlan' && /^flannel(-v6)?\.\d+$/.test(l.name)) || (l.kind === 'tun' && /^flannel(\.\d+|0)$/.test(l.name))
    // The wireguard backend's device: kernel WireGuard, or wireguard-go's TUN.
    || ((l.kind === 'wireguard' || l.kind === 'tun') && /^flannel-wg(-v6)?$/.test(l.name)));
}

/**
 * DirectRouting (and host-gw) routes weftd added: main-table unicast routes via a gateway whose
 * destination lies strictly inside the flannel Network or IPv6Network (the reconciler's ownership
 * rule; `network`'s family: a route of the other family never matches), skipping routes on
 * devices about to be deleted (they go with them) and the kernel's own.
 */
export function directRoutes(routes: readonly RouteEntry[], network: IPNet, deletedIndexes: ReadonlySet<number>): RouteEntry[] {
  return routes.filter((r) =>
    r.gateway !== null && r.protocol !== RTPROT_KERNEL && r.oif !== null && !deletedIndexes.has(r.oif)
    && r.dst.prefixLen > network.prefixLen && netContainsNet(network, r.dst));
}

/** PIDs of weftd processes in the same network namespace as this process (by /proc). */
export function weftdInThisNetns(): number[] {
  const mine = readlinkSafe('/proc/self/ns/net');
  if (mine === null) return [];
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      // weftd, weftd.js (dist/src/cli) or weftd.bundle.js (the one-file build the lab and releases
      // run): the program, or node's script — its first argument that is not an option of node's
      // (e.g. `node --trace-gc /usr/local/bin/weftd …` run by hand).
      const script = argv.slice(1).find((a) => !a.startsWith('-'));
      if (![argv[0], script].some((a) => a !== undefined && /(^|\/)weftd(\.bundle)?(\.js)?$/.test(a))) continue;
      if (readlinkSafe(`/proc/${entry}/ns/net`) === mine) out.push(Number(entry));
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return out;
}

function readlinkSafe(p: string): string | null {
  try {
    return readlinkSync(p);
  } catch {
    return null;
  }
}

export interface CleanupDeps {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly makeRegistry: (o: EtcdFlags) => LeaseRegistry;
  readonly makeNetlink: () => NetlinkClient;
  readonly iptables: IptablesRunner;
  /** The same chains in ip6tables (dual stack / IPv6-only hosts); absent: not looked at. */
  readonly ip6tables?: IptablesRunner;
  readonly runningWeftd: () => number[];
  readonly isRoot: () => boolean;
}

const defaultDeps: CleanupDeps = {
  env: process.env,
  makeRegistry: (o) => createLeaseRegistry(o),
  makeNetlink: () => new NetlinkClient(silentLogger),
  iptables: new BinaryIptablesRunner(),
  ip6tables: new BinaryIptablesRunner(undefined, { iptables: 'ip6tables', save: 'ip6tables-save', restore: 'ip6tables-restore' }),
  runningWeftd: weftdInThisNetns,
  isRoot: () => typeof process.geteuid !== 'function' || process.geteuid() === 0,
};

function usage(message: string): WeftError {
  return new WeftError('CONFIG_INVALID', `${message}; run 'weft cleanup --help' for usage`);
}

export async function runCleanupCommand(argv: readonly string[], io: CliIO, depsIn: Partial<CleanupDeps> = {}): Promise<number> {
  const deps: CleanupDeps = { ...defaultDeps, ...depsIn };
  const { options, rest } = parseEtcdFlags(argv, deps.env);
  let values;
  try {
    ({ values } = parseArgs({
      args: rest, strict: true, allowPositionals: false,
      options: {
        'release-lease': { type: 'boolean' }, 'subnet-file': { type: 'string' }, device: { type: 'string' },
        network: { type: 'string' }, 'ipv6-network': { type: 'string' }, 'dry-run': { type: 'boolean' }, force: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    throw usage(describeError(err));
  }
  if (values.help) {
    io.out(CLEANUP_USAGE);
    return 0;
  }
  const dryRun = values['dry-run'] === true;
  const say = (what: string): void => io.out(`${dryRun ? 'would remove' : 'removed'} ${what}`);
  if (!dryRun && !deps.isRoot()) throw new WeftError('NOT_ROOT', 'weft cleanup needs root (CAP_NET_ADMIN) to remove the device, routes and iptables rules; --dry-run works without');
  const running = deps.runningWeftd();
  if (running.length > 0 && values.force !== true) {
    throw new WeftError('CONFIG_INVALID', `weftd is running in this network namespace (pid ${running.join(', ')}) and would recreate everything at once: ` +
      'stop it first (systemctl stop weftd), or --force');
  }

  const subnetFile = values['subnet-file'] ?? DEFAULT_SUBNET_FILE;
  const env = await readSubnetEnv(subnetFile).catch((err: unknown) => {
    io.err(`warning: ignoring unreadable ${subnetFile}: ${describeError(err)}`);
    return null;
  });
  const network = networkFrom(values.network, env?.FLANNEL_NETWORK, subnetFile);
  const network6 = networkFrom(values['ipv6-network'], env?.FLANNEL_IPV6_NETWORK, subnetFile, 6);
  const ownSubnet = env?.FLANNEL_SUBNET ? parseIPv4Cidr(env.FLANNEL_SUBNET, false) : null;
  let removed = 0;

  const nl = deps.makeNetlink();
  try {
    if (values['release-lease'] === true) {
      if (ownSubnet === null) throw new WeftError('CONFIG_MISSING', `--release-lease: no FLANNEL_SUBNET in ${subnetFile}, so this host's lease is unknown; release it with weft leases revoke SUBNET --yes`);
      const addresses = new Set((await nl.listAddresses()).map((a) => a.ip));
      removed += await releaseLease(deps.makeRegistry(options), ownSubnet, addresses, dryRun, say, io);
    }

    const links = await nl.listLinks();
    const devices = overlayDevices(links, values.device ?? null);
    if (values.device !== undefined && devices.length === 0) io.err(`note: no device ${values.device}`);
    const routes = await nl.listRoutes();
    const routes6 = await nl.listRoutes(undefined, 6);
    for (const dev of devices) {
      const [neigh, fdb] = await Promise.all([nl.listNeighbours(dev.index), nl.listFdb(dev.index)]);
      const onDev = [...routes, ...routes6].filter((r) => r.oif === dev.index && r.protocol !== RTPROT_KERNEL).length;
      if (!dryRun) await nl.deleteLink({ index: dev.index, name: dev.name });
      // wireguard-go outlives weftd on purpose (restarts keep sessions): stop it with its device.
      const wgPid = dev.kind === 'tun' && dev.name.startsWith('flannel-wg') ? await stopWireguardGo(dev.name, DEFAULT_WG_RUN_DIR, dryRun) : null;
      if (wgPid !== null) say(`wireguard-go for ${dev.name} (pid ${wgPid})`);
      say(`device ${dev.name} (with its ${onDev} route(s), ${neigh.filter((n) => n.permanent).length} neighbour(s), ${fdb.filter((f) => f.permanent).length} FDB entr(ies))`);
      removed++;
    }
    const deleted = new Set(devices.map((d) => d.index));
    // One loop for both families: each Network picks its own family's routes.
    for (const [net, list] of [[network, routes], [network6, routes6]] as const) {
      if (net === null) continue;
      for (const r of directRoutes(list, net, deleted)) {
        if (!dryRun) await nl.deleteRoute({ dst: r.dst, gateway: r.gateway, oif: r.oif!, onlink: r.onlink, priority: r.priority });
        say(`route ${formatIPv4Cidr(r.dst)} via ${r.gateway}`);
        removed++;
      }
    }
    if (network === null && network6 === null) {
      io.err(`note: no FLANNEL_NETWORK or FLANNEL_IPV6_NETWORK (${subnetFile} is missing): DirectRouting routes were not looked for (pass --network CIDR or --ipv6-network CIDR to remove them)`);
    }
  } finally {
    nl.close();
  }

  removed += await removeIptables(deps.iptables, dryRun, say, io);
  if (deps.ip6tables) removed += await removeIptables(deps.ip6tables, dryRun, say, io, 'ip6tables');

  if (env !== null) {
    if (!dryRun) await rm(subnetFile, { force: true });
    say(`subnet file ${subnetFile}`);
    removed++;
  }
  if (removed === 0) io.out('nothing of weft\'s found on this host');
  return 0;
}

/** The Network (family 4: --network / FLANNEL_NETWORK) or IPv6Network (6: --ipv6-network / FLANNEL_IPV6_NETWORK). */
function networkFrom(flag: string | undefined, fromFile: string | undefined, file: string, family: 4 | 6 = 4): IPNet | null {
  const [opt, key, example] = family === 4 ? ['--network', 'FLANNEL_NETWORK', '10.5.0.0/16'] : ['--ipv6-network', 'FLANNEL_IPV6_NETWORK', 'fd00:5::/48'];
  const parse = (text: string): IPNet | null => {
    const n = parseCidr(text, true);
    return n !== null && (typeof n.ip === 'number') === (family === 4) ? n : null;
  };
  if (flag !== undefined) {
    const n = parse(flag);
    if (n === null) throw usage(`${opt} ${JSON.stringify(flag)}: not a network such as ${example}`);
    return n;
  }
  if (fromFile === undefined) return null;
  const n = parse(fromFile);
  if (n === null) throw new WeftError('BAD_DATA', `subnet file ${file}: ${key}=${JSON.stringify(fromFile)} is not a network; pass ${opt} CIDR`);
  return n;
}

async function releaseLease(
  registry: LeaseRegistry, subnet: IPv4Net, addresses: ReadonlySet<string>, dryRun: boolean, say: (w: string) => void, io: CliIO,
): Promise<number> {
  try {
    const key = formatSubnetKey({ ip: subnet.ip, prefixLen: subnet.prefixLen });
    const lease = (await registry.listSubnets()).leases.find((l) => l.key === key);
    const what = `${formatIPv4Cidr(subnet)}`;
    if (lease === undefined) {
      io.out(`no lease for ${what} in etcd (already gone)`);
      return 0;
    }
    if (!addresses.has(lease.attrs.PublicIP)) {
      throw new WeftError('LEASE_CONFLICT', `--release-lease: ${what} belongs to ${lease.attrs.PublicIP}, not to an address of this host; left in place`);
    }
    if (!dryRun) {
      if (!(await registry.deleteSubnet(key, lease.modRevision))) throw new WeftError('LEASE_CONFLICT', `--release-lease: ${what} changed while we looked; run again`);
      // The host's etcd lease holds nothing else now; revoking it spares it lingering until its TTL.
      if (lease.etcdLeaseId !== null) await registry.revokeLease(lease.etcdLeaseId).catch(() => false);
    }
    say(`${isReservation(lease) ? 'reservation' : 'lease'} ${what} of ${lease.attrs.PublicIP} from ${registry.prefix}/subnets/`);
    return 1;
  } finally {
    await registry.close();
  }
}

async function removeIptables(
  runner: IptablesRunner, dryRun: boolean, say: (w: string) => void, io: CliIO, tool: 'iptables' | 'ip6tables' = 'iptables',
): Promise<number> {
  try {
    const tables = [...new Set(WEFT_CHAINS.map((c) => c.table))];
    const plan = planRestore(EMPTY_RULESET, parseIptablesSave(await runner.save(tables)));
    if (plan.text === null) return 0;
    if (!dryRun) await runner.restore(plan.text);
    for (const c of plan.changes) {
      const m = /^(\w+): delete (?:\w+ )?(chain|rule) (.*)$/.exec(c);
      say(m ? `${tool} ${m[2]} ${m[3]} (${m[1]} table)` : `${tool}: ${c}`);
    }
    return plan.changes.length;
  } catch (err) {
    io.err(`warning: ${tool} rules not checked: ${describeError(err)}`);
    return 0;
  }
}
