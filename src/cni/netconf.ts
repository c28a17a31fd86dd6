/**
 * The weft CNI plugin's pure part: its network config (flannel's CNI plugin's keys, so an
 * existing conflist with `"type": "flannel"` works unchanged once the type says `weft`, or with
 * weft installed under the name `flannel`), subnet.env as flannel's plugin reads it, and the
 * delegate config it renders for `bridge` + `host-local`.
 *
 * Deliberately imports almost nothing (subnet.env's one reader, daemon/subnetenv.ts, which is
 * import-light itself): the plugin is a new Node process on every ADD/DEL/CHECK, and its
 * start-up time is paid per container (see bench/cni-add.ts). No etcd, netlink or logger here.
 *
 * Keys (as flannel-io/cni-plugin): name, cniVersion, subnetFile (default /run/flannel/subnet.env),
 * dataDir (default /var/lib/cni/flannel: the same as flannel's, so containers that flannel's
 * plugin attached are still found by DEL after switching to weft), delegate (merged into the
 * bridge config; must not carry name or ipam), ipam (merged into the delegate's ipam: extra
 * routes, a dataDir for host-local...), runtimeConfig (passed on to the delegate).
 */

import { parseSubnetEnv } from '../daemon/subnetenv';

export const DEFAULT_SUBNET_FILE = '/run/flannel/subnet.env';
export const DEFAULT_DATA_DIR = '/var/lib/cni/flannel';
export const SUPPORTED_VERSIONS = ['0.1.0', '0.2.0', '0.3.0', '0.3.1', '0.4.0', '1.0.0'] as const;
/** The comment on the nat rule that keeps container sources across hosts (keepSourceRules). */
export const KEEP_SOURCE_COMMENT = 'weft cni: keep container source across hosts';

/** CNI error codes (spec "Error" section); 100+ are the plugin's own. */
export const CniCode = {
  INCOMPATIBLE_VERSION: 1,
  UNSUPPORTED_FIELD: 2,
  CONTAINER_UNKNOWN: 3,
  INVALID_ENV: 4,
  IO_FAILURE: 5,
  DECODE_FAILURE: 6,
  INVALID_CONFIG: 7,
  TRY_AGAIN_LATER: 11,
  /** subnet.env missing, unreadable or incomplete (weftd not running or not ready yet). */
  SUBNET_ENV: 100,
  /** The delegate (bridge) failed without a CNI error of its own. */
  DELEGATE: 101,
  /** The host's subnet changed since the container was attached (CHECK). */
  SUBNET_CHANGED: 102,
} as const;

/** An error the plugin prints as CNI's error JSON on stdout. */
export class CniError extends Error {
  constructor(readonly code: number, message: string, readonly details = '') {
    super(message);
    this.name = 'CniError';
  }
}

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
export type JsonObject = { [k: string]: Json };

export interface NetConf {
  readonly name: string;
  readonly cniVersion: string;
  readonly subnetFile: string;
  readonly dataDir: string;
  readonly delegate: JsonObject;
  readonly ipam: JsonObject | null;
  readonly runtimeConfig: JsonObject | null;
  /** The whole config as given (prevResult for CHECK lives here). */
  readonly raw: JsonObject;
}

