/**
 * `weft config`: the network config at <etcd-prefix>/config (compat §2).
 *
 *   weft config get                      print it as stored
 *   weft config validate FILE|-          check a document with weftd's own rules (no etcd needed)
 *   weft config set FILE|- [--force] [--dry-run]
 *                                        validate, then write; refuses to change Network,
 *                                        SubnetLen or the backend under existing leases unless
 *                                        --force, and says what would break
 *
 * "weftd's own rules" are exactly what weftd applies on start: flannel's validation
 * (parseNetworkConfig, flannel's messages), an IPv4 Network, and a backend this weftd has
 * (createBackend, which also decodes the backend's options). A document weftd would refuse is
 * never written, so a typo cannot take the overlay down at the next restart.
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { createBackend } from '../backend/registry';
import { decodeVxlanConfig, parseNetworkConfig } from '../config/network';
import { formatEtcdFlagsHelp, parseEtcdFlags } from '../config/options';
import type { EtcdFlags, NetworkConfig } from '../config/types';
import { describeError, WeftError } from '../errors';
import { formatIPv4, formatIPv4Cidr, netContainsNet } from '../ip';
import type { LeaseRegistry } from '../lease/registry';
import type { Lease } from '../lease/types';
import { silentLogger } from '../log';
import { NetlinkClient } from '../netlink/client';
import type { CliIO } from './io';
import { createLeaseRegistry } from '../lease/create-registry';

export const CONFIG_USAGE = `usage: weft config get [--etcd-* flags]
       weft config validate FILE|-
       weft config set FILE|- [--force] [--dry-run] [--etcd-* flags]

The network config at <etcd-prefix>/config, e.g. {"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}.

  get        print the stored document
  validate   check a document (a file, or - for stdin) with the rules weftd applies on start
  set        validate, then write the document. Changing Network, SubnetLen or the backend
             (Type, VNI, Port), or moving SubnetMin/SubnetMax past existing leases, is refused
             while leases exist, with what would break; --force writes it anyway.
             --dry-run: validate and check, write nothing.

${formatEtcdFlagsHelp()}`;

/**
 * Validate `text` as weftd does when it reads <prefix>/config. Returns the parsed config; throws
 * WeftError('CONFIG_INVALID') with flannel's (or weftd's) message.
 */
export function validateForWeftd(text: string): NetworkConfig {
  const config = parseNetworkConfig(text);
  if (config.network === null) {
    throw new WeftError('CONFIG_INVALID', 'the network config has IPv4 disabled; weft needs an IPv4 Network (IPv6-only is not supported yet)');
  }
  // The daemon's backend factory: unknown types and bad backend options fail here as in weftd.
  // Constructing a backend touches no kernel state; the netlink client opens no socket unused.
  const nl = new NetlinkClient(silentLogger);
  try {
    createBackend(config, { nl, log: silentLogger });
  } finally {
    nl.close();
  }
  return config;
}

/** One line describing a valid config, with the defaults it implies. */
export function summarize(c: NetworkConfig): string {
  const parts = [
    `Network ${formatIPv4Cidr(c.network!)}`,
    `SubnetLen ${c.subnetLen} (SubnetMin ${formatIPv4(c.subnetMin)}, SubnetMax ${formatIPv4(c.subnetMax)}, ${subnetCount(c)} subnets)`,
    `backend ${backendIdentity(c)}`,
  ];
  return parts.join(', ');
}

function subnetCount(c: NetworkConfig): number {
  return (c.subnetMax - c.subnetMin) / 2 ** (32 - c.subnetLen) + 1;
}

/** What partitions the overlay: hosts that differ in it cannot reach each other. */
function backendIdentity(c: NetworkConfig): string {
  if (c.backend.type !== 'vxlan') return c.backend.type;
  const v = decodeVxlanConfig(c.backend);
  return `vxlan (VNI ${v.vni}, port ${v.port === 0 ? 8472 : v.port}${v.gbp ? ', GBP' : ''})`;
}

/** The changes from `before` to `after` that break hosts holding `leases` (pure). */
export function breakingChanges(before: NetworkConfig, after: NetworkConfig, leases: readonly Lease[]): string[] {
  const out: string[] = [];
  if (before.network && after.network && formatIPv4Cidr(before.network) !== formatIPv4Cidr(after.network)) {
    out.push(`Network ${formatIPv4Cidr(before.network)} -> ${formatIPv4Cidr(after.network)}`);
  }
  if (before.subnetLen !== after.subnetLen) out.push(`SubnetLen ${before.subnetLen} -> ${after.subnetLen}`);
  const b1 = backendIdentity(before);
  const b2 = backendIdentity(after);
  if (b1 !== b2) out.push(`backend ${b1} -> ${b2}`);
  if (out.length === 0 && after.network) {
    const outside = leases.filter((l) => !netContainsNet(after.network!, l.subnet) || l.subnet.ip < after.subnetMin || l.subnet.ip > after.subnetMax);
    if (outside.length > 0) {
      out.push(`SubnetMin..SubnetMax ${formatIPv4(after.subnetMin)}..${formatIPv4(after.subnetMax)} leaves out ${outside.map((l) => formatIPv4Cidr(l.subnet)).join(', ')}`);
    }
  }
  return out;
}

