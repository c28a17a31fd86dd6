/**
 * `weft docker-opts`: flannel's dist/mk-docker-opts.sh as a weft command, plus `--daemon-json`.
 *
 * Drop-in contract (compat §6), read from the script itself:
 * - Flags are getopts("f:d:icmk:?h"): -f subnet file (default /run/flannel/subnet.env), -d Docker
 *   env file to write (default /run/docker_opts.env), -i one variable per option, -c one combined
 *   variable, -k the combined variable's name (default DOCKER_OPTS), -m leave --ip-masq out.
 *   Neither -i nor -c means both. Flags may be bundled (-ic, -fFILE) and stop at the first
 *   argument that is not one.
 * - The options are DOCKER_OPT_BIP="--bip=$FLANNEL_SUBNET", DOCKER_OPT_MTU="--mtu=$FLANNEL_MTU"
 *   and DOCKER_OPT_IPMASQ, which is inverted: FLANNEL_IPMASQ=true (flannel masquerades) gives
 *   Docker --ip-masq=false, false gives --ip-masq=true. The script collects every variable whose
 *   name contains DOCKER_OPT_ (`set | grep`), so ones inherited from the environment come along,
 *   in the sorted order `set` prints them (DOCKER_OPT_BIP, DOCKER_OPT_IPMASQ, DOCKER_OPT_MTU).
 * - The combined value starts from the variable's current value (environment or subnet file) plus
 *   one space when that is not empty, then gets " <value>" per option — hence its leading space:
 *   DOCKER_OPTS=" --bip=10.1.74.1/24 --ip-masq=true --mtu=1472".
 * - Output lines are NAME="value"; individual lines first, the combined line last.
 * - After writing, the script fails (exit 1) if the routing table already routes this host's
 *   subnet via a gateway ("Your routing table already contains the subnet: ...").
 *
 * Where weft deliberately differs: a missing or malformed subnet file is an error naming the file
 * and the variable (the script silently writes DOCKER_OPTS=" " and Docker starts on the wrong
 * bridge); files are replaced atomically (the script truncates, then appends); usage errors exit 2.
 *
 * `--daemon-json [PATH]` (default /etc/docker/daemon.json) merges "bip", "mtu" and "ip-masq" into
 * Docker's daemon.json instead, keeping every other key and the key order, writing only when
 * something changes (idempotent), and printing what changed.
 */
import { promises as fsp } from 'node:fs';
import { WeftError, describeError } from '../errors';
import { formatCidr, formatIPv4, formatIPv4Cidr, parseIPv4Cidr, parseIPv6Cidr } from '../ip';
import { parseSubnetEnv } from '../daemon/subnetenv';
import { NetlinkClient } from '../netlink/client';
import { writeFileAtomicSync } from '../fsutil';
import type { CliIO } from './io';

export const DEFAULT_SUBNET_ENV = '/run/flannel/subnet.env';
export const DEFAULT_DOCKER_ENV = '/run/docker_opts.env';
export const DEFAULT_COMBINED_KEY = 'DOCKER_OPTS';
export const DEFAULT_DAEMON_JSON = '/etc/docker/daemon.json';

export const DOCKER_OPTS_USAGE = `usage: weft docker-opts [-f FLANNEL-ENV-FILE] [-d DOCKER-ENV-FILE] [-i] [-c] [-m] [-k COMBINED-KEY]
       weft docker-opts --daemon-json [PATH] [-f FLANNEL-ENV-FILE] [-m]

Generate Docker daemon options from the subnet file weftd (or flanneld) writes; a drop-in for
flannel's mk-docker-opts.sh, same flags, same output.

  -f FILE   subnet file to read (default ${DEFAULT_SUBNET_ENV})
  -d FILE   Docker env file to write (default ${DEFAULT_DOCKER_ENV})
  -i        write each option as its own variable, e.g. DOCKER_OPT_MTU="--mtu=1450"
  -c        write the options combined into one variable (DOCKER_OPTS)
  -k KEY    name of the combined variable (default ${DEFAULT_COMBINED_KEY})
  -m        leave out --ip-masq (older Docker versions)
            (neither -i nor -c: both)
  --daemon-json [PATH]
            merge "bip", "mtu" and "ip-masq" into Docker's daemon.json (default
            ${DEFAULT_DAEMON_JSON}) instead of writing the env file (also the env file if -d is
            given); other keys are kept; prints what changed; restart Docker to apply
  -h, --help
            this help

FLANNEL_IPMASQ=true (weftd --ip-masq masquerades) turns into Docker's --ip-masq=false, and the
other way round, so that traffic is masqueraded exactly once.`;

