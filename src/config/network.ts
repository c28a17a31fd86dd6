/**
 * The network config document (`<prefix>/config`), parsed and validated the way flannel's
 * pkg/subnet/config.go does it (compat §2): same field names, same defaults, same checks in the
 * same order, same messages, so an operator who moves a host from flanneld to weftd (or runs both
 * on one etcd) sees the same verdict on the same document.
 *
 * Two phases, as in flannel: first decoding (JSON syntax, field types, CIDR/IP syntax, like Go's
 * json.Unmarshal), then the coherence checks of CheckNetworkConfig.
 *
 * Deliberate differences from flannel, all in the direction of "works where flannel fails":
 * - Backend absent (or without Type): vxlan, not udp (flannel's docs say vxlan, its code says udp).
 * - Messages for malformed JSON, wrong types and bad addresses name the field and the value
 *   (flannel passes Go's decoder errors through).
 */
import { WeftError } from '../errors';
import { formatIPv4, formatIPv6, maskOf, maskOf6, netContains, netsOverlap, parseIPv4, parseIPv4Cidr, parseIPv6, parseIPv6Cidr } from '../ip';
import type { IPv4Net, IPv6Net } from '../lease/types';
import type { BackendConfig, NetworkConfig, VxlanBackendConfig } from './types';

/** Top-level fields flannel's Config decodes; anything else is ignored, as Go's decoder does. */
const CONFIG_FIELDS = [
  'Network', 'SubnetLen', 'SubnetMin', 'SubnetMax', 'EnableIPv4', 'EnableIPv6',
  'IPv6Network', 'IPv6SubnetLen', 'IPv6SubnetMin', 'IPv6SubnetMax', 'Backend',
] as const;

const VXLAN_FIELDS = ['Type', 'VNI', 'Port', 'GBP', 'Learning', 'DirectRouting', 'MTU'] as const;

const MAX_VNI = 0xffffff; // 24-bit VXLAN network identifier
const MIN_MTU = 68; // the kernel's minimum for an IPv4 link

function invalid(message: string, cause?: unknown): WeftError {
  return new WeftError('CONFIG_INVALID', message, cause === undefined ? {} : { cause });
}

// ---------------------------------------------------------------------------------------------
// Decoding helpers

/**
 * Pick the known fields out of a JSON object with Go's encoding/json rules: an exact key match or,
 * failing that, a case-insensitive one ("network" fills Network); when several keys map to one
 * field the last one wins. null counts as absent.
 */
function pickFields<K extends string>(obj: Readonly<Record<string, unknown>>, fields: readonly K[]): Map<K, unknown> {
  const byFolded = new Map<string, K>(fields.map((f) => [f.toLowerCase(), f]));
  const out = new Map<K, unknown>();
  for (const [key, value] of Object.entries(obj)) {
    const field = (fields as readonly string[]).includes(key) ? (key as K) : byFolded.get(key.toLowerCase());
    if (field === undefined) continue;
    if (value === null) out.delete(field);
    else out.set(field, value);
  }
  return out;
}

function describeValue(value: unknown): string {
  if (Array.isArray(value)) return 'an array';
  if (value === null) return 'null';
  if (typeof value === 'object') return 'an object';
  if (typeof value === 'string') return `string ${JSON.stringify(value)}`;
  return `${typeof value} ${String(value)}`;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

type Fields<K extends string> = Map<K, unknown>;

function optBool<K extends string>(f: Fields<K>, name: K, where: string): boolean | undefined {
  const v = f.get(name);
  if (v === undefined || typeof v === 'boolean') return v;
  throw invalid(`${where}: ${name} must be true or false, got ${describeValue(v)}`);
}

/** An integer field; `accepted` describes the valid range in the message ("an integer from 0 to 9"). */
function optInt<K extends string>(
  f: Fields<K>, name: K, where: string, min: number, max: number, accepted: string,
): number | undefined {
  const v = f.get(name);
  if (v === undefined) return undefined;
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= min && v <= max) return v;
  throw invalid(`${where}: ${name} must be ${accepted}, got ${describeValue(v)}`);
}

