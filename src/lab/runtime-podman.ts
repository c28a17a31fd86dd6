/**
 * podman in the lab: the CNI path. Each host gets, under <stateDir>/hN/podman/, what an operator
 * writes once per machine (docs/runtimes.md): the weft plugin linked by `weft cni install`, a
 * conflist from `weft cni config` (this host's subnet.env, its own host-local lease dir: lab
 * hosts share one filesystem), and a containers.conf with this machine's necessities —
 * network_backend "cni", cgroup_manager "cgroupfs", runtime runc (crun 1.8 refuses the hybrid
 * cgroup layout here), explicit ulimits (no CAP_SYS_RESOURCE here), file events and locks, and
 * per-host root, runroot and tmp_dir so hosts share nothing. Containers run under a per-host
 * cgroup parent, removed by `down`.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { WeftError } from '../errors';
import {
  CONTAINER_CMD, IMAGE, attachNetns, busyboxTarball, loadRecord, processesUnder, removeCgroup, requireTools, runIn,
  runInOk, saveRecord, stopAll, unmountUnder, weft,
  type ContainerRuntime, type RuntimeContainer, type RuntimeContext, type RuntimeHost,
} from './runtime';
import { readStartTime } from './run';

const KIND = 'podman';
export const PODMAN_NETWORK = 'weft';

export class PodmanRuntime implements ContainerRuntime {
  readonly kind = KIND;
  private readonly tools = requireTools(KIND, { podman: 'podman', runc: 'runc', conmon: 'conmon' });

  constructor(private readonly cniBinDir = '/usr/lib/cni') {
    if (!existsSync(join(cniBinDir, 'bridge')) || !existsSync(join(cniBinDir, 'host-local'))) {
      throw new WeftError('CONFIG_MISSING', `weft lab --runtime podman needs the standard CNI plugins in ${cniBinDir} ` +
        `(bridge, host-local): apt-get install -y containernetworking-plugins`);
    }
  }

  dir(host: RuntimeHost): string {
    return join(host.dir, KIND);
  }

  cgroupParent(ctx: RuntimeContext, host: RuntimeHost): string {
    return `/${ctx.prefix}${host.name}-podman`;
  }

  /** The environment and argv prefix every podman call on this host uses. */
  env(host: RuntimeHost): NodeJS.ProcessEnv {
    return { ...process.env, CONTAINERS_CONF: join(this.dir(host), 'containers.conf') };
  }

  cli(host: RuntimeHost, args: readonly string[]): string[] {
    const dir = this.dir(host);
    return [this.tools.podman ?? 'podman', '--root', join(dir, 'root'), '--runroot', join(dir, 'runroot'), '--storage-driver', 'vfs', ...args];
  }

  execArgv(host: RuntimeHost, cmd: readonly string[], tty: boolean): string[] {
    return ['env', `CONTAINERS_CONF=${join(this.dir(host), 'containers.conf')}`, ...this.cli(host, ['exec', tty ? '-it' : '-i', `${host.name}-c1`, ...cmd])];
  }

  /** containers.conf, the plugin link and the conflist, written through weft (idempotent). */
  async configure(ctx: RuntimeContext, host: RuntimeHost): Promise<void> {
    const dir = this.dir(host);
    for (const d of ['cni-bin', 'net.d', 'tmp', 'root', 'runroot']) mkdirSync(join(dir, d), { recursive: true });
    await weft(['cni', 'install', '--bin-dir', join(dir, 'cni-bin')]);
    await weft(['cni', 'config', '--name', PODMAN_NETWORK, '--subnet-file', host.subnetFile, '--data-dir', join(dir, 'cni-data'),
      '--ipam-data-dir', join(dir, 'cni-ipam'), '-o', join(dir, 'net.d', `10-${PODMAN_NETWORK}.conflist`)]);
    const q = (s: string) => JSON.stringify(s);
    writeFileSync(join(dir, 'containers.conf'), [
      '# written by weft lab for host ' + host.name,
      '[containers]',
      'default_ulimits = ["nofile=20000:20000", "nproc=1024:1024"]',
      '[engine]',
      'cgroup_manager = "cgroupfs"',
      'events_logger = "file"',
      `events_logfile_path = ${q(join(dir, 'events.log'))}`,
      'runtime = "runc"',
      `tmp_dir = ${q(join(dir, 'tmp'))}`,
      'lock_type = "file"',
      '[network]',
      'network_backend = "cni"',
      `cni_plugin_dirs = [${q(join(dir, 'cni-bin'))}, ${q(this.cniBinDir)}]`,
      `network_config_dir = ${q(join(dir, 'net.d'))}`,
      `default_network = ${q(PODMAN_NETWORK)}`,
      '',
    ].join('\n'));
    const rec = loadRecord(host, KIND);
    if (rec.cgroupParent === null) saveRecord(host, { ...rec, cgroupParent: this.cgroupParent(ctx, host) });
  }

  async ensure(ctx: RuntimeContext, host: RuntimeHost): Promise<RuntimeContainer> {
    await this.configure(ctx, host);
    const env = this.env(host);
    const podman = (args: string[], what: string) => runInOk(host.ns, this.cli(host, args), `${what} on ${host.name}`, { env });
    if ((await runIn(host.ns, this.cli(host, ['image', 'exists', IMAGE]), { env })).code !== 0) {
      await podman(['import', await busyboxTarball(ctx.stateDir), IMAGE], 'podman import');
    }
    const name = `${host.name}-c1`;
    const state = await runIn(host.ns, this.cli(host, ['inspect', '-f', '{{.State.Running}}', name]), { env });
    if (state.code !== 0) {
      await this.run(ctx, host, name);
    } else if (state.stdout.trim() !== 'true') {
      await podman(['start', name], 'podman start');
    }
    return this.attach(ctx, host, name);
  }

  /** `podman run -d` a busybox container on the weft network. */
  async run(ctx: RuntimeContext, host: RuntimeHost, name: string): Promise<void> {
    await runInOk(host.ns, this.cli(host, ['run', '-d', '--name', name, '--hostname', name, '--network', PODMAN_NETWORK,
      '--cgroup-parent', this.cgroupParent(ctx, host), IMAGE, ...CONTAINER_CMD]), `podman run on ${host.name}`, { env: this.env(host) });
  }

  /** Record conmon, attach the netns as <prefix>hN-c1, report the address. */
  async attach(ctx: RuntimeContext, host: RuntimeHost, name: string): Promise<RuntimeContainer> {
    const info = (await runInOk(host.ns, this.cli(host, ['inspect', '-f',
      `{{.State.Pid}} {{.State.ConmonPid}} {{with index .NetworkSettings.Networks "${PODMAN_NETWORK}"}}{{.IPAddress}}/{{.IPPrefixLen}}{{end}}`, name]),
    `podman inspect on ${host.name}`, { env: this.env(host) })).trim();
    const [pid, conmon, address] = info.split(' ');
    const rec = loadRecord(host, KIND);
    const conmonId = { pid: Number(conmon), startTime: readStartTime(Number(conmon)) };
    saveRecord(host, { ...rec, others: [...rec.others.filter((o) => o.pid !== conmonId.pid), conmonId] });
    await attachNetns(ctx.ipPath, host.containerNs, Number(pid));
    ctx.progress(`podman container ${name} on ${host.name}: ${address} (CNI network ${PODMAN_NETWORK}, weft plugin; netns ${host.containerNs})`);
    return { name, ns: host.containerNs, address: address ?? '' };
  }

  async teardown(ctx: RuntimeContext, host: RuntimeHost): Promise<string[]> {
    const failures: string[] = [];
    const dir = this.dir(host);
    if (!existsSync(dir)) return failures;
    const rec = loadRecord(host, KIND);
    // Without containers.conf (set-up failed before writing it) no container can have been created.
    if (existsSync(join(dir, 'containers.conf'))) {
      // -t 0: busybox sleep ignores SIGTERM; rm runs CNI DEL for each container.
      const rm = await runIn(host.ns, this.cli(host, ['rm', '-f', '-a', '-t', '0']), { env: this.env(host), timeoutMs: 60000 });
      if (rm.code !== 0) failures.push(`podman rm -f -a on ${host.name}: ${rm.stderr.trim()}`);
    }
    await stopAll([...rec.others, ...processesUnder(dir)], 5000, failures);
    await unmountUnder(dir, failures);
    removeCgroup(rec.cgroupParent ?? this.cgroupParent(ctx, host), failures);
    saveRecord(host, { ...rec, others: [] });
    return failures;
  }
}
