import { strict as assert } from 'node:assert';
import { chmodSync, mkdtempSync, readlinkSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { conflist, installPlugin } from '../../src/cli/cni';
import { CniCode, keepSourceRules, networkOf, parseFlannelEnv, parseNetConf, renderDelegate } from '../../src/cni/netconf';
import { runPlugin } from '../../src/cni/plugin';

const dir = mkdtempSync(join(tmpdir(), 'weft-cni-unit-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const ENV4 = 'FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n';
const ENV46 = ENV4 + 'FLANNEL_IPV6_NETWORK=fd00:5::/56\nFLANNEL_IPV6_SUBNET=fd00:5:0:48::1/64\n';

function cniEnv(command: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH, CNI_COMMAND: command, CNI_CONTAINERID: 'c0ffee', CNI_NETNS: '/run/netns/none', CNI_IFNAME: 'eth0', CNI_PATH: join(dir, 'nobin'), ...extra };
}

function errorOf(out: { code: number; stdout: string }): { code: number; msg: string; cniVersion: string } {
  assert.equal(out.code, 1, `expected a failure, got ${out.stdout}`);
  return JSON.parse(out.stdout) as { code: number; msg: string; cniVersion: string };
}

describe('weft CNI plugin: config and subnet.env', () => {
  test('renders flannel\'s delegate: bridge, ipMasq = !FLANNEL_IPMASQ, FLANNEL_MTU, gateway, host-local range and route', () => {
    const conf = parseNetConf(JSON.stringify({ cniVersion: '0.4.0', name: 'cbr0', type: 'flannel', delegate: { hairpinMode: true } }));
    const d = renderDelegate(conf, parseFlannelEnv(ENV4, 'subnet.env'));
    assert.deepEqual(d, {
      hairpinMode: true, name: 'cbr0', type: 'bridge', ipMasq: true, mtu: 1450, isGateway: true, cniVersion: '0.4.0',
      ipam: { type: 'host-local', ranges: [[{ subnet: '10.5.72.0/24' }]], routes: [{ dst: '10.5.0.0/16' }] },
    });
  });

  test('weftd masquerading (FLANNEL_IPMASQ=true) turns the bridge\'s off; an explicit delegate value wins', () => {
    const env = parseFlannelEnv(ENV4.replace('IPMASQ=false', 'IPMASQ=true'), 'f');
    assert.equal(renderDelegate(parseNetConf('{"name":"n","cniVersion":"1.0.0"}'), env).ipMasq, false);
    assert.equal(renderDelegate(parseNetConf('{"name":"n","cniVersion":"1.0.0","delegate":{"ipMasq":true,"mtu":1400}}'), env).mtu, 1400);
  });

  test('IPv6 ranges and routes when subnet.env has FLANNEL_IPV6_SUBNET; the top-level ipam is merged', () => {
    const conf = parseNetConf(JSON.stringify({ cniVersion: '1.0.0', name: 'n', ipam: { dataDir: '/x', routes: [{ dst: '192.0.2.0/24' }] } }));
    const ipam = renderDelegate(conf, parseFlannelEnv(ENV46, 'f')).ipam;
    assert.deepEqual(ipam, {
      dataDir: '/x', type: 'host-local',
      ranges: [[{ subnet: '10.5.72.0/24' }], [{ subnet: 'fd00:5:0:48::/64' }]],
      routes: [{ dst: '192.0.2.0/24' }, { dst: '10.5.0.0/16' }, { dst: 'fd00:5::/56' }],
    });
  });

  test('keeps container sources: one RETURN per network family when the bridge masquerades, none when it does not', () => {
    const env = parseFlannelEnv(ENV46, 'f');
    assert.deepEqual(keepSourceRules({ ipMasq: true }, env), [{ v6: false, network: '10.5.0.0/16' }, { v6: true, network: 'fd00:5::/56' }]);
    assert.deepEqual(keepSourceRules({ ipMasq: false }, env), []);
  });

  test('networkOf masks host bits of both families', () => {
    assert.equal(networkOf('10.5.72.1/24', false), '10.5.72.0/24');
    assert.equal(networkOf('fd00:5:0:48::1/64', true), 'fd00:5:0:48::/64');
    assert.equal(networkOf('fd00::1/128', true), 'fd00::1/128');
    assert.equal(networkOf('10.5.300.1/24', false), null);
    assert.equal(networkOf('10.5.0.0/16', true), null);
  });

  test('an incomplete subnet.env names what is missing and asks whether weftd runs', () => {
    assert.throws(() => parseFlannelEnv('FLANNEL_NETWORK=10.5.0.0/16\n', '/run/flannel/subnet.env'), (e: Error & { code?: number }) =>
      e.code === CniCode.SUBNET_ENV && /missing FLANNEL_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ: is weftd running/.test(e.message));
    assert.throws(() => parseFlannelEnv(ENV4.replace('1450', 'big'), 'f'), /FLANNEL_MTU=big is not an MTU/);
  });

  test('delegate may not carry name or ipam (as flannel)', () => {
    assert.throws(() => parseNetConf('{"cniVersion":"1.0.0","delegate":{"ipam":{}}}'), /must not have 'ipam'/);
    assert.throws(() => parseNetConf('{"cniVersion":"1.0.0","delegate":{"name":"x"}}'), /must not have 'name'/);
  });

  test('weft cni config: a conflist with the weft plugin and portmap', () => {
    const c = conflist({ subnetFile: '/run/weft/subnet.env' });
    assert.equal(c.cniVersion, '1.0.0');
    assert.deepEqual((c.plugins as { type: string }[]).map((p) => p.type), ['weft', 'portmap']);
    assert.equal((c.plugins as { subnetFile?: string }[])[0]?.subnetFile, '/run/weft/subnet.env');
    assert.deepEqual((conflist({ portmap: false, type: 'flannel' }).plugins as { type: string }[]).map((p) => p.type), ['flannel']);
  });
});

describe('weft cni install', () => {
  test('links the plugin as weft (and flannel on request), executable, idempotently; never over a real flannel binary', () => {
    const bin = join(dir, 'bin');
    const target = join(dir, 'weft-cni.js');
    writeFileSync(target, '#!/usr/bin/env node\n');
    chmodSync(target, 0o644);
    assert.deepEqual(installPlugin(bin, ['weft', 'flannel'], target), [join(bin, 'weft'), join(bin, 'flannel')]);
    assert.equal(readlinkSync(join(bin, 'flannel')), target);
    assert.equal(statSync(target).mode & 0o111, 0o111);
    installPlugin(bin, ['weft'], target);
    const other = join(dir, 'bin2');
    installPlugin(other, ['weft'], target);
    writeFileSync(join(other, 'flannel'), 'ELF');
    assert.throws(() => installPlugin(other, ['flannel'], target), /flannel exists and is not weft's plugin/);
  });
});

describe('weft CNI plugin: commands and errors (CNI error JSON on stdout)', () => {
  const subnetFile = join(dir, 'subnet.env');
  writeFileSync(subnetFile, ENV4);
  const conf = (extra: Record<string, unknown> = {}) => JSON.stringify({ cniVersion: '1.0.0', name: 'weft', type: 'weft', subnetFile, dataDir: join(dir, 'data'), ...extra });

  test('VERSION lists the spec versions and echoes the config\'s', () => {
    const out = runPlugin({ CNI_COMMAND: 'VERSION' }, '{"cniVersion":"0.4.0"}');
    assert.equal(out.code, 0);
    const v = JSON.parse(out.stdout) as { cniVersion: string; supportedVersions: string[] };
    assert.equal(v.cniVersion, '0.4.0');
    assert.deepEqual(v.supportedVersions, ['0.1.0', '0.2.0', '0.3.0', '0.3.1', '0.4.0', '1.0.0']);
  });

  test('config that is not JSON: code 6; an unknown cniVersion: code 1', () => {
    assert.equal(errorOf(runPlugin(cniEnv('ADD'), '{nope')).code, CniCode.DECODE_FAILURE);
    const e = errorOf(runPlugin(cniEnv('ADD'), conf({ cniVersion: '9.9.9' })));
    assert.equal(e.code, CniCode.INCOMPATIBLE_VERSION);
    assert.match(e.msg, /cniVersion "9.9.9" is not supported/);
  });

  test('missing CNI_NETNS or an unknown command: code 4, naming the variable', () => {
    const e = errorOf(runPlugin(cniEnv('ADD', { CNI_NETNS: '' }), conf()));
    assert.equal(e.code, CniCode.INVALID_ENV);
    assert.match(e.msg, /CNI_NETNS is not set/);
    assert.equal(errorOf(runPlugin(cniEnv('GC'), conf())).code, CniCode.INVALID_ENV);
    assert.equal(errorOf(runPlugin(cniEnv('ADD', { CNI_CONTAINERID: '../etc' }), conf())).code, CniCode.INVALID_ENV);
  });

  test('ADD without subnet.env: code 100, saying weftd may not be running', () => {
    const e = errorOf(runPlugin(cniEnv('ADD'), conf({ subnetFile: join(dir, 'absent.env') })));
    assert.equal(e.code, CniCode.SUBNET_ENV);
    assert.match(e.msg, /absent\.env does not exist: is weftd running/);
  });

  test('ADD without the bridge plugin in CNI_PATH: code 7 naming the package, config saved for DEL', () => {
    const e = errorOf(runPlugin(cniEnv('ADD'), conf({ delegate: { ipMasq: false } })));
    assert.equal(e.code, CniCode.INVALID_CONFIG);
    assert.match(e.msg, /delegate plugin "bridge" not found in CNI_PATH .*containernetworking-plugins/);
    assert.ok(existsSync(join(dir, 'data', 'c0ffee')));
  });

  test('DEL of a container never added succeeds with no output (idempotent)', () => {
    const out = runPlugin(cniEnv('DEL', { CNI_CONTAINERID: 'never-added', CNI_NETNS: '' }), conf());
    assert.deepEqual([out.code, out.stdout], [0, '']);
  });

  test('CHECK of an unknown container: code 3', () => {
    assert.equal(errorOf(runPlugin(cniEnv('CHECK', { CNI_CONTAINERID: 'unknown' }), conf())).code, CniCode.CONTAINER_UNKNOWN);
  });
});
