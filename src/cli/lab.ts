/**
 * `weft lab ...`: a thin command layer over src/lab. `weft` dispatches here with the arguments
 * after "lab"; this file also runs on its own (`node dist/src/cli/lab.js up`), which the e2e
 * tests use. Exit codes: 0 ok, 1 failure (including an unreachable pair in the ping matrix),
 * 2 usage error.
 */
import { constants } from 'node:os';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { describeError, WeftError } from '../errors';
import {
  DEFAULT_BACKEND, DEFAULT_HEALTHZ_PORT, DEFAULT_LAB_NAME, DEFAULT_NETWORK, Lab, defaultStateDir, findTools,
  formatPingMatrix, formatStatus, labExists, requireRoot, type Tools,
} from '../lab';
import { parseRuntime, type RuntimeKind } from '../lab/runtimes';
import { safeLine } from './io';

export interface LabIO {
  out(text: string): void;
  err(text: string): void;
}

// Control characters escaped (terminal injection, src/text.ts), like every CLI's output.
const stdio: LabIO = {
  out: (t) => process.stdout.write(safeLine(t)),
  err: (t) => process.stderr.write(safeLine(t)),
};

export const LAB_USAGE = `usage: weft lab <command> [--name NAME] [--state-dir DIR]

  up [--hosts N] [--network ${DEFAULT_NETWORK}] [--backend ${DEFAULT_BACKEND}] [--prefix P]
     [--weftd PATH] [--weftd-arg ARG]... [--healthz-port ${DEFAULT_HEALTHZ_PORT}] [--no-daemons]
     [--runtime namespaces|docker|podman] [--no-containers] [--ipv6 | --ipv6-only]
                        build the lab: underlay, etcd, N hosts running weftd, a container per host;
                        prints the leases and a container ping matrix. --runtime docker|podman: a
                        real dockerd / podman per host, configured through weft docker-opts /
                        weft's CNI plugin, a busybox container each; --no-containers: none (bring
                        your own runtime); --ipv6: dual stack (IPv6 underlay fd00:250::/64,
                        IPv6Network fd00:5::/48, a second ping matrix over IPv6); --ipv6-only:
                        EnableIPv4 false, the containers have IPv6 only
  status                namespaces, processes, subnets, leases
  ping                  run the container-to-container ping matrix again
  leases                the subnet leases in etcd
  exec HOST [--] CMD... run CMD in a namespace (HOST: h1, h1-c1, etcd, net); default a shell
  logs HOST             weftd's log on HOST (or etcd's: logs etcd)
  add-host              add host h<N+1>
  remove-host HOST      stop weftd on HOST and delete its namespaces
  stop HOST [--signal SIGTERM|SIGKILL|...]   stop weftd on HOST
  start HOST            start weftd on HOST again
  restart HOST          stop and start weftd on HOST
  down                  stop everything and delete every namespace and the state dir

Everything lives in network namespaces named <prefix>net, <prefix>etcd, <prefix>hN, <prefix>hN-c1
(prefix "weft-" for the default lab); state and logs under ${defaultStateDir('<name>')}.`;

type Handler = (ctx: Ctx, args: string[]) => Promise<number>;

interface Ctx {
  readonly name: string;
  readonly stateDir: string;
  readonly io: LabIO;
  tools(): Tools;
  open(): Lab;
}

