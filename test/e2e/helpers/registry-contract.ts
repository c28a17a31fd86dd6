/**
 * The LeaseRegistry contract against a real etcd (started on loopback, stopped by PID), run by
 * lease-etcd.test.ts (EtcdLeaseRegistry over its gRPC wire, etcd3) and lease-etcd-http.test.ts
 * (over its JSON gateway wire): the registry and the LeaseManager on it. Each test
 * uses its own key prefix so they do not see each other's leases. A client's own tests go in
 * `specific`, inside the same suite, with the same etcd and fixtures.
 */
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { parseNetworkConfig } from '../../../src/config/network';
import type { NetworkConfig } from '../../../src/config/types';
import { WeftError } from '../../../src/errors';
import { parseIPv4Cidr } from '../../../src/ip';
import { silentLogger } from '../../../src/log';
import { LeaseManager, type AcquireRequest, type PeerChange } from '../../../src/lease/manager';
import type { HostLease, LeaseRegistry, NetworkSnapshot, SubnetListing, SubnetWatch, SubnetWatchEvent } from '../../../src/lease/registry';
import type { Lease, LeaseAttrs } from '../../../src/lease/types';
import { startEtcd, type EtcdInstance } from './etcd';

/** What the contract passes to a client's constructor. */
export interface RegistryOptions {
  readonly endpoints: readonly string[];
  readonly prefix: string;
  readonly callTimeoutMs?: number;
}

/** The suite's etcd and fixtures, for a client's own tests. */
export interface RegistryTestContext<R extends LeaseRegistry> {
  /** Valid from the suite's `before` on. */
  readonly etcd: EtcdInstance;
  /** Run after each test, last pushed first. */
  readonly cleanups: Array<() => Promise<void>>;
  newPrefix(): string;
  /** A registry on `prefix`, closed after the test. */
  registry(prefix: string, endpoints?: string[]): R;
  /** A manager on `reg`, closed after the test before the registries. */
  manager(reg: LeaseRegistry, random?: () => number): LeaseManager;
}

export interface ContractOptions<R extends LeaseRegistry> {
  /** More assertions at the end of the multi-key-revision watch test (e.g. the client's stats). */
  readonly afterMultiKeyRevision?: (reg: R) => void;
  /** The client's own tests, declared after the contract's in the same suite. */
  readonly specific?: (ctx: RegistryTestContext<R>) => void;
}

