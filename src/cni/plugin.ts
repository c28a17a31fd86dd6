/**
 * The weft CNI plugin: a meta-plugin like flannel's. On every ADD it reads subnet.env (weftd may
 * have moved to another subnet since the last container), renders a `bridge` + `host-local`
 * config (netconf.ts), keeps it in dataDir/<containerID> for DEL and CHECK, and runs the
 * delegate. CNI spec 1.0 conventions: the command comes in CNI_* variables, the config on stdin,
 * the result or an error object ({"code","msg","details"}) on stdout, non-zero exit on error.
 *
 * Only node: built-ins are imported (see netconf.ts on start-up cost).
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  CniCode, CniError, KEEP_SOURCE_COMMENT, SUPPORTED_VERSIONS, keepSourceRules, parseFlannelEnv, parseNetConf,
  renderDelegate, type FlannelEnv, type Json, type JsonObject, type NetConf,
} from './netconf';

export const PLUGIN_NAME = 'weft';

export interface PluginOutput {
  readonly code: number;
  readonly stdout: string;
  /** Diagnostics for the runtime's log (CNI runtimes keep the plugin's stderr). */
  readonly stderr: string;
}

/** Run one CNI command. Never throws: every failure becomes CNI's error JSON. */
export function runPlugin(env: NodeJS.ProcessEnv, stdin: string): PluginOutput {
  let version = '1.0.0';
  const log: string[] = [];
  try {
    const command = env.CNI_COMMAND ?? '';
    if (command === 'VERSION') {
      version = versionOf(stdin);
      return { code: 0, stdout: JSON.stringify({ cniVersion: version, supportedVersions: SUPPORTED_VERSIONS }) + '\n', stderr: '' };
    }
    if (!['ADD', 'DEL', 'CHECK'].includes(command)) {
      throw new CniError(CniCode.INVALID_ENV, `weft: CNI_COMMAND "${command}" is not one of ADD, DEL, CHECK, VERSION`);
    }
    const conf = parseNetConf(stdin);
    version = conf.cniVersion;
    const need = (key: string): string => {
      const v = env[key];
      if (v === undefined || v === '') throw new CniError(CniCode.INVALID_ENV, `weft: ${key} is not set (the container runtime must set it for ${command})`);
      return v;
    };
    const id = need('CNI_CONTAINERID');
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(id)) {
      throw new CniError(CniCode.INVALID_ENV, `weft: CNI_CONTAINERID "${id}" must be letters, digits, '_', '.' or '-'`);
    }
    need('CNI_IFNAME');
    need('CNI_PATH');
    if (command !== 'DEL') need('CNI_NETNS');
    const stdout = command === 'ADD' ? add(env, conf, id, log) : command === 'DEL' ? del(env, conf, id, log) : check(env, conf, id, log);
    // Quiet on success: runtimes such as ctr print a plugin's stderr as it is.
    return { code: 0, stdout, stderr: '' };
  } catch (e) {
    const err = e instanceof CniError ? e : new CniError(CniCode.IO_FAILURE, `weft: ${(e as Error).message ?? String(e)}`);
    const body: JsonObject = { cniVersion: version, code: err.code, msg: err.message };
    if (err.details) body.details = err.details;
    return { code: 1, stdout: JSON.stringify(body) + '\n', stderr: log.join('') };
  }
}

function versionOf(stdin: string): string {
  if (stdin.trim() === '') return '1.0.0';
  try {
    const v = (JSON.parse(stdin) as { cniVersion?: unknown }).cniVersion;
    return typeof v === 'string' && v !== '' ? v : '0.1.0';
  } catch {
    return '1.0.0';
  }
}

function readEnv(conf: NetConf): FlannelEnv {
  let text: string;
  try {
    text = readFileSync(conf.subnetFile, 'utf8');
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : `cannot be read (${(e as Error).message})`;
    throw new CniError(CniCode.SUBNET_ENV, `weft: ${conf.subnetFile} ${why}: is weftd running on this host, ` +
      `with --subnet-file pointing there (the plugin's "subnetFile")?`);
  }
  return parseFlannelEnv(text, conf.subnetFile);
}

