/**
 * `weft cni config|install`: what a CNI runtime (podman, containerd, CRI-O, kubelet, Nomad)
 * needs to put containers on weft. `config` prints (or writes) a conflist naming the weft
 * plugin; `install` links the plugin into a CNI bin dir. The plugin itself is
 * dist/src/cli/weft-cni.js (src/cni/plugin.ts).
 */
import { chmodSync, lstatSync, mkdirSync, readlinkSync, rmSync, symlinkSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { WeftError } from '../errors';
import { writeFileAtomicSync } from '../fsutil';
import { readFile } from 'node:fs/promises';
import { DEFAULT_DATA_DIR, DEFAULT_SUBNET_FILE, keepSourceRules, parseFlannelEnv, type FlannelEnv, type JsonObject } from '../cni/netconf';
import { ensureKeepSource } from '../cni/plugin';
import type { CliIO } from './io';

export const DEFAULT_CNI_BIN_DIR = '/opt/cni/bin';
export const DEFAULT_NETWORK_NAME = 'weft';

export const CNI_USAGE = `usage: weft cni config [--name ${DEFAULT_NETWORK_NAME}] [--cni-version 1.0.0] [--type weft|flannel]
                       [--subnet-file ${DEFAULT_SUBNET_FILE}] [--data-dir ${DEFAULT_DATA_DIR}]
                       [--ipam-data-dir DIR] [--no-portmap] [-o FILE]
       weft cni install [--bin-dir ${DEFAULT_CNI_BIN_DIR}] [--flannel]
       weft cni keep-source [-f ${DEFAULT_SUBNET_FILE}]

  config    print a CNI network config list for weft's plugin (or write it atomically to FILE,
            e.g. /etc/cni/net.d/10-weft.conflist): the plugin reads subnet.env on every ADD and
            delegates to the standard bridge + host-local plugins (flannel's plugin's keys);
            --ipam-data-dir gives host-local its own lease dir (hosts sharing one filesystem)
  install   link the weft plugin into a CNI bin dir as "weft" (--flannel: also as "flannel", so
            conflists written for flannel work unchanged); the standard plugins (bridge,
            host-local, portmap) must be in the runtime's CNI path too (Debian:
            containernetworking-plugins, /usr/lib/cni)
  keep-source
            when weftd does not masquerade (FLANNEL_IPMASQ=false) the bridge does (Docker's
            --ip-masq=true, CNI's ipMasq) and would rewrite container sources on their way to
            other hosts: insert one nat rule, network → network RETURN, at the top of
            POSTROUTING. The CNI plugin does this itself; Docker needs it after dockerd has
            started (its own rule goes to the top): ExecStartPost=weft cni keep-source`;

/** dist/src/cli/cni.js → dist/src/cli/weft-cni.js */
export function pluginPath(): string {
  return resolve(__dirname, 'weft-cni.js');
}

export interface ConflistOptions {
  readonly name?: string;
  readonly cniVersion?: string;
  readonly type?: string;
  readonly subnetFile?: string;
  readonly dataDir?: string;
  readonly portmap?: boolean;
  /** Extra keys for the plugin entry (the lab gives host-local a per-host dataDir through ipam). */
  readonly extra?: JsonObject;
}

export function conflist(opts: ConflistOptions = {}): JsonObject {
  const plugin: JsonObject = {
    type: opts.type ?? 'weft',
    // As flannel's kube-flannel.yml: a default route via the bridge, hairpin for services.
    delegate: { hairpinMode: true, isDefaultGateway: true },
  };
  if (opts.subnetFile && opts.subnetFile !== DEFAULT_SUBNET_FILE) plugin.subnetFile = opts.subnetFile;
  if (opts.dataDir && opts.dataDir !== DEFAULT_DATA_DIR) plugin.dataDir = opts.dataDir;
  Object.assign(plugin, opts.extra ?? {});
  const plugins: JsonObject[] = [plugin];
  if (opts.portmap ?? true) plugins.push({ type: 'portmap', capabilities: { portMappings: true } });
  return { cniVersion: opts.cniVersion ?? '1.0.0', name: opts.name ?? DEFAULT_NETWORK_NAME, plugins };
}

/** Link the plugin as `names` in `binDir`; the JS file is made executable (tsc does not). */
export function installPlugin(binDir: string, names: readonly string[], target = pluginPath()): string[] {
  chmodSync(target, 0o755);
  mkdirSync(binDir, { recursive: true });
  const done: string[] = [];
  for (const n of names) {
    const link = join(binDir, n);
    let existing: string | null = null;
    try {
      existing = lstatSync(link).isSymbolicLink() ? readlinkSync(link) : '(a file)';
    } catch {
      existing = null;
    }
    if (existing !== null && existing !== target) {
      if (existing === '(a file)') {
        throw new WeftError('CONFIG_INVALID', `${link} exists and is not weft's plugin (flannel's own?): remove it first if weft should replace it`);
      }
      rmSync(link);
    }
    if (existing !== target) symlinkSync(target, link);
    done.push(link);
  }
  return done;
}

export async function runCniCommand(argv: string[], io: CliIO): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === 'help' || sub === '--help' || sub === '-h') {
    io.out(CNI_USAGE);
    return sub === undefined ? 2 : 0;
  }
  let values: Record<string, unknown>;
  try {
    ({ values } = parseArgs({
      args: rest, strict: true, allowPositionals: false,
      options: sub === 'config'
        ? {
          name: { type: 'string' }, 'cni-version': { type: 'string' }, type: { type: 'string' },
          'subnet-file': { type: 'string' }, 'data-dir': { type: 'string' }, 'ipam-data-dir': { type: 'string' },
          'no-portmap': { type: 'boolean' },
          output: { type: 'string', short: 'o' },
        }
        : sub === 'keep-source'
          ? { 'subnet-file': { type: 'string', short: 'f' } }
          : { 'bin-dir': { type: 'string' }, flannel: { type: 'boolean' } },
    }));
  } catch (e) {
    io.err(`weft cni ${sub}: ${(e as Error).message}\n${CNI_USAGE}`);
    return 2;
  }
  const str = (k: string): string | undefined => (typeof values[k] === 'string' ? values[k] as string : undefined);
  if (sub === 'config') {
    const text = JSON.stringify(conflist({
      name: str('name'), cniVersion: str('cni-version'), type: str('type'), subnetFile: str('subnet-file'),
      dataDir: str('data-dir'), portmap: !values['no-portmap'],
      // host-local keeps its leases per network name; hosts sharing a filesystem need one dir each.
      extra: str('ipam-data-dir') === undefined ? {} : { ipam: { dataDir: str('ipam-data-dir') ?? '' } },
    }), null, 2) + '\n';
    const out = str('output');
    if (out === undefined) {
      io.out(text);
    } else {
      writeFileAtomicSync(out, text, { mode: 0o644, what: 'the CNI network config' });
      io.out(`wrote ${out}`);
    }
    return 0;
  }
  if (sub === 'install') {
    const links = installPlugin(str('bin-dir') ?? DEFAULT_CNI_BIN_DIR, values.flannel ? ['weft', 'flannel'] : ['weft']);
    io.out(`linked ${links.join(', ')} → ${pluginPath()}`);
    return 0;
  }
  if (sub === 'keep-source') {
    const file = str('subnet-file') ?? DEFAULT_SUBNET_FILE;
    let env: FlannelEnv;
    try {
      env = parseFlannelEnv(await readFile(file, 'utf8'), file);
    } catch (e) {
      throw new WeftError('CONFIG_MISSING', `${(e as Error).message}`.replace(/^weft: /, ''), { cause: e });
    }
    if (env.ipMasq) {
      io.out(`${file}: FLANNEL_IPMASQ=true: weftd masquerades and keeps overlay sources itself; nothing to do`);
      return 0;
    }
    for (const r of keepSourceRules({ ipMasq: true }, env)) {
      try {
        const added = ensureKeepSource(process.env, r.v6, r.network);
        io.out(`${added ? 'added' : 'kept'}: -t nat POSTROUTING -s ${r.network} -d ${r.network} -j RETURN (${r.v6 ? 'ip6tables' : 'iptables'})`);
      } catch (e) {
        throw new WeftError('INTERNAL', (e as Error).message.replace(/^weft: /, ''), { cause: e });
      }
    }
    return 0;
  }
  io.err(`weft cni: unknown command "${sub}"\n${CNI_USAGE}`);
  return 2;
}