export interface FlannelEnv {
  /** FLANNEL_NETWORK, may list several networks (comma-separated), as network CIDRs. */
  readonly networks: string[];
  /** FLANNEL_SUBNET as its network CIDR (10.5.72.1/24 → 10.5.72.0/24); null if absent. */
  readonly subnet: string | null;
  readonly ipv6Networks: string[];
  readonly ipv6Subnet: string | null;
  readonly mtu: number;
  readonly ipMasq: boolean;
}

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function parseNetConf(text: string): NetConf {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new CniError(CniCode.DECODE_FAILURE, `weft: the network config on stdin is not JSON: ${(e as Error).message}`);
  }
  if (!isObject(raw)) throw new CniError(CniCode.DECODE_FAILURE, 'weft: the network config on stdin is not a JSON object');
  const str = (key: string, dflt: string): string => {
    const v = raw[key];
    if (v === undefined || v === null || v === '') return dflt;
    if (typeof v !== 'string') throw new CniError(CniCode.INVALID_CONFIG, `weft: network config "${key}" must be a string, got ${JSON.stringify(v)}`);
    return v;
  };
  const obj = (key: string): JsonObject | null => {
    const v = raw[key];
    if (v === undefined || v === null) return null;
    if (!isObject(v)) throw new CniError(CniCode.INVALID_CONFIG, `weft: network config "${key}" must be an object, got ${JSON.stringify(v)}`);
    return v;
  };
  const cniVersion = str('cniVersion', '0.1.0');
  if (!(SUPPORTED_VERSIONS as readonly string[]).includes(cniVersion)) {
    throw new CniError(CniCode.INCOMPATIBLE_VERSION,
      `weft: cniVersion "${cniVersion}" is not supported (supported: ${SUPPORTED_VERSIONS.join(', ')})`);
  }
  const delegate = obj('delegate') ?? {};
  if ('type' in delegate && typeof delegate.type !== 'string') {
    throw new CniError(CniCode.INVALID_CONFIG, "weft: 'delegate' dictionary, if present, must have (string) 'type' field");
  }
  if ('name' in delegate) throw new CniError(CniCode.INVALID_CONFIG, "weft: 'delegate' dictionary must not have 'name' field, it'll be set by weft");
  if ('ipam' in delegate) throw new CniError(CniCode.INVALID_CONFIG, "weft: 'delegate' dictionary must not have 'ipam' field, it'll be set by weft (use the top-level 'ipam' to add to it)");
  return {
    name: str('name', ''), cniVersion,
    subnetFile: str('subnetFile', DEFAULT_SUBNET_FILE),
    dataDir: str('dataDir', DEFAULT_DATA_DIR),
    delegate, ipam: obj('ipam'), runtimeConfig: obj('runtimeConfig'), raw,
  };
}

/** subnet.env as flannel's plugin reads it: NAME=value lines; unknown names ignored. */
export function parseFlannelEnv(text: string, file: string): FlannelEnv {
  // The one subnet.env reader (daemon/subnetenv.ts), lenient as flannel's plugin: lines it cannot read are ignored.
  const vars = new Map(Object.entries(parseSubnetEnv(text, file, { lenient: true })));
  const bad = (key: string, why: string): never => {
    throw new CniError(CniCode.SUBNET_ENV, `weft: ${file}: ${key}=${vars.get(key)} ${why}`);
  };
  const cidrs = (key: string, v6: boolean): string[] => {
    const v = vars.get(key);
    if (v === undefined || v === '') return [];
    return v.split(',').map((c) => networkOf(c.trim(), v6) ?? bad(key, `is not an IPv${v6 ? 6 : 4} CIDR`));
  };
  const networks = cidrs('FLANNEL_NETWORK', false);
  const subnet = cidrs('FLANNEL_SUBNET', false)[0] ?? null;
  const ipv6Networks = cidrs('FLANNEL_IPV6_NETWORK', true);
  const ipv6Subnet = cidrs('FLANNEL_IPV6_SUBNET', true)[0] ?? null;
  const missing: string[] = [];
  if (networks.length === 0 && ipv6Networks.length === 0) missing.push('FLANNEL_NETWORK');
  if (subnet === null && ipv6Subnet === null) missing.push('FLANNEL_SUBNET');
  if (!vars.has('FLANNEL_MTU')) missing.push('FLANNEL_MTU');
  if (!vars.has('FLANNEL_IPMASQ')) missing.push('FLANNEL_IPMASQ');
  if (missing.length > 0) {
    throw new CniError(CniCode.SUBNET_ENV, `weft: ${file} is missing ${missing.join(', ')}: is weftd running and ready on this host?`);
  }
  const mtu = Number(vars.get('FLANNEL_MTU'));
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) bad('FLANNEL_MTU', 'is not an MTU (68..65535)');
  return { networks, subnet, ipv6Networks, ipv6Subnet, mtu, ipMasq: vars.get('FLANNEL_IPMASQ') === 'true' };
}

