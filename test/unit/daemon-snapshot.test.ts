import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseNetworkConfig } from '../../src/config/network';
import { takeSnapshot, type LiveState, type ReconcilerFigures } from '../../src/daemon/snapshot';

function reconciler(over: Partial<ReconcilerFigures> = {}): ReconcilerFigures {
  return {
    runCounts: { runs: 4, failed: 1 },
    repairCounts: { device: 0, address: 0, neighbour: 0, fdb: 2, route: 0 },
    isUpToDate: true,
    lastError: null,
    applied: { addresses: [], neighbours: [], fdb: [], routes: [] },
    ...over,
  };
}

function live(over: Partial<LiveState> = {}): LiveState {
  const counters = { rx_frames: 5 };
  return {
    phase: 'ready',
    underlay: null,
    config: null,
    lease: null,
    peers: [],
    manager: { state: 'held', leaseExpiresAt: new Date(1_900_000_000_000) },
    registry: { stats: () => ({ reconnects: 1, watchResponses: 9, watchRevisionLag: 0, lastWatchResponseAt: null }) },
    paths: [
      { family: 4, backend: { type: 'vxlan', deviceName: 'flannel.1', dataPath: 'userspace', pumpCounters: () => counters },
        setup: { backendType: 'vxlan', backendData: {}, mtu: 1450 }, reconciler: reconciler() },
      { family: 6, backend: { type: 'vxlan', deviceName: 'flannel-v6.1' },
        setup: { backendType: 'vxlan', backendData: {}, mtu: 1430 }, reconciler: reconciler({ isUpToDate: false, lastError: new Error('EPERM adding route') }) },
    ],
    ...over,
  };
}

describe('daemon snapshot', () => {
  test('is plain data: values of the lease manager, each family\'s data path and reconciler, and the registry', () => {
    const s = takeSnapshot(live());
    assert.equal(s.leaseState, 'held');
    assert.equal(s.leaseExpiresAtMs, 1_900_000_000_000);
    assert.deepEqual(s.registry, { reconnects: 1, watchResponses: 9, watchRevisionLag: 0, lastWatchResponseAt: null });
    assert.deepEqual(s.dataPaths.map((p) => [p.family, p.device, p.mode, p.pumpCounters]), [
      [4, 'flannel.1', 'userspace', { rx_frames: 5 }],
      [6, 'flannel-v6.1', 'kernel', null],
    ]);
    assert.deepEqual(s.dataPaths[0]?.reconcile?.repairs, { device: 0, address: 0, neighbour: 0, fdb: 2, route: 0 });
    assert.equal(s.dataPaths[1]?.reconcile?.upToDate, false);
    assert.equal(s.dataPaths[1]?.reconcile?.lastError, 'EPERM adding route', 'the error as text, not the Error object');
    // Nothing callable: a JSON round trip loses nothing.
    assert.deepEqual(JSON.parse(JSON.stringify(s)), s);
  });

  test('copies counters: a later change of the live object does not show in an old snapshot', () => {
    const counters = { rx_frames: 1 };
    const state = live();
    const paths = [{ ...state.paths[0]!, backend: { type: 'vxlan', deviceName: 'flannel.1', pumpCounters: () => counters } }];
    const s = takeSnapshot({ ...state, paths });
    counters.rx_frames = 2;
    assert.deepEqual(s.dataPaths[0]?.pumpCounters, { rx_frames: 1 });
  });

  test('before start-up there is no data path, lease state idle and no registry figures', () => {
    const s = takeSnapshot(live({ phase: 'starting', manager: null, registry: null, paths: [] }));
    assert.deepEqual([s.leaseState, s.leaseExpiresAtMs, s.registry, s.dataPaths], ['idle', null, null, []]);
  });

  test('wireguard\'s PSK in the network config never reaches a component', () => {
    const psk = Buffer.alloc(32, 7).toString('base64');
    const config = parseNetworkConfig(JSON.stringify({ Network: '10.5.0.0/16', Backend: { Type: 'wireguard', PSK: psk } }));
    const s = takeSnapshot(live({ config }));
    assert.ok(!JSON.stringify(s).includes(psk));
    assert.equal(s.config?.backend.raw.PSK, '(redacted)');
    assert.equal(s.config?.network?.prefixLen, 16);
    assert.equal(config.backend.raw.PSK, psk, 'the daemon\'s own config is untouched');
    assert.equal(takeSnapshot(live({ config })).config, s.config, 'one redacted copy per config, not one per snapshot');
  });
});
