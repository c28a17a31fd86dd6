import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { formatStatus } from '../../src/cli/status';
import type { ReconcileStats, WeftdSnapshot } from '../../src/daemon/components';
import { readiness, statusReport } from '../../src/health/status';
import { daemonMetricFamilies, newCounters } from '../../src/metrics/daemon-metrics';
import { counter, gauge, Histogram, renderExposition } from '../../src/metrics/exposition';
import { EchoPacket, echoRequest, inetChecksum, parseEchoReply, type EchoResult, type Pinger } from '../../src/probe/icmp';
import { Prober } from '../../src/probe/prober';
import type { Lease } from '../../src/lease/types';
import { parsePrometheusText, sampleValue } from '../e2e/helpers/prometheus';

function lease(third: number, publicIp = `10.250.0.${third}`): Lease {
  return {
    key: `10.5.${third}.0-24`,
    subnet: { ip: ((10 << 24) | (5 << 16) | (third << 8)) >>> 0, prefixLen: 24 },
    ipv6Subnet: null,
    attrs: { PublicIP: publicIp, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: '0e:00:00:00:00:01' } },
    expiration: null,
    etcdLeaseId: '7',
    modRevision: '5',
  };
}

/** A daemon with two programmed peers: plain data, as `Weftd.snapshot()` returns it. */
function snapshot(over: Partial<WeftdSnapshot> = {}, reconcile: Partial<ReconcileStats> = {}): WeftdSnapshot {
  const peers = [lease(2), lease(3)];
  const stats: ReconcileStats = {
    lastError: null,
    upToDate: true,
    applied: { addresses: [], neighbours: [], fdb: [], routes: peers.map((p) => ({ dst: p.subnet, gateway: '10.5.0.0', onlink: true })) },
    runs: 3,
    failed: 0,
    repairs: { device: 0, address: 0, neighbour: 0, fdb: 0, route: 1 },
    ...reconcile,
  };
  return {
    phase: 'ready',
    underlay: { ifName: 'eth0', ifIndex: 2, ipv4: '10.250.0.1', mtu: 1500 },
    config: null,
    lease: lease(1),
    leaseState: 'held',
    leaseExpiresAtMs: Date.parse('2030-01-01T00:00:00Z'),
    peers,
    dataPaths: [{
      family: 4, backend: 'vxlan', device: 'flannel.1', mode: 'kernel', setup: { backendType: 'vxlan', backendData: {}, mtu: 1450 },
      pumpCounters: null, reconcile: stats,
    }],
    registry: null,
    ...over,
  };
}