/**
 * The delegate config, flannel's rendering: name and cniVersion from ours, type bridge unless
 * the delegate names another, ipMasq = !FLANNEL_IPMASQ (masquerade once: here when weftd does
 * not), mtu = FLANNEL_MTU, isGateway for bridge, runtimeConfig passed on, and host-local IPAM
 * with one range per family from subnet.env and routes to the flannel network(s).
 */
export function renderDelegate(conf: NetConf, env: FlannelEnv): JsonObject {
  const d: JsonObject = { ...conf.delegate, name: conf.name };
  if (!('type' in d)) d.type = 'bridge';
  if (!('ipMasq' in d)) d.ipMasq = !env.ipMasq;
  if (!('mtu' in d)) d.mtu = env.mtu;
  if (d.type === 'bridge' && !('isGateway' in d)) d.isGateway = true;
  d.cniVersion = conf.cniVersion;
  if (conf.runtimeConfig) d.runtimeConfig = conf.runtimeConfig;
  const ipam: JsonObject = { ...(conf.ipam ?? {}) };
  if (!('type' in ipam)) ipam.type = 'host-local';
  const ranges: Json[] = [];
  if (env.subnet) ranges.push([{ subnet: env.subnet }]);
  if (env.ipv6Subnet) ranges.push([{ subnet: env.ipv6Subnet }]);
  ipam.ranges = ranges;
  const routes: Json[] = Array.isArray(ipam.routes) ? [...ipam.routes] : [];
  for (const n of [...env.networks, ...env.ipv6Networks]) routes.push({ dst: n });
  ipam.routes = routes;
  d.ipam = ipam;
  return d;
}

/**
 * The nat rules that keep a container's source address on its way to another host. The
 * bridge plugin's ipMasq masquerades everything from the container that is not for its own
 * subnet — other hosts' containers included (they would see the sender's flannel.1 address).
 * A RETURN for network → network at the top of POSTROUTING exempts overlay traffic; traffic to
 * the outside is still masqueraded. Only needed when the delegate masquerades.
 */
export function keepSourceRules(delegate: JsonObject, env: FlannelEnv): { v6: boolean; network: string }[] {
  if (delegate.ipMasq !== true) return [];
  return [
    ...(env.subnet ? env.networks.map((network) => ({ v6: false, network })) : []),
    ...(env.ipv6Subnet ? env.ipv6Networks.map((network) => ({ v6: true, network })) : []),
  ];
}

/** 10.5.72.1/24 → 10.5.72.0/24; fd00:1::1/64 → fd00:1::/64; null when not a CIDR of that family. */
export function networkOf(cidr: string, v6: boolean): string | null {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(cidr);
  if (!m) return null;
  const len = Number(m[2]);
  if (v6) {
    const words = parseIPv6(m[1] ?? '');
    if (!words || len > 128) return null;
    const out = words.map((w, i) => {
      const bits = Math.max(0, Math.min(16, len - i * 16));
      return bits === 0 ? 0 : w & (0xffff << (16 - bits)) & 0xffff;
    });
    return `${formatIPv6(out)}/${len}`;
  }
  const parts = (m[1] ?? '').split('.');
  if (parts.length !== 4 || len > 32) return null;
  let n = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) return null;
    n = n * 256 + Number(p);
  }
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  const net = (n & mask) >>> 0;
  return `${[24, 16, 8, 0].map((s) => (net >>> s) & 255).join('.')}/${len}`;
}

function parseIPv6(text: string): number[] | null {
  const halves = text.split('::');
  if (halves.length > 2) return null;
  const part = (s: string): number[] | null => {
    if (s === '') return [];
    const out: number[] = [];
    for (const w of s.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(w)) return null;
      out.push(parseInt(w, 16));
    }
    return out;
  };
  const head = part(halves[0] ?? '');
  const tail = halves.length === 2 ? part(halves[1] ?? '') : [];
  if (!head || !tail) return null;
  if (halves.length === 1) return head.length === 8 ? head : null;
  const fill = 8 - head.length - tail.length;
  return fill < 1 ? null : [...head, ...new Array<number>(fill).fill(0), ...tail];
}

function formatIPv6(words: number[]): string {
  // Longest run of zero words (length >= 2) becomes '::' (RFC 5952).
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) { best = i; bestLen = j - i; }
    i = j;
  }
  const hex = words.map((w) => w.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}
