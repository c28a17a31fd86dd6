/**
 * The subnet file (`--subnet-file`, default /run/flannel/subnet.env) that Docker's
 * mk-docker-opts.sh, the flannel CNI plugin and systemd units read (compat §6). The format is
 * flannel's byte for byte; the order of lines is that of flannel's WriteSubnetFile (IPv4 lines,
 * IPv6 lines, MTU, IPMASQ).
 *
 * Reading is tolerant, like the godotenv parser flannel uses: blank lines, `#` comments,
 * `export NAME=...`, single or double quotes. Anything else is reported with its line number
 * (or, `lenient`, skipped: the CNI plugin, like flannel's, ignores lines it does not know).
 *
 * The one home of subnet.env: weftd writes it, and `weft docker-opts`, `weft cleanup`, the lab
 * and the CNI plugin (src/cni/netconf.ts) read it with `parseSubnetEnv`. Import-light on purpose
 * (node: built-ins, errors.ts, fsutil.ts): the CNI plugin pays its imports on every ADD.
 */
import { closeSync, constants as fsConstants, fstatSync, openSync, readFileSync } from 'node:fs';
import { WeftError } from '../errors';
import { writeFileAtomicSync } from '../fsutil';

export interface SubnetEnv {
  /** The whole overlay network, e.g. "10.5.0.0/16"; null on an IPv6-only network (EnableIPv4 false: no line, as flanneld). */
  readonly network: string | null;
  /** This host's subnet written as its first host address: "10.5.72.1/24", not "10.5.72.0/24"; null with `network`. */
  readonly subnet: string | null;
  readonly mtu: number;
  readonly ipMasq: boolean;
  /** Both or neither: "fc00::/48" and this host's first address, e.g. "fc00:0:0:34::1/64". */
  readonly ipv6Network?: string | null;
  readonly ipv6Subnet?: string | null;
}

const FILE_MODE = 0o644;