export function registryContract<R extends LeaseRegistry>(
  title: string,
  make: (opts: RegistryOptions) => R,
  opts: ContractOptions<R> = {},
): void {
  let etcd: EtcdInstance;
  let prefixCount = 0;
  const cleanups: Array<() => Promise<void>> = [];

  function newPrefix(): string {
    return `/weft-e2e-${process.pid}-${++prefixCount}/network`;
  }

  function registry(prefix: string, endpoints = [etcd.endpoint]): R {
    const r = make({ endpoints, prefix, callTimeoutMs: 2000 });
    cleanups.push(() => r.close());
    return r;
  }

  function manager(reg: LeaseRegistry, random = (): number => 0): LeaseManager {
    const m = new LeaseManager({ registry: reg, log: silentLogger, random, retryMinMs: 20, retryMaxMs: 200, configPollMs: 20 });
    cleanups.unshift(() => m.close()); // managers close before their registries
    return m;
  }

  const ctx: RegistryTestContext<R> = {
    get etcd() {
      return etcd;
    },
    cleanups,
    newPrefix,
    registry,
    manager,
  };

  describe(title, () => {
    before(async () => {
      etcd = await startEtcd();
    });

    after(async () => {
      await etcd?.stop();
    });

    afterEach(async () => {
      for (const c of cleanups.splice(0).reverse()) await c();
    });

    it('two managers racing for the same free subnet both succeed, on different subnets', async () => {
      const prefix = newPrefix();
      // random() = 0: both pick the first free subnet; exactly one create-if-absent wins.
      const a = manager(registry(prefix));
      const b = manager(registry(prefix));
      const [la, lb] = await Promise.all([a.acquire(request('192.168.0.10', 'c6:d2:32:6f:8f:44')), b.acquire(request('192.168.0.11', 'c6:d2:32:6f:8f:45'))]);
      assert.deepEqual([la.key, lb.key].sort(), ['10.5.1.0-24', '10.5.2.0-24']);
    });

    it('two dual-stack managers that both listed before either wrote, on one IPv4 subnet with two IPv6 ones, end up disjoint in both families', async () => {
      const prefix = newPrefix();
      await etcd.etcdctl('put', `${prefix}/config`, DUAL_CONFIG);
      // Every create waits until both hosts have listed (and allocated): create-if-absent then
      // guards two different keys "10.5.1.0-24&<IPv6>", and both would get through.
      const meet = meetOnce(2);
      const [ra, rb] = [registry(prefix), registry(prefix)];
      for (const r of [ra, rb]) {
        const create = r.createSubnet.bind(r);
        r.createSubnet = async (...a) => {
          await meet();
          return create(...a);
        };
      }
      // random(): IPv4 first, then IPv6 — both the first free IPv4 subnet, different IPv6 ones.
      const [la, lb] = await Promise.all([
        manager(ra, () => 0).acquire(dualRequest(1)),
        manager(rb, cycle([0, 0.5])).acquire(dualRequest(2)),
      ]);
      const keys = (await etcd.etcdctl('get', '--prefix', '--keys-only', `${prefix}/subnets/`)).split('\n').filter((l) => l !== '');
      assert.deepEqual(keys.sort(), [`${prefix}/subnets/${la.key}`, `${prefix}/subnets/${lb.key}`].sort());
      assert.notEqual(la.key.split('&')[0], lb.key.split('&')[0], `${la.key} / ${lb.key}: one IPv4 subnet for two hosts`);
      assert.notEqual(la.key.split('&')[1], lb.key.split('&')[1], `${la.key} / ${lb.key}: one IPv6 subnet for two hosts`);
    });

    it('writes the value byte-identical to flannel, attached to an etcd lease', async () => {
      const prefix = newPrefix();
      const m = manager(registry(prefix));
      const lease = await m.acquire(request('192.168.64.3', 'c6:d2:32:6f:8f:44'));
      const value = await etcd.etcdctl('get', '--print-value-only', `${prefix}/subnets/${lease.key}`);
      assert.equal(value.trimEnd(), flannelValue('192.168.64.3', 'c6:d2:32:6f:8f:44'));
      const ttl = await etcd.etcdctl('lease', 'timetolive', '--keys', hex(lease.etcdLeaseId!));
      assert.match(ttl, new RegExp(`attached keys\\(\\[${prefix}/subnets/${lease.key}\\]\\)`));
    });

    it('reads the config and leases written by flannel (etcdctl), skipping garbage', async () => {
      const prefix = newPrefix();
      await etcd.etcdctl('put', `${prefix}/config`, '{"Network":"10.5.0.0/16"}');
      await etcd.etcdctl('put', `${prefix}/subnets/10.5.9.0-24`, flannelValue('192.168.0.9', 'aa:bb:cc:dd:ee:09'));
      await etcd.etcdctl('put', `${prefix}/subnets/10.5.8.0-24`, 'garbage');
      const reg = registry(prefix);
      assert.equal(await reg.getConfig(), '{"Network":"10.5.0.0/16"}');
      const listing = await reg.listSubnets();
      assert.deepEqual(listing.leases.map((l) => [l.key, l.attrs.PublicIP, l.etcdLeaseId]), [['10.5.9.0-24', '192.168.0.9', null]]);
      assert.deepEqual(listing.invalid.map((i) => [i.key, i.error.code]), [['10.5.8.0-24', 'BAD_DATA']]);
      assert.match(listing.revision, /^\d+$/);
      // Both in one read (a read-only transaction): the same answers, at the same revision; keys
      // beside config and subnets/ are no part of it.
      await etcd.etcdctl('put', `${prefix}/configX`, 'not the config');
      const both = await reg.readNetwork();
      assert.equal(both.config, '{"Network":"10.5.0.0/16"}');
      assert.deepEqual(both.listing.leases, listing.leases);
      assert.deepEqual(both.listing.invalid.map((i) => i.key), ['10.5.8.0-24']);
      assert.ok(BigInt(both.listing.revision) > BigInt(listing.revision), 'as of a revision after the put beside');
      const empty = await registry(newPrefix()).readNetwork();
      assert.deepEqual([empty.config, empty.listing.leases, empty.listing.invalid], [null, [], []]);
    });

    it('watchConfig reports each put and delete of <prefix>/config (not of keys beside it), beside a subnet watch that goes on after it closes', async () => {
      const prefix = newPrefix();
      const reg = registry(prefix);
      const subnetEvents: string[] = [];
      const listing = await reg.listSubnets();
      const subnets = reg.watchSubnets(String(BigInt(listing.revision) + 1n), (ev) => subnetEvents.push(ev.type));
      cleanups.push(() => subnets.close());
      let calls = 0;
      const config = reg.watchConfig(() => calls++);
      await waitFor('the call when the watch is established', () => calls === 1);
      await etcd.etcdctl('put', `${prefix}/config`, '{"Network":"10.5.0.0/16"}');
      await waitFor('the put', () => calls === 2);
      await etcd.etcdctl('put', `${prefix}/configs`, 'beside it');
      await etcd.etcdctl('del', `${prefix}/config`);
      await waitFor('the delete', () => calls === 3);
      await etcd.etcdctl('put', `${prefix}/subnets/10.5.9.0-24`, flannelValue('192.168.0.9', 'aa:bb:cc:dd:ee:09'));
      await waitFor('the subnet watch, beside it', () => subnetEvents.length === 1);
      assert.equal(calls, 3, 'no call for <prefix>/configs or a subnet');
      await config.close();
      await etcd.etcdctl('put', `${prefix}/config`, '{"Network":"10.6.0.0/16"}');
      await etcd.etcdctl('del', `${prefix}/subnets/10.5.9.0-24`);
      await waitFor('the subnet watch after the config watch closed', () => subnetEvents.length === 2);
      assert.equal(calls, 3, 'nothing after close()');
    });

    it('the peer watch sees adds and removes, never our own key', async () => {
      const prefix = newPrefix();
      const m = manager(registry(prefix));
      const own = await m.acquire(request('192.168.0.10', 'c6:d2:32:6f:8f:44'));
      const seen: Array<{ change: PeerChange; keys: string[] }> = [];
      m.watchPeers((peers, change) => seen.push({ change, keys: [...peers.keys()].sort() }));
      await waitFor('snapshot', () => seen.length >= 1);
      assert.deepEqual(seen[0], { change: { type: 'snapshot' }, keys: [] });

      const other = manager(registry(prefix));
      const theirs = await other.acquire(request('192.168.0.11', 'c6:d2:32:6f:8f:45'));
      await waitFor('peer added', () => seen.some((s) => s.change.type === 'added' && s.change.lease.key === theirs.key));
      await etcd.etcdctl('put', `${prefix}/subnets/10.5.99.0-24`, flannelValue('192.168.0.99', 'aa:bb:cc:dd:ee:99'));
      await etcd.etcdctl('del', `${prefix}/subnets/10.5.99.0-24`);
      await waitFor('peer removed', () => seen.some((s) => s.change.type === 'removed' && s.change.key === '10.5.99.0-24'));
      assert.deepEqual(seen.at(-1)!.keys, [theirs.key]);
      assert.ok(seen.every((s) => !s.keys.includes(own.key)));
    });

    it('delivers every event of a multi-key revision: a prefix delete removes every peer', async () => {
      const prefix = newPrefix();
      const reg = registry(prefix);
      const start = await reg.listSubnets();
      const events: SubnetWatchEvent[] = [];
      const w = reg.watchSubnets((BigInt(start.revision) + 1n).toString(), (e) => events.push(e));
      cleanups.push(() => w.close());
      for (const n of [41, 42, 43]) await etcd.etcdctl('put', `${prefix}/subnets/10.5.${n}.0-24`, flannelValue(`192.168.0.${n}`, `aa:bb:cc:dd:ee:${n}`));
      await waitFor('three adds', () => events.filter((e) => e.type === 'added').length === 3);
      // One revision, three deletions.
      await etcd.etcdctl('del', '--prefix', `${prefix}/subnets/10.5.4`);
      await waitFor('three removes', () => events.filter((e) => e.type === 'removed').length === 3);
      assert.deepEqual(events.filter((e) => e.type === 'removed').map((e) => (e as { key: string }).key).sort(), ['10.5.41.0-24', '10.5.42.0-24', '10.5.43.0-24']);
      opts.afterMultiKeyRevision?.(reg);
    });

    it('a watch from a compacted revision resets, and the manager re-lists without losing changes', async () => {
      const prefix = newPrefix();
      const reg = registry(prefix);
      const start = await reg.listSubnets();
      await etcd.etcdctl('put', `${prefix}/subnets/10.5.20.0-24`, flannelValue('192.168.0.20', 'aa:bb:cc:dd:ee:20'));
      await etcd.etcdctl('put', `${prefix}/unrelated`, 'x');
      // etcd keeps the compaction revision itself: compacting at the latest drops the put above.
      const rev = JSON.parse(await etcd.etcdctl('get', `${prefix}/unrelated`, '-w', 'json')).header.revision as number;
      await etcd.etcdctl('compact', String(rev));

      // Registry level: watching from before the compaction is reset, not silently empty.
      const events: SubnetWatchEvent[] = [];
      const w = reg.watchSubnets((BigInt(start.revision) + 1n).toString(), (e) => events.push(e));
      cleanups.push(() => w.close());
      await waitFor('reset', () => events.some((e) => e.type === 'reset'));
      assert.deepEqual(events.map((e) => e.type), ['reset']);

      // Manager level: the listing goes stale (changes + compaction) before the watch starts.
      let stale = true;
      const slow = new DelegatingRegistry(reg, async () => {
        if (!stale) return;
        stale = false;
        await etcd.etcdctl('put', `${prefix}/subnets/10.5.21.0-24`, flannelValue('192.168.0.21', 'aa:bb:cc:dd:ee:21'));
        await etcd.etcdctl('del', `${prefix}/subnets/10.5.20.0-24`);
        const r = JSON.parse(await etcd.etcdctl('get', `${prefix}/subnets/10.5.21.0-24`, '-w', 'json')).header.revision as number; // after the del
        await etcd.etcdctl('compact', String(r));
      });
      const m = manager(slow);
      const snapshots: string[][] = [];
      m.watchPeers((peers, change) => {
        if (change.type === 'snapshot') snapshots.push([...peers.keys()].sort());
      });
      await waitFor('a second snapshot', () => snapshots.length >= 2);
      assert.deepEqual(snapshots[0], ['10.5.20.0-24'], 'first, stale listing');
      assert.deepEqual(snapshots[1], ['10.5.21.0-24'], 'after the reset: the changes made meanwhile');
    });

    it('keepalive keeps the key alive well past its TTL', async () => {
      const prefix = newPrefix();
      const m = manager(registry(prefix));
      const lease = await m.acquire(request('192.168.0.10', 'c6:d2:32:6f:8f:44', 2));
      await new Promise((r) => setTimeout(r, 5000));
      const value = await etcd.etcdctl('get', '--print-value-only', `${prefix}/subnets/${lease.key}`);
      assert.equal(value.trimEnd(), flannelValue('192.168.0.10', 'c6:d2:32:6f:8f:44'));
      assert.equal(m.state, 'held');
    });

    it('close() leaves the key and its etcd lease in place, and a restart re-adopts the key', async () => {
      const prefix = newPrefix();
      const reg1 = make({ endpoints: [etcd.endpoint], prefix });
      const m1 = new LeaseManager({ registry: reg1, log: silentLogger });
      const first = await m1.acquire(request('192.168.0.10', 'c6:d2:32:6f:8f:44'));
      await m1.close();
      await reg1.close();
      const ttl = await etcd.etcdctl('lease', 'timetolive', '--keys', hex(first.etcdLeaseId!));
      assert.match(ttl, /attached keys\(\[.+\]\)/, 'lease alive with the key attached');

      const reg2 = registry(prefix);
      const m2 = manager(reg2, () => 0.5);
      const second = await m2.acquire(request('192.168.0.10', '02:00:00:00:00:02'));
      assert.equal(second.key, first.key);
      assert.notEqual(second.etcdLeaseId, first.etcdLeaseId);
      const value = await etcd.etcdctl('get', '--print-value-only', `${prefix}/subnets/${second.key}`);
      assert.equal(value.trimEnd(), flannelValue('192.168.0.10', '02:00:00:00:00:02'));
      // The revoke is tidying done after acquire() returns (subnet.env does not wait for it).
      await reg2.settled();
      const old = await etcd.etcdctl('lease', 'timetolive', hex(first.etcdLeaseId!));
      assert.match(old, /already expired/, 'the emptied previous lease was revoked');
    });

    it('a registry closed right after a restart\'s acquire abandons the revoke cleanly', async () => {
      const prefix = newPrefix();
      const reg1 = make({ endpoints: [etcd.endpoint], prefix });
      const m1 = new LeaseManager({ registry: reg1, log: silentLogger });
      const first = await m1.acquire(request('192.168.0.10', 'c6:d2:32:6f:8f:44', 30));
      await m1.close();
      await reg1.close();
      const reg2 = make({ endpoints: [etcd.endpoint], prefix });
      const m2 = new LeaseManager({ registry: reg2, log: silentLogger, random: () => 0.5 });
      const second = await m2.acquire(request('192.168.0.10', '02:00:00:00:00:02', 30));
      await m2.close();
      await reg2.close(); // the revoke of first's etcd lease may be under way: abandoned, not an error
      await reg2.settled();
      assert.equal(second.key, first.key);
      const old = await etcd.etcdctl('lease', 'timetolive', '--keys', hex(first.etcdLeaseId!));
      assert.ok(/already expired/.test(old) || /attached keys\(\[\]\)/.test(old), `revoked, or left empty to expire: ${old}`);
    });

    it('re-acquires the same subnet when its etcd lease is revoked', async () => {
      const prefix = newPrefix();
      const m = manager(registry(prefix));
      const first = await m.acquire(request('192.168.0.10', 'c6:d2:32:6f:8f:44', 3));
      const next = new Promise<Lease>((resolve) => m.on('lease', (l) => resolve(l)));
      await etcd.etcdctl('lease', 'revoke', hex(first.etcdLeaseId!));
      const second = await next;
      assert.equal(second.key, first.key);
      assert.notEqual(second.etcdLeaseId, first.etcdLeaseId);
      await waitFor('key back', async () => (await etcd.etcdctl('get', '--print-value-only', `${prefix}/subnets/${first.key}`)).trim() !== '');
    });

    it('rides out an etcd outage shorter than the TTL without losing anything', async () => {
      const prefix = newPrefix();
      const m = manager(registry(prefix));
      const lease = await m.acquire(request('192.168.0.10', 'c6:d2:32:6f:8f:44', 5));
      const changes: PeerChange[] = [];
      m.watchPeers((_peers, change) => changes.push(change));
      await waitFor('snapshot', () => changes.length >= 1);
      let lost = false;
      m.on('lost', () => (lost = true));
      etcd.pause();
      try {
        await new Promise((r) => setTimeout(r, 2000));
      } finally {
        etcd.resume();
      }
      await etcd.etcdctl('put', `${prefix}/subnets/10.5.30.0-24`, flannelValue('192.168.0.30', 'aa:bb:cc:dd:ee:30'));
      await waitFor('watch resumed', () => changes.some((c) => c.type === 'added' && c.lease.key === '10.5.30.0-24'));
      assert.equal(lost, false);
      assert.equal(m.state, 'held');
      assert.equal((await etcd.etcdctl('get', '--print-value-only', `${prefix}/subnets/${lease.key}`)).trimEnd(), flannelValue('192.168.0.10', 'c6:d2:32:6f:8f:44'));
    });

    it('after an outage longer than the TTL re-acquires the same subnet instead of exiting', async () => {
      const prefix = newPrefix();
      const m = manager(registry(prefix), Math.random);
      const first = await m.acquire(request('192.168.0.10', 'c6:d2:32:6f:8f:44', 2));
      const next = new Promise<Lease>((resolve) => m.on('lease', (l) => resolve(l)));
      etcd.pause();
      try {
        await new Promise((r) => setTimeout(r, 4500));
      } finally {
        etcd.resume();
      }
      const second = await next;
      assert.equal(second.key, first.key);
      assert.notEqual(second.etcdLeaseId, first.etcdLeaseId);
      assert.equal(m.state, 'held');
      await waitFor('key held by the new lease', async () => {
        const ttl = await etcd.etcdctl('lease', 'timetolive', '--keys', hex(second.etcdLeaseId!));
        return ttl.includes(`${prefix}/subnets/${first.key}`);
      });
    });

    it('listLeases() reports expirations, null for reservations', async () => {
      const prefix = newPrefix();
      await etcd.etcdctl('put', `${prefix}/subnets/10.5.9.0-24`, flannelValue('192.168.0.9', 'aa:bb:cc:dd:ee:09'));
      const m = manager(registry(prefix));
      await m.acquire(request('192.168.0.10', 'c6:d2:32:6f:8f:44', 600));
      const leases = await m.listLeases();
      assert.deepEqual(leases.map((l) => l.key), ['10.5.1.0-24', '10.5.9.0-24']);
      const left = (leases[0]!.expiration!.getTime() - Date.now()) / 1000;
      assert.ok(left > 590 && left <= 601, `expires in ~600 s, got ${left}`);
      assert.equal(leases[1]!.expiration, null);
    });

    it('an unreachable etcd fails fast with ETCD_UNAVAILABLE naming the endpoint, every time', async () => {
      const dead = 'http://127.0.0.1:9'; // discard port: nothing listens
      const reg = registry(newPrefix(), [dead]);
      for (let i = 0; i < 4; i++) {
        const t0 = Date.now();
        await assert.rejects(reg.getConfig(), (err: unknown) => {
          assert.ok(err instanceof WeftError);
          assert.equal(err.code, 'ETCD_UNAVAILABLE');
          assert.equal(err.retryable, true);
          assert.match(err.message, /^cannot reach etcd at http:\/\/127\.0\.0\.1:9: .*; check --etcd-endpoints and that etcd is running$/);
          assert.doesNotMatch(err.message, /circuit breaker/i, 'no breaker in the way');
          return true;
        });
        assert.ok(Date.now() - t0 < 2500, 'within the call deadline');
      }
    });

    opts.specific?.(ctx);
  });
}

