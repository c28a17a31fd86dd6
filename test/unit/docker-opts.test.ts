/**
 * `weft docker-opts` against flannel's mk-docker-opts.sh. The expected texts are derived from the
 * script's logic (getopts "f:d:icmk:?h"; options sorted as `set` prints them; the combined value
 * built as "$DOCKER_OPTS " (only if non-empty) + " $value" per option; NAME="value" lines,
 * individual ones first) and were checked against the script run by dash.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import {
  daemonJsonSettings, dockerOptions, flannelVarsFrom, formatDockerEnv, mergeDaemonJson, parseDockerOptsArgs, runDockerOptsCommand,
  type DockerOptsDeps, type DockerOptsFlags,
} from '../../src/cli/docker-opts';
import type { CliIO } from '../../src/cli/io';
import { WeftError } from '../../src/errors';

const SAMPLE = { FLANNEL_NETWORK: '10.1.0.0/16', FLANNEL_SUBNET: '10.1.74.1/24', FLANNEL_MTU: '1472', FLANNEL_IPMASQ: 'false' };
const BIP = 'DOCKER_OPT_BIP="--bip=10.1.74.1/24"\n';
const MASQ_TRUE = 'DOCKER_OPT_IPMASQ="--ip-masq=true"\n';
const MASQ_FALSE = 'DOCKER_OPT_IPMASQ="--ip-masq=false"\n';
const MTU = 'DOCKER_OPT_MTU="--mtu=1472"\n';

function flagsOf(argv: string[]): DockerOptsFlags {
  const cmd = parseDockerOptsArgs(argv);
  assert.equal(cmd.kind, 'run');
  return (cmd as { flags: DockerOptsFlags }).flags;
}

/** What the script writes for the flags in `argv`, given the subnet file variables. */
function render(argv: string[], vars: Record<string, string> = SAMPLE, env: Record<string, string> = {}): string {
  const flags = flagsOf(argv);
  return formatDockerEnv(dockerOptions(flannelVarsFrom(vars, 'test.env'), flags, { ...env, ...vars }), flags);
}

describe('docker-opts output equals mk-docker-opts.sh for every flag combination', () => {
  // FLANNEL_IPMASQ=false (flannel does not masquerade) → Docker must: --ip-masq=true.
  const cases: [string[], string][] = [
    [[], `${BIP}${MASQ_TRUE}${MTU}DOCKER_OPTS=" --bip=10.1.74.1/24 --ip-masq=true --mtu=1472"\n`],
    [['-i'], `${BIP}${MASQ_TRUE}${MTU}`],
    [['-c'], 'DOCKER_OPTS=" --bip=10.1.74.1/24 --ip-masq=true --mtu=1472"\n'],
    [['-i', '-c'], `${BIP}${MASQ_TRUE}${MTU}DOCKER_OPTS=" --bip=10.1.74.1/24 --ip-masq=true --mtu=1472"\n`],
    [['-ic'], `${BIP}${MASQ_TRUE}${MTU}DOCKER_OPTS=" --bip=10.1.74.1/24 --ip-masq=true --mtu=1472"\n`],
    [['-m'], `${BIP}${MTU}DOCKER_OPTS=" --bip=10.1.74.1/24 --mtu=1472"\n`],
    [['-i', '-m'], `${BIP}${MTU}`],
    [['-c', '-m'], 'DOCKER_OPTS=" --bip=10.1.74.1/24 --mtu=1472"\n'],
    [['-mic'], `${BIP}${MTU}DOCKER_OPTS=" --bip=10.1.74.1/24 --mtu=1472"\n`],
    [['-k', 'FOO'], `${BIP}${MASQ_TRUE}${MTU}FOO=" --bip=10.1.74.1/24 --ip-masq=true --mtu=1472"\n`],
    [['-kFOO'], `${BIP}${MASQ_TRUE}${MTU}FOO=" --bip=10.1.74.1/24 --ip-masq=true --mtu=1472"\n`],
    [['-c', '-k', 'FOO'], 'FOO=" --bip=10.1.74.1/24 --ip-masq=true --mtu=1472"\n'],
    [['-i', '-k', 'FOO'], `${BIP}${MASQ_TRUE}${MTU}`],
    [['-c', '-m', '-k', 'DOCKER_NETWORK_OPTIONS'], 'DOCKER_NETWORK_OPTIONS=" --bip=10.1.74.1/24 --mtu=1472"\n'],
    [['-f', '/x', '-d', '/y', '-c'], 'DOCKER_OPTS=" --bip=10.1.74.1/24 --ip-masq=true --mtu=1472"\n'],
  ];
  for (const [argv, expected] of cases) {
    it(`flags [${argv.join(' ')}]`, () => assert.equal(render(argv), expected));
  }

  it('FLANNEL_IPMASQ=true (weftd masquerades) gives Docker --ip-masq=false', () => {
    assert.equal(render([], { ...SAMPLE, FLANNEL_IPMASQ: 'true' }),
      `${BIP}${MASQ_FALSE}${MTU}DOCKER_OPTS=" --bip=10.1.74.1/24 --ip-masq=false --mtu=1472"\n`);
    assert.equal(render(['-m'], { ...SAMPLE, FLANNEL_IPMASQ: 'true' }), `${BIP}${MTU}DOCKER_OPTS=" --bip=10.1.74.1/24 --mtu=1472"\n`);
  });

  it('a subnet file without FLANNEL_IPMASQ gives no ip-masq option', () => {
    const { FLANNEL_IPMASQ: _, ...vars } = SAMPLE;
    assert.equal(render([], vars), `${BIP}${MTU}DOCKER_OPTS=" --bip=10.1.74.1/24 --mtu=1472"\n`);
  });

  it('an existing DOCKER_OPTS value is kept in front, followed by one extra space, as the script does', () => {
    assert.equal(render(['-c'], SAMPLE, { DOCKER_OPTS: '--foo' }), 'DOCKER_OPTS="--foo  --bip=10.1.74.1/24 --ip-masq=true --mtu=1472"\n');
    // The combined key's own value, not DOCKER_OPTS's, with -k.
    assert.equal(render(['-c', '-k', 'K'], SAMPLE, { DOCKER_OPTS: '--foo', K: '--bar' }), 'K="--bar  --bip=10.1.74.1/24 --ip-masq=true --mtu=1472"\n');
  });

  it('DOCKER_OPT_* variables from the environment join in sorted order, as `set | grep` makes them', () => {
    assert.equal(render([], SAMPLE, { DOCKER_OPT_DNS: '--dns=1.1.1.1' }),
      `${BIP}DOCKER_OPT_DNS="--dns=1.1.1.1"\n${MASQ_TRUE}${MTU}DOCKER_OPTS=" --bip=10.1.74.1/24 --dns=1.1.1.1 --ip-masq=true --mtu=1472"\n`);
  });

  it('-m keeps a DOCKER_OPT_IPMASQ inherited from the environment, as the script does', () => {
    assert.equal(render(['-i', '-m'], SAMPLE, { DOCKER_OPT_IPMASQ: '--ip-masq=false' }), `${BIP}${MASQ_FALSE}${MTU}`);
  });
});

