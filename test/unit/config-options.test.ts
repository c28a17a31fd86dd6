import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  formatDaemonHelp,
  formatEtcdFlagsHelp,
  parseDaemonOptions,
  parseEtcdFlags,
  parseGoDuration,
} from '../../src/config/options';
import type { DaemonOptions } from '../../src/config/types';
import { WeftError } from '../../src/errors';

type Env = Record<string, string | undefined>;

function run(argv: readonly string[], env: Env = {}): DaemonOptions {
  const r = parseDaemonOptions(argv, env);
  assert.equal(r.kind, 'run');
  return (r as { kind: 'run'; options: DaemonOptions }).options;
}

/** Asserts a CONFIG_INVALID WeftError; a string must equal the message, a RegExp match it. */
function rejects(fn: () => unknown, message: string | RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof WeftError, `expected a WeftError, got ${String(err)}`);
    assert.equal(err.code, 'CONFIG_INVALID');
    if (typeof message === 'string') assert.equal(err.message, message);
    else assert.match(err.message, message);
    return true;
  });
}

const DEFAULTS: DaemonOptions = {
  etcdEndpoints: ['http://127.0.0.1:4001', 'http://127.0.0.1:2379'],
  etcdPrefix: '/coreos.com/network',
  etcdKeyfile: null,
  etcdCertfile: null,
  etcdCafile: null,
  etcdUsername: null,
  etcdPassword: null,
  iface: [],
  ifaceRegex: [],
  ifaceCanReach: null,
  publicIp: null,
  publicIpv6: null,
  subnetFile: '/run/flannel/subnet.env',
  subnetLeaseRenewMarginMinutes: 60,
  subnetLeaseTtlSeconds: 86400,
  ipMasq: false,
  iptablesResyncSeconds: 5,
  iptablesForwardRules: true,
  healthzIp: '0.0.0.0',
  healthzPort: 0,
  healthzExposeDetails: false,
  nativeJoin: true,
  probeIntervalSeconds: 30,
  vxlanFallback: 'auto',
  wireguardFallback: 'auto',
  wireguardKeyFile: '/run/flannel/wgkey',
  wireguardRunDir: '/var/run/wireguard',
  resyncIntervalSeconds: 300,
};

