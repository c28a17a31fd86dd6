/**
 * Network namespace plumbing through `ip`. Every operation names the namespace it acts in
 * (`ip -n NS ...`): the lab never touches the root namespace's interfaces or routes. Veth pairs
 * are created inside one lab namespace with the peer moved straight into another, so not even a
 * transient interface appears in the root namespace.
 */
import { WeftError } from '../errors';
import { run, runOk, type RunResult } from './run';

export class Netns {
  constructor(private readonly ipPath: string, private readonly nodePath: string = process.execPath) {}

  /** Names of all namespaces `ip netns` knows (those with a /run/netns bind mount). */
  async list(): Promise<string[]> {
    const out = await runOk(this.ipPath, ['netns', 'list']);
    // Lines look like "weft-h1 (id: 3)" or just "weft-h1".
    return out.split('\n').map((l) => l.trim().split(/\s+/)[0] ?? '').filter((n) => n !== '');
  }

  async exists(ns: string): Promise<boolean> {
    return (await this.list()).includes(ns);
  }

  /** Create `ns` with its loopback up (etcdctl and local pings need lo). */
  async add(ns: string): Promise<void> {
    await this.ipOk(['netns', 'add', ns], `create namespace ${ns}`);
    await this.in(ns, ['link', 'set', 'lo', 'up'], `bring up lo in ${ns}`);
  }

  /** Delete `ns`; true if it existed. Its interfaces (and veth peers elsewhere) go with it. */
  async delete(ns: string): Promise<boolean> {
    const r = await run(this.ipPath, ['netns', 'delete', ns]);
    if (r.code === 0) return true;
    if (/No such file|not found|does not exist/i.test(r.stderr)) return false;
    throw new WeftError('NETLINK', `delete namespace ${ns}: ${r.stderr.trim()}`);
  }

  /** PIDs of processes whose network namespace is `ns` ([] if it does not exist). */
  async pids(ns: string): Promise<number[]> {
    const r = await run(this.ipPath, ['netns', 'pids', ns]);
    if (r.code !== 0) return [];
    return r.stdout.split('\n').map((l) => Number(l.trim())).filter((n) => Number.isInteger(n) && n > 0);
  }

  /** `ip -n ns ARGS`, failing with a message that says what we were doing. */
  async in(ns: string, args: readonly string[], what: string): Promise<string> {
    return this.ipOk(['-n', ns, ...args], what);
  }

  async linkExists(ns: string, dev: string): Promise<boolean> {
    const r = await run(this.ipPath, ['-n', ns, 'link', 'show', 'dev', dev]);
    return r.code === 0;
  }

  async addBridge(ns: string, name: string): Promise<void> {
    await this.in(ns, ['link', 'add', name, 'type', 'bridge'], `create bridge ${name} in ${ns}`);
    await this.in(ns, ['link', 'set', name, 'up'], `bring up bridge ${name} in ${ns}`);
  }

  /**
   * A veth pair: `local` in `ns` (enslaved to `bridge` when given), `peer` moved into `peerNs`.
   * Both ends get `mtu` when given and are brought up.
   */
  async addVeth(opts: { ns: string; local: string; peerNs: string; peer: string; bridge?: string; mtu?: number }): Promise<void> {
    const { ns, local, peerNs, peer } = opts;
    const mtu = opts.mtu === undefined ? [] : ['mtu', String(opts.mtu)];
    await this.in(ns, ['link', 'add', local, ...mtu, 'type', 'veth', 'peer', 'name', peer, ...mtu, 'netns', peerNs],
      `create veth ${local} in ${ns} with peer ${peer} in ${peerNs}`);
    if (opts.bridge) await this.in(ns, ['link', 'set', local, 'master', opts.bridge], `attach ${local} to ${opts.bridge} in ${ns}`);
    await this.in(ns, ['link', 'set', local, 'up'], `bring up ${local} in ${ns}`);
    await this.in(peerNs, ['link', 'set', peer, 'up'], `bring up ${peer} in ${peerNs}`);
  }

  /** Replace every IPv4 address of `dev` with `cidr` (idempotent: safe on re-configuration). */
  async setAddress(ns: string, dev: string, cidr: string): Promise<void> {
    // Already exactly `cidr` (a daemon restart keeping its subnet): leave it. A flush would remove
    // the connected route for the few ms until the add, and a packet crossing `dev` then is lost
    // (the e2e restart tests ping through the container bridge while it happens).
    const current = await this.in(ns, ['-4', '-o', 'addr', 'show', 'dev', dev], `list addresses of ${dev} in ${ns}`);
    const inet = [...current.matchAll(/\binet (\S+)/g)].map((m) => m[1]);
    if (inet.length === 1 && inet[0] === cidr) return;
    await this.in(ns, ['-4', 'addr', 'flush', 'dev', dev], `flush addresses of ${dev} in ${ns}`);
    await this.in(ns, ['addr', 'add', cidr, 'dev', dev], `add ${cidr} to ${dev} in ${ns}`);
  }

  async setMtu(ns: string, dev: string, mtu: number): Promise<void> {
    await this.in(ns, ['link', 'set', dev, 'mtu', String(mtu)], `set MTU ${mtu} on ${dev} in ${ns}`);
  }

  /** `ip netns exec ns CMD...` with output captured. */
  exec(ns: string, cmd: readonly string[], env?: NodeJS.ProcessEnv, timeoutMs?: number): Promise<RunResult> {
    return run(this.ipPath, ['netns', 'exec', ns, ...cmd], { env, timeoutMs });
  }

  /** The argument vector that runs `cmd` inside `ns` (for detached or inherited-stdio spawns). */
  execArgs(ns: string, cmd: readonly string[]): string[] {
    return ['netns', 'exec', ns, ...cmd];
  }

  /**
   * Namespaced sysctl: /proc/sys/net/* belongs to the network namespace of the process that opens
   * it, so this never affects the host. Written by node itself (always present) rather than
   * procps' `sysctl`, one dependency fewer.
   */
  async sysctl(ns: string, key: string, value: string): Promise<void> {
    const file = `/proc/sys/${key.replace(/\./g, '/')}`;
    const code = 'require("fs").writeFileSync(process.argv[1], process.argv[2])';
    const r = await this.exec(ns, [this.nodePath, '-e', code, file, value]);
    if (r.code !== 0) {
      throw new WeftError('NETLINK', `set ${key}=${value} in ${ns}: ${(r.stderr || r.stdout).trim()}`);
    }
  }

  private async ipOk(args: readonly string[], what: string): Promise<string> {
    const r = await run(this.ipPath, args);
    if (r.code !== 0) throw new WeftError('NETLINK', `${what}: ip ${args.join(' ')}: ${r.stderr.trim()}`);
    return r.stdout;
  }
}
