/**
 * Docker in the lab: a real dockerd per host (runtime.ts on why nsenter), configured only
 * through weft, in both of the forms operators use (docs/runtimes.md):
 *   odd hosts (h1, h3, ...)   `weft docker-opts --daemon-json <dir>/daemon.json` (bip, mtu, ip-masq)
 *   even hosts (h2, h4, ...)  `weft docker-opts -c -d <dir>/docker_opts.env`, DOCKER_OPTS as flags
 * (dockerd refuses bip/mtu given both ways, so each host uses exactly one). When weftd does not
 * masquerade, Docker does (--ip-masq=true) and `weft cni keep-source` keeps overlay sources.
 *
 * Per host under <stateDir>/hN/docker/: data-root, exec-root (dockerd's own containerd runs
 * from there), pidfile, the API socket, daemon.json with "deprecated-key-path" (else dockerd
 * writes /etc/docker/key.json); storage driver vfs (no overlay mounts to leak; the image is 2 MB).
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { WeftError } from '../errors';
import {
  CONTAINER_CMD, IMAGE, attachNetns, busyboxTarball, loadRecord, nsenterArgs, nsenterPath, processesUnder, requireTools,
  runIn, runInOk, saveRecord, stopAll, unmountUnder, weft,
  type ContainerRuntime, type RuntimeContainer, type RuntimeContext, type RuntimeHost,
} from './runtime';
import { isAlive, spawnDetached, stopProcess, tailFile, waitUntil } from './run';
import { readSubnetEnv } from './subnet-env';

const KIND = 'docker';

export function dockerForm(host: RuntimeHost): 'daemon.json' | 'DOCKER_OPTS' {
  return host.index % 2 === 1 ? 'daemon.json' : 'DOCKER_OPTS';
}

export class DockerRuntime implements ContainerRuntime {
  readonly kind = KIND;
  private readonly tools = requireTools(KIND, { dockerd: 'docker.io', docker: 'docker.io', runc: 'runc', containerd: 'containerd' });

  dir(host: RuntimeHost): string {
    return join(host.dir, KIND);
  }

  socket(host: RuntimeHost): string {
    return join(this.dir(host), 'docker.sock');
  }

  /** `docker -H unix://<sock> ARGS` as an argv (Debian's client: /usr/bin/docker). */
  cli(host: RuntimeHost, args: readonly string[]): string[] {
    return [this.tools.docker ?? 'docker', '-H', `unix://${this.socket(host)}`, ...args];
  }

  execArgv(host: RuntimeHost, cmd: readonly string[], tty: boolean): string[] {
    return this.cli(host, ['exec', tty ? '-it' : '-i', `${host.name}-c1`, ...cmd]);
  }

  async ensure(ctx: RuntimeContext, host: RuntimeHost): Promise<RuntimeContainer> {
    await this.ensureDaemon(ctx, host);
    const docker = (args: string[], what: string) => runInOk(host.ns, this.cli(host, args), `${what} on ${host.name}`);
    if ((await runIn(host.ns, this.cli(host, ['image', 'inspect', IMAGE]))).code !== 0) {
      await docker(['import', await busyboxTarball(ctx.stateDir), IMAGE], 'docker import');
    }
    const name = `${host.name}-c1`;
    const state = await runIn(host.ns, this.cli(host, ['inspect', '-f', '{{.State.Running}}', name]));
    if (state.code !== 0) {
      await docker(['run', '-d', '--name', name, '--hostname', name, IMAGE, ...CONTAINER_CMD], 'docker run');
    } else if (state.stdout.trim() !== 'true') {
      await docker(['start', name], 'docker start');
    }
    const info = (await docker(['inspect', '-f', '{{.State.Pid}} {{.NetworkSettings.IPAddress}}/{{.NetworkSettings.IPPrefixLen}}', name], 'docker inspect')).trim();
    const [pid, address] = info.split(' ');
    await attachNetns(ctx.ipPath, host.containerNs, Number(pid));
    ctx.progress(`docker container ${name} on ${host.name}: ${address} (dockerd configured by ${dockerForm(host)}, netns ${host.containerNs})`);
    return { name, ns: host.containerNs, address: address ?? '' };
  }

  /** dockerd running with options from the host's current subnet.env; restarted if they changed. */
  private async ensureDaemon(ctx: RuntimeContext, host: RuntimeHost): Promise<void> {
    const dir = this.dir(host);
    mkdirSync(dir, { recursive: true });
    const env = readSubnetEnv(host.subnetFile);
    if (!env) throw new WeftError('CONFIG_MISSING', `${host.subnetFile} not written yet (is weftd running on ${host.name}?)`);
    const rec = loadRecord(host, KIND);
    const stamp = `${env.subnet} ${env.mtu} ${env.ipMasq}`;
    const stampFile = join(dir, 'configured-for');
    const running = rec.daemon !== null && isAlive(rec.daemon);
    if (running && existsSync(stampFile) && readFileSync(stampFile, 'utf8') === stamp) return;
    if (running) {
      // weftd came back with another subnet: Docker's bridge must follow (as an operator restarts Docker).
      ctx.progress(`subnet.env of ${host.name} changed (${stamp}): restarting dockerd`);
      await this.stop(host, []);
    }
    const base = { 'deprecated-key-path': join(dir, 'key.json'), 'storage-driver': 'vfs' };
    writeFileSync(join(dir, 'daemon.json'), JSON.stringify(base, null, 2) + '\n');
    const flags: string[] = [];
    // In the host's namespace: docker-opts checks that host's routing table (mk-docker-opts.sh's check).
    const inHost = { ipPath: ctx.ipPath, ns: host.ns };
    if (dockerForm(host) === 'daemon.json') {
      await weft(['docker-opts', '--daemon-json', join(dir, 'daemon.json'), '-f', host.subnetFile], inHost);
    } else {
      const file = join(dir, 'docker_opts.env');
      await weft(['docker-opts', '-c', '-f', host.subnetFile, '-d', file], inHost);
      const m = /^DOCKER_OPTS="(.*)"$/m.exec(readFileSync(file, 'utf8'));
      flags.push(...(m?.[1] ?? '').split(/\s+/).filter((s) => s !== ''));
    }
    const log = join(dir, 'dockerd.log');
    const argv = [this.tools.dockerd ?? 'dockerd', '--data-root', join(dir, 'data'), '--exec-root', join(dir, 'exec'),
      '--pidfile', join(dir, 'docker.pid'), '-H', `unix://${this.socket(host)}`, '--config-file', join(dir, 'daemon.json'), ...flags];
    writeFileSync(log, `--- weft lab: ${new Date().toISOString()} ${argv.join(' ')}\n`, { flag: 'a' });
    const id = spawnDetached(nsenterPath(), nsenterArgs(host.ns, argv), log, process.env);
    saveRecord(host, { ...rec, daemon: id });
    const up = await waitUntil(async () => !isAlive(id) || (await runIn(host.ns, this.cli(host, ['version']), { timeoutMs: 5000 })).code === 0, 60000, 250);
    if (!up || !isAlive(id)) {
      throw new WeftError('INTERNAL', `dockerd on ${host.name} (pid ${id.pid}) ${isAlive(id) ? 'did not answer within 60 s' : 'exited'}; log ${log}:\n${tailFile(log)}`);
    }
    writeFileSync(stampFile, stamp);
    if (!env.ipMasq) {
      // Docker masquerades (--ip-masq=true) and put its rule at the top of POSTROUTING: ours goes above it.
      await weft(['cni', 'keep-source', '-f', host.subnetFile], inHost);
    }
    ctx.progress(`dockerd on ${host.name} (pid ${id.pid}) from ${dockerForm(host)}: ${flags.length > 0 ? flags.join(' ') : readFileSync(join(dir, 'daemon.json'), 'utf8').replace(/\s+/g, ' ')}`);
  }

  /** Containers first (a `sleep` PID 1 ignores SIGTERM: dockerd's shutdown would wait), then dockerd. */
  private async stop(host: RuntimeHost, failures: string[]): Promise<void> {
    const rec = loadRecord(host, KIND);
    if (rec.daemon && isAlive(rec.daemon)) {
      const ids = await runIn(host.ns, this.cli(host, ['ps', '-aq']), { timeoutMs: 15000 });
      const list = ids.stdout.split('\n').filter((s) => s.trim() !== '');
      if (list.length > 0) {
        const rm = await runIn(host.ns, this.cli(host, ['rm', '-f', ...list]), { timeoutMs: 30000 });
        if (rm.code !== 0) failures.push(`docker rm -f on ${host.name}: ${rm.stderr.trim()}`);
      }
      try {
        await stopProcess(rec.daemon, 'SIGTERM', 15000);
      } catch (e) {
        failures.push(`dockerd on ${host.name}: ${(e as Error).message}`);
      }
    }
    saveRecord(host, { ...rec, daemon: null });
  }

  async teardown(_ctx: RuntimeContext, host: RuntimeHost): Promise<string[]> {
    const failures: string[] = [];
    const dir = this.dir(host);
    if (!existsSync(dir)) return failures;
    await this.stop(host, failures);
    // dockerd's containerd and any shim it left: they name the host's exec-root on their command line.
    await stopAll(processesUnder(dir), 5000, failures);
    await unmountUnder(dir, failures);
    if (failures.length === 0) rmSync(join(dir, 'configured-for'), { force: true });
    return failures;
  }
}