describe('docker-opts flags', () => {
  it('defaults to flannel\'s paths and key', () => {
    assert.deepEqual(flagsOf([]), {
      subnetFile: '/run/flannel/subnet.env', dockerEnvFile: '/run/docker_opts.env', dockerEnvFileGiven: false,
      individual: true, combined: true, combinedKey: 'DOCKER_OPTS', ipMasq: true, daemonJson: null,
    });
  });

  it('stops at the first argument that is not an option, like getopts', () => {
    assert.equal(flagsOf(['-c', 'stray', '-i']).individual, false);
  });

  it('-h and --help ask for the usage', () => {
    assert.equal(parseDockerOptsArgs(['-h']).kind, 'help');
    assert.equal(parseDockerOptsArgs(['--help']).kind, 'help');
  });

  it('an unknown option or a missing value is a usage error naming it', () => {
    for (const [argv, msg] of [[['-x'], /unknown option -x/], [['-f'], /-f needs a value/], [['--bogus'], /--bogus/], [['-k', 'A B'], /not a shell variable name/]] as const) {
      assert.throws(() => parseDockerOptsArgs([...argv]), (e: unknown) => e instanceof WeftError && e.code === 'CONFIG_INVALID' && msg.test(e.message));
    }
  });

  it('--daemon-json takes an optional path', () => {
    assert.equal(flagsOf(['--daemon-json']).daemonJson, '/etc/docker/daemon.json');
    assert.equal(flagsOf(['--daemon-json', '/tmp/d.json', '-m']).daemonJson, '/tmp/d.json');
    assert.equal(flagsOf(['--daemon-json=/tmp/e.json']).daemonJson, '/tmp/e.json');
    assert.equal(flagsOf(['--daemon-json', '-f', '/x']).daemonJson, '/etc/docker/daemon.json');
  });
});

