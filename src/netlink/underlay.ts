/**
 * Picking the underlay (the interface peers reach us on), by flannel's rules
 * (flannel's main.go LookupExtIface), for both address families:
 *
 * 1. `--iface` (repeatable): each value is an interface name or one of its addresses (IPv4 or
 *    IPv6); the first that exists wins.
 * 2. else `--iface-regex` (repeatable): per regex, first an interface whose IPv4 address matches,
 *    then one whose IPv6 address matches, then one whose name matches.
 * 3. else `--iface-can-reach IP`: the interface the kernel routes IP through, and the source
 *    address it would use (flannel's GetInterfaceBySpecificIPRouting).
 * 4. else the interface of the main table's default route (IPv4's; IPv6's on an IPv6-only network,
 *    or when there is no IPv4 default route).
 *
 * Per family, the interface address is the one the value named (`--iface IP`, a regex-matched
 * address, the route's source) or the interface's first address of that family (IPv4: global
 * before link-local; IPv6: global only — a link-local address cannot be a VXLAN endpoint).
 * PublicIP is `--public-ip` when given (NAT: peers reach us there), else the interface's IPv4
 * address; PublicIPv6 likewise with `--public-ipv6`. The VXLAN devices' local addresses are always
 * the interface's own. A family the network config does not enable is not required: an
 * IPv6-only host without IPv4 gets PublicIP "0.0.0.0", what flannel writes for it.
 */
import type { Underlay } from '../backend/backend';
import { WeftError } from '../errors';
import { addressFamily, formatIPv6, isIPv6LinkLocal, parseIPv4, parseIPv6, type IPFamily } from '../ip';
import type { AddressEntry, LinkInfo, RouteLookup } from './types';

export interface UnderlayOptions {
  readonly iface: readonly string[];
  readonly ifaceRegex: readonly string[];
  readonly publicIp: string | null;
  readonly publicIpv6?: string | null;
  readonly ifaceCanReach?: string | null;
  /** The network config enables IPv4 (default true): the interface must have an IPv4 address. */
  readonly ipv4?: boolean;
  /** The network config enables IPv6 (default false): the interface must have a global IPv6 address. */
  readonly ipv6?: boolean;
}

/** The part of NetlinkClient the lookup needs (a seam for unit tests). */
export interface UnderlayNetlink {
  listLinks(): Promise<LinkInfo[]>;
  listAddresses(ifindex?: number, family?: IPFamily): Promise<AddressEntry[]>;
  defaultRouteInterface(family?: IPFamily): Promise<number | null>;
  /** Needed only for --iface-can-reach. */
  getRouteTo?(ip: string): Promise<RouteLookup | null>;
}

const HINT = '(use --iface NAME or --iface IP)';
/** What the interface address lists hold before the interface is chosen. */
type Chosen = { link: LinkInfo; ip4: string | null; ip6: string | null };

