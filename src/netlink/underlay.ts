/**
 * Picking the underlay (the interface peers reach us on), by flannel's rules
 * (flannel's main.go LookupExtIface):
 *
 * 1. `--iface` (repeatable): each value is an interface name or one of its IPv4 addresses; the
 *    first that exists wins.
 * 2. else `--iface-regex` (repeatable): per regex, first an interface whose IPv4 address matches,
 *    then one whose name matches.
 * 3. else the interface of the main table's default route.
 *
 * The interface address is the one the value named (`--iface IP`, a regex-matched address) or the
 * interface's first IPv4 address (global before link-local). PublicIP is `--public-ip` when
 * given (NAT: peers reach us there), else the interface address; the VXLAN device's local address
 * is always the interface address.
 */
import type { Underlay } from '../backend/backend';
import { WeftError } from '../errors';
import { parseIPv4 } from '../ip';
import type { AddressEntry, LinkInfo } from './types';

export interface UnderlayOptions {
  readonly iface: readonly string[];
  readonly ifaceRegex: readonly string[];
  readonly publicIp: string | null;
}

/** The part of NetlinkClient the lookup needs (a seam for unit tests). */
export interface UnderlayNetlink {
  listLinks(): Promise<LinkInfo[]>;
  listAddresses(ifindex?: number): Promise<AddressEntry[]>;
  defaultRouteInterface(): Promise<number | null>;
}

const HINT = '(use --iface NAME or --iface IP)';

export async function resolveUnderlay(opts: UnderlayOptions, nl: UnderlayNetlink): Promise<Underlay> {
  let publicIp: string | null = null;
  if (opts.publicIp !== null && opts.publicIp !== '') {
    if (parseIPv4(opts.publicIp) === null) {
      throw new WeftError('CONFIG_INVALID', `--public-ip ${JSON.stringify(opts.publicIp)} is not an IPv4 address`);
    }
    publicIp = opts.publicIp;
  }
  const [links, addrs] = await Promise.all([nl.listLinks(), nl.listAddresses()]);
  const byIndex = new Map<number, AddressEntry[]>();
  for (const a of addrs) {
    const list = byIndex.get(a.ifindex) ?? [];
    list.push(a);
    byIndex.set(a.ifindex, list);
  }
  const ipv4Of = (l: LinkInfo): string[] => (byIndex.get(l.index) ?? []).map((a) => a.ip);
  const available = (): string => links.map((l) => l.name).join(', ') || 'none';
  const availableWithIps = (): string =>
    links.map((l) => `${l.name} (${ipv4Of(l).join(' ') || 'no IPv4'})`).join(', ') || 'none';

  let chosen: { link: LinkInfo; ip: string | null } | null = null;

  if (opts.iface.length > 0) {
    for (const value of opts.iface) {
      if (parseIPv4(value) !== null) {
        const link = links.find((l) => ipv4Of(l).includes(value));
        if (link) {
          chosen = { link, ip: value };
          break;
        }
      } else {
        const link = links.find((l) => l.name === value);
        if (link) {
          chosen = { link, ip: null };
          break;
        }
      }
    }
    if (!chosen) {
      const list = opts.iface.map((v) => JSON.stringify(v)).join(', ');
      const byIp = opts.iface.every((v) => parseIPv4(v) !== null);
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
      for (const l of links) {
        const ip = ipv4Of(l).find((a) => re.test(a));
        if (ip !== undefined) {
          chosen = { link: l, ip };
          break;
        }
      }
      if (chosen) break;
      const byName = links.find((l) => re.test(l.name));
      if (byName) {
        chosen = { link: byName, ip: null };
        break;
      }
    }
    if (!chosen) {
      const list = opts.ifaceRegex.map((v) => JSON.stringify(v)).join(', ');
      throw new WeftError('INTERFACE', `no interface name or IPv4 address matches --iface-regex ${list}; available: ${availableWithIps()} ${HINT}`);
    }
  } else {
    const index = await nl.defaultRouteInterface();
    const link = index === null ? undefined : links.find((l) => l.index === index);
    if (!link) {
      throw new WeftError('INTERFACE', `no default route to pick the interface from; available: ${available()} ${HINT}`);
    }
    chosen = { link, ip: null };
  }

  const { link } = chosen;
  const ifaceIp = chosen.ip ?? firstIPv4(byIndex.get(link.index) ?? []);
  if (ifaceIp === null) {
    throw new WeftError(
      'INTERFACE',
      `interface ${link.name} has no IPv4 address; give it one or pick another interface ${HINT}`,
    );
  }
  if (!(link.mtu > 0)) {
    throw new WeftError('INTERFACE', `failed to determine MTU for interface ${link.name}`);
  }
  return { ifName: link.name, ifIndex: link.index, ipv4: publicIp ?? ifaceIp, ifaceIPv4: ifaceIp, mtu: link.mtu };
}

/** The first global address, else the first link-local one (169.254/16), else null. */
function firstIPv4(addrs: readonly AddressEntry[]): string | null {
  const global = addrs.find((a) => !a.ip.startsWith('169.254.'));
  return (global ?? addrs[0])?.ip ?? null;
}