/** flannel's uint fields: the range check proper comes later, with flannel's own message. */
function optUint<K extends string>(f: Fields<K>, name: K, where: string): number | undefined {
  return optInt(f, name, where, 0, Number.MAX_SAFE_INTEGER, 'a non-negative integer');
}

function optString<K extends string>(f: Fields<K>, name: K, where: string, expected: string): string | undefined {
  const v = f.get(name);
  if (v === undefined || typeof v === 'string') return v;
  throw invalid(`${where}: ${name} must be a string (${expected}), got ${describeValue(v)}`);
}

// ---------------------------------------------------------------------------------------------
// IPv6 on bigint for the range checks (src/ip.ts holds the arithmetic)

/** Like Go's net.ParseCIDR: host bits are masked off, not rejected; the address as a bigint. */
function parseIPv6CidrBig(text: string): { ip: bigint; prefixLen: number } | null {
  const net = parseIPv6Cidr(text, false);
  const ip = net === null ? null : parseIPv6(net.ip);
  return net === null || ip === null ? null : { ip, prefixLen: net.prefixLen };
}

// ---------------------------------------------------------------------------------------------
// JSON syntax errors: V8's messages do not always say where, so find the spot ourselves.

interface JsonSyntaxProblem {
  readonly offset: number;
  readonly problem: string;
}

class JsonScanner {
  private i = 0;
  constructor(private readonly s: string) {}

  /** The first syntax error in the text, or null when it is valid JSON. */
  scan(): JsonSyntaxProblem | null {
    try {
      this.ws();
      this.value();
      this.ws();
      if (this.i < this.s.length) this.fail('unexpected text after the end of the JSON document');
      return null;
    } catch (e) {
      if (e instanceof JsonScanError) return { offset: e.offset, problem: e.message };
      throw e;
    }
  }

  private fail(problem: string): never {
    throw new JsonScanError(this.i, this.i >= this.s.length ? `unexpected end of input (${problem})` : problem);
  }

  private ws(): void {
    while (this.i < this.s.length && ' \t\n\r'.includes(this.s[this.i]!)) this.i++;
  }

  private value(): void {
    const c = this.s[this.i];
    if (c === '{') return this.object();
    if (c === '[') return this.array();
    if (c === '"') return this.string();
    if (c === '-' || (c !== undefined && c >= '0' && c <= '9')) return this.number();
    for (const lit of ['true', 'false', 'null']) {
      if (this.s.startsWith(lit, this.i)) {
        this.i += lit.length;
        return;
      }
    }
    this.fail('expected a JSON value (object, array, string, number, true, false or null)');
  }

  private object(): void {
    this.i++; // {
    this.ws();
    if (this.s[this.i] === '}') {
      this.i++;
      return;
    }
    for (;;) {
      if (this.s[this.i] !== '"') this.fail('expected a property name in double quotes');
      this.string();
      this.ws();
      if (this.s[this.i] !== ':') this.fail("expected ':' after the property name");
      this.i++;
      this.ws();
      this.value();
      this.ws();
      if (this.s[this.i] === '}') {
        this.i++;
        return;
      }
      if (this.s[this.i] !== ',') this.fail("expected ',' or '}' after a property value");
      this.i++;
      this.ws();
      if (this.s[this.i] === '}') this.fail("trailing comma before '}'");
    }
  }

  private array(): void {
    this.i++; // [
    this.ws();
    if (this.s[this.i] === ']') {
      this.i++;
      return;
    }
    for (;;) {
      this.value();
      this.ws();
      if (this.s[this.i] === ']') {
        this.i++;
        return;
      }
      if (this.s[this.i] !== ',') this.fail("expected ',' or ']' after an array element");
      this.i++;
      this.ws();
      if (this.s[this.i] === ']') this.fail("trailing comma before ']'");
    }
  }