describe('parseDaemonOptions: defaults and flag forms', () => {
  it('uses flanneld\'s defaults (and weft\'s for its own flags) with no flags and no environment', () => {
    assert.deepEqual(run([]), DEFAULTS);
  });

  it('accepts a value flag as --name=value, --name value, -name=value and -name value', () => {
    for (const argv of [
      ['--etcd-prefix=/a/b'], ['--etcd-prefix', '/a/b'], ['-etcd-prefix=/a/b'], ['-etcd-prefix', '/a/b'],
    ]) {
      assert.equal(run(argv).etcdPrefix, '/a/b', argv.join(' '));
    }
  });

  it('takes the next argument as the value even when it starts with "-", as Go does', () => {
    assert.equal(run(['--etcd-username', '-x']).etcdUsername, '-x');
  });

  it('keeps "=" inside a value', () => {
    assert.equal(run(['--etcd-password=a=b=c']).etcdPassword, 'a=b=c');
  });

  it('accepts booleans as --name, --name=true|false and -name=false', () => {
    assert.equal(run(['--ip-masq']).ipMasq, true);
    assert.equal(run(['-ip-masq']).ipMasq, true);
    assert.equal(run(['--ip-masq=true']).ipMasq, true);
    assert.equal(run(['--ip-masq=false']).ipMasq, false);
    assert.equal(run(['-ip-masq=false']).ipMasq, false);
    assert.equal(run(['--iptables-forward-rules=false']).iptablesForwardRules, false);
    assert.equal(run(['-iptables-forward-rules=true']).iptablesForwardRules, true);
  });

  it('accepts every spelling Go\'s strconv.ParseBool does', () => {
    for (const t of ['1', 't', 'T', 'TRUE', 'true', 'True']) assert.equal(run([`--ip-masq=${t}`]).ipMasq, true, t);
    for (const f of ['0', 'f', 'F', 'FALSE', 'false', 'False']) assert.equal(run([`--ip-masq=${f}`]).ipMasq, false, f);
  });

  it('rejects other boolean values, naming the flag, the value and what is accepted', () => {
    rejects(() => run(['--ip-masq=yes']), /^--ip-masq: invalid value "yes": expected true or false/);
  });

  it('does not let a boolean flag take the next argument (Go does not either)', () => {
    rejects(() => run(['--ip-masq', 'false']), /^unexpected argument "false": weftd takes only flags/);
  });

  it('takes the last value of a flag given twice, as Go does', () => {
    assert.equal(run(['--subnet-file=/a', '--subnet-file=/b']).subnetFile, '/b');
    assert.equal(run(['--ip-masq', '--ip-masq=false']).ipMasq, false);
  });

  it('collects --iface from repeated flags and comma-separated lists, in order', () => {
    assert.deepEqual(run(['--iface=eth0,10.0.0.1', '-iface', 'eth1', '--iface', 'fd00::1']).iface, ['eth0', '10.0.0.1', 'eth1', 'fd00::1']);
  });

  it('collects --iface-regex from repeated flags without splitting on commas', () => {
    assert.deepEqual(run(['--iface-regex=eth[0-9]{1,2}', '-iface-regex', '^en']).ifaceRegex, ['eth[0-9]{1,2}', '^en']);
  });

  it('rejects invalid interface names and regular expressions', () => {
    rejects(() => run(['--iface=eth0,']), /^--iface: invalid value "eth0,": expected interface names/);
    rejects(() => run(['--iface=a-name-that-is-too-long']), /^--iface: invalid value "a-name-that-is-too-long"/);
    rejects(() => run(['--iface=eth0/1']), /^--iface: invalid value "eth0\/1"/);
    rejects(() => run(['--iface-regex=eth[']), /^--iface-regex: invalid value "eth\[": expected a valid regular expression/);
  });

  it('takes the wireguard key file from flannel\'s $WIREGUARD_KEY_FILE unless --wireguard-key-file is given', () => {
    const opts = (argv: string[]) => {
      const r = parseDaemonOptions(argv, { WIREGUARD_KEY_FILE: '/etc/wg/key' });
      assert.equal(r.kind, 'run');
      return r.kind === 'run' ? r.options : null;
    };
    assert.equal(opts([])!.wireguardKeyFile, '/etc/wg/key');
    assert.equal(opts(['--wireguard-key-file=/x'])!.wireguardKeyFile, '/x');
    rejects(() => run(['--wireguard-fallback=maybe']), /^--wireguard-fallback: invalid value "maybe": expected auto, force or off/);
  });

  it('sets every other flag', () => {
    const o = run([
      '--etcd-endpoints=https://e1:2379,https://e2:2379', '--etcd-keyfile=/k', '--etcd-certfile=/c', '--etcd-cafile=/ca',
      '--etcd-username=u', '--etcd-password=p', '--iface-can-reach=10.0.0.9', '--public-ip=10.250.0.1',
      '--public-ipv6=fd00::1', '--subnet-file=/tmp/s.env', '--subnet-lease-renew-margin=30', '--subnet-lease-ttl=2h',
      '--iptables-resync=7', '--healthz-ip=127.0.0.1', '--healthz-port=8471', '--vxlan-fallback=force',
      '--resync-interval=3', '--wireguard-fallback=force', '--wireguard-key-file=/k/wg', '--wireguard-run-dir=/r',
      '--probe-interval=45',
    ]);
    assert.deepEqual(o, {
      ...DEFAULTS,
      etcdEndpoints: ['https://e1:2379', 'https://e2:2379'],
      etcdKeyfile: '/k',
      etcdCertfile: '/c',
      etcdCafile: '/ca',
      etcdUsername: 'u',
      etcdPassword: 'p',
      ifaceCanReach: '10.0.0.9',
      publicIp: '10.250.0.1',
      publicIpv6: 'fd00::1',
      subnetFile: '/tmp/s.env',
      subnetLeaseRenewMarginMinutes: 30,
      subnetLeaseTtlSeconds: 7200,
      iptablesResyncSeconds: 7,
      healthzIp: '127.0.0.1',
      healthzPort: 8471,
      probeIntervalSeconds: 45,
      vxlanFallback: 'force',
      wireguardFallback: 'force',
      wireguardKeyFile: '/k/wg',
      wireguardRunDir: '/r',
      resyncIntervalSeconds: 3,
    });
  });
});