export function config(): NetworkConfig {
  const net = parseIPv4Cidr('10.5.0.0/16')!;
  return {
    enableIPv4: true,
    enableIPv6: false,
    network: net,
    subnetLen: 24,
    subnetMin: net.ip + 256,
    subnetMax: net.ip + 65536 - 256,
    ipv6Network: null,
    ipv6SubnetLen: 64,
    backend: { type: 'vxlan', raw: { Type: 'vxlan' } },
    source: '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}',
  };
}

export function request(publicIP: string, mac: string, ttlSeconds = 60): AcquireRequest {
  return { config: config(), publicIP, publicIPv6: null, backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: mac }, subnetFromFile: null, ttlSeconds };
}

const DUAL_CONFIG = '{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}';

/** Host n of a dual-stack network (PublicIP 10.250.0.1n, PublicIPv6 fd00:250::1n). */
function dualRequest(n: number): AcquireRequest {
  return {
    config: parseNetworkConfig(DUAL_CONFIG), publicIP: `10.250.0.${10 + n}`, publicIPv6: `fd00:250::${10 + n}`, backendType: 'vxlan',
    backendData: { VNI: 1, VtepMAC: `0e:00:00:00:04:0${n}` }, backendV6Data: { VNI: 1, VtepMAC: `0e:00:00:00:06:0${n}` },
    subnetFromFile: null, ttlSeconds: 60,
  };
}