function refusal(prefix: string, changes: readonly string[], leases: readonly Lease[]): string {
  const hosts = leases.map((l) => `${formatIPv4Cidr(l.subnet)} (${l.attrs.PublicIP})`);
  const shown = hosts.length > 6 ? [...hosts.slice(0, 6), `and ${hosts.length - 6} more`] : hosts;
  return [
    `refusing to write ${prefix}/config: it changes ${changes.join('; ')} while ${leases.length} lease(s) exist: ${shown.join(', ')}.`,
    'What would break:',
    '  - each weftd keeps the old config until it restarts; a restarted host deletes its lease if it no longer fits and takes a',
    '    new subnet, so its containers change address and must be restarted with the new subnet.env (docker-opts);',
    '  - hosts on the old and the new config cannot reach each other (other subnets, other VXLAN device or port)',
    '    until every host is restarted;',
    '  - a reservation that no longer fits is ignored by its host.',
    'To go ahead anyway: --force (then restart weftd and Docker on every host). The config in etcd is unchanged.',
  ].join('\n');
}

async function readDocument(source: string): Promise<string> {
  try {
    if (source === '-') {
      const chunks: Buffer[] = [];
      for await (const c of process.stdin) chunks.push(c as Buffer);
      return Buffer.concat(chunks).toString('utf8');
    }
    return await readFile(source, 'utf8');
  } catch (err) {
    throw new WeftError('CONFIG_INVALID', `read network config ${source === '-' ? 'from stdin' : source}: ${(err as Error).message}`, { cause: err });
  }
}

export interface ConfigDeps {
  readonly makeRegistry: (o: EtcdFlags) => LeaseRegistry;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly readDocument: (source: string) => Promise<string>;
}

const defaultDeps: ConfigDeps = { makeRegistry: (o) => createLeaseRegistry(o), env: process.env, readDocument };

function usage(message: string): WeftError {
  return new WeftError('CONFIG_INVALID', `${message}; run 'weft config --help' for usage`);
}

export async function runConfigCommand(argv: readonly string[], io: CliIO, depsIn: Partial<ConfigDeps> = {}): Promise<number> {
  const deps: ConfigDeps = { ...defaultDeps, ...depsIn };
  const { options, rest } = parseEtcdFlags(argv, deps.env);
  let parsed;
  try {
    parsed = parseArgs({
      args: rest, allowPositionals: true, strict: true,
      options: { force: { type: 'boolean' }, 'dry-run': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    });
  } catch (err) {
    throw usage(describeError(err));
  }
  const { values, positionals } = parsed;
  const [sub, ...args] = positionals;
  if (values.help || sub === 'help') {
    io.out(CONFIG_USAGE);
    return 0;
  }
  if (sub === 'validate') {
    if (args.length !== 1) throw usage('weft config validate takes one FILE (or - for stdin)');
    const config = validateForWeftd(await deps.readDocument(args[0]!));
    io.out(`valid: ${summarize(config)}`);
    return 0;
  }
  if (sub === 'get') {
    if (args.length !== 0) throw usage(`unexpected argument ${JSON.stringify(args[0])}`);
    const registry = deps.makeRegistry(options);
    try {
      const text = await registry.getConfig();
      if (text === null) throw new WeftError('CONFIG_MISSING', `no network config at ${registry.prefix}/config on ${registry.location}; write one with weft config set FILE`);
      io.out(text);
      return 0;
    } finally {
      await registry.close();
    }
  }
  if (sub === 'set') {
    if (args.length !== 1) throw usage('weft config set takes one FILE (or - for stdin)');
    return set(await deps.readDocument(args[0]!), io, deps.makeRegistry(options), values.force === true, values['dry-run'] === true);
  }
  throw usage(sub === undefined ? 'missing subcommand (get, set, validate)' : `unknown subcommand ${JSON.stringify(sub)} (get, set, validate)`);
}

async function set(raw: string, io: CliIO, registry: LeaseRegistry, force: boolean, dryRun: boolean): Promise<number> {
  try {
    const text = raw.replace(/\s+$/, '');
    let config: NetworkConfig;
    try {
      config = validateForWeftd(text);
    } catch (err) {
      if (!(err instanceof WeftError)) throw err;
      throw new WeftError('CONFIG_INVALID', `refusing to write ${registry.prefix}/config: ${err.message}; the config in etcd is unchanged`, { cause: err });
    }
    const currentText = await registry.getConfig();
    if (currentText === text) {
      io.out(`${registry.prefix}/config is already this document: ${summarize(config)}`);
      return 0;
    }
    let current: NetworkConfig | null = null;
    if (currentText !== null) {
      try {
        current = parseNetworkConfig(currentText);
      } catch (err) {
        io.err(`note: the current ${registry.prefix}/config is invalid (${describeError(err)}); replacing it`);
      }
    }
    if (current !== null) {
      const leases = (await registry.listSubnets()).leases;
      const breaking = breakingChanges(current, config, leases);
      if (breaking.length > 0 && leases.length > 0) {
        if (!force) {
          io.err(refusal(registry.prefix, breaking, leases));
          return 1;
        }
        io.err(`warning: --force: changing ${breaking.join('; ')} under ${leases.length} lease(s); restart weftd and Docker on every host`);
      }
    }
    if (dryRun) {
      io.out(`would write ${registry.prefix}/config (--dry-run): ${summarize(config)}`);
      return 0;
    }
    await registry.putConfig(text);
    io.out(`wrote ${registry.prefix}/config: ${summarize(config)}`);
    return 0;
  } finally {
    await registry.close();
  }
}