export async function runLabCommand(argv: string[], io: LabIO = stdio): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === 'help' || sub === '--help' || sub === '-h') {
    io.out(LAB_USAGE);
    return sub === undefined ? 2 : 0;
  }
  const handler = HANDLERS[sub];
  if (!handler) {
    io.err(`weft lab: unknown command "${sub}"\n${LAB_USAGE}`);
    return 2;
  }
  try {
    const { common, remaining } = splitCommon(rest);
    requireRoot();
    let tools: Tools | null = null;
    const ctx: Ctx = {
      name: common.name,
      stateDir: common.stateDir,
      io,
      tools: () => (tools ??= findTools()),
      open: () => Lab.open(common.stateDir, { tools: ctx.tools(), progress: (l) => io.out(`  ${l}`) }),
    };
    ctx.tools();
    return await handler(ctx, remaining);
  } catch (e) {
    if (e instanceof UsageError) {
      io.err(`weft lab ${sub}: ${e.message}\n(weft lab help for usage)`);
      return 2;
    }
    // NOT_ROOT and missing tools are complete sentences on their own: print them as they are.
    if (e instanceof WeftError && (e.code === 'NOT_ROOT' || e.code === 'CONFIG_MISSING')) io.err(e.message);
    else io.err(`weft lab ${sub}: ${describeError(e)}`);
    return 1;
  }
}

class UsageError extends Error {}

/** --name / --state-dir may appear anywhere before a `--`; everything else is the command's. */
function splitCommon(args: string[]): { common: { name: string; stateDir: string }; remaining: string[] } {
  let name: string | undefined;
  let stateDir: string | undefined;
  const remaining: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? '';
    if (a === '--') { remaining.push(...args.slice(i)); break; }
    const m = /^--(name|state-dir)(?:=(.*))?$/.exec(a);
    if (!m) { remaining.push(a); continue; }
    const value = m[2] ?? args[++i];
    if (value === undefined || value === '') throw new UsageError(`--${m[1]} needs a value`);
    if (m[1] === 'name') name = value; else stateDir = value;
  }
  const labName = name ?? DEFAULT_LAB_NAME;
  return { common: { name: labName, stateDir: stateDir ?? defaultStateDir(labName) }, remaining };
}

type OptionsConfig = NonNullable<ParseArgsConfig['options']>;

function parse<O extends OptionsConfig>(args: string[], options: O, positionals: number) {
  const config = { args, options, allowPositionals: true as const, strict: true as const };
  let parsed: ReturnType<typeof parseArgs<typeof config>>;
  try {
    parsed = parseArgs(config);
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
  if (parsed.positionals.length !== positionals) {
    throw new UsageError(positionals === 0 ? `unexpected argument "${parsed.positionals[0]}"` : `expected ${positionals} argument(s)`);
  }
  return parsed;
}

function intOption(value: unknown, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`${flag} ${String(value)}: not a number`);
  return n;
}

/**
 * `--weftd-arg --ip-masq` (space form, as docs/lab.md shows): strict parseArgs refuses a value
 * that starts with '-', so the pair is joined into `--weftd-arg=--ip-masq` first.
 */
export function joinDashValues(args: readonly string[], flags: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? '';
    if (a === '--') { out.push(...args.slice(i)); break; }
    if (flags.includes(a) && i + 1 < args.length) out.push(`${a}=${args[++i] ?? ''}`);
    else out.push(a);
  }
  return out;
}

