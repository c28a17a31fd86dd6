/**
 * weftd's command line: flanneld's flags (compat §8) in every form existing systemd units use,
 * plus weft's own, with flanneld's environment fallbacks.
 *
 * Go's `flag` package accepts `-name=value`, `--name=value`, `-name value` and `--name value`
 * (the last two only for non-booleans; a boolean is `-name` or `-name=false`). Node's
 * util.parseArgs knows only the GNU forms, so argv is first rewritten into one canonical form,
 * `--name=value` (booleans as `--name=true|false`), and util.parseArgs then collects the values.
 *
 * Precedence: flag, then `WEFT_<NAME>`, then `FLANNELD_<NAME>` (upper-cased, `-` → `_`), then the
 * default. As in flanneld, an empty environment variable counts as unset, and a repeatable flag
 * given on the command line replaces the environment's value instead of adding to it.
 */
import { parseArgs } from 'node:util';
import { posix as posixPath } from 'node:path';
import { WeftError } from '../errors';
import { parseIPv4, parseIPv6 } from '../ip';
import { DEFAULT_PREFIX } from '../lease/codec';
import type { DaemonOptions, EtcdFlags } from './types';

type Env = Readonly<Record<string, string | undefined>>;

export type DaemonOptionsResult =
  | { readonly kind: 'run'; readonly options: DaemonOptions }
  | { readonly kind: 'help'; readonly text: string }
  | { readonly kind: 'version' };

interface FlagDef {
  readonly name: string;
  readonly kind: 'string' | 'boolean';
  readonly repeatable?: boolean;
  /** Placeholder shown in the help ("--iface=NAME|IP"). */
  readonly metavar?: string;
  readonly help: string;
  readonly defaultText?: string;
  /** help and version are never taken from the environment. */
  readonly noEnv?: boolean;
}

// ---------------------------------------------------------------------------------------------
// Defaults and limits

export const DEFAULT_ETCD_ENDPOINTS = 'http://127.0.0.1:4001,http://127.0.0.1:2379';
/** flannel's default; one definition, in the lease codec that builds the keys. */
export const DEFAULT_ETCD_PREFIX = DEFAULT_PREFIX;
export const DEFAULT_SUBNET_FILE = '/run/flannel/subnet.env';
export const DEFAULT_SUBNET_LEASE_TTL_SECONDS = 24 * 3600; // flannel's fixed lease TTL
const MIN_SUBNET_LEASE_TTL_SECONDS = 10; // exclusive: keepalives every TTL/3 need some slack
const MAX_SUBNET_LEASE_TTL_SECONDS = 9_000_000_000; // etcd's MaxLeaseTTL
const MAX_RENEW_MARGIN_MINUTES = 1439; // flanneld: less than the 24 h TTL

const ETCD_FLAGS: readonly FlagDef[] = [
  { name: 'etcd-endpoints', kind: 'string', metavar: 'URLS', help: 'comma-separated list of etcd endpoints (http:// or https://)', defaultText: DEFAULT_ETCD_ENDPOINTS },
  { name: 'etcd-prefix', kind: 'string', metavar: 'PATH', help: 'etcd prefix of the network config and the subnet leases', defaultText: DEFAULT_ETCD_PREFIX },
  { name: 'etcd-keyfile', kind: 'string', metavar: 'FILE', help: 'TLS client key for etcd (with --etcd-certfile)' },
  { name: 'etcd-certfile', kind: 'string', metavar: 'FILE', help: 'TLS client certificate for etcd (with --etcd-keyfile)' },
  { name: 'etcd-cafile', kind: 'string', metavar: 'FILE', help: 'TLS certificate authority for etcd' },
  { name: 'etcd-username', kind: 'string', metavar: 'NAME', help: 'etcd user name' },
  { name: 'etcd-password', kind: 'string', metavar: 'PASSWORD', help: 'etcd password; give it as WEFT_ETCD_PASSWORD (or FLANNELD_ETCD_PASSWORD) in the environment, not on the command line, which every user can read in ps' },
];