describe('metrics exposition', () => {
  test('counters, labelled gauges and histograms render in a form a strict parser accepts', () => {
    const h = new Histogram([0.01, 0.1]);
    h.observe(0.005);
    h.observe(0.5);
    const text = renderExposition([
      counter('weft_x_total', 'X things.\nSecond line', () => 3),
      gauge('weft_state', 'State', () => [{ labels: { state: 'a"b\\c\nd' }, value: 1 }, { labels: { state: 'e' }, value: 0 }]),
      h.family('weft_lat_seconds', 'Latency'),
    ]);
    const fams = parsePrometheusText(text);
    assert.equal(sampleValue(fams, 'weft_x_total'), 3);
    assert.equal(fams.get('weft_x_total')?.help, 'X things.\nSecond line');
    assert.equal(sampleValue(fams, 'weft_state', { state: 'a"b\\c\nd' }), 1);
    assert.equal(sampleValue(fams, 'weft_lat_seconds_bucket', { le: '0.01' }), 1);
    assert.equal(sampleValue(fams, 'weft_lat_seconds_bucket', { le: '0.1' }), 1);
    assert.equal(sampleValue(fams, 'weft_lat_seconds_bucket', { le: '+Inf' }), 2);
    assert.equal(sampleValue(fams, 'weft_lat_seconds_count'), 2);
    assert.equal(sampleValue(fams, 'weft_lat_seconds_sum'), 0.505);
  });

  test('daemon metrics come from a plain snapshot: lease, data path, pump counters, repairs by kind', () => {
    const scrape = (s: WeftdSnapshot) => parsePrometheusText(renderExposition(daemonMetricFamilies({
      snapshot: () => s, readiness: () => ({ ready: true, reason: 'ready' }), probes: () => [], probeTotals: () => null,
      counters: newCounters(), version: '0.1.0',
    })));
    const ready = snapshot();
    const pumped = { ...ready, dataPaths: [{ ...ready.dataPaths[0]!, mode: 'userspace' as const, pumpCounters: { rx_frames: 7 } }] };
    const m = scrape(pumped);
    assert.equal(sampleValue(m, 'weft_lease_held'), 1);
    assert.equal(sampleValue(m, 'weft_lease_expiry_timestamp_seconds'), Date.parse('2030-01-01T00:00:00Z') / 1000);
    assert.equal(sampleValue(m, 'weft_peers_programmed'), 2);
    assert.equal(sampleValue(m, 'weft_reconcile_runs_total'), 3);
    assert.equal(sampleValue(m, 'weft_reconcile_repairs_total', { kind: 'route' }), 1);
    assert.equal(sampleValue(m, 'weft_datapath_info', { backend: 'vxlan', device: 'flannel.1', mode: 'userspace' }), 1);
    assert.equal(sampleValue(m, 'weft_fallback_pump_packets_total', { counter: 'rx_frames' }), 7);
    // Starting: no data path yet, yet every repair kind is a series (at 0) so rate() works from the start.
    const starting = scrape(snapshot({ phase: 'starting', dataPaths: [], leaseState: 'idle', leaseExpiresAtMs: null }));
    assert.equal(sampleValue(starting, 'weft_lease_held'), 0);
    assert.equal(sampleValue(starting, 'weft_reconcile_repairs_total', { kind: 'fdb' }), 0);
    assert.equal(sampleValue(starting, 'weft_datapath_info', { backend: 'vxlan', device: 'flannel.1', mode: 'kernel' }), undefined);
  });

  test('an invalid metric name is refused rather than rendered', () => {
    assert.throws(() => renderExposition([gauge('weft-bad', 'x', () => 1)]), /not a valid Prometheus name/);
  });

  test('the strict parser rejects what Prometheus rejects', () => {
    assert.throws(() => parsePrometheusText('a 1'), /newline/);
    assert.throws(() => parsePrometheusText('a{x="1} 1\n'), /label|unterminated/);
    assert.throws(() => parsePrometheusText('a one\n'), /bad value/);
    assert.throws(() => parsePrometheusText('a 1\nb 1\na 2\n'), /split|duplicate/);
    assert.throws(() => parsePrometheusText('# TYPE a counter\n# TYPE a gauge\na 1\n'), /second TYPE/);
  });
});

describe('readiness', () => {
  const base = { device: 'up' as const, behindMs: 0, graceMs: 5000 };
  test('is ready when the lease is held, the device is up and the peers are programmed', () => {
    assert.deepEqual(readiness({ ...base, snapshot: snapshot() }), { ready: true, reason: 'ready' });
  });
  test('says why not while starting, waiting for config and programming peers', () => {
    assert.match(readiness({ ...base, snapshot: snapshot({ phase: 'waiting-config' }) }).reason, /waiting for the network config/);
    const r = readiness({ ...base, snapshot: snapshot({ phase: 'programming' }) });
    assert.equal(r.ready, false);
    assert.match(r.reason, /10\.5\.1\.0\/24 held; programming routes to 2 peer/);
  });
  test('is not ready when the lease is lost, the device is down or a reconcile failed', () => {
    assert.match(readiness({ ...base, snapshot: snapshot({ leaseState: 'reacquiring' }) }).reason, /lease not held \(lease state reacquiring\)/);
    assert.match(readiness({ ...base, device: 'down', snapshot: snapshot() }).reason, /device flannel\.1 is down/);
    assert.match(readiness({ ...base, device: 'missing', snapshot: snapshot() }).reason, /missing/);
    const failing = snapshot({}, { lastError: 'EPERM' });
    assert.match(readiness({ ...base, snapshot: failing }).reason, /programming peers failed: EPERM/);
  });
  test('tolerates a peer change not yet programmed for the grace period only', () => {
    const behind = snapshot({}, { upToDate: false });
    assert.equal(readiness({ ...base, behindMs: 100, snapshot: behind }).ready, true);
    assert.match(readiness({ ...base, behindMs: 6000, snapshot: behind }).reason, /not programmed for 6000 ms/);
  });
});

