import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runConfigCommand, validateForWeftd } from '../../src/cli/config';
import type { CliIO } from '../../src/cli/io';
import { WeftError } from '../../src/errors';
import { MemoryLeaseRegistry } from '../../src/lease/memory-registry';

const OLD = '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}';

class KeptRegistry extends MemoryLeaseRegistry {
  override async close(): Promise<void> {}
}

async function setup(withLease = true): Promise<KeptRegistry> {
  const reg = new KeptRegistry();
  reg.setConfig(OLD);
  if (withLease) {
    const hl = await reg.grantHostLease(600);
    await reg.createSubnet('10.5.3.0-24', { PublicIP: '10.250.0.11', PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: '0e:00:00:00:00:01' } }, hl);
  }
  return reg;
}

async function run(reg: MemoryLeaseRegistry, argv: string[], doc = '') {
  let out = '';
  let err = '';
  const io: CliIO = { out: (t) => { out += `${t}\n`; }, err: (t) => { err += `${t}\n`; } };
  const code = await runConfigCommand(argv, io, { makeRegistry: () => reg, env: {}, readDocument: async () => doc });
  return { code, out, err };
}

describe('weft config validate', () => {
  it('accepts a valid document and shows the defaults it implies', async () => {
    const r = await run(await setup(), ['validate', 'net.json'], '{"Network":"10.5.0.0/16"}');
    assert.equal(r.out, 'valid: Network 10.5.0.0/16, SubnetLen 24 (SubnetMin 10.5.1.0, SubnetMax 10.5.255.0, 255 subnets), backend vxlan (VNI 1, port 8472)\n');
  });

  it('rejects with flannel\'s messages', () => {
    for (const [doc, msg] of [
      ['{"Network":"10.5.0.0/16","SubnetLen":31}', /SubnetLen must be less than \/31/],
      ['{"Network":"10.5.0.0/29"}', /network is too small/],
      ['{"SubnetLen":24}', /please define a correct Network parameter/],
    ] as const) {
      assert.throws(() => validateForWeftd(doc), (e: unknown) => e instanceof WeftError && e.code === 'CONFIG_INVALID' && msg.test(e.message));
    }
  });

  it('rejects what weftd itself would: an unknown backend, bad vxlan options, IPv6 only', () => {
    assert.throws(() => validateForWeftd('{"Network":"10.5.0.0/16","Backend":{"Type":"gre"}}'), /backend type "gre".*supported: vxlan/);
    assert.throws(() => validateForWeftd('{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":"one"}}'), /VNI/);
    assert.throws(() => validateForWeftd('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48"}'), /IPv4/);
  });
});

describe('weft config set', () => {
  it('refuses a bad config with the validation message and leaves the old one', async () => {
    const reg = await setup();
    await assert.rejects(run(reg, ['set', 'bad.json'], '{"Network":"10.5.0.0/16","SubnetLen":31}'), (e: unknown) =>
      e instanceof WeftError && e.code === 'CONFIG_INVALID' && /SubnetLen must be less than \/31/.test(e.message) && /unchanged/.test(e.message));
    assert.equal(await reg.getConfig(), OLD);
  });

  it('refuses to change the Network under existing leases, explaining what would break', async () => {
    const reg = await setup();
    const r = await run(reg, ['set', 'new.json'], '{"Network":"10.6.0.0/16","Backend":{"Type":"vxlan"}}');
    assert.equal(r.code, 1);
    assert.match(r.err, /Network 10\.5\.0\.0\/16 -> 10\.6\.0\.0\/16 while 1 lease\(s\) exist: 10\.5\.3\.0\/24 \(10\.250\.0\.11\)/);
    assert.match(r.err, /cannot reach each other/);
    assert.equal(await reg.getConfig(), OLD);
  });

  it('refuses SubnetLen and backend changes too, and a SubnetMin past a lease', async () => {
    const reg = await setup();
    for (const [doc, what] of [
      ['{"Network":"10.5.0.0/16","SubnetLen":26}', /SubnetLen 24 -> 26/],
      ['{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":2}}', /backend vxlan \(VNI 1, port 8472\) -> vxlan \(VNI 2, port 8472\)/],
      ['{"Network":"10.5.0.0/16","SubnetMin":"10.5.10.0"}', /leaves out 10\.5\.3\.0\/24/],
    ] as const) {
      const r = await run(reg, ['set', 'x.json'], doc);
      assert.equal(r.code, 1, doc);
      assert.match(r.err, what);
    }
    assert.equal(await reg.getConfig(), OLD);
  });

  it('--force writes it anyway, with a warning', async () => {
    const reg = await setup();
    const r = await run(reg, ['set', 'x.json', '--force'], '{"Network":"10.6.0.0/16"}\n');
    assert.equal(r.code, 0);
    assert.match(r.err, /--force/);
    assert.equal(await reg.getConfig(), '{"Network":"10.6.0.0/16"}');
  });

  it('writes a compatible change (DirectRouting) under leases, and any change without leases', async () => {
    const reg = await setup();
    const doc = '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}';
    assert.equal((await run(reg, ['set', 'x.json'], doc)).code, 0);
    assert.equal(await reg.getConfig(), doc);
    const empty = await setup(false);
    assert.equal((await run(empty, ['set', 'x.json'], '{"Network":"10.9.0.0/16"}')).code, 0);
  });

  it('--dry-run checks but writes nothing', async () => {
    const reg = await setup(false);
    const r = await run(reg, ['set', 'x.json', '--dry-run'], '{"Network":"10.9.0.0/16"}');
    assert.match(r.out, /would write/);
    assert.equal(await reg.getConfig(), OLD);
  });

  it('get prints the stored document; a missing one is an error', async () => {
    assert.equal((await run(await setup(), ['get'])).out, `${OLD}\n`);
    const none = new KeptRegistry();
    await assert.rejects(run(none, ['get']), (e: unknown) => e instanceof WeftError && e.code === 'CONFIG_MISSING');
  });
});
