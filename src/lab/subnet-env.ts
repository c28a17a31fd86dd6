/**
 * Reading the subnet.env weftd writes (compat §6), to give each host's container bridge the
 * address and MTU Docker would get from `--bip=$FLANNEL_SUBNET --mtu=$FLANNEL_MTU`.
 */
import { readFileSync } from 'node:fs';
import { WeftError } from '../errors';
import { parseSubnetEnv as parseSubnetEnvVars } from '../daemon/subnetenv';
import { formatCidr, formatIPv4, hostAddress, hostAt, parseIPv4Cidr, parseIPv6Cidr } from '../ip';

export interface SubnetEnv {
  readonly network: string;       // FLANNEL_NETWORK, e.g. 10.5.0.0/16
  readonly subnet: string;        // FLANNEL_SUBNET, the .1 address: 10.5.72.1/24
  readonly mtu: number;           // FLANNEL_MTU
  readonly ipMasq: boolean;       // FLANNEL_IPMASQ
  /** The subnet's network, e.g. 10.5.72.0/24. */
  readonly subnetNetwork: string;
  /** Address the lab gives the host's container: the subnet's .2, e.g. 10.5.72.2/24. */
  readonly containerAddress: string;
  /** FLANNEL_IPV6_SUBNET (the ::1 address, e.g. fd00:5:0:22::1/64) when IPv6 is on; else null. */
  readonly ipv6Subnet: string | null;
  /** The container's IPv6 address: the subnet's ::2. */
  readonly ipv6ContainerAddress: string | null;
  readonly vars: Readonly<Record<string, string>>;
}

export function parseSubnetEnv(text: string, source = 'subnet.env'): SubnetEnv {
  const vars = parseSubnetEnvVars(text, source);
  const need = (key: string): string => {
    const v = vars[key];
    if (v === undefined || v === '') throw new WeftError('BAD_DATA', `${source}: ${key} missing`);
    return v;
  };
  const v6 = ipv6Of(vars, source);
  // IPv6-only (no FLANNEL_SUBNET): the primary fields describe the IPv6 subnet.
  if (vars.FLANNEL_SUBNET === undefined && v6 !== null) {
    const mtu6 = Number(need('FLANNEL_MTU'));
    return {
      network: need('FLANNEL_IPV6_NETWORK'), subnet: v6.subnet, mtu: mtu6, ipMasq: vars.FLANNEL_IPMASQ === 'true',
      subnetNetwork: v6.network, containerAddress: v6.container, ipv6Subnet: v6.subnet, ipv6ContainerAddress: v6.container, vars,
    };
  }
  const subnet = need('FLANNEL_SUBNET');
  const net = parseIPv4Cidr(subnet, false);
  if (!net || net.prefixLen > 30) throw new WeftError('BAD_DATA', `${source}: FLANNEL_SUBNET=${subnet} is not an IPv4 subnet of /30 or larger`);
  const mtu = Number(need('FLANNEL_MTU'));
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) throw new WeftError('BAD_DATA', `${source}: FLANNEL_MTU=${vars.FLANNEL_MTU} is not an MTU`);
  return {
    network: need('FLANNEL_NETWORK'),
    subnet,
    mtu,
    ipMasq: vars.FLANNEL_IPMASQ === 'true',
    subnetNetwork: `${formatIPv4(net.ip)}/${net.prefixLen}`,
    containerAddress: `${formatIPv4(hostAt(net, 2))}/${net.prefixLen}`,
    ipv6Subnet: v6?.subnet ?? null,
    ipv6ContainerAddress: v6?.container ?? null,
    vars,
  };
}

function ipv6Of(vars: Readonly<Record<string, string>>, source: string): { subnet: string; network: string; container: string } | null {
  const subnet = vars.FLANNEL_IPV6_SUBNET;
  if (subnet === undefined || subnet === '') return null;
  const net = parseIPv6Cidr(subnet, false);
  if (!net || net.prefixLen > 126) throw new WeftError('BAD_DATA', `${source}: FLANNEL_IPV6_SUBNET=${subnet} is not an IPv6 subnet of /126 or larger`);
  return { subnet, network: formatCidr(net), container: `${hostAddress(net, 2)}/${net.prefixLen}` };
}

/** The parsed file, or null when it does not exist (yet). Malformed content throws. */
export function readSubnetEnv(file: string): SubnetEnv | null {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  return parseSubnetEnv(text, file);
}