export interface DockerOptsFlags {
  readonly subnetFile: string;
  readonly dockerEnvFile: string;
  /** -d was given (with --daemon-json, the env file is then written too). */
  readonly dockerEnvFileGiven: boolean;
  readonly individual: boolean;
  readonly combined: boolean;
  readonly combinedKey: string;
  /** false with -m. */
  readonly ipMasq: boolean;
  readonly daemonJson: string | null;
}

export type DockerOptsCommand = { readonly kind: 'help' } | { readonly kind: 'run'; readonly flags: DockerOptsFlags };

function usageError(message: string): WeftError {
  return new WeftError('CONFIG_INVALID', `${message}; run 'weft docker-opts --help' for the flags`);
}

const SHELL_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** getopts("f:d:icmk:?h") plus weft's long options. Throws WeftError('CONFIG_INVALID') on a usage error. */
export function parseDockerOptsArgs(argv: readonly string[]): DockerOptsCommand {
  let subnetFile = DEFAULT_SUBNET_ENV;
  let dockerEnvFile = DEFAULT_DOCKER_ENV;
  let dockerEnvFileGiven = false;
  let individual = false;
  let combined = false;
  let combinedKey = DEFAULT_COMBINED_KEY;
  let ipMasq = true;
  let daemonJson: string | null = null;

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') break;
    if (arg === '--help') return { kind: 'help' };
    if (arg === '--daemon-json' || arg.startsWith('--daemon-json=')) {
      if (arg.includes('=')) daemonJson = arg.slice('--daemon-json='.length);
      else if (i + 1 < argv.length && !argv[i + 1]!.startsWith('-')) daemonJson = argv[++i]!;
      else daemonJson = DEFAULT_DAEMON_JSON;
      if (daemonJson === '') throw usageError('--daemon-json: empty path');
      continue;
    }
    if (arg.startsWith('--')) throw usageError(`unknown option ${JSON.stringify(arg.split('=')[0])}`);
    // getopts stops at the first argument that is not an option.
    if (!arg.startsWith('-') || arg === '-') break;
    for (let j = 1; j < arg.length; j++) {
      const c = arg[j]!;
      if (c === 'f' || c === 'd' || c === 'k') {
        let value = arg.slice(j + 1);
        if (value === '') {
          if (i + 1 >= argv.length) throw usageError(`option -${c} needs a value`);
          value = argv[++i]!;
        }
        if (c === 'f') subnetFile = value;
        else if (c === 'd') {
          dockerEnvFile = value;
          dockerEnvFileGiven = true;
        } else {
          if (!SHELL_NAME.test(value)) throw usageError(`-k ${JSON.stringify(value)}: not a shell variable name`);
          combinedKey = value;
        }
        break;
      }
      if (c === 'i') individual = true;
      else if (c === 'c') combined = true;
      else if (c === 'm') ipMasq = false;
      else if (c === 'h' || c === '?') return { kind: 'help' };
      else throw usageError(`unknown option -${c}`);
    }
  }
  if (!individual && !combined) {
    individual = true;
    combined = true;
  }
  return { kind: 'run', flags: { subnetFile, dockerEnvFile, dockerEnvFileGiven, individual, combined, combinedKey, ipMasq, daemonJson } };
}

// ---------------------------------------------------------------------------------------------
// The subnet file

/** The three variables mk-docker-opts.sh uses, validated, as written in the file. */
export interface FlannelVars {
  /** FLANNEL_SUBNET as written, e.g. "10.1.74.1/24"; null on an IPv6-only network (no such line). */
  readonly subnet: string | null;
  /**
   * The network of FLANNEL_IPV6_SUBNET ("fd00:5:0:22::/64" for fd00:5:0:22::1/64), Docker's
   * --fixed-cidr-v6; null without IPv6. mk-docker-opts.sh ignores IPv6; weft adds
   * DOCKER_OPT_IPV6="--ipv6 --fixed-cidr-v6=..." (and "ipv6"/"fixed-cidr-v6" in daemon.json) only
   * when the file has it, so an IPv4 subnet file gives the script's bytes unchanged.
   */
  readonly ipv6Subnet: string | null;
  /** FLANNEL_MTU as written, e.g. "1472". */
  readonly mtu: string;
  /** FLANNEL_IPMASQ; null when the file has none. */
  readonly ipMasq: boolean | null;
}

