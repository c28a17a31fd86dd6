/**
 * What the overlay must never capture: the networks connected to the underlay interface and the
 * etcd endpoints' addresses. A Network over either routes the host's own etcd session, its
 * peers' tunnel packets and ssh into the tunnel — the host cuts itself off, and with it every
 * container. weftd refuses such a config at start-up (checkNetworkAgainstUnderlay) and passes the
 * same facts to every backend's desired() (DesiredContext.underlayNetworks / protectedIPs), where
 * screenPeer() skips a lease that would capture them.
 *
 * The lookups (netlink dump, DNS) live here; the check itself is pure.
 */
import { isIPv4 } from 'node:net';
import { WeftError } from '../errors';
import { formatIPv4Cidr, maskOf, netContains, netsOverlap, parseIPv4 } from '../ip';
import type { IPv4Net } from '../lease/types';
import type { AddressEntry } from '../netlink/types';

/** IPv4 networks connected to interface `ifIndex` (its addresses with their prefix, host bits cleared). */
export async function connectedNetworks(
  nl: { listAddresses(ifindex?: number): Promise<AddressEntry[]> },
  ifIndex: number,
): Promise<IPv4Net[]> {
  const out: IPv4Net[] = [];
  for (const a of await nl.listAddresses(ifIndex)) {
    const ip = parseIPv4(a.ip);
    if (a.ifindex !== ifIndex || ip === null) continue;
    // A /32 (point-to-point, cloud VMs) still protects the address itself.
    const net = { ip: (ip & maskOf(a.prefixLen)) >>> 0, prefixLen: a.prefixLen };
    if (!out.some((n) => n.ip === net.ip && n.prefixLen === net.prefixLen)) out.push(net);
  }
  return out;
}

/**
 * The IPv4 addresses of the etcd endpoints (URLs such as https://10.0.0.5:2379 or
 * http://etcd.example:2379). Names are resolved once, best effort within `timeoutMs`: a name that
 * does not resolve now protects nothing, which is what the etcd client will find out too.
 */
export async function endpointAddresses(endpoints: readonly string[], timeoutMs = 2000): Promise<string[]> {
  const out = new Set<string>();
  await Promise.all(
    endpoints.map(async (e) => {
      let host: string;
      try {
        host = new URL(e).hostname;
      } catch {
        return;
      }
      if (host.startsWith('[')) return; // IPv6: the IPv4 overlay cannot capture it
      if (isIPv4(host)) {
        out.add(host);
        return;
      }
      const timer = new Promise<null>((resolve) => setTimeout(resolve, timeoutMs, null).unref());
      // Loaded only for a name (endpoints are usually addresses): node:dns and c-ares' binding
      // would cost every start ~1.2 ms of CPU before subnet.env.
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const { lookup } = require('node:dns/promises') as typeof import('node:dns/promises');
      const found = await Promise.race([lookup(host, { family: 4, all: true }).catch(() => null), timer]);
      for (const a of found ?? []) out.add(a.address);
    }),
  );
  return [...out].sort();
}

/**
 * Pure: refuse a Network that overlaps a network connected to the underlay or covers an etcd
 * endpoint, with a message saying what overlaps and what to do.
 */
export function checkNetworkAgainstUnderlay(
  network: IPv4Net,
  underlay: { readonly ifName: string; readonly networks: readonly IPv4Net[] },
  etcdAddresses: readonly string[],
): void {
  const fix =
    'routing it into the overlay would cut this host off; change Network in the network config ' +
    '(weft config set) to a range no host uses, or move the host';
  for (const n of underlay.networks) {
    if (netsOverlap(network, n)) {
      throw new WeftError(
        'CONFIG_INVALID',
        `network config: Network ${formatIPv4Cidr(network)} overlaps ${formatIPv4Cidr(n)}, the network of this host's underlay interface ${underlay.ifName}: ${fix}`,
      );
    }
  }
  for (const a of etcdAddresses) {
    const ip = parseIPv4(a);
    if (ip !== null && netContains(network, ip)) {
      throw new WeftError(
        'CONFIG_INVALID',
        `network config: Network ${formatIPv4Cidr(network)} covers the etcd endpoint ${a}: ${fix}`,
      );
    }
  }
}