const up: Handler = async (ctx, args) => {
  const { values } = parse(joinDashValues(args, ['--weftd-arg']), {
    hosts: { type: 'string' }, network: { type: 'string' }, backend: { type: 'string' }, prefix: { type: 'string' },
    weftd: { type: 'string' }, 'weftd-arg': { type: 'string', multiple: true }, 'healthz-port': { type: 'string' },
    'no-daemons': { type: 'boolean' }, runtime: { type: 'string' }, 'no-containers': { type: 'boolean' },
    ipv6: { type: 'boolean' }, 'ipv6-only': { type: 'boolean' },
  }, 0);
  if (values.ipv6 && values['ipv6-only']) throw new UsageError('--ipv6 and --ipv6-only exclude each other');
  const ipv6 = values.ipv6 ? 'dual' as const : values['ipv6-only'] ? 'only' as const : undefined;
  let runtime: RuntimeKind;
  try {
    runtime = parseRuntime(values.runtime ?? 'namespaces');
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (labExists(ctx.stateDir)) {
    ctx.io.err(`a lab "${ctx.name}" already exists (${ctx.stateDir}): run weft lab down${nameFlag(ctx)} first`);
    return 1;
  }
  const hosts = intOption(values.hosts, '--hosts') ?? 2;
  ctx.io.out(`weft lab ${ctx.name}: ${hosts} host(s)${runtime === 'namespaces' ? '' : `, runtime ${runtime}`}, state in ${ctx.stateDir}`);
  let lab: Lab;
  try {
    lab = await Lab.up({
      name: ctx.name, stateDir: ctx.stateDir, hosts, network: values.network, backend: values.backend,
      prefix: values.prefix, weftdPath: values.weftd, extraWeftdArgs: values['weftd-arg'],
      healthzPort: intOption(values['healthz-port'], '--healthz-port'), startDaemons: !values['no-daemons'],
      cleanupOnFailure: false, tools: ctx.tools(), progress: (l) => ctx.io.out(`  ${l}`),
      runtime, containers: !values['no-containers'],
      ...(ipv6 ? { ipv6 } : {}),
    });
  } catch (e) {
    if (labExists(ctx.stateDir)) {
      ctx.io.err(`weft lab up: ${describeError(e)}\nthe half-built lab is left for inspection ` +
        `(weft lab status${nameFlag(ctx)}, logs in ${ctx.stateDir}); remove it with weft lab down${nameFlag(ctx)}`);
      return 1;
    }
    throw e;
  }
  ctx.io.out('\nleases:');
  ctx.io.out(await lab.leaseTable());
  if (lab.containerNames().length === 0) {
    ctx.io.out(`\nno containers (built with --no-daemons or --no-containers); next: weft lab exec${nameFlag(ctx)} h1 -- ip addr`);
    return 0;
  }
  return printMatrix(ctx, lab, `\nnext: weft lab status${nameFlag(ctx)} | weft lab exec${nameFlag(ctx)} h1-c1 -- ip route | weft lab down${nameFlag(ctx)}`);
};

async function printMatrix(ctx: Ctx, lab: Lab, footer = ''): Promise<number> {
  ctx.io.out('\nping matrix (container → container):');
  let m = await lab.pingMatrix();
  ctx.io.out(formatPingMatrix(m));
  if (lab.ipv6 === 'dual') {
    // Dual stack: the same matrix over the containers' IPv6 addresses (ping -6).
    ctx.io.out('\nping matrix over IPv6 (container → container):');
    const m6 = await lab.pingMatrix({ family: 6 });
    ctx.io.out(formatPingMatrix(m6));
    if (!m6.ok) m = m6;
  }
  if (!m.ok) {
    ctx.io.out(`debug: weft lab logs${nameFlag(ctx)} h1 | weft lab exec${nameFlag(ctx)} h1 -- ip route | ` +
      `weft lab exec${nameFlag(ctx)} h1 -- ip -d link show flannel.1 | weft lab leases${nameFlag(ctx)}`);
  }
  if (footer) ctx.io.out(footer);
  return m.ok ? 0 : 1;
}

/** The flags a follow-up command needs to find this lab again ('' for the default lab). */
function nameFlag(ctx: Ctx): string {
  const name = ctx.name === DEFAULT_LAB_NAME ? '' : ` --name ${ctx.name}`;
  return ctx.stateDir === defaultStateDir(ctx.name) ? name : `${name} --state-dir ${ctx.stateDir}`;
}

const down: Handler = async (ctx, args) => {
  parse(args, {}, 0);
  const report = await Lab.downAt(ctx.stateDir, { tools: ctx.tools() });
  if (!report) {
    ctx.io.out(`no lab "${ctx.name}" (${ctx.stateDir}): nothing to do`);
    return 0;
  }
  ctx.io.out(`stopped ${report.stoppedPids.length} process(es), deleted ${report.deletedNamespaces.length} namespace(s)` +
    (report.stateDirRemoved ? `, removed ${ctx.stateDir}` : ''));
  return 0;
};

const status: Handler = async (ctx, args) => {
  parse(args, {}, 0);
  ctx.io.out(formatStatus(await ctx.open().status()));
  return 0;
};

const ping: Handler = async (ctx, args) => {
  parse(args, {}, 0);
  return printMatrix(ctx, ctx.open());
};

const leases: Handler = async (ctx, args) => {
  parse(args, {}, 0);
  ctx.io.out(await ctx.open().leaseTable());
  return 0;
};

/** exec HOST [--] CMD...: everything after HOST belongs to the command, options included. */
const exec: Handler = async (ctx, args) => {
  const [host, ...cmd] = args;
  if (host === undefined || host.startsWith('-')) throw new UsageError('usage: weft lab exec HOST [--] CMD...');
  const command = cmd[0] === '--' ? cmd.slice(1) : cmd;
  return ctx.open().execInteractive(host, command);
};

const logs: Handler = async (ctx, args) => {
  const { positionals } = parse(args, {}, 1);
  const host = positionals[0] ?? '';
  const lab = ctx.open();
  ctx.io.out(`==> ${lab.logFile(host)} <==`);
  ctx.io.out(lab.daemonLog(host));
  return 0;
};

const addHost: Handler = async (ctx, args) => {
  parse(args, {}, 0);
  const lab = ctx.open();
  const host = await lab.addHost();
  ctx.io.out(`added ${host}`);
  return lab.containerNames().length > 1 ? printMatrix(ctx, lab) : 0;
};

const removeHost: Handler = async (ctx, args) => {
  const { positionals } = parse(args, {}, 1);
  await ctx.open().removeHost(positionals[0] ?? '');
  ctx.io.out(`removed ${positionals[0]}`);
  return 0;
};

const stop: Handler = async (ctx, args) => {
  const { positionals, values } = parse(args, { signal: { type: 'string' } }, 1);
  const signal = toSignal(values.signal ?? 'SIGTERM');
  const lab = ctx.open();
  const host = positionals[0] ?? '';
  const pid = lab.daemonPid(host);
  await lab.stopDaemon(host, signal);
  ctx.io.out(pid === null ? `weftd on ${host} was not running` : `stopped weftd on ${host} (pid ${pid}, ${signal})`);
  return 0;
};

const start: Handler = async (ctx, args) => {
  const { positionals } = parse(args, {}, 1);
  const lab = ctx.open();
  const host = positionals[0] ?? '';
  const pid = await lab.startDaemon(host);
  if (lab.containersEnabled) await lab.setupContainer(host);
  await lab.waitConverged();
  ctx.io.out(`started weftd on ${host} (pid ${pid})`);
  return 0;
};

const restart: Handler = async (ctx, args) => {
  const { positionals } = parse(args, {}, 1);
  const host = positionals[0] ?? '';
  const pid = await ctx.open().restartDaemon(host);
  ctx.io.out(`restarted weftd on ${host} (pid ${pid})`);
  return 0;
};

function toSignal(text: string): NodeJS.Signals {
  const name = (text.toUpperCase().startsWith('SIG') ? text.toUpperCase() : `SIG${text.toUpperCase()}`) as NodeJS.Signals;
  if (!(name in constants.signals)) throw new UsageError(`--signal ${text}: unknown signal`);
  return name;
}

const HANDLERS: Readonly<Record<string, Handler>> = {
  up, down, status, ping, leases, exec, logs,
  'add-host': addHost, 'remove-host': removeHost, stop, start, restart,
};

if (require.main === module) {
  runLabCommand(process.argv.slice(2)).then(
    (code) => { process.exitCode = code; },
    (e: unknown) => { process.stderr.write(`weft lab: ${describeError(e)}\n`); process.exitCode = 1; },
  );
}