function badVar(file: string, name: string, value: string, expected: string): WeftError {
  return new WeftError('BAD_DATA', `subnet file ${file}: ${name}=${JSON.stringify(value)} is not ${expected}`);
}

/** Validate the variables of a parsed subnet file; errors name the file and the variable. */
export function flannelVarsFrom(vars: Readonly<Record<string, string>>, file: string): FlannelVars {
  const need = (name: string): string => {
    const v = vars[name];
    if (v === undefined || v === '') {
      throw new WeftError('BAD_DATA', `subnet file ${file} has no ${name}: is it a subnet file written by weftd or flanneld? (expected FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ)`);
    }
    return v;
  };
  const v6Text = vars.FLANNEL_IPV6_SUBNET;
  let ipv6Subnet: string | null = null;
  if (v6Text !== undefined && v6Text !== '') {
    const net6 = parseIPv6Cidr(v6Text, false);
    if (net6 === null || net6.prefixLen === 0 || /\s/.test(v6Text)) {
      throw badVar(file, 'FLANNEL_IPV6_SUBNET', v6Text, 'this host\'s IPv6 address with prefix length, such as fd00:5:0:22::1/64');
    }
    ipv6Subnet = formatCidr(net6);
  }
  // An IPv6-only subnet file has no FLANNEL_SUBNET (flanneld writes none with EnableIPv4 false).
  const subnet = ipv6Subnet !== null && (vars.FLANNEL_SUBNET ?? '') === '' ? null : need('FLANNEL_SUBNET');
  const net = subnet === null ? null : parseIPv4Cidr(subnet, false);
  if (subnet !== null && (net === null || net.prefixLen === 0 || /\s/.test(subnet))) {
    throw badVar(file, 'FLANNEL_SUBNET', subnet, 'this host\'s address with prefix length, such as 10.1.74.1/24');
  }
  const mtu = need('FLANNEL_MTU');
  if (!/^\d{1,5}$/.test(mtu) || Number(mtu) < 68 || Number(mtu) > 65535) {
    throw badVar(file, 'FLANNEL_MTU', mtu, 'an MTU from 68 to 65535');
  }
  const masqText = vars.FLANNEL_IPMASQ;
  let ipMasq: boolean | null = null;
  if (masqText !== undefined && masqText !== '') {
    // The script's own check and message ("Invalid value of FLANNEL_IPMASQ: ..."), plus the file.
    if (masqText !== 'true' && masqText !== 'false') {
      throw new WeftError('BAD_DATA', `subnet file ${file}: Invalid value of FLANNEL_IPMASQ: ${masqText} (expected true or false)`);
    }
    ipMasq = masqText === 'true';
  }
  return { subnet, ipv6Subnet, mtu, ipMasq };
}

/** Read and validate the subnet file; a missing file is an error that says who writes it. */
export async function readFlannelVars(file: string): Promise<{ vars: Record<string, string>; flannel: FlannelVars }> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new WeftError('CONFIG_MISSING', `subnet file ${file} does not exist: weftd writes it once it holds a subnet lease (is weftd running? is -f right?)`);
    }
    throw new WeftError('BAD_DATA', `read subnet file ${file}: ${(err as Error).message}`, { cause: err });
  }
  const vars = parseSubnetEnv(text, `subnet file ${file}`);
  return { vars, flannel: flannelVarsFrom(vars, file) };
}

// ---------------------------------------------------------------------------------------------
// The options (pure)

export interface DockerOptions {
  /** DOCKER_OPT_* variables in the order the script writes them. */
  readonly vars: readonly (readonly [name: string, value: string])[];
  /** The combined variable's value, leading space included. */
  readonly combined: string;
}

/**
 * The script's options. `inherited` are the variables the script would see besides its own: the
 * environment overlaid with the subnet file's variables (sourcing the file overrides the
 * environment). Only names containing DOCKER_OPT_ and the combined key are used from it.
 */