const DAEMON_FLAGS: readonly FlagDef[] = [
  ...ETCD_FLAGS,
  { name: 'iface', kind: 'string', repeatable: true, metavar: 'NAME|IP', help: 'interface (name or IP) for inter-host traffic; repeatable or comma-separated, first match wins (default: the interface of the default route)' },
  { name: 'iface-regex', kind: 'string', repeatable: true, metavar: 'REGEX', help: 'regular expression matched against interface names, then IPs; repeatable' },
  { name: 'iface-can-reach', kind: 'string', metavar: 'IP', help: 'use the interface the kernel routes to this IP through' },
  { name: 'public-ip', kind: 'string', metavar: 'IPV4', help: 'IPv4 address other hosts reach this one at (default: the interface\'s)' },
  { name: 'public-ipv6', kind: 'string', metavar: 'IPV6', help: 'IPv6 address other hosts reach this one at' },
  { name: 'subnet-file', kind: 'string', metavar: 'FILE', help: 'where FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_MTU and FLANNEL_IPMASQ are written', defaultText: DEFAULT_SUBNET_FILE },
  { name: 'subnet-lease-renew-margin', kind: 'string', metavar: 'MINUTES', help: `renew the subnet lease this many minutes before it expires (1..${MAX_RENEW_MARGIN_MINUTES})`, defaultText: '60' },
  { name: 'subnet-lease-ttl', kind: 'string', metavar: 'DURATION', help: 'weft: subnet lease TTL, a Go duration (24h, 90m, 1h30m) or seconds; more than 10s', defaultText: '24h' },
  { name: 'ip-masq', kind: 'boolean', help: 'masquerade traffic leaving the overlay network (iptables nat rules)', defaultText: 'false' },
  { name: 'iptables-resync', kind: 'string', metavar: 'SECONDS', help: 'how often weftd looks for changes to the ruleset (the nf_tables generation, read over netlink: no process); a change triggers a check of its rules, and a full check runs every max(60, this) seconds (docs/operators.md)', defaultText: '5' },
  { name: 'iptables-forward-rules', kind: 'boolean', help: 'add FORWARD ACCEPT rules for the overlay network', defaultText: 'true' },
  { name: 'healthz-ip', kind: 'string', metavar: 'IP', help: 'address the /healthz endpoint listens on', defaultText: '0.0.0.0' },
  { name: 'healthz-port', kind: 'string', metavar: 'PORT', help: 'port of the /healthz endpoint (0 = off)', defaultText: '0' },
  { name: 'healthz-expose-details', kind: 'boolean', help: 'weft: also serve /metrics and /status on --healthz-ip to other machines and containers (by default only /healthz and /readyz are; the details answer loopback clients, e.g. weft status; POST /probe is always loopback-only); see docs/security.md', defaultText: 'false' },
  { name: 'native-join', kind: 'boolean', help: 'weft: program a new peer\'s neighbour, FDB entry and route in the addon as its lease arrives (IPv4 vxlan, kernel data path, plain-HTTP etcd; docs/performance.md "The native join path"); false: every join through the reconciler', defaultText: 'true' },
  { name: 'probe-interval', kind: 'string', metavar: 'SECONDS', help: 'weft: period of the peer probes while the health port is on (one ICMP echo to each peer through the overlay, up to 32 peers a cycle; docs/observability.md), seconds or a Go duration; 0: no periodic probes (weft status --probe still probes on demand)', defaultText: '30' },
  { name: 'vxlan-fallback', kind: 'string', metavar: 'auto|force|off', help: 'weft: user-space VXLAN when the kernel has none (auto), always (force) or never (off)', defaultText: 'auto' },
  { name: 'wireguard-fallback', kind: 'string', metavar: 'auto|force|off', help: 'weft: wireguard backend: wireguard-go (user space) when the kernel has no WireGuard (auto), always (force) or never (off)', defaultText: 'auto' },
  { name: 'wireguard-key-file', kind: 'string', metavar: 'FILE', help: 'wireguard backend: the private key file, created (mode 0600) if missing and reused across restarts; flannel\'s $WIREGUARD_KEY_FILE is honoured too', defaultText: '/run/flannel/wgkey' },
  { name: 'wireguard-run-dir', kind: 'string', metavar: 'DIR', help: 'weft: wireguard-go\'s UAPI socket, PID and log directory (another than the default runs wireguard-go in a private mount namespace)', defaultText: '/var/run/wireguard' },
  { name: 'resync-interval', kind: 'string', metavar: 'SECONDS', help: 'weft: period of the full reconcile of routes, neighbours and FDB (changes made by others are repaired at once from netlink notifications, a lost notification triggers one at once; this is the safety net), seconds or a Go duration', defaultText: '300' },
  { name: 'version', kind: 'boolean', help: 'print the version and exit', noEnv: true },
  { name: 'help', kind: 'boolean', help: 'print this help and exit (also -h)', noEnv: true },
];

