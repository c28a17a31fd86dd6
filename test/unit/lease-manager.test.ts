import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { parseNetworkConfig } from '../../src/config/network';
import type { NetworkConfig } from '../../src/config/types';
import { WeftError } from '../../src/errors';
import { parseIPv4, parseIPv4Cidr } from '../../src/ip';
import type { LogFields, Logger } from '../../src/log';
import { LeaseManager, type AcquireRequest, type PeerChange } from '../../src/lease/manager';
import { MemoryLeaseRegistry } from '../../src/lease/memory-registry';
import type { Lease } from '../../src/lease/types';

interface LogLine {
  level: string;
  msg: string;
  fields: LogFields;
}

function recordingLogger(lines: LogLine[] = []): Logger & { lines: LogLine[] } {
  const make = (base: LogFields): Logger => ({
    debug: (msg, f) => lines.push({ level: 'debug', msg, fields: { ...base, ...f } }),
    info: (msg, f) => lines.push({ level: 'info', msg, fields: { ...base, ...f } }),
    warn: (msg, f) => lines.push({ level: 'warn', msg, fields: { ...base, ...f } }),
    error: (msg, f) => lines.push({ level: 'error', msg, fields: { ...base, ...f } }),
    child: (f) => make({ ...base, ...f }),
  });
  return Object.assign(make({}), { lines });
}

const CONFIG_TEXT = '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}';

function config(network = '10.5.0.0/16', subnetLen = 24): NetworkConfig {
  const net = parseIPv4Cidr(network)!;
  const step = 2 ** (32 - subnetLen);
  return {
    enableIPv4: true,
    enableIPv6: false,
    network: net,
    subnetLen,
    subnetMin: net.ip + step,
    subnetMax: net.ip + 2 ** (32 - net.prefixLen) - step,
    ipv6Network: null,
    ipv6SubnetLen: 64,
    backend: { type: 'vxlan', raw: { Type: 'vxlan' } },
    source: CONFIG_TEXT,
  };
}

function request(publicIP: string, mac = 'c6:d2:32:6f:8f:44', extra: Partial<AcquireRequest> = {}): AcquireRequest {
  return {
    config: config(),
    publicIP,
    publicIPv6: null,
    backendType: 'vxlan',
    backendData: { VNI: 1, VtepMAC: mac },
    subnetFromFile: null,
    ttlSeconds: 86400,
    ...extra,
  };
}

