#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS WEFT_EXTRA_CA_CERTS=${NODE_EXTRA_CA_CERTS} node
/**
 * weft: the operator's CLI. Each subcommand lives in its own module; this file only dispatches.
 * The shebang defers NODE_EXTRA_CA_CERTS as weftd's does (src/lease/etcd-common.ts
 * EXTRA_CA_CERTS_ENV): ~50 ms less per command where it is set to a CA bundle.
 * Exit codes: 0 ok, 1 the operation failed, 2 usage error.
 */
import { describeError, WeftError } from '../errors';
import { weftVersion } from '../version';
import { runCleanupCommand } from './cleanup';
import { runCniCommand } from './cni';
import { runConfigCommand } from './config';
import { runDockerOptsCommand } from './docker-opts';
import { stdio } from './io';
import { runLabCommand } from './lab';
import { runLeasesCommand } from './leases';
import { runStatusCommand } from './status';

const USAGE = `usage: weft <command> [args]

commands:
  leases [--watch] [-o table|wide|json] | reserve | release | revoke
                          the subnet leases in etcd (weft leases --help)
  config get|set|validate the network config in etcd (weft config --help)
  docker-opts [-f F] [-d F] [-i] [-c] [-m] [-k KEY] [--daemon-json [PATH]]
                          Docker options from subnet.env, like flannel's mk-docker-opts.sh
  cleanup [--release-lease]
                          remove weftd's device, routes, iptables rules and subnet.env from this host
  cni config|install      CNI for podman, containerd, kubelet: a conflist, the plugin (weft cni --help)
  lab up|status|exec|ping|down ...
                          a local lab of hosts in network namespaces (weft lab help)
  status [--json] [--probe]
                          this host's lease, data path and peers, from the local weftd (weft status --help)
  version                 print the version`;

type Command = (argv: string[]) => Promise<number>;

const COMMANDS: Readonly<Record<string, Command>> = {
  leases: (argv) => runLeasesCommand(argv, stdio),
  config: (argv) => runConfigCommand(argv, stdio),
  'docker-opts': (argv) => runDockerOptsCommand(argv, stdio),
  cleanup: (argv) => runCleanupCommand(argv, stdio),
  cni: (argv) => runCniCommand(argv, stdio),
  status: (argv) => runStatusCommand(argv, stdio),
  lab: (argv) => runLabCommand(argv),
  version: async () => {
    stdio.out(`weft ${weftVersion()}`);
    return 0;
  },
};

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    stdio.out(USAGE);
    return name === undefined ? 2 : 0;
  }
  if (name === '--version') return COMMANDS.version!([]);
  const command = COMMANDS[name];
  if (!command) {
    stdio.err(`weft: unknown command "${name}"\n\n${USAGE}`);
    return 2;
  }
  try {
    return await command(rest);
  } catch (err) {
    stdio.err(`weft ${name}: ${describeError(err)}`);
    return err instanceof WeftError && err.code === 'CONFIG_INVALID' ? 2 : 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    stdio.err(`weft: unexpected failure: ${err instanceof Error ? err.stack : String(err)}`);
    process.exit(1);
  },
);