export async function resolveUnderlay(opts: UnderlayOptions, nl: UnderlayNetlink): Promise<Underlay> {
  const want4 = opts.ipv4 ?? true;
  const want6 = opts.ipv6 ?? false;
  const publicIp = checkPublic(opts.publicIp, 4, '--public-ip');
  const publicIpv6 = checkPublic(opts.publicIpv6 ?? null, 6, '--public-ipv6');
  const [links, addrs4, addrs6] = await Promise.all([
    nl.listLinks(),
    nl.listAddresses(),
    want6 || opts.iface.some((v) => addressFamily(v) === 6) ? nl.listAddresses(undefined, 6) : Promise.resolve([]),
  ]);
  const byIndex = new Map<number, AddressEntry[]>();
  for (const a of [...addrs4, ...addrs6]) {
    const list = byIndex.get(a.ifindex) ?? [];
    if (!list.some((x) => x.ip === a.ip)) list.push(a);
    byIndex.set(a.ifindex, list);
  }
  const ipsOf = (l: LinkInfo, family: IPFamily): string[] =>
    (byIndex.get(l.index) ?? []).map((a) => a.ip).filter((ip) => addressFamily(ip) === family);
  const available = (): string => links.map((l) => l.name).join(', ') || 'none';
  const availableWithIps = (): string =>
    links.map((l) => `${l.name} (${[...ipsOf(l, 4), ...ipsOf(l, 6)].join(' ') || (addrs6.length ? 'no address' : 'no IPv4')})`).join(', ') || 'none';

  let chosen: Chosen | null = null;

  if (opts.iface.length > 0) {
    for (const value of opts.iface) {
      const family = addressFamily(value);
      const link = family === null ? links.find((l) => l.name === value) : links.find((l) => ipsOf(l, family).includes(value));
      if (link) {
        chosen = { link, ip4: family === 4 ? value : null, ip6: family === 6 ? value : null };
        break;
      }
    }
    if (!chosen) {
      const list = opts.iface.map((v) => JSON.stringify(v)).join(', ');
      const byIp = opts.iface.every((v) => addressFamily(v) !== null);
      const what = opts.iface.length === 1 ? (byIp ? `no interface has address ${opts.iface[0]}` : `interface ${list} not found`) : `none of the interfaces ${list} found`;
      throw new WeftError('INTERFACE', `${what}; available: ${byIp ? availableWithIps() : available()} ${HINT}`);
    }
  } else if (opts.ifaceRegex.length > 0) {
    for (const source of opts.ifaceRegex) {
      let re: RegExp;
      try {
        re = new RegExp(source);
      } catch (err) {
        throw new WeftError('CONFIG_INVALID', `--iface-regex ${JSON.stringify(source)}: invalid regular expression`, { cause: err });
      }
      for (const family of [4, 6] as const) {
        for (const l of links) {
          const ip = ipsOf(l, family).find((a) => re.test(a));
          if (ip !== undefined) {
            chosen = { link: l, ip4: family === 4 ? ip : null, ip6: family === 6 ? ip : null };
            break;
          }
        }
        if (chosen) break;
      }
      if (chosen) break;
      const byName = links.find((l) => re.test(l.name));
      if (byName) {
        chosen = { link: byName, ip4: null, ip6: null };
        break;
      }
    }
    if (!chosen) {
      const list = opts.ifaceRegex.map((v) => JSON.stringify(v)).join(', ');
      throw new WeftError('INTERFACE', `no interface name or address matches --iface-regex ${list}; available: ${availableWithIps()} ${HINT}`);
    }
  } else if (opts.ifaceCanReach) {
    chosen = await byRoute(opts.ifaceCanReach, links, nl, available);
  } else {
    // IPv4's default route, unless the network is IPv6-only or there is none and IPv6 is wanted.
    let index = want4 || !want6 ? await nl.defaultRouteInterface() : null;
    if (index === null && (want6 || !want4)) index = await nl.defaultRouteInterface(6);
    const link = index === null ? undefined : links.find((l) => l.index === index);
    if (!link) {
      throw new WeftError('INTERFACE', `no default route to pick the interface from; available: ${available()} ${HINT}`);
    }
    chosen = { link, ip4: null, ip6: null };
  }

  const { link } = chosen;
  const ifaceIp = chosen.ip4 ?? firstIPv4(ipsOf(link, 4));
  if (ifaceIp === null && want4) {
    throw new WeftError(
      'INTERFACE',
      `interface ${link.name} has no IPv4 address; give it one or pick another interface ${HINT}`,
    );
  }
  const ifaceIp6 = chosen.ip6 ?? ipsOf(link, 6).find((ip) => !isIPv6LinkLocal(ip)) ?? null;
  if (ifaceIp6 === null && want6) {
    throw new WeftError(
      'INTERFACE',
      `interface ${link.name} has no global IPv6 address and the network config enables IPv6 (EnableIPv6); ` +
        `give it one or pick another interface ${HINT}`,
    );
  }
  if (!(link.mtu > 0)) {
    throw new WeftError('INTERFACE', `failed to determine MTU for interface ${link.name}`);
  }
  // flannel's IPv6-only lease says PublicIP "0.0.0.0" (its zero ip.IP4).
  const v4 = ifaceIp ?? '0.0.0.0';
  return {
    ifName: link.name, ifIndex: link.index, ipv4: publicIp ?? v4, ifaceIPv4: v4, mtu: link.mtu,
    ...(want6 ? { ipv6: publicIpv6 ?? ifaceIp6, ifaceIPv6: ifaceIp6 } : {}),
  };
}

/** --iface-can-reach: the interface and source address of the kernel's route to `target`. */
async function byRoute(target: string, links: readonly LinkInfo[], nl: UnderlayNetlink, available: () => string): Promise<Chosen> {
  const family = addressFamily(target);
  if (family === null) throw new WeftError('CONFIG_INVALID', `--iface-can-reach ${JSON.stringify(target)} is not an IP address`);
  if (!nl.getRouteTo) throw new WeftError('INTERNAL', '--iface-can-reach: route lookup unavailable');
  const route = await nl.getRouteTo(target);
  const link = route?.oif == null ? undefined : links.find((l) => l.index === route.oif);
  if (!route || !link) {
    throw new WeftError('INTERFACE', `--iface-can-reach ${target}: the kernel has no route to it; available: ${available()} ${HINT}`);
  }
  const src = route.prefsrc;
  return { link, ip4: family === 4 ? src : null, ip6: family === 6 ? src : null };
}

function checkPublic(value: string | null, family: IPFamily, flag: string): string | null {
  if (value === null || value === '') return null;
  if (addressFamily(value) !== family) {
    throw new WeftError('CONFIG_INVALID', `${flag} ${JSON.stringify(value)} is not an IPv${family} address`);
  }
  // Canonical text (what flannel's Go writes into the lease: "fd00::1", not "fd00:0::1").
  return family === 4 ? value : canonical6(value);
}

function canonical6(ip: string): string {
  return formatIPv6(parseIPv6(ip)!);
}

/** The first global address, else the first link-local one (169.254/16), else null. */
function firstIPv4(addrs: readonly string[]): string | null {
  const global = addrs.find((a) => !a.startsWith('169.254.') && parseIPv4(a) !== null);
  return global ?? addrs[0] ?? null;
}