describe('subnet file validation names the file and the variable', () => {
  const bad = (vars: Record<string, string>, re: RegExp): void => {
    assert.throws(() => flannelVarsFrom(vars, '/run/flannel/subnet.env'), (e: unknown) =>
      e instanceof WeftError && /\/run\/flannel\/subnet\.env/.test(e.message) && re.test(e.message));
  };
  it('a missing FLANNEL_SUBNET', () => bad({ FLANNEL_MTU: '1450' }, /no FLANNEL_SUBNET/));
  it('a missing FLANNEL_MTU', () => bad({ FLANNEL_SUBNET: '10.1.74.1/24' }, /no FLANNEL_MTU/));
  it('a FLANNEL_SUBNET that is not a CIDR', () => bad({ ...SAMPLE, FLANNEL_SUBNET: '10.1.74.1' }, /FLANNEL_SUBNET="10\.1\.74\.1"/));
  it('a FLANNEL_MTU that is not a number', () => bad({ ...SAMPLE, FLANNEL_MTU: 'big' }, /FLANNEL_MTU="big"/));
  it('a FLANNEL_IPMASQ that is neither true nor false, with the script\'s message', () =>
    bad({ ...SAMPLE, FLANNEL_IPMASQ: 'yes' }, /Invalid value of FLANNEL_IPMASQ: yes/));
});

describe('daemon.json merge', () => {
  const settings = { bip: '10.1.74.1/24', mtu: 1472, ipMasq: true };

  it('keeps unrelated keys and their order, and adds bip, mtu and ip-masq', () => {
    const before = '{\n    "log-driver": "journald",\n    "mtu": 1500,\n    "storage-driver": "overlay2"\n}\n';
    const m = mergeDaemonJson(before, settings, 'd.json');
    assert.equal(m.text, '{\n    "log-driver": "journald",\n    "mtu": 1472,\n    "storage-driver": "overlay2",\n    "bip": "10.1.74.1/24",\n    "ip-masq": true\n}\n');
    assert.deepEqual(m.changes, [
      { key: 'bip', from: undefined, to: '10.1.74.1/24' },
      { key: 'mtu', from: 1500, to: 1472 },
      { key: 'ip-masq', from: undefined, to: true },
    ]);
  });

  it('is idempotent: merging its own output changes nothing', () => {
    const once = mergeDaemonJson('{"debug": true}', settings, 'd.json');
    assert.ok(once.text);
    const twice = mergeDaemonJson(once.text, settings, 'd.json');
    assert.equal(twice.text, null);
    assert.deepEqual(twice.changes, []);
  });

  it('creates the document when there is no file, and leaves ip-masq alone when told to', () => {
    assert.equal(mergeDaemonJson(null, { ...settings, ipMasq: null }, 'd.json').text, '{\n  "bip": "10.1.74.1/24",\n  "mtu": 1472\n}\n');
    assert.equal(mergeDaemonJson('{"ip-masq": false}', { ...settings, ipMasq: null }, 'd.json').text,
      '{\n  "ip-masq": false,\n  "bip": "10.1.74.1/24",\n  "mtu": 1472\n}\n');
  });

  it('refuses a file that is not a JSON object, naming it', () => {
    for (const text of ['{"bip": ', '[1]', '"x"']) {
      assert.throws(() => mergeDaemonJson(text, settings, '/etc/docker/daemon.json'), (e: unknown) =>
        e instanceof WeftError && e.code === 'BAD_DATA' && e.message.includes('/etc/docker/daemon.json'));
    }
  });
});