// ---------------------------------------------------------------------------------------------
// Errors

function invalid(message: string, cause?: unknown): WeftError {
  return new WeftError('CONFIG_INVALID', message, cause === undefined ? {} : { cause });
}

/** Where a value came from, for error messages. */
interface RawValue {
  readonly values: readonly string[];
  readonly flag: string;        // "--iface"
  readonly envVar: string | null; // set when the value came from the environment
}

function bad(raw: RawValue, value: string, expected: string, cause?: unknown): WeftError {
  const from = raw.envVar === null ? '' : ` (from environment variable ${raw.envVar})`;
  return invalid(`${raw.flag}: invalid value ${JSON.stringify(value)}${from}: expected ${expected}`, cause);
}

// ---------------------------------------------------------------------------------------------
// Go-style argv → canonical argv → util.parseArgs

/** strconv.ParseBool, which Go's flag package uses for booleans and flanneld for env values. */
function parseGoBool(text: string): boolean | null {
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(text)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(text)) return false;
  return null;
}

const GO_BOOL_ACCEPTED = 'true or false (also 1, t, T, TRUE, True, 0, f, F, FALSE, False)';

function envNames(flag: string): [string, string] {
  const suffix = flag.toUpperCase().replace(/-/g, '_');
  return [`WEFT_${suffix}`, `FLANNELD_${suffix}`];
}

interface Split {
  readonly name: string;
  readonly inline: string | undefined;
}

/** "-name=value" / "--name" → name and inline value; null when the argument is not a flag. */
function splitFlag(arg: string): Split | null {
  if (!arg.startsWith('-') || arg === '-' || arg === '--') return null;
  const body = arg.startsWith('--') ? arg.slice(2) : arg.slice(1);
  const eq = body.indexOf('=');
  return eq < 0 ? { name: body, inline: undefined } : { name: body.slice(0, eq), inline: body.slice(eq + 1) };
}

/**
 * Rewrite Go-style flags into `--name=value`. In 'strict' mode anything that is not one of `defs`
 * is an error; in 'extract' mode (the CLI) it is passed through in `rest`, untouched and in order.
 */
function canonicalise(
  argv: readonly string[],
  defs: readonly FlagDef[],
  mode: 'strict' | 'extract',
  program: string,
): { canonical: string[]; rest: string[] } {
  const byName = new Map(defs.map((d) => [d.name, d]));
  const canonical: string[] = [];
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      if (mode === 'extract') rest.push(...argv.slice(i));
      else if (i + 1 < argv.length) throw invalid(`unexpected argument ${JSON.stringify(argv[i + 1])}: ${program} takes only flags; run '${program} --help' for the list`);
      break;
    }
    const split = splitFlag(arg);
    const def = split === null ? undefined : byName.get(split.name === 'h' && byName.has('help') ? 'help' : split.name);
    if (split === null || def === undefined || arg.startsWith('---')) {
      if (mode === 'extract') {
        rest.push(arg);
        continue;
      }
      if (split === null) throw invalid(`unexpected argument ${JSON.stringify(arg)}: ${program} takes only flags; run '${program} --help' for the list`);
      throw invalid(`unknown flag ${JSON.stringify(arg.split('=')[0])}; run '${program} --help' for the list of flags`);
    }
    if (def.kind === 'boolean') {
      const text = split.inline ?? 'true';
      const value = parseGoBool(text);
      if (value === null) throw invalid(`--${def.name}: invalid value ${JSON.stringify(text)}: expected ${GO_BOOL_ACCEPTED}`);
      canonical.push(`--${def.name}=${value}`);
      continue;
    }
    let value = split.inline;
    if (value === undefined) {
      // Go takes the next argument as the value whatever it looks like; so do we.
      if (i + 1 >= argv.length) throw invalid(`--${def.name}: flag needs a value (--${def.name}=${def.metavar ?? 'VALUE'})`);
      value = argv[++i]!;
    }
    canonical.push(`--${def.name}=${value}`);
  }
  return { canonical, rest };
}