export function dockerOptions(
  flannel: FlannelVars,
  flags: Pick<DockerOptsFlags, 'ipMasq' | 'combinedKey'>,
  inherited: Readonly<Record<string, string | undefined>> = {},
): DockerOptions {
  const all = new Map<string, string>();
  for (const [name, value] of Object.entries(inherited)) {
    if (name.includes('DOCKER_OPT_') && value !== undefined) all.set(name, value);
  }
  if (flannel.subnet !== null) all.set('DOCKER_OPT_BIP', `--bip=${flannel.subnet}`);
  if (flannel.ipv6Subnet !== null) all.set('DOCKER_OPT_IPV6', `--ipv6 --fixed-cidr-v6=${flannel.ipv6Subnet}`);
  all.set('DOCKER_OPT_MTU', `--mtu=${flannel.mtu}`);
  if (flannel.ipMasq !== null && flags.ipMasq) all.set('DOCKER_OPT_IPMASQ', `--ip-masq=${!flannel.ipMasq}`);
  // `set` lists variables sorted by strcmp of "NAME=value" (dash); comparing "NAME=" is the same
  // for distinct names.
  const vars = [...all].sort(([a], [b]) => compareBytes(`${a}=`, `${b}=`));
  let combined = inherited[flags.combinedKey] ?? '';
  if (combined !== '') combined += ' ';
  for (const [, value] of vars) combined += ` ${value}`;
  return { vars, combined };
}

function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** The Docker env file's text: individual lines, then the combined line; "" when neither. */
export function formatDockerEnv(opts: DockerOptions, flags: Pick<DockerOptsFlags, 'individual' | 'combined' | 'combinedKey'>): string {
  const lines: string[] = [];
  if (flags.individual) for (const [name, value] of opts.vars) lines.push(`${name}="${value}"`);
  if (flags.combined) lines.push(`${flags.combinedKey}="${opts.combined}"`);
  return lines.map((l) => `${l}\n`).join('');
}

// ---------------------------------------------------------------------------------------------
// daemon.json (pure)

export interface DaemonJsonSettings {
  /** null: left as it is (IPv6-only subnet file). */
  readonly bip: string | null;
  /** Docker's "fixed-cidr-v6" (with "ipv6": true); null without IPv6. */
  readonly fixedCidrV6?: string | null;
  readonly mtu: number;
  /** Docker's "ip-masq"; null leaves the key as it is (-m, or no FLANNEL_IPMASQ). */
  readonly ipMasq: boolean | null;
}

export interface DaemonJsonChange {
  readonly key: string;
  /** undefined: the key was absent. */
  readonly from: unknown;
  readonly to: unknown;
}

export interface DaemonJsonMerge {
  /** The new file text; null when nothing changes (leave the file alone). */
  readonly text: string | null;
  readonly changes: readonly DaemonJsonChange[];
}

export function daemonJsonSettings(flannel: FlannelVars, flags: Pick<DockerOptsFlags, 'ipMasq'>): DaemonJsonSettings {
  return {
    bip: flannel.subnet, fixedCidrV6: flannel.ipv6Subnet, mtu: Number(flannel.mtu),
    ipMasq: flags.ipMasq && flannel.ipMasq !== null ? !flannel.ipMasq : null,
  };
}

/**
 * Merge the settings into daemon.json's text (null or blank: no file yet). Every other key and
 * the order of keys are kept; the indentation of the existing file is reused. Throws
 * WeftError('BAD_DATA') naming `file` when the text is not a JSON object: a file Docker could
 * not read either is never overwritten.
 */
export function mergeDaemonJson(existing: string | null, settings: DaemonJsonSettings, file: string): DaemonJsonMerge {
  let doc: Record<string, unknown> = {};
  if (existing !== null && existing.trim() !== '') {
    let parsed: unknown;
    try {
      parsed = JSON.parse(existing);
    } catch (err) {
      throw new WeftError('BAD_DATA', `Docker's daemon.json ${file} is not valid JSON (${(err as Error).message}); fix or remove it, it was left unchanged`, { cause: err });
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new WeftError('BAD_DATA', `Docker's daemon.json ${file} must hold a JSON object, not ${Array.isArray(parsed) ? 'an array' : JSON.stringify(parsed)}; it was left unchanged`);
    }
    doc = parsed as Record<string, unknown>;
  }
  const wanted = wantedKeys(settings);
  const changes: DaemonJsonChange[] = [];
  const next: Record<string, unknown> = { ...doc };
  for (const [key, value] of wanted) {
    const had = Object.prototype.hasOwnProperty.call(doc, key);
    if (had && JSON.stringify(doc[key]) === JSON.stringify(value)) continue;
    changes.push({ key, from: had ? doc[key] : undefined, to: value });
    next[key] = value;
  }
  if (changes.length === 0) return { text: null, changes };
  return { text: `${JSON.stringify(next, null, indentOf(existing))}\n`, changes };
}