describe('weft docker-opts command', () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-docker-opts-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const io = (): CliIO & { outText: string; errText: string } => {
    const c = { outText: '', errText: '', out: (t: string) => { c.outText += `${t}\n`; }, err: (t: string) => { c.errText += `${t}\n`; } };
    return c;
  };
  const deps = (routes: string[] = []): DockerOptsDeps => ({ env: {}, gatewayRoutesTo: async () => routes });
  const subnetFile = join(dir, 'subnet.env');
  writeFileSync(subnetFile, 'FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n');

  it('writes the Docker env file flannel\'s samples show, mode 0644', async () => {
    const out = join(dir, 'docker_opts.env');
    assert.equal(await runDockerOptsCommand(['-f', subnetFile, '-d', out], io(), deps()), 0);
    assert.equal(readFileSync(out, 'utf8'), `${BIP}${MASQ_TRUE}${MTU}DOCKER_OPTS=" --bip=10.1.74.1/24 --ip-masq=true --mtu=1472"\n`);
    assert.equal(statSync(out).mode & 0o777, 0o644);
  });

  it('fails naming the file when the subnet file is missing, and writes nothing', async () => {
    const out = join(dir, 'never.env');
    await assert.rejects(runDockerOptsCommand(['-f', join(dir, 'absent.env'), '-d', out], io(), deps()),
      (e: unknown) => e instanceof WeftError && /absent\.env does not exist/.test(e.message));
    assert.throws(() => statSync(out));
  });

  it('exits 1 after writing when the routing table already routes the subnet via a gateway', async () => {
    const c = io();
    const out = join(dir, 'conflict.env');
    assert.equal(await runDockerOptsCommand(['-f', subnetFile, '-d', out, '-c'], c, deps(['10.1.74.0/24 via 10.1.74.0 dev flannel.1 onlink'])), 1);
    assert.match(c.errText, /^Your routing table already contains the subnet: 10\.1\.74\.0\/24 via/);
    assert.ok(readFileSync(out, 'utf8').startsWith('DOCKER_OPTS='));
  });

  it('--daemon-json merges into daemon.json, keeps its mode, says what changed, and is idempotent', async () => {
    const file = join(dir, 'daemon.json');
    writeFileSync(file, '{\n  "log-driver": "journald",\n  "mtu": 1500\n}\n');
    chmodSync(file, 0o600);
    const first = io();
    assert.equal(await runDockerOptsCommand(['-f', subnetFile, '--daemon-json', file], first, deps()), 0);
    assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), { 'log-driver': 'journald', mtu: 1472, bip: '10.1.74.1/24', 'ip-masq': true });
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.match(first.outText, /"mtu": 1500 -> 1472/);
    assert.match(first.outText, /"bip": \(unset\) -> "10\.1\.74\.1\/24"/);
    const ino = statSync(file).ino;
    const second = io();
    assert.equal(await runDockerOptsCommand(['-f', subnetFile, '--daemon-json', file], second, deps()), 0);
    assert.match(second.outText, /unchanged/);
    assert.equal(statSync(file).ino, ino, 'an unchanged file is not rewritten');
  });

  it('--daemon-json leaves a malformed daemon.json untouched', async () => {
    const file = join(dir, 'broken.json');
    writeFileSync(file, '{"log-driver": ');
    await assert.rejects(runDockerOptsCommand(['-f', subnetFile, '--daemon-json', file], io(), deps()), /broken\.json is not valid JSON/);
    assert.equal(readFileSync(file, 'utf8'), '{"log-driver": ');
  });
});

describe('docker-opts: IPv6', () => {
  const dual = {
    FLANNEL_NETWORK: '10.5.0.0/16', FLANNEL_SUBNET: '10.5.34.1/24',
    FLANNEL_IPV6_NETWORK: 'fd00:5::/48', FLANNEL_IPV6_SUBNET: 'fd00:5:0:22::1/64', FLANNEL_MTU: '1450', FLANNEL_IPMASQ: 'false',
  };

  it('adds --ipv6 --fixed-cidr-v6=<the IPv6 subnet> beside --bip for a dual-stack subnet file', () => {
    const flannel = flannelVarsFrom(dual, 'dual.env');
    assert.equal(flannel.ipv6Subnet, 'fd00:5:0:22::/64');
    const opts = dockerOptions(flannel, { ipMasq: true, combinedKey: 'DOCKER_OPTS' });
    assert.deepEqual(opts.vars, [
      ['DOCKER_OPT_BIP', '--bip=10.5.34.1/24'],
      ['DOCKER_OPT_IPMASQ', '--ip-masq=true'],
      ['DOCKER_OPT_IPV6', '--ipv6 --fixed-cidr-v6=fd00:5:0:22::/64'],
      ['DOCKER_OPT_MTU', '--mtu=1450'],
    ]);
  });

  it('gives no --bip for an IPv6-only subnet file, and merges "ipv6" and "fixed-cidr-v6" into daemon.json', () => {
    const { FLANNEL_NETWORK: _n, FLANNEL_SUBNET: _s, ...only } = dual;
    const flannel = flannelVarsFrom(only, 'only.env');
    assert.equal(flannel.subnet, null);
    assert.deepEqual(dockerOptions(flannel, { ipMasq: false, combinedKey: 'DOCKER_OPTS' }).vars.map(([k]) => k), ['DOCKER_OPT_IPV6', 'DOCKER_OPT_MTU']);
    const merged = mergeDaemonJson('{"log-level": "warn"}', daemonJsonSettings(flannel, { ipMasq: false }), 'daemon.json');
    assert.deepEqual(JSON.parse(merged.text!), { 'log-level': 'warn', mtu: 1450, ipv6: true, 'fixed-cidr-v6': 'fd00:5:0:22::/64' });
  });

  it('rejects a malformed FLANNEL_IPV6_SUBNET naming the file', () => {
    assert.throws(() => flannelVarsFrom({ ...dual, FLANNEL_IPV6_SUBNET: 'fd00::zz/64' }, 'bad.env'), /subnet file bad\.env: FLANNEL_IPV6_SUBNET="fd00::zz\/64" is not/);
  });
});