/** Collect each flag's values: command line first, then WEFT_*, then FLANNELD_*. */
function collect(
  argv: readonly string[],
  env: Env,
  defs: readonly FlagDef[],
  mode: 'strict' | 'extract',
  program: string,
): { raw: Map<string, RawValue>; rest: string[] } {
  const { canonical, rest } = canonicalise(argv, defs, mode, program);
  const options: Record<string, { type: 'string'; multiple: true }> = {};
  for (const d of defs) options[d.name] = { type: 'string', multiple: true };
  const { values } = parseArgs({ args: canonical, options, strict: true, allowPositionals: false });

  const raw = new Map<string, RawValue>();
  for (const d of defs) {
    const fromFlags = (values as Record<string, string[] | undefined>)[d.name];
    if (fromFlags !== undefined && fromFlags.length > 0) {
      raw.set(d.name, { values: fromFlags, flag: `--${d.name}`, envVar: null });
      continue;
    }
    if (d.noEnv === true) continue;
    for (const envVar of envNames(d.name)) {
      const v = env[envVar];
      if (v !== undefined && v !== '') {
        raw.set(d.name, { values: [v], flag: `--${d.name}`, envVar });
        break;
      }
    }
  }
  return { raw, rest };
}

// ---------------------------------------------------------------------------------------------
// Value converters. Each takes the collected values; non-repeatable flags use the last one, as
// Go's flag package does when a flag is given twice.

function last(raw: RawValue): string {
  return raw.values[raw.values.length - 1]!;
}

function str(raw: Map<string, RawValue>, name: string): string | null {
  const r = raw.get(name);
  return r === undefined ? null : last(r);
}

function nonEmpty(raw: Map<string, RawValue>, name: string, what: string): string | null {
  const r = raw.get(name);
  if (r === undefined) return null;
  const v = last(r);
  if (v.trim() === '') throw bad(r, v, what);
  return v;
}

function bool(raw: Map<string, RawValue>, name: string, dflt: boolean): boolean {
  const r = raw.get(name);
  if (r === undefined) return dflt;
  const v = parseGoBool(last(r));
  if (v === null) throw bad(r, last(r), GO_BOOL_ACCEPTED);
  return v;
}

function int(raw: Map<string, RawValue>, name: string, dflt: number, min: number, max: number, expected: string): number {
  const r = raw.get(name);
  if (r === undefined) return dflt;
  const text = last(r).trim();
  const n = /^[+-]?\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) throw bad(r, last(r), expected);
  return n;
}

/** Seconds: plain seconds ("30") or a Go duration ("30s", "1h30m"). */
function seconds(r: RawValue, expected: string): number {
  const text = last(r).trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text);
  try {
    return parseGoDuration(text);
  } catch (err) {
    throw bad(r, last(r), expected, err);
  }
}

function isIPv6(text: string): boolean {
  // src/ip.ts's parser: an interface name (no colon) never loads ip-address.
  return parseIPv6(text) !== null;
}

function isIP(text: string): boolean {
  return parseIPv4(text) !== null || isIPv6(text);
}

