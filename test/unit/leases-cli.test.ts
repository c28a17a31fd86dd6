/**
 * `weft leases` against the in-memory registry: listing formats, reserve/release/revoke round
 * trips, and the watch's event classification.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LeaseWatchState, runLeasesCommand } from '../../src/cli/leases';
import type { CliIO } from '../../src/cli/io';
import { WeftError } from '../../src/errors';
import { MemoryLeaseRegistry } from '../../src/lease/memory-registry';
import type { LeaseAttrs } from '../../src/lease/types';

const NOW = Date.parse('2026-11-22T01:00:00Z');
const CONFIG = '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}';

function attrs(ip: string, mac = '0e:00:00:00:00:01'): LeaseAttrs {
  return { PublicIP: ip, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac } };
}

/** A registry that survives the command's close() (the command closes what it is given). */
class KeptRegistry extends MemoryLeaseRegistry {
  override async close(): Promise<void> {}
}

async function setup(): Promise<KeptRegistry> {
  const reg = new KeptRegistry({ now: () => NOW });
  reg.setConfig(CONFIG);
  const hl = await reg.grantHostLease(86400);
  await reg.createSubnet('10.5.3.0-24', attrs('10.250.0.11'), hl);
  await reg.createReservation('10.5.9.0-24', { PublicIP: '10.250.0.19', PublicIPv6: null, BackendType: '', BackendData: undefined });
  return reg;
}

function capture(): CliIO & { out_: string[]; err_: string[] } {
  const c = { out_: [] as string[], err_: [] as string[], out: (t: string) => { c.out_.push(t); }, err: (t: string) => { c.err_.push(t); } };
  return c;
}

async function run(reg: MemoryLeaseRegistry, argv: string[], stop?: AbortSignal) {
  const io = capture();
  const code = await runLeasesCommand(argv, io, { makeRegistry: () => reg, env: {}, now: () => NOW, ...(stop ? { stop } : {}) });
  return { code, out: io.out_.join('\n'), err: io.err_.join('\n') };
}

describe('weft leases list', () => {
  it('prints the table with the expiry of each lease, "reserved" for a reservation', async () => {
    const r = await run(await setup(), []);
    assert.equal(r.code, 0);
    assert.equal(r.out, [
      'SUBNET       PUBLIC IP    BACKEND  VTEP MAC           EXPIRES IN',
      '10.5.3.0/24  10.250.0.11  vxlan    0e:00:00:00:00:01  24h00m',
      '10.5.9.0/24  10.250.0.19  -        -                  reserved',
    ].join('\n'));
  });

  it('--output wide adds the VNI, the time each lease expires and its etcd lease ID', async () => {
    const r = await run(await setup(), ['-o', 'wide']);
    const lines = r.out.split('\n');
    assert.match(lines[0]!, /^SUBNET\s+PUBLIC IP\s+BACKEND\s+VTEP MAC\s+VNI\s+EXPIRES IN\s+EXPIRES AT\s+ETCD LEASE$/);
    assert.match(lines[1]!, /\s1\s+24h00m\s+2026-11-23 01:00:00Z\s+1000$/);
  });

  it('--output json (and --json) carry expiration and the etcd lease', async () => {
    for (const flag of [['--output', 'json'], ['--json']]) {
      const rows = JSON.parse((await run(await setup(), flag)).out) as Record<string, unknown>[];
      assert.equal(rows.length, 2);
      assert.equal(rows[0]!.expiration, '2026-11-23T01:00:00.000Z');
      assert.equal(rows[0]!.etcdLease, '1000');
      assert.equal(rows[1]!.reserved, true);
    }
  });

  it('rejects an unknown output format', async () => {
    await assert.rejects(run(await setup(), ['-o', 'yaml']), (e: unknown) => e instanceof WeftError && e.code === 'CONFIG_INVALID');
  });
});