describe('parseDaemonOptions: help, version, unknown flags', () => {
  it('returns the help text for --help, -help, -h and --h', () => {
    for (const flag of ['--help', '-help', '-h', '--h']) {
      const r = parseDaemonOptions([flag], {});
      assert.equal(r.kind, 'help', flag);
      assert.equal((r as { text: string }).text, formatDaemonHelp());
    }
  });

  it('returns the help even when other arguments are wrong', () => {
    assert.equal(parseDaemonOptions(['--nope', '--help'], {}).kind, 'help');
  });

  it('documents every flag, its default and its environment variables in the help', () => {
    const text = formatDaemonHelp();
    for (const flag of [
      'etcd-endpoints', 'etcd-prefix', 'etcd-keyfile', 'etcd-certfile', 'etcd-cafile', 'etcd-username', 'etcd-password',
      'iface', 'iface-regex', 'iface-can-reach', 'public-ip', 'public-ipv6', 'subnet-file', 'subnet-lease-renew-margin',
      'subnet-lease-ttl', 'ip-masq', 'iptables-resync', 'iptables-forward-rules', 'healthz-ip', 'healthz-port',
      'healthz-expose-details', 'probe-interval', 'vxlan-fallback', 'wireguard-fallback', 'wireguard-key-file', 'wireguard-run-dir', 'resync-interval', 'version', 'help',
    ]) {
      assert.match(text, new RegExp(`^  --${flag}\\b`, 'm'), flag);
    }
    assert.match(text, /http:\/\/127\.0\.0\.1:4001,http:\/\/127\.0\.0\.1:2379/);
    assert.match(text, /FLANNELD_SUBNET_FILE/);
    assert.match(text, /WEFT_IP_MASQ/);
  });

  it('returns version for --version and -version, but not --version=false', () => {
    assert.deepEqual(parseDaemonOptions(['--version'], {}), { kind: 'version' });
    assert.deepEqual(parseDaemonOptions(['-version'], {}), { kind: 'version' });
    assert.equal(parseDaemonOptions(['--version=false'], {}).kind, 'run');
  });

  it('never takes help or version from the environment', () => {
    assert.equal(parseDaemonOptions([], { FLANNELD_VERSION: 'true', WEFT_HELP: 'true' }).kind, 'run');
  });

  it('rejects unknown flags, naming them and pointing at weftd --help', () => {
    rejects(() => run(['--kube-subnet-mgr']), 'unknown flag "--kube-subnet-mgr"; run \'weftd --help\' for the list of flags');
    rejects(() => run(['-nope=1']), 'unknown flag "-nope"; run \'weftd --help\' for the list of flags');
    rejects(() => run(['---ip-masq']), /^unknown flag "---ip-masq"/);
  });

  it('rejects positional arguments, also after --', () => {
    rejects(() => run(['eth0']), /^unexpected argument "eth0": weftd takes only flags; run 'weftd --help'/);
    rejects(() => run(['--', 'x']), /^unexpected argument "x"/);
    assert.deepEqual(run(['--ip-masq', '--']), { ...DEFAULTS, ipMasq: true });
  });

  it('rejects a value flag at the end of the line without a value', () => {
    rejects(() => run(['--iface']), '--iface: flag needs a value (--iface=NAME|IP)');
    rejects(() => run(['-etcd-prefix']), '--etcd-prefix: flag needs a value (--etcd-prefix=PATH)');
  });
});