function checkValue(name: string, value: string): string {
  if (value === '' || /[\s"'#\\]/.test(value)) {
    throw new WeftError('INTERNAL', `format subnet file: ${name} value ${JSON.stringify(value)} is empty or contains characters a shell would misread`);
  }
  return value;
}

/** The file's text, exactly as flanneld writes it, newline-terminated. */
export function formatSubnetEnv(env: SubnetEnv): string {
  if (!Number.isInteger(env.mtu) || env.mtu <= 0) {
    throw new WeftError('INTERNAL', `format subnet file: FLANNEL_MTU must be a positive integer, got ${env.mtu}`);
  }
  const v6Network = env.ipv6Network ?? null;
  const v6Subnet = env.ipv6Subnet ?? null;
  if ((v6Network === null) !== (v6Subnet === null)) {
    throw new WeftError('INTERNAL', 'format subnet file: ipv6Network and ipv6Subnet must be given together');
  }
  if ((env.network === null) !== (env.subnet === null) || (env.network === null && v6Network === null)) {
    throw new WeftError('INTERNAL', 'format subnet file: network and subnet must be given together, and IPv4 or IPv6 must be');
  }
  const lines: string[] = [];
  if (env.network !== null && env.subnet !== null) {
    lines.push(`FLANNEL_NETWORK=${checkValue('FLANNEL_NETWORK', env.network)}`, `FLANNEL_SUBNET=${checkValue('FLANNEL_SUBNET', env.subnet)}`);
  }
  if (v6Network !== null && v6Subnet !== null) {
    lines.push(`FLANNEL_IPV6_NETWORK=${checkValue('FLANNEL_IPV6_NETWORK', v6Network)}`);
    lines.push(`FLANNEL_IPV6_SUBNET=${checkValue('FLANNEL_IPV6_SUBNET', v6Subnet)}`);
  }
  lines.push(`FLANNEL_MTU=${env.mtu}`, `FLANNEL_IPMASQ=${env.ipMasq}`);
  return `${lines.join('\n')}\n`;
}

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

function parseError(source: string, lineNo: number, line: string, why: string): WeftError {
  return new WeftError('BAD_DATA', `${source} line ${lineNo}: ${why}: ${JSON.stringify(line)}`);
}

/** The value part of NAME=value: quoted (single: literal, double: \n \" \\ escapes) or bare. */
function parseValue(raw: string, fail: (why: string) => WeftError): string {
  const text = raw.trim();
  const quote = text[0];
  if (quote !== '"' && quote !== "'") {
    // A '#' after whitespace starts a comment; "a#b" keeps its '#'.
    const hash = text.search(/\s#/);
    return (hash < 0 ? text : text.slice(0, hash)).trim();
  }
  let value = '';
  let i = 1;
  for (; i < text.length; i++) {
    const c = text[i]!;
    if (c === quote) break;
    if (quote === '"' && c === '\\' && i + 1 < text.length) {
      const e = text[++i]!;
      value += e === 'n' ? '\n' : e === 'r' ? '\r' : e === 't' ? '\t' : e;
      continue;
    }
    value += c;
  }
  if (i >= text.length) throw fail(`unterminated ${quote === '"' ? 'double' : 'single'} quote`);
  const after = text.slice(i + 1).trim();
  if (after !== '' && !after.startsWith('#')) throw fail('unexpected text after the closing quote');
  return value;
}

/**
 * The variables in a subnet file. `source` names the file in error messages. Later assignments
 * win, as in a shell. `lenient`: lines that do not parse are skipped instead of refused.
 */
export function parseSubnetEnv(text: string, source = 'subnet file', opts: { readonly lenient?: boolean } = {}): Record<string, string> {
  const out: Record<string, string> = {};
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  lines.forEach((line, idx) => {
    if (opts.lenient) {
      try {
        for (const [name, value] of Object.entries(parseSubnetEnv(line, source))) define(out, name, value);
      } catch {
        // a line the strict reader refuses: skipped
      }
      return;
    }
    const lineNo = idx + 1;
    const fail = (why: string): WeftError => parseError(source, lineNo, line, why);
    let body = line.trim();
    if (body === '' || body.startsWith('#')) return;
    if (/^export\s/.test(body)) body = body.replace(/^export\s+/, '');
    const eq = body.indexOf('=');
    if (eq < 0) throw fail('expected NAME=value');
    const name = body.slice(0, eq).trim();
    if (!NAME.test(name)) throw fail(`${JSON.stringify(name)} is not a variable name`);
    define(out, name, parseValue(body.slice(eq + 1), fail));
  });
  return out;
}

/** A plain own property even for "__proto__" (an assignment would change the object's prototype). */
function define(out: Record<string, string>, name: string, value: string): void {
  Object.defineProperty(out, name, { value, enumerable: true, writable: true, configurable: true });
}

/**
 * Parse the subnet file at `filePath`; null when it does not exist. Read synchronously: a file
 * of a few lines on /run, and weftd's only use of libuv's thread pool: asynchronously, it started
 * the pool's four threads for the daemon's life for four hops of a few µs (8 threads → 4; the
 * memory they hold is under 0.1 MB, measured). Only a regular file is read (a FIFO would block
 * the loop).
 */
export async function readSubnetEnv(filePath: string): Promise<Record<string, string> | null> {
  let text: string;
  let fd: number | undefined;
  try {
    fd = openSync(filePath, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
    if (!fstatSync(fd).isFile()) throw new Error('not a regular file');
    text = readFileSync(fd, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new WeftError('INTERNAL', `read subnet file ${filePath}: ${(err as Error).message}`, { cause: err });
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  return parseSubnetEnv(text, `subnet file ${filePath}`);
}

/**
 * Replace `filePath` with `text` so that readers see the old file or the new one, never a part
 * (`writeFileAtomicSync`): the directory is created 0755 if needed, and the file is 0644 whatever the
 * umask or the mode the old file had.
 */
export function writeSubnetEnvAtomic(filePath: string, text: string): void {
  writeFileAtomicSync(filePath, text, { what: 'subnet file', mode: FILE_MODE, keepExisting: false });
}