describe('weft leases reserve / release / revoke', () => {
  it('reserve writes a key without an etcd lease for the public IP; release deletes it', async () => {
    const reg = await setup();
    const r = await run(reg, ['reserve', '10.5.20.0/24', '--public-ip', '10.250.0.20']);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /reserved 10\.5\.20\.0\/24 for 10\.250\.0\.20/);
    assert.deepEqual(reg.rawGet('10.5.20.0-24'), { value: '{"PublicIP":"10.250.0.20","PublicIPv6":null}', leaseId: null });
    const again = await run(reg, ['reserve', '10.5.20.0/24', '--public-ip', '10.250.0.20']);
    assert.match(again.out, /already reserved/);
    const rel = await run(reg, ['release', '10.5.20.0-24']);
    assert.equal(rel.code, 0);
    assert.equal(reg.rawGet('10.5.20.0-24'), null);
  });

  it('reserve turns a host\'s own lease into a reservation, keeping its value', async () => {
    const reg = await setup();
    const r = await run(reg, ['reserve', '10.5.3.0/24', '--public-ip', '10.250.0.11']);
    assert.match(r.out, /converted the lease of 10\.250\.0\.11/);
    const raw = reg.rawGet('10.5.3.0-24');
    assert.equal(raw?.leaseId, null);
    assert.match(raw?.value ?? '', /"VtepMAC":"0e:00:00:00:00:01"/);
  });

  it('reserve refuses a subnet held by another host, and one that does not fit the config', async () => {
    const reg = await setup();
    await assert.rejects(run(reg, ['reserve', '10.5.3.0/24', '--public-ip', '10.250.0.12']), /leased by 10\.250\.0\.11/);
    await assert.rejects(run(reg, ['reserve', '10.5.20.0/25', '--public-ip', '10.250.0.12']), /SubnetLen/);
    await assert.rejects(run(reg, ['reserve', '10.6.1.0/24', '--public-ip', '10.250.0.12']), /outside the Network/);
    await assert.rejects(run(reg, ['reserve', '10.5.0.0/24', '--public-ip', '10.250.0.12']), /SubnetMin/);
    const forced = await run(reg, ['reserve', '10.6.1.0/24', '--public-ip', '10.250.0.12', '--force']);
    assert.equal(forced.code, 0);
    assert.match(forced.err, /--force/);
  });

  it('release refuses a live lease and points to revoke', async () => {
    await assert.rejects(run(await setup(), ['release', '10.5.3.0/24']), /not a reservation.*revoke 10\.5\.3\.0\/24 --yes/);
  });

  it('revoke explains what would break and does nothing without --yes', async () => {
    const reg = await setup();
    const r = await run(reg, ['revoke', '10.5.3.0/24']);
    assert.equal(r.code, 1);
    assert.match(r.err, /not done.*etcd lease 1000 of 10\.250\.0\.11/s);
    assert.match(r.err, /--yes/);
    assert.ok(reg.rawGet('10.5.3.0-24'));
  });

  it('revoke --yes ends the etcd lease and the key goes with it', async () => {
    const reg = await setup();
    const r = await run(reg, ['revoke', '10.5.3.0/24', '--yes']);
    assert.equal(r.code, 0);
    assert.match(r.out, /revoked etcd lease 1000/);
    assert.equal(reg.rawGet('10.5.3.0-24'), null);
    assert.deepEqual(reg.liveLeaseIds(), []);
  });

  it('revoke refuses a reservation and points to release', async () => {
    await assert.rejects(run(await setup(), ['revoke', '10.5.9.0/24', '--yes']), /reservation.*release/);
  });

  it('a subnet with host bits set is refused with the subnet meant', async () => {
    await assert.rejects(run(await setup(), ['release', '10.5.3.1/24']), /did you mean 10\.5\.3\.0\/24/);
  });
});

describe('weft leases --watch', () => {
  it('prints the leases present, then joins, renewals, changes and departures as they happen', async () => {
    const reg = await setup();
    const stop = new AbortController();
    const done = run(reg, ['--watch', '--output', 'json'], stop.signal);
    await new Promise((r) => setTimeout(r, 50));
    const h2 = await reg.grantHostLease(600);
    await reg.createSubnet('10.5.4.0-24', attrs('10.250.0.12'), h2);
    await new Promise((r) => setTimeout(r, 300));
    const h2b = await reg.grantHostLease(600);
    const cur = (await reg.listSubnets()).leases.find((l) => l.key === '10.5.4.0-24')!;
    await reg.updateSubnet('10.5.4.0-24', attrs('10.250.0.12'), h2b, cur.modRevision);
    await new Promise((r) => setTimeout(r, 300));
    const cur2 = (await reg.listSubnets()).leases.find((l) => l.key === '10.5.4.0-24')!;
    await reg.updateSubnet('10.5.4.0-24', attrs('10.250.0.12', '0e:00:00:00:00:02'), h2b, cur2.modRevision);
    await new Promise((r) => setTimeout(r, 300));
    await reg.deleteSubnet('10.5.4.0-24');
    await new Promise((r) => setTimeout(r, 300));
    stop.abort();
    const r = await done;
    const events = r.out.split('\n').map((l) => JSON.parse(l) as { event: string; lease: { subnet: string; expiresInSeconds: number | null } });
    assert.deepEqual(events.map((e) => `${e.event} ${e.lease.subnet}`), [
      'present 10.5.3.0/24', 'present 10.5.9.0/24',
      'joined 10.5.4.0/24', 'renewed 10.5.4.0/24', 'changed 10.5.4.0/24', 'left 10.5.4.0/24',
    ]);
    assert.equal(events[2]!.lease.expiresInSeconds, 600, 'the expiry of a joining lease is looked up');
  });

  it('prints a table header and fixed-width lines without --output json', async () => {
    const reg = await setup();
    const stop = new AbortController();
    const done = run(reg, ['--watch'], stop.signal);
    await new Promise((r) => setTimeout(r, 50));
    await reg.deleteSubnet('10.5.3.0-24');
    await new Promise((r) => setTimeout(r, 300));
    stop.abort();
    const lines = (await done).out.split('\n');
    assert.match(lines[0]!, /^TIME\s+EVENT\s+SUBNET\s+PUBLIC IP\s+BACKEND\s+VTEP MAC\s+EXPIRES IN$/);
    assert.match(lines[1]!, /^01:00:00  present\s+10\.5\.3\.0\/24\s+10\.250\.0\.11/);
    assert.match(lines[3]!, /^01:00:00  left\s+10\.5\.3\.0\/24\s+10\.250\.0\.11/);
  });

  it('after a reset, reports what changed meanwhile as joins and departures', () => {
    const s = new LeaseWatchState();
    const lease = (key: string, id: string | null) => ({
      key, subnet: { ip: 0, prefixLen: 24 }, ipv6Subnet: null, attrs: attrs('10.250.0.1'), expiration: null, etcdLeaseId: id, modRevision: '1',
    });
    s.snapshot([lease('a', '1'), lease('b', '2')]);
    assert.deepEqual(s.resync([lease('b', '3'), lease('c', '4')]).map((e) => `${e.kind} ${e.lease.key}`), ['left a', 'renewed b', 'joined c']);
  });
});