describe('parseDaemonOptions: environment', () => {
  it('falls back to FLANNELD_<NAME>', () => {
    const o = run([], {
      FLANNELD_ETCD_ENDPOINTS: 'http://10.0.0.1:2379',
      FLANNELD_ETCD_PREFIX: '/x',
      FLANNELD_IP_MASQ: 'true',
      FLANNELD_IFACE: 'eth0,eth1',
      FLANNELD_PUBLIC_IP: '10.1.1.1',
      FLANNELD_SUBNET_LEASE_RENEW_MARGIN: '10',
      FLANNELD_IPTABLES_FORWARD_RULES: 'false',
      FLANNELD_HEALTHZ_PORT: '9000',
    });
    assert.deepEqual(o.etcdEndpoints, ['http://10.0.0.1:2379']);
    assert.equal(o.etcdPrefix, '/x');
    assert.equal(o.ipMasq, true);
    assert.deepEqual(o.iface, ['eth0', 'eth1']);
    assert.equal(o.publicIp, '10.1.1.1');
    assert.equal(o.subnetLeaseRenewMarginMinutes, 10);
    assert.equal(o.iptablesForwardRules, false);
    assert.equal(o.healthzPort, 9000);
  });

  it('prefers WEFT_<NAME> over FLANNELD_<NAME>', () => {
    assert.equal(run([], { WEFT_ETCD_PREFIX: '/weft', FLANNELD_ETCD_PREFIX: '/flannel' }).etcdPrefix, '/weft');
    assert.equal(run([], { WEFT_VXLAN_FALLBACK: 'off' }).vxlanFallback, 'off');
    assert.equal(run([], { FLANNELD_RESYNC_INTERVAL: '4' }).resyncIntervalSeconds, 4);
  });

  it('prefers flags over the environment, also for repeatable flags', () => {
    const env = { WEFT_ETCD_PREFIX: '/weft', FLANNELD_IFACE: 'eth9', FLANNELD_IP_MASQ: 'true' };
    const o = run(['--etcd-prefix=/flag', '--iface=eth0', '--ip-masq=false'], env);
    assert.equal(o.etcdPrefix, '/flag');
    assert.deepEqual(o.iface, ['eth0']);
    assert.equal(o.ipMasq, false);
  });

  it('ignores empty environment variables, as flanneld does', () => {
    assert.equal(run([], { WEFT_ETCD_PREFIX: '', FLANNELD_ETCD_PREFIX: '/flannel' }).etcdPrefix, '/flannel');
    assert.equal(run([], { FLANNELD_PUBLIC_IP: '' }).publicIp, null);
  });

  it('names the environment variable when its value is invalid', () => {
    rejects(() => run([], { FLANNELD_IP_MASQ: 'yes' }),
      /^--ip-masq: invalid value "yes" \(from environment variable FLANNELD_IP_MASQ\): expected true or false/);
    rejects(() => run([], { WEFT_HEALTHZ_PORT: 'http' }),
      '--healthz-port: invalid value "http" (from environment variable WEFT_HEALTHZ_PORT): expected a port number from 0 (off) to 65535');
  });
});