/** The daemon.json keys weft sets, in this order. */
function wantedKeys(settings: DaemonJsonSettings): [string, unknown][] {
  const wanted: [string, unknown][] = [];
  if (settings.bip !== null) wanted.push(['bip', settings.bip]);
  wanted.push(['mtu', settings.mtu]);
  if (settings.ipMasq !== null) wanted.push(['ip-masq', settings.ipMasq]);
  if (settings.fixedCidrV6) wanted.push(['ipv6', true], ['fixed-cidr-v6', settings.fixedCidrV6]);
  return wanted;
}

/** The indentation of the first indented line ("\t", "    "); two spaces by default. */
function indentOf(text: string | null): string {
  const m = text === null ? null : /\n([ \t]+)\S/.exec(text);
  return m?.[1] ?? '  ';
}

export function formatDaemonJsonChanges(file: string, merge: DaemonJsonMerge, settings: DaemonJsonSettings): string {
  const show = (v: unknown): string => (v === undefined ? '(unset)' : JSON.stringify(v));
  if (merge.changes.length === 0) {
    const has = wantedKeys(settings).map(([k, v]) => `"${k}": ${show(v)}`);
    return `${file}: unchanged (already has ${has.join(', ')})`;
  }
  return [
    `${file}: updated`,
    ...merge.changes.map((c) => `  "${c.key}": ${show(c.from)} -> ${show(c.to)}`),
    'restart Docker to apply (systemctl restart docker)',
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------
// The command

export interface DockerOptsDeps {
  readonly env: Readonly<Record<string, string | undefined>>;
  /**
   * Routes in the main table to exactly `subnet` that go via a gateway, described like `ip route`
   * prints them. The script's last step refuses a host whose routing table already sends its own
   * subnet elsewhere.
   */
  readonly gatewayRoutesTo: (subnet: string) => Promise<string[]>;
}

export const defaultDockerOptsDeps: DockerOptsDeps = {
  env: process.env,
  gatewayRoutesTo: async (subnet) => {
    const nl = new NetlinkClient();
    try {
      const routes = await nl.listRoutes(undefined, subnet.includes(':') ? 6 : 4);
      const out: string[] = [];
      for (const r of routes) {
        if (formatIPv4Cidr(r.dst) !== subnet || r.gateway === null) continue;
        const dev = r.oif === null ? null : await nl.getLinkByIndex(r.oif);
        out.push(`${subnet} via ${r.gateway}${dev ? ` dev ${dev.name}` : ''}${r.onlink ? ' onlink' : ''}`);
      }
      return out;
    } finally {
      nl.close();
    }
  },
};

export async function runDockerOptsCommand(argv: readonly string[], io: CliIO, deps: DockerOptsDeps = defaultDockerOptsDeps): Promise<number> {
  const cmd = parseDockerOptsArgs(argv);
  if (cmd.kind === 'help') {
    io.out(DOCKER_OPTS_USAGE);
    return 0;
  }
  const flags = cmd.flags;
  const { vars, flannel } = await readFlannelVars(flags.subnetFile);

  if (flags.daemonJson === null || flags.dockerEnvFileGiven) {
    // Sourcing the subnet file overrides the environment.
    const opts = dockerOptions(flannel, flags, { ...deps.env, ...vars });
    writeFileAtomicSync(flags.dockerEnvFile, formatDockerEnv(opts, flags), { what: 'Docker env file' });
  }
  if (flags.daemonJson !== null) {
    const file = flags.daemonJson;
    const existing = await fsp.readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return null;
      throw new WeftError('BAD_DATA', `read Docker's daemon.json ${file}: ${err.message}`, { cause: err });
    });
    const settings = daemonJsonSettings(flannel, flags);
    const merge = mergeDaemonJson(existing, settings, file);
    if (merge.text !== null) writeFileAtomicSync(file, merge.text, { what: 'Docker\'s daemon.json' });
    io.out(formatDaemonJsonChanges(file, merge, settings));
  }

  // The script's last step, after writing (so its exit status alone tells systemd to hold Docker).
  // The check covers the subnet the script checks (IPv4), else the IPv6 one.
  const net = flannel.subnet === null ? null : parseIPv4Cidr(flannel.subnet, false)!;
  const network = net === null ? flannel.ipv6Subnet! : `${formatIPv4(net.ip)}/${net.prefixLen}`;
  let conflicting: string[] = [];
  try {
    conflicting = await deps.gatewayRoutesTo(network);
  } catch (err) {
    io.err(`warning: could not read the routing table to check ${network}: ${describeError(err)}`);
  }
  if (conflicting.length > 0) {
    io.err(`Your routing table already contains the subnet: ${conflicting.join('\n')}`);
    return 1;
  }
  return 0;
}