function ip(raw: Map<string, RawValue>, name: string, family: 4 | 6 | 'any'): string | null {
  const r = raw.get(name);
  if (r === undefined) return null;
  const v = last(r).trim();
  if (family === 4 && parseIPv4(v) === null) {
    const hint = isIPv6(v) ? ' (for an IPv6 address use --public-ipv6)' : '';
    throw bad(r, last(r), `an IPv4 address such as 10.250.0.1${hint}`);
  }
  if (family === 6 && !isIPv6(v)) throw bad(r, last(r), 'an IPv6 address such as fd00::1');
  if (family === 'any' && !isIP(v)) throw bad(r, last(r), 'an IPv4 or IPv6 address');
  return v;
}

/** Linux's dev_valid_name: 1..15 bytes, not "." or "..", no '/', ':' or whitespace. */
function isInterfaceName(text: string): boolean {
  return /^[^/:\s]{1,15}$/.test(text) && text !== '.' && text !== '..' && Buffer.byteLength(text) <= 15;
}

function ifaces(raw: Map<string, RawValue>): string[] {
  const r = raw.get('iface');
  if (r === undefined) return [];
  const out: string[] = [];
  for (const value of r.values) {
    for (const part of value.split(',')) {
      const item = part.trim();
      if (!isIP(item) && !isInterfaceName(item)) {
        throw bad(r, value, 'interface names (up to 15 characters, no "/", ":" or spaces) or IP addresses, comma-separated');
      }
      out.push(item);
    }
  }
  return out;
}

function ifaceRegexes(raw: Map<string, RawValue>): string[] {
  const r = raw.get('iface-regex');
  if (r === undefined) return [];
  for (const value of r.values) {
    try {
      new RegExp(value);
    } catch (err) {
      throw bad(r, value, `a valid regular expression (${(err as Error).message})`, err);
    }
  }
  return [...r.values];
}

function endpoints(raw: Map<string, RawValue>): string[] {
  const r = raw.get('etcd-endpoints');
  const text = r === undefined ? DEFAULT_ETCD_ENDPOINTS : last(r);
  const expected = 'a comma-separated list of http:// or https:// URLs such as http://127.0.0.1:2379';
  const out: string[] = [];
  for (const part of text.split(',')) {
    const item = part.trim();
    let url: URL | null = null;
    try {
      url = new URL(item);
    } catch {
      url = null;
    }
    const ok = url !== null && (url.protocol === 'http:' || url.protocol === 'https:') && url.hostname !== ''
      && (url.pathname === '/' || url.pathname === '') && url.search === '' && url.hash === '';
    if (!ok) {
      if (r === undefined) throw new WeftError('INTERNAL', `default etcd endpoint ${item} is not a URL`);
      throw bad(r, last(r), `${expected}; ${JSON.stringify(item)} is not one`);
    }
    out.push(item);
  }
  return out;
}

/** Cleaned like Go's path.Join(prefix, ...), minus the trailing slash: "/a//b/" → "/a/b", "/" → "". */
function etcdPrefix(raw: Map<string, RawValue>): string {
  const r = raw.get('etcd-prefix');
  if (r === undefined) return DEFAULT_ETCD_PREFIX;
  const v = last(r).trim();
  if (v === '' || !v.startsWith('/')) throw bad(r, last(r), 'an absolute etcd key prefix such as /coreos.com/network');
  return posixPath.normalize(v).replace(/\/+$/, '');
}

function etcdOptions(raw: Map<string, RawValue>): EtcdFlags {
  const keyfile = nonEmpty(raw, 'etcd-keyfile', 'a file path');
  const certfile = nonEmpty(raw, 'etcd-certfile', 'a file path');
  if ((keyfile === null) !== (certfile === null)) {
    const [given, missing] = keyfile === null ? ['--etcd-certfile', '--etcd-keyfile'] : ['--etcd-keyfile', '--etcd-certfile'];
    throw invalid(`${given} is set but ${missing} is not: TLS client authentication to etcd needs both`);
  }
  return {
    etcdEndpoints: endpoints(raw),
    etcdPrefix: etcdPrefix(raw),
    etcdKeyfile: keyfile,
    etcdCertfile: certfile,
    etcdCafile: nonEmpty(raw, 'etcd-cafile', 'a file path'),
    etcdUsername: str(raw, 'etcd-username'),
    etcdPassword: str(raw, 'etcd-password'),
  };
}