describe('weft status output', () => {
  test('shows the lease with its expiry, the data path and each peer with route, probe, RTT and loss', () => {
    const now = Date.parse('2029-12-31T23:00:00Z');
    const report = statusReport({
      snapshot: snapshot(),
      readiness: { ready: true, reason: 'ready' },
      device: 'up',
      probes: [
        { key: '10.5.2.0-24', address: '10.5.2.0', family: 4, state: 'reachable', lastRttMs: 0.25, lastProbeAt: now - 3000, lastError: null, loss: 0, sent: 3, received: 3, since: 0 },
        { key: '10.5.3.0-24', address: '10.5.3.0', family: 4, state: 'unreachable', lastRttMs: null, lastProbeAt: now - 1000, lastError: 'timeout', loss: 1, sent: 3, received: 0, since: 0 },
      ],
      probesEnabled: true,
      probeError: null,
      probeIntervalSeconds: 30,
      version: '0.1.0',
      pid: 42,
      uptimeSeconds: 75,
    });
    const text = formatStatus(report, now);
    assert.match(text, /^weftd 0\.1\.0 \(pid 42, up 1m15s\): ready$/m);
    assert.match(text, /^lease\s+10\.5\.1\.0\/24 \(key 10\.5\.1\.0-24\), public IP 10\.250\.0\.1, held, expires 2030-01-01T00:00:00\.000Z \(in 1h00m\)$/m);
    assert.match(text, /^data path\s+vxlan kernel, device flannel\.1 up, MTU 1450, underlay eth0 10\.250\.0\.1$/m);
    assert.match(text, /^reconcile\s+3 runs, 0 failed, repairs: route 1$/m);
    assert.match(text, /2 known, 2 programmed, 1 reachable, 1 unreachable/);
    assert.match(text, /^10\.5\.2\.0\/24\s+10\.250\.0\.2\s+yes\s+reachable\s+0\.250 ms\s+0%\s+3s ago$/m);
    assert.match(text, /^10\.5\.3\.0\/24\s+10\.250\.0\.3\s+yes\s+UNREACHABLE \(timeout\)\s+-\s+100%\s+1s ago$/m);
    assert.doesNotMatch(text, /^probes /m, 'probes running on their cycle: no line of their own');
    assert.deepEqual(report.probes, { enabled: true, error: null, intervalSeconds: 30 });
  });

  test('--probe-interval=0: status says the probes run on demand only, and how to run one', () => {
    const report = statusReport({
      snapshot: snapshot(), readiness: { ready: true, reason: 'ready' }, device: 'up', probes: [],
      probesEnabled: true, probeError: null, probeIntervalSeconds: 0, version: '0.1.0', pid: 42, uptimeSeconds: 75,
    });
    assert.equal(report.probes.intervalSeconds, 0);
    assert.match(formatStatus(report, Date.parse('2029-12-31T23:00:00Z')), /^probes\s+on demand only \(--probe-interval=0\): weft status --probe$/m);
  });
});

describe('ICMP packets', () => {
  test('an echo request carries its id, sequence and a valid checksum', () => {
    const p = echoRequest(0x1234, 7);
    assert.equal(p[0], 8);
    assert.equal(p.readUInt16BE(4), 0x1234);
    assert.equal(p.readUInt16BE(6), 7);
    assert.equal(inetChecksum(p), 0, 'a packet with its checksum sums to zero');
  });
  test('the reused echo packet is, for every sequence number, the packet built from scratch (checksum updated, not recomputed)', () => {
    const cookie = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
    for (const family of [4, 6] as const) {
      for (const id of [0, 0x1234, 0xffff]) {
        const packet = new EchoPacket(id, cookie, family);
        // Every sequence number: the carries of the one's-complement sum wrap at all of them.
        for (let seq = 0; seq <= 0xffff; seq++) {
          const got = packet.fill(seq);
          const want = echoRequest(id, seq, cookie, family);
          if (!got.equals(want)) assert.fail(`family ${family}, id ${id}, seq ${seq}: ${got.toString('hex')} != ${want.toString('hex')}`);
        }
        if (family === 4) assert.equal(inetChecksum(packet.fill(0xfffe)), 0);
      }
    }
  });
  test('an echo reply is found behind the IP header; other ICMP is ignored', () => {
    const icmp = echoRequest(9, 10);
    icmp[0] = 0;
    const ip = Buffer.alloc(20);
    ip[0] = 0x45;
    assert.deepEqual(parseEchoReply(Buffer.concat([ip, icmp])), { id: 9, seq: 10 });
    icmp[0] = 3; // destination unreachable
    assert.equal(parseEchoReply(Buffer.concat([ip, icmp])), null);
    assert.equal(parseEchoReply(Buffer.alloc(10)), null);
  });
});

class FakePinger implements Pinger {
  readonly failure: string | null = null;
  down = new Set<string>();
  sent: string[] = [];
  async echoBatch(targets: readonly string[]): Promise<EchoResult[]> {
    this.sent.push(...targets);
    return targets.map((t) => (this.down.has(t) ? { ok: false, rttMs: null, error: 'timeout' } : { ok: true, rttMs: 0.5, error: null }));
  }
  close(): void {}
}