describe('parseDaemonOptions: value validation', () => {
  it('accepts comma-separated http and https etcd endpoints, trimming spaces', () => {
    assert.deepEqual(run(['--etcd-endpoints=http://a:2379, https://[fd00::1]:2379']).etcdEndpoints, ['http://a:2379', 'https://[fd00::1]:2379']);
  });

  it('rejects etcd endpoints that are not http(s) URLs, naming the bad one', () => {
    rejects(() => run(['--etcd-endpoints=ftp://a:2379']), /^--etcd-endpoints: invalid value "ftp:\/\/a:2379": expected a comma-separated list of http:\/\/ or https:\/\/ URLs .*"ftp:\/\/a:2379" is not one$/);
    rejects(() => run(['--etcd-endpoints=127.0.0.1:2379']), /^--etcd-endpoints: invalid value "127\.0\.0\.1:2379"/);
    rejects(() => run(['--etcd-endpoints=http://a:2379,']), /"" is not one$/);
    rejects(() => run(['--etcd-endpoints=http://a:2379/v2/keys']), /"http:\/\/a:2379\/v2\/keys" is not one$/);
    rejects(() => run(['--etcd-endpoints=']), /^--etcd-endpoints: invalid value ""/);
  });

  it('cleans the etcd prefix like Go\'s path.Join, without a trailing slash', () => {
    assert.equal(run(['--etcd-prefix=/coreos.com/network/']).etcdPrefix, '/coreos.com/network');
    assert.equal(run(['--etcd-prefix=/a//b/./c']).etcdPrefix, '/a/b/c');
    assert.equal(run(['--etcd-prefix=/']).etcdPrefix, '');
  });

  it('rejects an empty or relative etcd prefix', () => {
    rejects(() => run(['--etcd-prefix=coreos.com/network']), /^--etcd-prefix: invalid value "coreos\.com\/network": expected an absolute etcd key prefix/);
    rejects(() => run(['--etcd-prefix=']), /^--etcd-prefix: invalid value ""/);
  });

  it('requires --etcd-keyfile and --etcd-certfile together', () => {
    rejects(() => run(['--etcd-keyfile=/k']), '--etcd-keyfile is set but --etcd-certfile is not: TLS client authentication to etcd needs both');
    rejects(() => run(['--etcd-certfile=/c']), '--etcd-certfile is set but --etcd-keyfile is not: TLS client authentication to etcd needs both');
    assert.equal(run(['--etcd-cafile=/ca']).etcdCafile, '/ca');
  });

  it('requires --public-ip to be IPv4 and --public-ipv6 to be IPv6', () => {
    rejects(() => run(['--public-ip=fd00::1']), '--public-ip: invalid value "fd00::1": expected an IPv4 address such as 10.250.0.1 (for an IPv6 address use --public-ipv6)');
    rejects(() => run(['--public-ip=10.1.1']), '--public-ip: invalid value "10.1.1": expected an IPv4 address such as 10.250.0.1');
    rejects(() => run(['--public-ipv6=10.0.0.1']), '--public-ipv6: invalid value "10.0.0.1": expected an IPv6 address such as fd00::1');
  });

  it('accepts either family for --iface-can-reach and --healthz-ip', () => {
    assert.equal(run(['--iface-can-reach=fd00::9']).ifaceCanReach, 'fd00::9');
    assert.equal(run(['--healthz-ip=::']).healthzIp, '::');
    rejects(() => run(['--iface-can-reach=example.com']), '--iface-can-reach: invalid value "example.com": expected an IPv4 or IPv6 address');
    rejects(() => run(['--healthz-ip=localhost']), '--healthz-ip: invalid value "localhost": expected an IPv4 or IPv6 address');
  });

  it('checks --healthz-port is 0..65535', () => {
    assert.equal(run(['--healthz-port=65535']).healthzPort, 65535);
    rejects(() => run(['--healthz-port=65536']), '--healthz-port: invalid value "65536": expected a port number from 0 (off) to 65535');
    rejects(() => run(['--healthz-port=-1']), /^--healthz-port: invalid value "-1"/);
  });

  it('checks --subnet-lease-renew-margin is whole minutes 1..1439', () => {
    assert.equal(run(['--subnet-lease-renew-margin=1']).subnetLeaseRenewMarginMinutes, 1);
    assert.equal(run(['--subnet-lease-renew-margin=1439']).subnetLeaseRenewMarginMinutes, 1439);
    for (const bad of ['0', '1440', '1.5', 'abc', '']) {
      rejects(() => run([`--subnet-lease-renew-margin=${bad}`]),
        `--subnet-lease-renew-margin: invalid value ${JSON.stringify(bad)}: expected a whole number of minutes from 1 to 1439`);
    }
  });

  it('reads --subnet-lease-ttl as a Go duration or plain seconds', () => {
    const ttl = (v: string): number => run([`--subnet-lease-ttl=${v}`]).subnetLeaseTtlSeconds;
    assert.equal(ttl('24h'), 86400);
    assert.equal(ttl('90m'), 5400);
    assert.equal(ttl('30s'), 30);
    assert.equal(ttl('1h30m'), 5400);
    assert.equal(ttl('3600'), 3600);
    assert.equal(ttl('11'), 11);
  });

  it('requires --subnet-lease-ttl to be whole seconds, more than 10', () => {
    for (const bad of ['10s', '10', '5', '1.5s', '10.5', '-1h', 'abc', '1d', '0']) {
      rejects(() => run([`--subnet-lease-ttl=${bad}`]), new RegExp(`^--subnet-lease-ttl: invalid value "${bad.replace('.', '\\.')}": expected a whole number of seconds more than 10s`));
    }
  });

  it('keeps the duration parser\'s error as the cause', () => {
    try {
      run(['--subnet-lease-ttl=1d']);
      assert.fail('expected an error');
    } catch (err) {
      const cause = (err as Error & { cause?: unknown }).cause;
      assert.ok(cause instanceof WeftError);
      assert.match(cause.message, /unknown unit "d"/);
    }
  });

  it('checks the lease TTL against the renew margin only when both are given', () => {
    assert.equal(run(['--subnet-lease-ttl=30s']).subnetLeaseTtlSeconds, 30);
    assert.equal(run(['--subnet-lease-ttl=2h', '--subnet-lease-renew-margin=60']).subnetLeaseTtlSeconds, 7200);
    rejects(() => run(['--subnet-lease-ttl=30m', '--subnet-lease-renew-margin=30']),
      /^--subnet-lease-ttl "30m" \(1800s\) must be longer than --subnet-lease-renew-margin 30 \(1800s\)/);
    rejects(() => run(['--subnet-lease-ttl=30m'], { FLANNELD_SUBNET_LEASE_RENEW_MARGIN: '60' }), /must be longer than --subnet-lease-renew-margin 60/);
  });

  it('checks --iptables-resync is whole seconds >= 1', () => {
    assert.equal(run(['--iptables-resync=10']).iptablesResyncSeconds, 10);
    assert.equal(run(['--iptables-resync=1m']).iptablesResyncSeconds, 60);
    rejects(() => run(['--iptables-resync=0']), /^--iptables-resync: invalid value "0": expected a whole number of seconds from 1/);
    rejects(() => run(['--iptables-resync=x']), /^--iptables-resync: invalid value "x"/);
  });

  it('reads --resync-interval as seconds or a Go duration of at least 1s', () => {
    assert.equal(run(['--resync-interval=2']).resyncIntervalSeconds, 2);
    assert.equal(run(['--resync-interval=1m']).resyncIntervalSeconds, 60);
    assert.equal(run(['--resync-interval=1.5s']).resyncIntervalSeconds, 1.5);
    rejects(() => run(['--resync-interval=500ms']), /^--resync-interval: invalid value "500ms": expected at least 1 second/);
    rejects(() => run(['--resync-interval=0']), /^--resync-interval: invalid value "0"/);
  });

  it('reads --probe-interval as seconds or a Go duration, 0 for on-demand probes only', () => {
    assert.equal(run([]).probeIntervalSeconds, 30);
    assert.equal(run(['--probe-interval=2m']).probeIntervalSeconds, 120);
    assert.equal(run(['--probe-interval=0']).probeIntervalSeconds, 0);
    assert.equal(run([], { FLANNELD_PROBE_INTERVAL: '10' }).probeIntervalSeconds, 10);
    rejects(() => run(['--probe-interval=500ms']), /^--probe-interval: invalid value "500ms": expected 0 \(no periodic probes\) or at least 1 second/);
    rejects(() => run(['--probe-interval=25h']), /^--probe-interval: invalid value "25h": .*at most 24h/);
    rejects(() => run(['--probe-interval=-1']), /^--probe-interval: invalid value "-1"/);
  });

  it('accepts auto, force and off for --vxlan-fallback, case-insensitively', () => {
    assert.equal(run(['--vxlan-fallback=AUTO']).vxlanFallback, 'auto');
    assert.equal(run(['--vxlan-fallback=off']).vxlanFallback, 'off');
    rejects(() => run(['--vxlan-fallback=maybe']), '--vxlan-fallback: invalid value "maybe": expected auto, force or off');
  });

  it('rejects an empty --subnet-file', () => {
    rejects(() => run(['--subnet-file=']), '--subnet-file: invalid value "": expected a file path');
  });
});