function add(env: NodeJS.ProcessEnv, conf: NetConf, id: string, log: string[]): string {
  const fenv = readEnv(conf);
  const delegate = renderDelegate(conf, fenv);
  const text = JSON.stringify(delegate);
  log.push(`weft: delegate config for ${id}: ${text}\n`);
  // Saved before the delegate runs: if ADD fails half-way, the runtime's DEL finds what to undo.
  try {
    mkdirSync(conf.dataDir, { recursive: true, mode: 0o700 });
    writeFileSync(join(conf.dataDir, id), text, { mode: 0o600 });
  } catch (e) {
    throw new CniError(CniCode.IO_FAILURE, `weft: cannot save the delegate config in ${conf.dataDir} (the plugin's "dataDir"): ${(e as Error).message}`);
  }
  // Before the first packet: conntrack would keep a masqueraded flow masqueraded.
  for (const r of keepSourceRules(delegate, fenv)) ensureKeepSource(env, r.v6, r.network);
  return delegateRun(env, 'ADD', String(delegate.type), text).stdout;
}

function del(env: NodeJS.ProcessEnv, conf: NetConf, id: string, log: string[]): string {
  const file = join(conf.dataDir, id);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    // DEL is idempotent: nothing saved means nothing attached (or already deleted).
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw new CniError(CniCode.IO_FAILURE, `weft: cannot read ${file}: ${(e as Error).message}`);
  }
  let saved: JsonObject;
  try {
    saved = JSON.parse(text) as JsonObject;
  } catch {
    // Nothing we can hand to a delegate; the veth goes with the netns, the address stays reserved
    // in host-local until the file there is removed by hand.
    log.push(`weft: ${file} is not JSON; removed without a delegate DEL\n`);
    rmSync(file, { force: true });
    return '';
  }
  if (conf.runtimeConfig) saved.runtimeConfig = conf.runtimeConfig;
  delegateRun(env, 'DEL', String(saved.type ?? 'bridge'), JSON.stringify(saved));
  rmSync(file, { force: true });
  return '';
}

function check(env: NodeJS.ProcessEnv, conf: NetConf, id: string, log: string[]): string {
  const file = join(conf.dataDir, id);
  let saved: JsonObject;
  try {
    saved = JSON.parse(readFileSync(file, 'utf8')) as JsonObject;
  } catch (e) {
    throw new CniError(CniCode.CONTAINER_UNKNOWN, `weft: container ${id} has no saved config in ${conf.dataDir} (${(e as Error).message}): was it added by this plugin?`);
  }
  // The host's subnet must still be the one the container's address came from.
  const fenv = readEnv(conf);
  const want = renderDelegate(conf, fenv).ipam;
  const had = (saved.ipam as JsonObject | undefined)?.ranges;
  if (JSON.stringify((want as JsonObject).ranges) !== JSON.stringify(had)) {
    throw new CniError(CniCode.SUBNET_CHANGED, `weft: the host's subnet changed since container ${id} was attached ` +
      `(attached in ${JSON.stringify(had)}, now ${JSON.stringify((want as JsonObject).ranges)}): recreate the container`);
  }
  if ('prevResult' in conf.raw) saved.prevResult = withGateways(conf.raw.prevResult ?? null);
  log.push(`weft: CHECK ${id} with ${JSON.stringify(saved)}\n`);
  delegateRun(env, 'CHECK', String(saved.type ?? 'bridge'), JSON.stringify(saved));
  return '';
}

/**
 * bridge (1.1.x) installs the ipam routes via the gateway but its CHECK looks them up with no
 * gateway ("Expected Route {Dst:10.5.0.0/16 GW:<nil>} not found"): give the routes of the
 * previous result the gateway of their family, which is what the kernel has.
 */
function withGateways(prev: Json): Json {
  if (typeof prev !== 'object' || prev === null || Array.isArray(prev)) return prev;
  const ips = Array.isArray(prev.ips) ? prev.ips : [];
  const gw = (v6: boolean): string | undefined => {
    for (const ip of ips) {
      const g = (ip as JsonObject | null)?.gateway;
      if (typeof g === 'string' && g.includes(':') === v6) return g;
    }
    return undefined;
  };
  const routes = Array.isArray(prev.routes) ? prev.routes.map((r) => {
    if (typeof r !== 'object' || r === null || Array.isArray(r) || typeof r.dst !== 'string' || 'gw' in r) return r;
    const g = gw(r.dst.includes(':'));
    return g === undefined ? r : { ...r, gw: g };
  }) : prev.routes;
  return routes === undefined ? prev : { ...prev, routes };
}