function leaseTtl(raw: Map<string, RawValue>): number {
  const r = raw.get('subnet-lease-ttl');
  if (r === undefined) return DEFAULT_SUBNET_LEASE_TTL_SECONDS;
  const expected = `a whole number of seconds more than ${MIN_SUBNET_LEASE_TTL_SECONDS}s, as seconds or a Go duration such as 24h, 90m, 1h30m or 30s`;
  const s = seconds(r, expected);
  if (!Number.isInteger(s) || s <= MIN_SUBNET_LEASE_TTL_SECONDS || s > MAX_SUBNET_LEASE_TTL_SECONDS) throw bad(r, last(r), expected);
  return s;
}

/** --resync-interval's default (seconds). */
export const DEFAULT_RESYNC_SECONDS = 300;

function resyncInterval(raw: Map<string, RawValue>): number {
  // 5 min, as the iptables manager's full check where nf_tables notifies (FULL_RESYNC_NOTIFIED_MS):
  // drift is repaired at once from netlink notifications, and a lost one (the monitor's receive
  // buffer overflowed: ENOBUFS) triggers a full reconcile at once; the periodic one only backs
  // them up. Each is a dump of the device's addresses, neighbours, FDB and routes — RTNL held —
  // and a diff: ~5 ms of CPU per run with 30 peers, so every 60 s it was half of issue #14's idle
  // budget for 30 daemons, every 10 s 0.01 of a core (docs/performance.md, "Idle").
  return period(raw, 'resync-interval', DEFAULT_RESYNC_SECONDS, '10s or 1m');
}

/** --probe-interval's default (seconds), the cycle src/probe/prober.ts has by default too. */
export const DEFAULT_PROBE_INTERVAL_SECONDS = 30;

function probeInterval(raw: Map<string, RawValue>): number {
  // Each cycle is one echo per peer (up to 32) through the overlay and back: in a 30-host lab on
  // one machine about half of an idle daemon's CPU with the health port (docs/performance.md,
  // "tenth pass"). 0 keeps /healthz, /readyz, /metrics and on-demand probes without it.
  return period(raw, 'probe-interval', DEFAULT_PROBE_INTERVAL_SECONDS, '30s or 2m', 'no periodic probes');
}

/**
 * A period flag, seconds or a Go duration, from 1 s to 24 h; 0 as well when `zeroMeans` says what
 * 0 does.
 */
function period(raw: Map<string, RawValue>, name: string, fallback: number, examples: string, zeroMeans?: string): number {
  const r = raw.get(name);
  if (r === undefined) return fallback;
  const expected = `${zeroMeans === undefined ? '' : `0 (${zeroMeans}) or `}at least 1 second, as seconds or a Go duration such as ${examples}`;
  const s = seconds(r, expected);
  if (!((zeroMeans !== undefined && s === 0) || s >= 1) || s > 86400) throw bad(r, last(r), `${expected} (at most 24h)`);
  return s;
}

function iptablesResync(raw: Map<string, RawValue>): number {
  const r = raw.get('iptables-resync');
  if (r === undefined) return 5;
  const expected = 'a whole number of seconds from 1 to 86400 (or a Go duration such as 5s)';
  const s = seconds(r, expected);
  if (!Number.isInteger(s) || s < 1 || s > 86400) throw bad(r, last(r), expected);
  return s;
}

function wireguardFallback(raw: Map<string, RawValue>): 'auto' | 'force' | 'off' {
  const r = raw.get('wireguard-fallback');
  if (r === undefined) return 'auto';
  const v = last(r).trim().toLowerCase();
  if (v === 'auto' || v === 'force' || v === 'off') return v;
  throw bad(r, last(r), 'auto, force or off');
}