describe('parseEtcdFlags', () => {
  it('takes the --etcd-* flags in any form and leaves the rest in order', () => {
    const r = parseEtcdFlags(
      ['lease', '-etcd-prefix', '/x/', 'list', '--json', '--etcd-endpoints=http://e:2379', '-etcd-username=u', '--etcd-password', 'p'],
      {},
    );
    assert.deepEqual(r.rest, ['lease', 'list', '--json']);
    assert.deepEqual(r.options, {
      etcdEndpoints: ['http://e:2379'],
      etcdPrefix: '/x',
      etcdKeyfile: null,
      etcdCertfile: null,
      etcdCafile: null,
      etcdUsername: 'u',
      etcdPassword: 'p',
    });
  });

  it('uses the same defaults and environment fallbacks as weftd', () => {
    const r = parseEtcdFlags(['status'], { FLANNELD_ETCD_PREFIX: '/f', WEFT_ETCD_CAFILE: '/ca' });
    assert.deepEqual(r.options.etcdEndpoints, ['http://127.0.0.1:4001', 'http://127.0.0.1:2379']);
    assert.equal(r.options.etcdPrefix, '/f');
    assert.equal(r.options.etcdCafile, '/ca');
  });

  it('stops at -- and leaves everything after it, -- included', () => {
    const r = parseEtcdFlags(['run', '--', '--etcd-prefix=/y'], {});
    assert.deepEqual(r.rest, ['run', '--', '--etcd-prefix=/y']);
    assert.equal(r.options.etcdPrefix, '/coreos.com/network');
  });

  it('validates like weftd', () => {
    rejects(() => parseEtcdFlags(['--etcd-endpoints=nope'], {}), /^--etcd-endpoints: invalid value "nope"/);
    rejects(() => parseEtcdFlags(['--etcd-prefix'], {}), '--etcd-prefix: flag needs a value (--etcd-prefix=PATH)');
  });

  it('has help lines for the CLI', () => {
    const text = formatEtcdFlagsHelp();
    assert.match(text, /--etcd-endpoints=URLS/);
    assert.match(text, /--etcd-password=PASSWORD/);
    assert.doesNotMatch(text, /--iface/);
  });
});