function peerValue(publicIP: string, mac = 'aa:bb:cc:dd:ee:01'): string {
  return `{"PublicIP":"${publicIP}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"${mac}"}}`;
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/**
 * Counts listSubnets calls on `reg` from now on; `beforeWrite`: the count when the first
 * updateSubnet or createSubnet after that was called (the peer view lists again after it).
 */
function countLists(reg: MemoryLeaseRegistry): { count: number; beforeWrite: number | null } {
  const counter: { count: number; beforeWrite: number | null } = { count: 0, beforeWrite: null };
  const list = reg.listSubnets.bind(reg);
  const update = reg.updateSubnet.bind(reg);
  const create = reg.createSubnet.bind(reg);
  reg.listSubnets = (opts) => {
    counter.count++;
    return list(opts);
  };
  reg.updateSubnet = (...a) => {
    counter.beforeWrite ??= counter.count;
    return update(...a);
  };
  reg.createSubnet = (...a) => {
    counter.beforeWrite ??= counter.count;
    return create(...a);
  };
  return counter;
}

const managers: LeaseManager[] = [];
function manager(registry: MemoryLeaseRegistry, log: Logger = recordingLogger(), random = (): number => 0): LeaseManager {
  const m = new LeaseManager({ registry, log, random, configPollMs: 5, retryMinMs: 5, retryMaxMs: 20 });
  managers.push(m);
  return m;
}

afterEach(async () => {
  for (const m of managers.splice(0)) await m.close();
});

describe('LeaseManager.waitForConfig', () => {
  it('polls until the config appears, logging the missing config once', async () => {
    const reg = new MemoryLeaseRegistry();
    const log = recordingLogger();
    const m = manager(reg, log);
    const p = m.waitForConfig();
    await new Promise((r) => setTimeout(r, 60)); // ~10 polls
    reg.setConfig(CONFIG_TEXT);
    assert.equal(await p, CONFIG_TEXT);
    const missing = log.lines.filter((l) => l.msg.includes('flannel config not found in etcd store'));
    assert.equal(missing.length, 1);
    assert.equal(
      missing[0]!.msg,
      'flannel config not found in etcd store (/coreos.com/network/config). Did you create your config using etcdv3 API?',
    );
  });

  it('waits out an unreachable etcd with one log line per state change', async () => {
    const reg = new MemoryLeaseRegistry();
    reg.setConfig(CONFIG_TEXT);
    reg.setAvailable(false);
    const log = recordingLogger();
    const m = manager(reg, log);
    const p = m.waitForConfig();
    await new Promise((r) => setTimeout(r, 80));
    reg.setAvailable(true);
    assert.equal(await p, CONFIG_TEXT);
    const unreachable = log.lines.filter((l) => l.msg.includes('cannot reach etcd'));
    assert.equal(unreachable.length, 1, JSON.stringify(log.lines));
    assert.match(unreachable[0]!.msg, /check --etcd-endpoints and that etcd is running/);
  });

  it('gives up when its signal aborts', async () => {
    const m = manager(new MemoryLeaseRegistry());
    const ac = new AbortController();
    const p = m.waitForConfig(ac.signal);
    setTimeout(() => ac.abort(new Error('stop waiting')), 20);
    await assert.rejects(p, /stop waiting/);
  });
});

describe('LeaseManager.acquire', () => {
  it("creates a flannel-format lease attached to the host's one etcd lease", async () => {
    const reg = new MemoryLeaseRegistry();
    const m = manager(reg);
    const lease = await m.acquire(request('192.168.0.10'));
    assert.equal(lease.key, '10.5.1.0-24');
    assert.equal(m.state, 'held');
    const raw = reg.rawGet('10.5.1.0-24')!;
    assert.equal(raw.value, peerValue('192.168.0.10', 'c6:d2:32:6f:8f:44'));
    assert.equal(raw.leaseId, lease.etcdLeaseId);
    assert.deepEqual(reg.liveLeaseIds(), [lease.etcdLeaseId]);
  });

  it('takes the subnet from subnet.env when it is free', async () => {
    const m = manager(new MemoryLeaseRegistry());
    const lease = await m.acquire(request('192.168.0.10', undefined, { subnetFromFile: parseIPv4Cidr('10.5.72.0/24') }));
    assert.equal(lease.key, '10.5.72.0-24');
  });

  it('after a restart reuses the key holding our PublicIP, rewrites it and moves it onto the new etcd lease', async () => {
    const reg = new MemoryLeaseRegistry();
    const before = manager(reg);
    const first = await before.acquire(request('192.168.0.10', 'c6:d2:32:6f:8f:44'));
    await before.close();
    assert.ok(reg.rawGet(first.key), 'close() leaves the key');

    const after = manager(reg, recordingLogger(), () => 0.7);
    const second = await after.acquire(request('192.168.0.10', '02:00:00:00:00:99'));
    assert.equal(second.key, first.key);
    assert.notEqual(second.etcdLeaseId, first.etcdLeaseId);
    assert.equal(reg.rawGet(first.key)!.value, peerValue('192.168.0.10', '02:00:00:00:00:99'));
    assert.deepEqual(reg.liveLeaseIds(), [second.etcdLeaseId], 'the emptied previous etcd lease is revoked');
  });

  it('a restart lists once: acquire() starts from the listing findOwnLease just read', async () => {
    const reg = new MemoryLeaseRegistry();
    const before = manager(reg);
    const first = await before.acquire(request('192.168.0.10'));
    await before.close();
    const lists = countLists(reg);
    const after = manager(reg, recordingLogger(), () => 0.7);
    const previous = await after.findOwnLease('192.168.0.10', first.subnet);
    assert.equal(previous?.key, first.key);
    const second = await after.acquire(request('192.168.0.10', '02:00:00:00:00:99', { subnetFromFile: first.subnet }));
    assert.equal(second.key, first.key);
    assert.equal(lists.beforeWrite, 1, 'one listing before the key is written');
  });

  it('start-up reads etcd once before writing its key: the config and the subnets together', async () => {
    const reg = new MemoryLeaseRegistry();
    reg.setConfig(CONFIG_TEXT);
    const before = manager(reg);
    const first = await before.acquire(request('192.168.0.10'));
    await before.close();
    const lists = countLists(reg);
    let reads = 0;
    const readNetwork = reg.readNetwork.bind(reg);
    reg.readNetwork = () => {
      reads++;
      return readNetwork();
    };
    const after = manager(reg, recordingLogger(), () => 0.7);
    assert.equal(await after.waitForConfig(), CONFIG_TEXT);
    assert.equal((await after.findOwnLease('192.168.0.10', first.subnet))?.key, first.key);
    const second = await after.acquire(request('192.168.0.10', '02:00:00:00:00:99', { subnetFromFile: first.subnet }));
    assert.equal(second.key, first.key);
    assert.equal(reads, 1);
    assert.equal(lists.beforeWrite, 0, 'no listing of its own before the key is written');
  });

  it('a listing gone stale between findOwnLease and acquire costs a re-list, never a wrong write', async () => {
    const reg = new MemoryLeaseRegistry();
    const before = manager(reg);
    const first = await before.acquire(request('192.168.0.10'));
    await before.close();
    const log = recordingLogger();
    const after = manager(reg, log, () => 0.7);
    await after.findOwnLease('192.168.0.10', first.subnet);
    // Meanwhile an operator hands our subnet to another host (a rewrite of the key).
    reg.putRaw(first.key, peerValue('192.168.0.77'), null);
    const lists = countLists(reg);
    const second = await after.acquire(request('192.168.0.10', '02:00:00:00:00:99', { subnetFromFile: first.subnet }));
    assert.notEqual(second.key, first.key, 'the key that changed hands is not overwritten');
    assert.equal(JSON.parse(reg.rawGet(first.key)!.value).PublicIP, '192.168.0.77');
    assert.ok(log.lines.some((l) => l.msg.startsWith('another host changed the lease')), 'the write from the stale listing lost the race');
    assert.equal(lists.beforeWrite, 0, 'the first attempt used the stale listing');
  });

  it('keeps a reservation holding our PublicIP a reservation', async () => {
    const reg = new MemoryLeaseRegistry();
    reg.putRaw('10.5.40.0-24', peerValue('192.168.0.10'), null);
    const m = manager(reg);
    const lease = await m.acquire(request('192.168.0.10', '02:00:00:00:00:01'));
    assert.equal(lease.key, '10.5.40.0-24');
    assert.equal(lease.etcdLeaseId, null);
    assert.deepEqual(reg.rawGet('10.5.40.0-24'), { value: peerValue('192.168.0.10', '02:00:00:00:00:01'), leaseId: null });
  });

  it('retries a lost create race instead of failing', async () => {
    const reg = new MemoryLeaseRegistry();
    let raced = 0;
    reg.beforeCreate = (key) => {
      if (raced++ === 0) reg.putRaw(key, peerValue('192.168.0.99'), null);
    };
    const m = manager(reg);
    const lease = await m.acquire(request('192.168.0.10'));
    assert.equal(raced, 2);
    assert.equal(lease.key, '10.5.2.0-24');
    assert.equal(JSON.parse(reg.rawGet('10.5.1.0-24')!.value).PublicIP, '192.168.0.99', 'the winner keeps its key');
  });

  it('two managers acquiring at once end up with different subnets', async () => {
    const reg = new MemoryLeaseRegistry();
    const [a, b] = await Promise.all([manager(reg).acquire(request('192.168.0.10')), manager(reg).acquire(request('192.168.0.11'))]);
    assert.notEqual(a.key, b.key);
  });

  it('retries through an etcd outage', async () => {
    const reg = new MemoryLeaseRegistry();
    reg.setAvailable(false);
    const log = recordingLogger();
    const m = manager(reg, log);
    const p = m.acquire(request('192.168.0.10'));
    await new Promise((r) => setTimeout(r, 60));
    assert.equal(m.state, 'acquiring');
    reg.setAvailable(true);
    assert.equal((await p).key, '10.5.1.0-24');
    assert.equal(log.lines.filter((l) => l.msg.includes('cannot reach etcd')).length, 1);
  });

  it('rejects with SUBNETS_EXHAUSTED when nothing is free', async () => {
    const reg = new MemoryLeaseRegistry();
    reg.putRaw('10.5.1.0-24', peerValue('192.168.0.20'));
    reg.putRaw('10.5.2.0-24', peerValue('192.168.0.21'));
    reg.putRaw('10.5.3.0-24', peerValue('192.168.0.22'));
    const m = manager(reg);
    await assert.rejects(m.acquire({ ...request('192.168.0.10'), config: config('10.5.0.0/22') }), (err: unknown) => {
      assert.ok(err instanceof WeftError);
      assert.equal(err.code, 'SUBNETS_EXHAUSTED');
      return true;
    });
    assert.equal(m.state, 'idle');
  });

  it('re-acquires the same subnet when the etcd lease is lost, and emits lost then lease', async () => {
    const reg = new MemoryLeaseRegistry();
    const m = manager(reg);
    const events: string[] = [];
    m.on('lost', (err, prev) => events.push(`lost ${prev.key} ${err.code}`));
    const got = new Promise<[Lease, Lease]>((resolve) => m.on('lease', (l, prev) => resolve([l, prev])));
    const first = await m.acquire(request('192.168.0.10'));
    // another host starts right after: with random()=0 it would take 10.5.1.0 if it were free
    reg.setAvailable(false);
    reg.expireLease(first.etcdLeaseId!);
    assert.equal(reg.rawGet(first.key), null, 'the key went with the lease');
    reg.setAvailable(true);
    const [second, prev] = await got;
    assert.equal(second.key, first.key, 'same subnet');
    assert.equal(prev.key, first.key);
    assert.notEqual(second.etcdLeaseId, first.etcdLeaseId);
    assert.deepEqual(events, [`lost ${first.key} LEASE_CONFLICT`]);
    assert.equal(m.state, 'held');
    assert.deepEqual(reg.liveLeaseIds(), [second.etcdLeaseId]);
  });

  it('re-acquires when our key is deleted from etcd (seen through the watch)', async () => {
    const reg = new MemoryLeaseRegistry();
    const m = manager(reg);
    const first = await m.acquire(request('192.168.0.10'));
    const got = new Promise<Lease>((resolve) => m.on('lease', (l) => resolve(l)));
    await waitFor('watch running', () => reg.activeWatchCount() === 1);
    reg.deleteRaw(first.key);
    const second = await got;
    assert.equal(second.key, first.key);
    assert.equal(second.etcdLeaseId, first.etcdLeaseId, 'the etcd lease was fine: it is kept');
    assert.ok(reg.rawGet(first.key));
  });

  it('moves to a new subnet when another host took ours while we were away', async () => {
    const reg = new MemoryLeaseRegistry();
    const m = manager(reg);
    const first = await m.acquire(request('192.168.0.10'));
    const got = new Promise<Lease>((resolve) => m.on('lease', (l) => resolve(l)));
    reg.setAvailable(false);
    reg.expireLease(first.etcdLeaseId!);
    reg.putRaw(first.key, peerValue('192.168.0.77'), null);
    reg.setAvailable(true);
    const second = await got;
    assert.notEqual(second.key, first.key);
    assert.equal(JSON.parse(reg.rawGet(first.key)!.value).PublicIP, '192.168.0.77');
  });

  it('IPv6-only: sees its key taken over by another host (same PublicIP 0.0.0.0, other PublicIPv6) and moves to a new subnet', async () => {
    // What flanneld v0.20.2 does on an IPv6-only network: every host's PublicIP is 0.0.0.0, so it
    // "finds the lease for current IP" of another host and rewrites it with its own PublicIPv6.
    const reg = new MemoryLeaseRegistry();
    const log = recordingLogger();
    const m = manager(reg, log);
    const v6only = parseNetworkConfig('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}');
    const first = await m.acquire(request('0.0.0.0', 'c6:d2:32:6f:8f:44', {
      config: v6only, publicIPv6: 'fd00:250::11', backendData: undefined, backendV6Data: { VNI: 1, VtepMAC: 'c6:d2:32:6f:8f:45' },
    }));
    assert.equal(first.key, '0.0.0.0-0&fd00:5:0:1::-64');
    const got = new Promise<Lease>((resolve) => m.on('lease', (l) => resolve(l)));
    await waitFor('watch running', () => reg.activeWatchCount() === 1);
    reg.putRaw(first.key, '{"PublicIP":"0.0.0.0","PublicIPv6":"fd00:250::12","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"aa:1b:ee:97:50:18"}}', null);
    const second = await got;
    assert.notEqual(second.key, first.key, 'not the subnet the other host now holds');
    assert.equal(second.attrs.PublicIPv6, 'fd00:250::11');
    assert.equal(JSON.parse(reg.rawGet(first.key)!.value).PublicIPv6, 'fd00:250::12', 'the other host\'s lease is left alone');
    assert.ok(log.lines.some((l) => l.level === 'warn' && l.msg.includes('taken over by fd00:250::12')), JSON.stringify(log.lines));
  });
});

describe('LeaseManager.watchPeers', () => {
  type Seen = { change: PeerChange; keys: string[] };

  function collect(m: LeaseManager): Seen[] {
    const seen: Seen[] = [];
    m.watchPeers((peers, change) => seen.push({ change, keys: [...peers.keys()].sort() }));
    return seen;
  }

  it('emits a snapshot without our own key, then adds and removals', async () => {
    const reg = new MemoryLeaseRegistry();
    reg.putRaw('10.5.50.0-24', peerValue('192.168.0.20'));
    const m = manager(reg);
    await m.acquire(request('192.168.0.10'));
    const seen = collect(m);
    await waitFor('snapshot', () => seen.length >= 1);
    assert.deepEqual(seen[0], { change: { type: 'snapshot' }, keys: ['10.5.50.0-24'] });

    reg.putRaw('10.5.51.0-24', peerValue('192.168.0.21'));
    reg.deleteRaw('10.5.50.0-24');
    await waitFor('two events', () => seen.length >= 3);
    assert.equal(seen[1]!.change.type, 'added');
    assert.deepEqual(seen[1]!.keys, ['10.5.50.0-24', '10.5.51.0-24']);
    assert.deepEqual(seen[2]!.change, { type: 'removed', key: '10.5.50.0-24', subnet: { ip: parseIPv4('10.5.50.0'), prefixLen: 24 }, revision: seen[2]!.change.type === 'removed' ? seen[2]!.change.revision : '' });
    assert.deepEqual(seen[2]!.keys, ['10.5.51.0-24']);
    assert.ok(seen.every((s) => !s.keys.includes('10.5.1.0-24')), 'own key never shown');
  });

  it('filters our own key out of events too', async () => {
    const reg = new MemoryLeaseRegistry();
    const m = manager(reg);
    const seen = collect(m);
    const lease = await m.acquire(request('192.168.0.10'));
    await waitFor('snapshot', () => seen.some((s) => s.change.type === 'snapshot'));
    await m.acquire(request('192.168.0.10', '02:00:00:00:00:02')); // rewrites our key
    reg.putRaw('10.5.60.0-24', peerValue('192.168.0.30'));
    await waitFor('peer added', () => seen.some((s) => s.keys.includes('10.5.60.0-24')));
    assert.ok(seen.every((s) => !s.keys.includes(lease.key)));
    assert.ok(seen.every((s) => s.change.type !== 'added' || s.change.lease.key !== lease.key));
  });

  it('skips malformed values with one warning naming the key', async () => {
    const reg = new MemoryLeaseRegistry();
    reg.putRaw('10.5.50.0-24', 'garbage');
    const log = recordingLogger();
    const m = manager(reg, log);
    const seen = collect(m);
    await waitFor('snapshot', () => seen.length >= 1);
    assert.deepEqual(seen[0]!.keys, []);
    reg.putRaw('10.5.51.0-24', '{"PublicIP":"nope"}');
    reg.putRaw('10.5.51.0-24', '{"PublicIP":"still nope"}');
    reg.putRaw('10.5.52.0-24', peerValue('192.168.0.22'));
    await waitFor('good peer', () => seen.some((s) => s.keys.includes('10.5.52.0-24')));
    const warnings = log.lines.filter((l) => l.level === 'warn' && l.msg.includes('malformed'));
    assert.deepEqual(
      warnings.map((w) => w.fields.key),
      ['10.5.50.0-24', '10.5.51.0-24'],
    );
    assert.ok(warnings[0]!.msg.includes('10.5.50.0-24'));
  });

  it('keeps a peer\'s last valid value when it turns malformed, with a warning naming the key', async () => {
    const reg = new MemoryLeaseRegistry();
    reg.putRaw('10.5.50.0-24', peerValue('192.168.0.20'));
    const log = recordingLogger();
    const m = manager(reg, log);
    const seen = collect(m);
    await waitFor('snapshot', () => seen.length >= 1);
    reg.putRaw('10.5.50.0-24', '{');
    await waitFor('warning', () => log.lines.some((l) => l.level === 'warn' && l.fields.key === '10.5.50.0-24'));
    reg.putRaw('10.5.51.0-24', peerValue('192.168.0.21'));
    await waitFor('next event', () => seen.some((s) => s.keys.includes('10.5.51.0-24')));
    assert.ok(seen.every((s) => s.change.type !== 'removed'));
    assert.deepEqual(seen.at(-1)!.keys, ['10.5.50.0-24', '10.5.51.0-24']);
    reg.deleteRaw('10.5.50.0-24');
    await waitFor('removal once deleted', () => seen.at(-1)!.change.type === 'removed');
    assert.deepEqual(seen.at(-1)!.keys, ['10.5.51.0-24']);
  });

  it('re-claims its own key when it is overwritten with a malformed value', async () => {
    const reg = new MemoryLeaseRegistry();
    const m = manager(reg);
    m.watchPeers(() => undefined);
    const lease = await m.acquire(request('192.168.0.10'));
    await waitFor('watch running', () => reg.activeWatchCount() === 1);
    const reacquired = new Promise<Lease>((resolve) => m.once('lease', (l) => resolve(l)));
    reg.putRaw(lease.key, 'garbage');
    const l = await reacquired;
    assert.equal(l.key, lease.key);
    assert.match(reg.rawGet(lease.key)!.value, /"PublicIP":"192\.168\.0\.10"/);
  });

  it('setBackendData() rewrites the held key with the new VtepMAC', async () => {
    const reg = new MemoryLeaseRegistry();
    const m = manager(reg);
    const lease = await m.acquire(request('192.168.0.10'));
    const events: Lease[] = [];
    m.on('lease', (l) => events.push(l));
    await m.setBackendData({ VNI: 1, VtepMAC: '02:00:00:00:00:99' });
    assert.match(reg.rawGet(lease.key)!.value, /02:00:00:00:00:99/);
    assert.equal(events.length, 1);
    assert.equal(events[0]!.key, lease.key);
    await m.setBackendData({ VNI: 1, VtepMAC: '02:00:00:00:00:99' });
    assert.equal(events.length, 1, 'no rewrite when nothing changed');
  });

  it('after a watch reset (compaction) re-lists and emits a fresh snapshot with what changed meanwhile', async () => {
    const reg = new MemoryLeaseRegistry();
    reg.putRaw('10.5.50.0-24', peerValue('192.168.0.20'));
    const m = manager(reg);
    const seen = collect(m);
    await waitFor('snapshot', () => seen.length >= 1);
    await waitFor('watch running', () => reg.activeWatchCount() === 1);
    reg.cancelWatches();
    reg.deleteRaw('10.5.50.0-24');
    reg.putRaw('10.5.51.0-24', peerValue('192.168.0.21'));
    reg.compact();
    await waitFor('second snapshot', () => seen.filter((s) => s.change.type === 'snapshot').length >= 2);
    const last = seen.filter((s) => s.change.type === 'snapshot').at(-1)!;
    assert.deepEqual(last.keys, ['10.5.51.0-24']);
    reg.putRaw('10.5.52.0-24', peerValue('192.168.0.22'));
    await waitFor('events after the reset', () => seen.at(-1)!.keys.includes('10.5.52.0-24'));
  });

  it('calls settled after the changes of each watch response and after a snapshot, in the same call, never for our own key', async () => {
    const reg = new MemoryLeaseRegistry();
    reg.putRaw('10.5.50.0-24', peerValue('192.168.0.20'));
    const m = manager(reg);
    const lease = await m.acquire(request('192.168.0.10'));
    const log: string[] = [];
    m.watchPeers((_peers, change) => log.push(change.type), () => log.push('settled'));
    await waitFor('snapshot settled', () => log.includes('settled'));
    assert.deepEqual(log, ['snapshot', 'settled']);
    reg.putRaw('10.5.51.0-24', peerValue('192.168.0.21')); // each event is a response of its own here
    reg.deleteRaw('10.5.50.0-24');
    await waitFor('two responses', () => log.length >= 6);
    assert.deepEqual(log, ['snapshot', 'settled', 'added', 'settled', 'removed', 'settled']);
    // Our own key rewritten by ourselves: no change for the listener, so nothing to settle.
    await m.setBackendData({ VNI: 1, VtepMAC: '02:00:00:00:00:99' });
    reg.putRaw('10.5.52.0-24', peerValue('192.168.0.22'));
    await waitFor('the next response', () => log.length >= 8);
    assert.deepEqual(log.slice(6), ['added', 'settled']);
    assert.ok(lease.key !== '10.5.52.0-24');
  });

  it('a listener that throws does not stop the others', async () => {
    const reg = new MemoryLeaseRegistry();
    const m = manager(reg);
    m.watchPeers(() => {
      throw new Error('boom');
    });
    const seen = collect(m);
    reg.putRaw('10.5.50.0-24', peerValue('192.168.0.20'));
    await waitFor('event', () => seen.some((s) => s.keys.includes('10.5.50.0-24')));
  });
});

describe('LeaseManager.close and listLeases', () => {
  it('close() stops the watch and keepalive but leaves key and etcd lease in place', async () => {
    const reg = new MemoryLeaseRegistry();
    const m = manager(reg);
    m.watchPeers(() => undefined);
    const lease = await m.acquire(request('192.168.0.10'));
    await waitFor('watch running', () => reg.activeWatchCount() === 1);
    await m.close();
    assert.equal(m.state, 'closed');
    assert.equal(reg.activeWatchCount(), 0);
    assert.ok(reg.rawGet(lease.key));
    assert.deepEqual(reg.liveLeaseIds(), [lease.etcdLeaseId]);
    await assert.rejects(m.acquire(request('192.168.0.10')), /closed/);
  });

  it('listLeases() reports expirations, null for reservations', async () => {
    const now = Date.parse('2024-05-01T00:00:00Z');
    const reg = new MemoryLeaseRegistry({ now: () => now });
    reg.putRaw('10.5.9.0-24', peerValue('192.168.0.9'), null);
    const m = manager(reg);
    await m.acquire(request('192.168.0.10'));
    const leases = await m.listLeases();
    assert.deepEqual(
      leases.map((l) => [l.key, l.expiration?.toISOString() ?? null]),
      [
        ['10.5.1.0-24', '2024-05-02T00:00:00.000Z'],
        ['10.5.9.0-24', null],
      ],
    );
  });
});