function vxlanFallback(raw: Map<string, RawValue>): DaemonOptions['vxlanFallback'] {
  const r = raw.get('vxlan-fallback');
  if (r === undefined) return 'auto';
  const v = last(r).trim().toLowerCase();
  if (v === 'auto' || v === 'force' || v === 'off') return v;
  throw bad(r, last(r), 'auto, force or off');
}

// ---------------------------------------------------------------------------------------------
// Public API

/**
 * Parse weftd's argv (without node and the script) and environment.
 *
 * --subnet-lease-ttl and --subnet-lease-renew-margin are checked against each other only when
 * both are given (flag or environment): a short TTL for tests with the default 60-minute margin
 * is allowed, and the daemon then renews well before expiry on its own; two explicit values that
 * contradict each other (TTL not longer than the margin) are an operator mistake and rejected.
 */
export function parseDaemonOptions(argv: readonly string[], env: Env): DaemonOptionsResult {
  // Help wins over any other problem on the line, as users reach for it when something is wrong.
  for (const arg of argv) {
    if (arg === '--') break;
    if (['-h', '--h', '-help', '--help'].includes(arg)) return { kind: 'help', text: formatDaemonHelp() };
  }
  const { raw } = collect(argv, env, DAEMON_FLAGS, 'strict', 'weftd');
  if (bool(raw, 'help', false)) return { kind: 'help', text: formatDaemonHelp() };
  if (bool(raw, 'version', false)) return { kind: 'version' };

  const renewMargin = int(raw, 'subnet-lease-renew-margin', 60, 1, MAX_RENEW_MARGIN_MINUTES,
    `a whole number of minutes from 1 to ${MAX_RENEW_MARGIN_MINUTES}`);
  const ttl = leaseTtl(raw);
  const ttlRaw = raw.get('subnet-lease-ttl');
  const marginRaw = raw.get('subnet-lease-renew-margin');
  if (ttlRaw !== undefined && marginRaw !== undefined && ttl <= renewMargin * 60) {
    throw invalid(`--subnet-lease-ttl ${JSON.stringify(last(ttlRaw))} (${ttl}s) must be longer than --subnet-lease-renew-margin `
      + `${renewMargin} (${renewMargin * 60}s): the lease would be due for renewal as soon as it is granted`);
  }

  const options: DaemonOptions = {
    ...etcdOptions(raw),
    iface: ifaces(raw),
    ifaceRegex: ifaceRegexes(raw),
    ifaceCanReach: ip(raw, 'iface-can-reach', 'any'),
    publicIp: ip(raw, 'public-ip', 4),
    publicIpv6: ip(raw, 'public-ipv6', 6),
    subnetFile: nonEmpty(raw, 'subnet-file', 'a file path') ?? DEFAULT_SUBNET_FILE,
    subnetLeaseRenewMarginMinutes: renewMargin,
    subnetLeaseTtlSeconds: ttl,
    ipMasq: bool(raw, 'ip-masq', false),
    iptablesResyncSeconds: iptablesResync(raw),
    iptablesForwardRules: bool(raw, 'iptables-forward-rules', true),
    healthzIp: ip(raw, 'healthz-ip', 'any') ?? '0.0.0.0',
    healthzPort: int(raw, 'healthz-port', 0, 0, 65535, 'a port number from 0 (off) to 65535'),
    healthzExposeDetails: bool(raw, 'healthz-expose-details', false),
    probeIntervalSeconds: probeInterval(raw),
    nativeJoin: bool(raw, 'native-join', true),
    vxlanFallback: vxlanFallback(raw),
    wireguardFallback: wireguardFallback(raw),
    wireguardKeyFile: nonEmpty(raw, 'wireguard-key-file', 'a file path') ?? (env.WIREGUARD_KEY_FILE || '/run/flannel/wgkey'),
    wireguardRunDir: nonEmpty(raw, 'wireguard-run-dir', 'a directory path') ?? '/var/run/wireguard',
    resyncIntervalSeconds: resyncInterval(raw),
  };
  return { kind: 'run', options };
}