/** A function whose first `n` calls all wait until the n-th; later calls pass at once. */
function meetOnce(n: number): () => Promise<void> {
  const waiting: (() => void)[] = [];
  return () => new Promise<void>((resolve) => {
    if (waiting.length >= n) return resolve();
    waiting.push(resolve);
    if (waiting.length === n) for (const w of waiting) w();
  });
}

/** random() returning `values` in turn. */
function cycle(values: readonly number[]): () => number {
  let i = 0;
  return () => values[i++ % values.length]!;
}

export function flannelValue(publicIP: string, mac: string): string {
  return `{"PublicIP":"${publicIP}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"${mac}"}}`;
}

export async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export const hex = (id: string): string => BigInt(id).toString(16);

/** A registry that runs `afterList` between taking a listing and returning it. */
class DelegatingRegistry implements LeaseRegistry {
  constructor(
    private readonly inner: LeaseRegistry,
    private readonly afterList: () => Promise<void>,
  ) {}
  get prefix(): string {
    return this.inner.prefix;
  }
  get location(): string {
    return this.inner.location;
  }
  getConfig(): Promise<string | null> {
    return this.inner.getConfig();
  }
  watchConfig(onChange: () => void): SubnetWatch {
    return this.inner.watchConfig(onChange);
  }
  async readNetwork(): Promise<NetworkSnapshot> {
    const snapshot = await this.inner.readNetwork();
    await this.afterList();
    return snapshot;
  }
  async listSubnets(opts?: { readonly expirations?: boolean }): Promise<SubnetListing> {
    const listing = await this.inner.listSubnets(opts);
    await this.afterList();
    return listing;
  }
  grantHostLease(ttlSeconds: number): Promise<HostLease> {
    return this.inner.grantHostLease(ttlSeconds);
  }
  createSubnet(key: string, attrs: LeaseAttrs, lease: HostLease): Promise<Lease | null> {
    return this.inner.createSubnet(key, attrs, lease);
  }
  updateSubnet(key: string, attrs: LeaseAttrs, lease: HostLease | null, expectModRevision: string): Promise<Lease | null> {
    return this.inner.updateSubnet(key, attrs, lease, expectModRevision);
  }
  deleteSubnet(key: string, expectModRevision?: string): Promise<boolean> {
    return this.inner.deleteSubnet(key, expectModRevision);
  }
  createReservation(key: string, attrs: LeaseAttrs): Promise<Lease | null> {
    return this.inner.createReservation(key, attrs);
  }
  revokeLease(leaseId: string): Promise<boolean> {
    return this.inner.revokeLease(leaseId);
  }
  putConfig(text: string): Promise<void> {
    return this.inner.putConfig(text);
  }
  watchSubnets(fromRevision: string, handler: (event: SubnetWatchEvent) => void, responseDone?: () => void): SubnetWatch {
    return this.inner.watchSubnets(fromRevision, handler, responseDone);
  }
  settled(): Promise<void> {
    return this.inner.settled();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}
