/**
 * What the lab needs from the machine: root (it creates network namespaces) and four programs.
 * Tools are resolved to absolute paths once, from PATH, so every later call (including the ones
 * run through `ip netns exec`, which does its own PATH lookup) uses the same binary.
 */
import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { WeftError } from '../errors';

export interface Tools {
  readonly ip: string;
  readonly etcd: string;
  readonly etcdctl: string;
  readonly ping: string;
}

/** The Debian package that provides each tool. */
export const TOOL_PACKAGES: Readonly<Record<keyof Tools, string>> = {
  ip: 'iproute2',
  etcd: 'etcd-server',
  etcdctl: 'etcd-client',
  ping: 'iputils-ping',
};

export const INSTALL_HINT = 'apt-get install -y iproute2 etcd-server etcd-client iputils-ping';
export const NOT_ROOT_MESSAGE = 'weft lab needs root (it creates network namespaces): run it with sudo';

export function isRoot(): boolean {
  return typeof process.geteuid === 'function' && process.geteuid() === 0;
}

export function requireRoot(): void {
  if (!isRoot()) throw new WeftError('NOT_ROOT', NOT_ROOT_MESSAGE);
}

/** The first executable regular file named `name` in the PATH-style list, or null. */
export function findExecutable(name: string, pathEnv: string): string | null {
  for (const dir of pathEnv.split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, name);
    try {
      if (!statSync(candidate).isFile()) continue;
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

/** Resolve every tool; throws one WeftError naming what is missing and the packages to install. */
export function findTools(pathEnv: string = process.env.PATH ?? ''): Tools {
  const found: Partial<Record<keyof Tools, string>> = {};
  const missing: (keyof Tools)[] = [];
  for (const name of Object.keys(TOOL_PACKAGES) as (keyof Tools)[]) {
    const path = findExecutable(name, pathEnv);
    if (path) found[name] = path;
    else missing.push(name);
  }
  if (missing.length > 0) throw new WeftError('CONFIG_MISSING', missingToolsMessage(missing));
  return found as Tools;
}

export function missingToolsMessage(missing: readonly (keyof Tools)[]): string {
  const what = missing.map((t) => `${t} (Debian package ${TOOL_PACKAGES[t]})`).join(', ');
  return `weft lab needs ${what}, not found in PATH: install with ${INSTALL_HINT}`;
}