  private string(): void {
    this.i++; // opening quote
    while (this.i < this.s.length) {
      const c = this.s[this.i]!;
      if (c === '"') {
        this.i++;
        return;
      }
      if (c < ' ') this.fail('control character (e.g. a raw newline) inside a string');
      if (c === '\\') {
        const e = this.s[this.i + 1];
        if (e === 'u') {
          if (!/^[0-9a-fA-F]{4}$/.test(this.s.slice(this.i + 2, this.i + 6))) this.fail('bad \\u escape in a string');
          this.i += 6;
          continue;
        }
        if (e === undefined || !'"\\/bfnrt'.includes(e)) this.fail('bad escape sequence in a string');
        this.i += 2;
        continue;
      }
      this.i++;
    }
    this.fail('unterminated string');
  }

  private number(): void {
    const re = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
    re.lastIndex = this.i;
    const m = re.exec(this.s);
    if (m === null || m[0] === '-') this.fail('malformed number');
    this.i += m[0].length;
  }
}

class JsonScanError extends Error {
  constructor(readonly offset: number, message: string) {
    super(message);
  }
}

function parseJsonDocument(text: string): unknown {
  if (text.trim() === '') throw invalid('network config is empty: expected a JSON object such as {"Network": "10.5.0.0/16"}');
  try {
    return JSON.parse(text);
  } catch (err) {
    let found: ReturnType<JsonScanner['scan']> = null;
    try {
      found = new JsonScanner(text).scan();
    } catch {
      // The scanner recurses; a config nested a million deep (etcd data) overflows the stack.
      // Without a position, JSON.parse's own message still says what is wrong.
    }
    if (found === null) throw invalid(`network config is malformed JSON: ${(err as Error).message}`, err);
    const before = text.slice(0, found.offset);
    const line = before.split('\n').length;
    const column = found.offset - (before.lastIndexOf('\n') + 1) + 1;
    const near = text.slice(found.offset, found.offset + 20).split('\n')[0]!;
    const nearText = near === '' ? '' : ` near ${JSON.stringify(near)}`;
    throw invalid(
      `network config is malformed JSON at line ${line}, column ${column}${nearText}: ${found.problem}`,
      err,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// parseNetworkConfig

interface DecodedConfig {
  enableIPv4: boolean;
  enableIPv6: boolean;
  network: IPv4Net | null;
  subnetLen: number; // 0 = absent
  subnetMin: number; // 0 = absent (flannel treats 0.0.0.0 as "not set")
  subnetMax: number;
  ipv6Network: { ip: bigint; prefixLen: number } | null;
  ipv6SubnetLen: number;
  ipv6SubnetMin: bigint; // 0n = absent
  ipv6SubnetMax: bigint;
  backend: BackendConfig;
}

const WHERE = 'network config';

function decodeConfig(doc: unknown): DecodedConfig {
  if (!isObject(doc)) throw invalid(`${WHERE} must be a JSON object, got ${describeValue(doc)}`);
  const f = pickFields(doc, CONFIG_FIELDS);

  const networkText = optString(f, 'Network', WHERE, 'an IPv4 CIDR such as "10.5.0.0/16"');
  let network: IPv4Net | null = null;
  if (networkText !== undefined) {
    network = parseIPv4Cidr(networkText, false);
    if (network === null) throw invalid(`invalid IPv4 CIDR format: Network ${JSON.stringify(networkText)}`);
  }
  const ipv6Text = optString(f, 'IPv6Network', WHERE, 'an IPv6 CIDR such as "fc00::/48"');
  let ipv6Network: DecodedConfig['ipv6Network'] = null;
  if (ipv6Text !== undefined) {
    ipv6Network = parseIPv6CidrBig(ipv6Text);
    if (ipv6Network === null) throw invalid(`invalid IPv6 CIDR format: IPv6Network ${JSON.stringify(ipv6Text)}`);
  }

  return {
    enableIPv4: optBool(f, 'EnableIPv4', WHERE) ?? true,
    enableIPv6: optBool(f, 'EnableIPv6', WHERE) ?? false,
    network,
    subnetLen: optUint(f, 'SubnetLen', WHERE) ?? 0,
    subnetMin: decodeIPv4Field(f, 'SubnetMin'),
    subnetMax: decodeIPv4Field(f, 'SubnetMax'),
    ipv6Network,
    ipv6SubnetLen: optUint(f, 'IPv6SubnetLen', WHERE) ?? 0,
    ipv6SubnetMin: decodeIPv6Field(f, 'IPv6SubnetMin'),
    ipv6SubnetMax: decodeIPv6Field(f, 'IPv6SubnetMax'),
    backend: decodeBackend(f.get('Backend')),
  };
}

function decodeIPv4Field(f: Fields<(typeof CONFIG_FIELDS)[number]>, name: 'SubnetMin' | 'SubnetMax'): number {
  const text = optString(f, name, WHERE, 'an IPv4 address such as "10.5.1.0"');
  if (text === undefined) return 0;
  const ip = parseIPv4(text);
  if (ip === null) throw invalid(`invalid IPv4 address format: ${name} ${JSON.stringify(text)}`);
  return ip;
}

function decodeIPv6Field(f: Fields<(typeof CONFIG_FIELDS)[number]>, name: 'IPv6SubnetMin' | 'IPv6SubnetMax'): bigint {
  const text = optString(f, name, WHERE, 'an IPv6 address such as "fc00:0:0:1::"');
  if (text === undefined) return 0n;
  const ip = parseIPv6(text);
  if (ip === null) throw invalid(`invalid IPv6 address format: ${name} ${JSON.stringify(text)}`);
  return ip;
}

function decodeBackend(value: unknown): BackendConfig {
  // flannel's code falls back to udp here although its docs say vxlan; weft follows the docs.
  if (value === undefined) return { type: 'vxlan', raw: {} };
  if (!isObject(value)) {
    throw invalid(`error decoding Backend property of config: Backend must be a JSON object, got ${describeValue(value)}`);
  }
  const type = optString(pickFields(value, ['Type']), 'Type', `${WHERE}: Backend`, 'a backend name such as "vxlan"');
  return { type: (type ?? 'vxlan').toLowerCase(), raw: value };
}

/**
 * Parse and validate a network config document. Throws WeftError('CONFIG_INVALID') with
 * flannel's message when the document is one flannel would reject.
 */
export function parseNetworkConfig(jsonText: string): NetworkConfig {
  const d = decodeConfig(parseJsonDocument(jsonText));
  const v4 = d.enableIPv4 ? checkIPv4(d) : null;
  const v6 = d.enableIPv6 ? checkIPv6(d) : null;
  return {
    enableIPv4: d.enableIPv4,
    enableIPv6: d.enableIPv6,
    network: v4 === null ? null : v4.network,
    subnetLen: v4 === null ? 0 : v4.subnetLen,
    subnetMin: v4 === null ? 0 : v4.subnetMin,
    subnetMax: v4 === null ? 0 : v4.subnetMax,
    ipv6Network: v6 === null ? null : v6.network,
    ipv6SubnetLen: v6 === null ? 0 : v6.subnetLen,
    ipv6SubnetMin: v6 === null ? null : v6.subnetMin,
    ipv6SubnetMax: v6 === null ? null : v6.subnetMax,
    backend: d.backend,
    source: jsonText,
  };
}

/**
 * Ranges a Network must never cover: every host's own loopback, "this network", link-local
 * (cloud metadata services live at 169.254.169.254), multicast and the reserved block with the
 * broadcast address. flannel checks only for 0.0.0.0/0, so `0.0.0.0/1` passes there and routes
 * half the address space (127.0.0.1 included) into the tunnel; weft refuses it. Whether the
 * Network overlaps the host's underlay or its etcd endpoints is checked by weftd at start-up,
 * once the underlay is known (daemon/underlay-guard.ts).
 */
const SPECIAL_RANGES: readonly { readonly net: IPv4Net; readonly what: string }[] = [
  { net: { ip: 0x00000000, prefixLen: 8 }, what: '0.0.0.0/8 ("this network")' },
  { net: { ip: 0x7f000000, prefixLen: 8 }, what: '127.0.0.0/8 (loopback)' },
  { net: { ip: 0xa9fe0000, prefixLen: 16 }, what: '169.254.0.0/16 (link-local, cloud metadata)' },
  { net: { ip: 0xe0000000, prefixLen: 4 }, what: '224.0.0.0/4 (multicast)' },
  { net: { ip: 0xf0000000, prefixLen: 4 }, what: '240.0.0.0/4 (reserved, broadcast)' },
];

/** Why `network` may not be a flannel Network (it covers a special-purpose range), or null. */
export function specialRangeOverlap(network: IPv4Net): string | null {
  for (const r of SPECIAL_RANGES) {
    if (netsOverlap(network, r.net)) {
      return (
        `Network ${formatIPv4(network.ip)}/${network.prefixLen} overlaps ${r.what}: routing it into the overlay would ` +
        `break every host; use a private range that the hosts do not use, such as 10.5.0.0/16`
      );
    }
  }
  return null;
}

/** flannel's CheckNetworkConfig, IPv4 half. */
function checkIPv4(d: DecodedConfig): { network: IPv4Net; subnetLen: number; subnetMin: number; subnetMax: number } {
  const network = d.network;
  // flannel's Empty(): an absent Network and 0.0.0.0/0 look the same to it.
  if (network === null || (network.ip === 0 && network.prefixLen === 0)) {
    throw invalid('please define a correct Network parameter in the flannel config');
  }
  const special = specialRangeOverlap(network);
  if (special !== null) throw invalid(special);
  const subnetLen = defaultSubnetLen(d.subnetLen, network.prefixLen, {
    max: 30, tooSmallPrefix: 28, defaultLen: 24,
    tooLong: 'SubnetLen must be less than /31',
    tooSmall: 'network is too small. Minimum useful network prefix is /28',
  });

  const size = 2 ** (32 - subnetLen);
  // The first subnet is skipped: its .0 would be the Network's own address.
  let subnetMin = d.subnetMin;
  if (subnetMin === 0) subnetMin = network.ip + size;
  else if (!netContains(network, subnetMin)) throw invalid('SubnetMin is not in the range of the Network');

  let subnetMax = d.subnetMax;
  if (subnetMax === 0) subnetMax = network.ip + 2 ** (32 - network.prefixLen) - size;
  else if (!netContains(network, subnetMax)) throw invalid('SubnetMax is not in the range of the Network');

  const mask = maskOf(subnetLen);
  if (((subnetMin & mask) >>> 0) !== subnetMin) {
    throw invalid(`SubnetMin is not on a SubnetLen boundary: ${formatIPv4(subnetMin)}`);
  }
  if (((subnetMax & mask) >>> 0) !== subnetMax) {
    throw invalid(`SubnetMax is not on a SubnetLen boundary: ${formatIPv4(subnetMax)}`);
  }
  return { network, subnetLen, subnetMin, subnetMax };
}

/** flannel's CheckNetworkConfig, IPv6 half (its own messages, which name IPv6Network). */
function checkIPv6(d: DecodedConfig): { network: IPv6Net; subnetLen: number; subnetMin: string; subnetMax: string } {
  const network = d.ipv6Network;
  if (network === null || (network.ip === 0n && network.prefixLen === 0)) {
    throw invalid('please define a correct IPv6Network parameter in the flannel config');
  }
  const subnetLen = defaultSubnetLen(d.ipv6SubnetLen, network.prefixLen, {
    max: 126, tooSmallPrefix: 124, defaultLen: 64,
    tooLong: 'SubnetLen must be less than /127',
    tooSmall: 'IPv6Network is too small. Minimum useful network prefix is /124',
  });

  const size = 1n << BigInt(128 - subnetLen);
  const netMask = maskOf6(network.prefixLen);
  const contains = (ip: bigint): boolean => (ip & netMask) === network.ip;

  let subnetMin = d.ipv6SubnetMin;
  if (subnetMin === 0n) subnetMin = network.ip + size;
  else if (!contains(subnetMin)) throw invalid('IPv6SubnetMin is not in the range of the IPv6Network');

  let subnetMax = d.ipv6SubnetMax;
  if (subnetMax === 0n) subnetMax = network.ip + (1n << BigInt(128 - network.prefixLen)) - size;
  else if (!contains(subnetMax)) throw invalid('IPv6SubnetMax is not in the range of the IPv6Network');

  const mask = maskOf6(subnetLen);
  if ((subnetMin & mask) !== subnetMin) {
    throw invalid(`IPv6SubnetMin is not on a SubnetLen boundary: ${formatIPv6(subnetMin)}`);
  }
  if ((subnetMax & mask) !== subnetMax) {
    throw invalid(`IPv6SubnetMax is not on a SubnetLen boundary: ${formatIPv6(subnetMax)}`);
  }
  return {
    network: { ip: formatIPv6(network.ip), prefixLen: network.prefixLen },
    subnetLen,
    subnetMin: formatIPv6(subnetMin),
    subnetMax: formatIPv6(subnetMax),
  };
}

/**
 * SubnetLen rules shared by both families. Given: at most `max` (room for the tunnel and bridge
 * addresses) and at least prefix+2 (the first subnet is skipped, so two would leave one usable).
 * Absent: `defaultLen` when the network is big enough, else a quarter of the network.
 */
function defaultSubnetLen(
  given: number,
  prefixLen: number,
  r: { max: number; tooSmallPrefix: number; defaultLen: number; tooLong: string; tooSmall: string },
): number {
  if (given > 0) {
    if (given > r.max) throw invalid(r.tooLong);
    if (given < prefixLen + 2) throw invalid('network must be able to accommodate at least four subnets');
    return given;
  }
  if (prefixLen > r.tooSmallPrefix) throw invalid(r.tooSmall);
  return prefixLen <= r.defaultLen - 2 ? r.defaultLen : prefixLen + 2;
}

// ---------------------------------------------------------------------------------------------
// decodeVxlanConfig

/**
 * Decode the vxlan backend's options from `Backend` with flannel's names and defaults
 * (VNI 1, Port 0 = kernel default 8472, GBP/Learning/DirectRouting false, MTU 0/absent = underlay
 * MTU − 50). Field names match case-insensitively, as Go's decoder does.
 */
export function decodeVxlanConfig(backend: BackendConfig): VxlanBackendConfig {
  if (backend.type !== 'vxlan') {
    throw new WeftError('INTERNAL', `decode vxlan backend options: backend type is ${JSON.stringify(backend.type)}, not "vxlan"`);
  }
  const where = 'network config: Backend (vxlan)';
  const f = pickFields(backend.raw, VXLAN_FIELDS);
  const vni = optInt(f, 'VNI', where, 0, MAX_VNI, `an integer from 0 to ${MAX_VNI}`) ?? 1;
  const port = optInt(f, 'Port', where, 0, 65535, 'an integer from 0 to 65535 (0 = kernel default 8472)') ?? 0;
  const mtu = optInt(f, 'MTU', where, 0, 65535, `0 (underlay MTU - 50) or an integer from ${MIN_MTU} to 65535`) ?? 0;
  if (mtu !== 0 && mtu < MIN_MTU) {
    throw invalid(`${where}: MTU must be 0 (underlay MTU - 50) or an integer from ${MIN_MTU} to 65535, got number ${mtu}`);
  }
  return {
    vni,
    port,
    gbp: optBool(f, 'GBP', where) ?? false,
    learning: optBool(f, 'Learning', where) ?? false,
    directRouting: optBool(f, 'DirectRouting', where) ?? false,
    mtu: mtu === 0 ? null : mtu,
  };
}