/**
 * Take the `--etcd-*` flags (any Go form, same environment fallbacks as weftd) out of a command
 * line and return the remaining arguments, untouched and in order, for the caller's own parser.
 * Everything from a `--` on is left in `rest`.
 */
export function parseEtcdFlags(
  argv: readonly string[],
  env: Env,
): { readonly options: EtcdFlags; readonly rest: string[] } {
  const { raw, rest } = collect(argv, env, ETCD_FLAGS, 'extract', 'weft');
  return { options: etcdOptions(raw), rest };
}

/** Go's PrintDefaults layout: the flag on one line, what it does and where else it comes from below. */
function formatFlags(defs: readonly FlagDef[]): string {
  return defs.map((d) => {
    const usage = d.kind === 'boolean' ? `--${d.name}` : `--${d.name}=${d.metavar ?? 'VALUE'}`;
    const lines = [`  ${usage}`, `        ${d.help}${d.defaultText === undefined ? '' : ` (default ${d.defaultText})`}`];
    if (d.noEnv !== true) lines.push(`        env: ${envNames(d.name).join(', ')}`);
    return lines.join('\n');
  }).join('\n');
}

/** The `--etcd-*` flags' help lines, for the weft CLI's own help. */
export function formatEtcdFlagsHelp(): string {
  return formatFlags(ETCD_FLAGS);
}

/** weftd's --help text. */
export function formatDaemonHelp(): string {
  return [
    'Usage: weftd [flags]',
    '',
    'weftd: per-host overlay network daemon, a drop-in for flanneld in etcd mode.',
    '',
    'Flags are accepted as --name=value, --name value, -name=value and -name value; booleans as',
    '--name, --name=true or --name=false. Every flag can also come from the environment as',
    'WEFT_<NAME> or FLANNELD_<NAME> (upper case, "-" becomes "_"); a flag on the command line',
    'wins over WEFT_*, which wins over FLANNELD_*. Empty variables are ignored.',
    '',
    'Flags:',
    formatFlags(DAEMON_FLAGS),
    '',
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------
// Go durations

const DURATION_UNITS: Readonly<Record<string, number>> = {
  ns: 1e-9, us: 1e-6, 'µs': 1e-6, 'μs': 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600,
};

/**
 * Go's time.ParseDuration, in seconds: a sign, then one or more decimal numbers each with a unit
 * (ns, us, µs, ms, s, m, h), e.g. "24h", "1h30m", "1.5s", "-90m"; "0" alone needs no unit.
 * Plain numbers are not durations here (Go rejects them too); callers that want "seconds or a
 * duration" check for a bare number first.
 */
export function parseGoDuration(text: string): number {
  const fail = (why: string): WeftError =>
    invalid(`invalid duration ${JSON.stringify(text)}: ${why}; expected a Go duration such as 24h, 90m, 1h30m or 30s`);
  let rest = text;
  let sign = 1;
  if (rest.startsWith('-') || rest.startsWith('+')) {
    if (rest[0] === '-') sign = -1;
    rest = rest.slice(1);
  }
  if (rest === '0') return 0;
  if (rest === '') throw fail('empty');
  let total = 0;
  const component = /^(\d*)(?:\.(\d*))?([^\d.]*)/;
  while (rest !== '') {
    const m = component.exec(rest)!;
    const [all, whole = '', frac, unit = ''] = m;
    if (whole === '' && (frac === undefined || frac === '')) throw fail(`expected a number at "${rest}"`);
    if (unit === '') throw fail(`missing unit after "${all}" (use ns, us, ms, s, m or h)`);
    const factor = DURATION_UNITS[unit];
    if (factor === undefined) throw fail(`unknown unit "${unit}" (use ns, us, ms, s, m or h)`);
    total += Number(`${whole === '' ? '0' : whole}.${frac ?? ''}0`) * factor;
    rest = rest.slice(all.length);
  }
  return sign * total;
}