describe('parseGoDuration', () => {
  it('parses Go durations into seconds', () => {
    const cases: Array<[string, number]> = [
      ['0', 0], ['24h', 86400], ['90m', 5400], ['30s', 30], ['1h30m', 5400], ['1.5h', 5400], ['2h45m30s', 9930],
      ['300ms', 0.3], ['.5s', 0.5], ['5.s', 5], ['1500us', 0.0015], ['1µs', 1e-6], ['1μs', 1e-6], ['10ns', 1e-8],
      ['+5s', 5], ['-1.5h', -5400], ['-0', 0],
    ];
    for (const [text, seconds] of cases) {
      const got = parseGoDuration(text);
      assert.ok(Math.abs(got - seconds) < 1e-12, `${text}: expected ${seconds}, got ${got}`);
    }
  });

  it('rejects what Go rejects, saying why', () => {
    const cases: Array<[string, RegExp]> = [
      ['', /: empty;/],
      ['30', /missing unit after "30"/],
      ['1h30', /missing unit after "30"/],
      ['1d', /unknown unit "d"/],
      ['h', /expected a number at "h"/],
      ['.s', /expected a number at ".s"/],
      ['1.2.3s', /missing unit after "1\.2"/],
      ['5 s', /unknown unit " s"/],
      ['-', /: empty;/],
    ];
    for (const [text, re] of cases) {
      rejects(() => parseGoDuration(text), re);
      rejects(() => parseGoDuration(text), /expected a Go duration such as 24h, 90m, 1h30m or 30s$/);
      assert.throws(() => parseGoDuration(text), (err: Error) => err.message.startsWith(`invalid duration ${JSON.stringify(text)}: `));
    }
  });
});