function memoryLog(): { lines: string[]; log: import('../../src/log').Logger } {
  const lines: string[] = [];
  const log = {
    debug: () => undefined,
    info: (m: string) => void lines.push(`INFO ${m}`),
    warn: (m: string, f?: Record<string, unknown>) => void lines.push(`WARN ${m}${f?.peers ? ' ' + JSON.stringify(f.peers) : ''}`),
    error: (m: string) => void lines.push(`ERROR ${m}`),
    child: () => log,
  };
  return { lines, log };
}

describe('peer prober', () => {
  test('an on-demand round marks a silent peer unreachable and a replying one reachable, with RTT and loss', async () => {
    const pinger = new FakePinger();
    pinger.down.add('10.5.3.0');
    const { lines, log } = memoryLog();
    const prober = new Prober({ log, openPinger: () => pinger, targets: () => [{ key: 'a', address: '10.5.2.0' }, { key: 'b', address: '10.5.3.0' }] });
    const res = await prober.probeNow(undefined, 3);
    const byKey = new Map(res.map((r) => [r.key, r]));
    assert.equal(byKey.get('a')?.state, 'reachable');
    assert.equal(byKey.get('a')?.lastRttMs, 0.5);
    assert.equal(byKey.get('a')?.loss, 0);
    assert.equal(byKey.get('b')?.state, 'unreachable');
    assert.equal(byKey.get('b')?.loss, 1);
    assert.equal(pinger.sent.length, 6);
    assert.deepEqual(lines.filter((l) => l.startsWith('WARN')).length, 1);
    assert.match(lines.join('\n'), /peer b unreachable over the overlay/);
    pinger.down.clear();
    await prober.probeNow(['b'], 3);
    assert.equal(prober.results().find((r) => r.key === 'b')?.state, 'reachable');
    assert.match(lines.join('\n'), /peer b reachable again over the overlay/);
    await prober.stop();
  });

  test('many peers going unreachable at once make one summary line, not one per peer', async () => {
    const pinger = new FakePinger();
    const targets = Array.from({ length: 50 }, (_, i) => ({ key: `p${i}`, address: `10.5.${i}.0` }));
    for (const t of targets) pinger.down.add(t.address);
    const { lines, log } = memoryLog();
    const prober = new Prober({ log, openPinger: () => pinger, targets: () => targets });
    await prober.probeNow(undefined, 1);
    assert.equal(lines.length, 1, lines.join('\n'));
    assert.match(lines[0]!, /^WARN 50 peers unreachable over the overlay/);
    await prober.stop();
  });

  test('a cycle needs two lost probes in a row before calling a peer unreachable', async () => {
    const pinger = new FakePinger();
    const prober = new Prober({ openPinger: () => pinger, targets: () => [{ key: 'a', address: '10.5.2.0' }] });
    await prober.probeNow(undefined, 1);
    pinger.down.add('10.5.2.0');
    // Cycle rounds are not decisive: reach them through the private round() like the timer does.
    const round = (prober as unknown as { round(t: unknown[], c: number, d: boolean): Promise<void> }).round.bind(prober);
    await round([{ key: 'a', address: '10.5.2.0' }], 1, false);
    assert.equal(prober.results()[0]?.state, 'reachable');
    await round([{ key: 'a', address: '10.5.2.0' }], 1, false);
    assert.equal(prober.results()[0]?.state, 'unreachable');
    await prober.stop();
  });

  test('a cycle over more peers than its bound probes them round-robin', () => {
    const targets = Array.from({ length: 5 }, (_, i) => ({ key: `p${i}`, address: `10.5.${i}.0` }));
    const prober = new Prober({ openPinger: () => new FakePinger(), targets: () => targets, maxPerCycle: 2 });
    const slice = (prober as unknown as { nextSlice(t: unknown[]): { key: string }[] }).nextSlice.bind(prober);
    assert.deepEqual([slice(targets), slice(targets), slice(targets)].map((s) => s.map((t) => t.key)), [['p0', 'p1'], ['p2', 'p3'], ['p4', 'p0']]);
  });

  test('a socket that cannot be opened disables probes with one error line and a reason', async () => {
    const { lines, log } = memoryLog();
    const prober = new Prober({ log, openPinger: () => { throw new Error('EPERM'); }, targets: () => [{ key: 'a', address: '10.5.2.0' }] });
    await prober.probeNow();
    await prober.probeNow();
    assert.equal(prober.socketError, 'EPERM');
    assert.equal(lines.filter((l) => l.startsWith('ERROR')).length, 1);
    await prober.stop();
  });
});