/** Run the delegate plugin found in CNI_PATH with our environment and `conf` on stdin. */
function delegateRun(env: NodeJS.ProcessEnv, command: string, type: string, conf: string): { stdout: string } {
  const path = findPlugin(type, env.CNI_PATH ?? '');
  const r = spawnSync(path, [], { input: conf, env: { ...env, CNI_COMMAND: command }, encoding: 'utf8', maxBuffer: 16 << 20 });
  if (r.error) throw new CniError(CniCode.DELEGATE, `weft: cannot run delegate ${path}: ${r.error.message}`);
  if (r.status === 0) return { stdout: r.stdout };
  type ErrBody = { code?: unknown; msg?: unknown; details?: unknown };
  let inner: ErrBody | null;
  try {
    inner = JSON.parse(r.stdout) as ErrBody;
  } catch {
    inner = null;
  }
  if (inner && typeof inner.code === 'number' && typeof inner.msg === 'string') {
    throw new CniError(inner.code, `weft: ${type} ${command} failed: ${inner.msg}`, typeof inner.details === 'string' ? inner.details : '');
  }
  const why = (r.stderr || r.stdout || `exit ${r.status ?? r.signal}`).trim();
  throw new CniError(CniCode.DELEGATE, `weft: ${type} ${command} failed: ${why}`);
}

function findPlugin(type: string, cniPath: string): string {
  if (!/^[A-Za-z0-9_.-]+$/.test(type)) throw new CniError(CniCode.INVALID_CONFIG, `weft: delegate type "${type}" is not a plugin name`);
  const dirs = cniPath.split(':').filter((d) => d !== '');
  for (const dir of dirs) {
    const p = join(dir, type);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // next dir
    }
  }
  throw new CniError(CniCode.INVALID_CONFIG, `weft: delegate plugin "${type}" not found in CNI_PATH ${cniPath || '(empty)'}: ` +
    `install the standard CNI plugins (Debian: apt-get install containernetworking-plugins, into /usr/lib/cni)`);
}

/**
 * Keep container sources on overlay traffic (netconf.ts keepSourceRules): one RETURN rule in nat
 * POSTROUTING above every masquerading rule (checked on every ADD: a flush by hand or a reboot
 * brings it back with the next container). Docker inserts its MASQUERADE at the top whenever it
 * (re)creates it, so a RETURN found below a MASQUERADE/SNAT/CNI-chain jump is moved back to the
 * top; a rule that only jumps elsewhere (kube-proxy's KUBE-POSTROUTING) is not fought over. It
 * stays when containers go: it only ever matches overlay-to-overlay traffic. Returns whether it
 * changed anything.
 */
export function ensureKeepSource(env: NodeJS.ProcessEnv, v6: boolean, network: string): boolean {
  const tool = findTool(v6 ? 'ip6tables' : 'iptables', env.PATH ?? '');
  const rule = ['-s', network, '-d', network, '-m', 'comment', '--comment', KEEP_SOURCE_COMMENT, '-j', 'RETURN'];
  const run = (args: string[]) => spawnSync(tool, ['-w', '5', '-t', 'nat', ...args], { encoding: 'utf8', env });
  const fail = (what: string, r: ReturnType<typeof run>): never => {
    throw new CniError(CniCode.IO_FAILURE, `weft: cannot ${what} the nat rule that keeps container sources across hosts ` +
      `(${tool} -t nat POSTROUTING ${rule.join(' ')}): ${(r.error?.message ?? r.stderr).trim()}`);
  };
  const listed = run(['-S', 'POSTROUTING']);
  if (listed.error || listed.status !== 0) fail('list', listed);
  const lines = listed.stdout.split('\n').filter((l) => l.startsWith('-A POSTROUTING '));
  const ours = lines.findIndex((l) => l.includes(KEEP_SOURCE_COMMENT) && l.includes(`-s ${network} -d ${network} `));
  const firstMasq = lines.findIndex((l) => / -j (MASQUERADE|SNAT|CNI-)/.test(l));
  if (ours >= 0 && (firstMasq < 0 || ours < firstMasq)) return false;
  if (ours >= 0) {
    const d = run(['-D', 'POSTROUTING', ...rule]);
    if (d.error || d.status !== 0) fail('move', d);
  }
  const i = run(['-I', 'POSTROUTING', '1', ...rule]);
  if (i.error || i.status !== 0) fail('add', i);
  return true;
}

function findTool(name: string, pathEnv: string): string {
  for (const dir of [...pathEnv.split(':'), '/usr/sbin', '/sbin', '/usr/bin']) {
    if (!dir) continue;
    try {
      accessSync(join(dir, name), constants.X_OK);
      return join(dir, name);
    } catch {
      // next
    }
  }
  throw new CniError(CniCode.IO_FAILURE, `weft: ${name} not found (Debian: apt-get install iptables); it keeps container sources across hosts when the bridge masquerades`);
}
