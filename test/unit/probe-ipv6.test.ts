/**
 * ICMPv6 peer probes: the echo packets of both families, the reply matching (cookie, id,
 * sequence, source), the prober over two sockets, and which peers of a dual-stack or host-gw
 * snapshot are probed at which address. No socket: the pinger is a fake.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { formatStatus } from '../../src/cli/status';
import type { DataPathSnapshot, WeftdSnapshot } from '../../src/daemon/components';
import { probeTargets } from '../../src/health/component';
import { statusReport } from '../../src/health/status';
import { parseIPv4Cidr, parseIPv6Cidr, type IPFamily, type IPNet } from '../../src/ip';
import type { Lease } from '../../src/lease/types';
import { daemonMetricFamilies, newCounters } from '../../src/metrics/daemon-metrics';
import { renderExposition } from '../../src/metrics/exposition';
import { COOKIE_BYTES, FAMILIES, echoRequest, matchEchoReply, replyFilter, type EchoResult, type Pinger } from '../../src/probe/icmp';
import { Prober } from '../../src/probe/prober';
import { parsePrometheusText, sampleValue } from '../e2e/helpers/prometheus';

const cookie = Buffer.alloc(COOKIE_BYTES, 0xa5);

/** What the kernel hands a raw ICMPv6 socket for the reply to echoRequest(id, seq, payloadCookie, 6). */
function v6Reply(id: number, seq: number, payloadCookie: Buffer = cookie): Buffer {
  const b = echoRequest(id, seq, payloadCookie, 6);
  b[0] = 129;
  return b;
}

describe('ICMPv6 echo packets', () => {
  test('an ICMPv6 echo request is type 128 with id, sequence and cookie, its checksum left to the kernel', () => {
    const p = echoRequest(0x1234, 7, cookie, 6);
    assert.equal(p[0], 128);
    assert.equal(p[1], 0);
    assert.equal(p.readUInt16BE(2), 0, 'the kernel fills the ICMPv6 checksum (it needs the pseudo-header)');
    assert.equal(p.readUInt16BE(4), 0x1234);
    assert.equal(p.readUInt16BE(6), 7);
    assert.deepEqual(p.subarray(8, 8 + COOKIE_BYTES), cookie);
    assert.equal(p.length, 64);
    // The IPv4 request of the same code path: type 8 and a checksum.
    assert.equal(echoRequest(0x1234, 7, cookie, 4)[0], 8);
    assert.notEqual(echoRequest(0x1234, 7, cookie, 4).readUInt16BE(2), 0);
  });

  test('the ICMPv6 filter passes echo replies (129) only; the IPv4 one echo replies (0) only', () => {
    const m6 = replyFilter(FAMILIES[6]);
    assert.equal(m6.length, 32);
    const passes = (m: Buffer, type: number): boolean => (m.readUInt32LE(4 * (type >> 5)) & (1 << (type & 31))) === 0;
    assert.deepEqual([...Array(256).keys()].filter((t) => passes(m6, t)), [129]);
    const m4 = replyFilter(FAMILIES[4]);
    assert.equal(m4.length, 4);
    assert.deepEqual([...Array(32).keys()].filter((t) => passes(m4, t)), [0]);
  });
});

describe('ICMPv6 reply matching', () => {
  const pending = new Map([[5, 'fd00:5:0:22::']]);
  const expect = { family: 6 as IPFamily, id: 0x4242, cookie, targetOf: (s: number) => pending.get(s) };

  test('the peer\'s reply with our id, sequence and cookie is taken, whatever text form its source has', () => {
    assert.equal(matchEchoReply(v6Reply(0x4242, 5), 'fd00:5:0:22::', expect), 5);
    assert.equal(matchEchoReply(v6Reply(0x4242, 5), 'fd00:5:0:22:0:0:0:0', expect), 5);
  });

  test('a reply with another id, a sequence with nothing pending or from another source is ignored', () => {
    assert.equal(matchEchoReply(v6Reply(0x4243, 5), 'fd00:5:0:22::', expect), null);
    assert.equal(matchEchoReply(v6Reply(0x4242, 6), 'fd00:5:0:22::', expect), null);
    assert.equal(matchEchoReply(v6Reply(0x4242, 5), 'fd00:5:0:23::', expect), null);
    assert.equal(matchEchoReply(v6Reply(0x4242, 5), 'garbage', expect), null);
  });

  test('a spoofed reply (right id, sequence and source, ping\'s guessable payload instead of the cookie) is rejected', () => {
    assert.equal(matchEchoReply(v6Reply(0x4242, 5, Buffer.alloc(0)), 'fd00:5:0:22::', expect), null);
    assert.equal(matchEchoReply(v6Reply(0x4242, 5, Buffer.alloc(COOKIE_BYTES, 0x5a)), 'fd00:5:0:22::', expect), null);
    assert.equal(matchEchoReply(v6Reply(0x4242, 5).subarray(0, 8 + COOKIE_BYTES - 1), 'fd00:5:0:22::', expect), null, 'truncated payload');
  });

  test('our own echo request (type 128), other ICMPv6 and an IPv4 datagram are not replies', () => {
    assert.equal(matchEchoReply(echoRequest(0x4242, 5, cookie, 6), 'fd00:5:0:22::', expect), null);
    const unreachable = v6Reply(0x4242, 5);
    unreachable[0] = 1;
    assert.equal(matchEchoReply(unreachable, 'fd00:5:0:22::', expect), null);
    assert.equal(matchEchoReply(Buffer.alloc(4), 'fd00:5:0:22::', expect), null);
    // An ICMPv6 reply read as IPv4 (no IP header): not taken by the IPv4 pinger either.
    assert.equal(matchEchoReply(v6Reply(0x4242, 5), 'fd00:5:0:22::', { ...expect, family: 4 }), null);
  });
});

class FamilyPinger implements Pinger {
  readonly failure: string | null = null;
  readonly sent: string[] = [];
  constructor(readonly family: IPFamily, readonly down: Set<string>) {}
  echoBatch(targets: readonly string[]): Promise<EchoResult[]> {
    this.sent.push(...targets);
    return Promise.resolve(targets.map((t) => (this.down.has(t) ? { ok: false, rttMs: null, error: 'timeout' } : { ok: true, rttMs: this.family === 4 ? 0.4 : 0.6, error: null })));
  }
  close(): void {}
}

describe('prober over both families', () => {
  test('a dual-stack peer is two records (one per family, same key), each echo through its family\'s socket', async () => {
    const down = new Set(['fd00:5:0:3::']);
    const pingers = new Map<IPFamily, FamilyPinger>();
    const prober = new Prober({
      openPinger: (f) => { const p = new FamilyPinger(f, down); pingers.set(f, p); return p; },
      targets: () => [
        { key: 'a', address: '10.5.2.0', family: 4 }, { key: 'a', address: 'fd00:5:0:2::', family: 6 },
        { key: 'b', address: '10.5.3.0', family: 4 }, { key: 'b', address: 'fd00:5:0:3::', family: 6 },
      ],
    });
    const res = await prober.probeNow(['b', 'a'], 2);
    assert.deepEqual(pingers.get(4)?.sent, ['10.5.2.0', '10.5.3.0', '10.5.2.0', '10.5.3.0']);
    assert.deepEqual(pingers.get(6)?.sent, ['fd00:5:0:2::', 'fd00:5:0:3::', 'fd00:5:0:2::', 'fd00:5:0:3::']);
    const of = (key: string, family: IPFamily) => res.find((r) => r.key === key && r.family === family);
    assert.equal(of('a', 6)?.state, 'reachable');
    assert.equal(of('a', 6)?.lastRttMs, 0.6);
    assert.equal(of('b', 4)?.state, 'reachable');
    assert.equal(of('b', 6)?.state, 'unreachable');
    assert.equal(of('b', 6)?.loss, 1);
    assert.equal(prober.totals.sent, 8);
    await prober.stop();
  });

  test('an ICMPv6 socket that cannot be opened leaves the IPv4 probes working and says why', async () => {
    const prober = new Prober({
      openPinger: (f) => { if (f === 6) throw new Error('EAFNOSUPPORT'); return new FamilyPinger(4, new Set()); },
      targets: () => [{ key: 'a', address: '10.5.2.0', family: 4 }, { key: 'a', address: 'fd00:5:0:2::', family: 6 }],
    });
    const res = await prober.probeNow();
    assert.equal(res.find((r) => r.family === 4)?.state, 'reachable');
    assert.equal(res.find((r) => r.family === 6)?.state, 'unknown');
    assert.equal(prober.socketError, 'ICMPv6: EAFNOSUPPORT');
    await prober.stop();
  });
});

function dualLease(n: number, backendType = 'vxlan'): Lease {
  return {
    key: `10.5.${n}.0-24&fd00:5:0:${n}::-64`,
    subnet: parseIPv4Cidr(`10.5.${n}.0/24`)!,
    ipv6Subnet: parseIPv6Cidr(`fd00:5:0:${n}::/64`)! as Lease['ipv6Subnet'],
    attrs: { PublicIP: `10.250.0.${n}`, PublicIPv6: `fd00:250::${n}`, BackendType: backendType, BackendData: {}, BackendV6Data: {} },
    expiration: null, etcdLeaseId: '7', modRevision: '1',
  };
}

function v6OnlyLease(n: number): Lease {
  return { ...dualLease(n), key: `0.0.0.0-0&fd00:5:0:${n}::-64`, subnet: { ip: 0, prefixLen: 0 }, attrs: { ...dualLease(n).attrs, PublicIP: '0.0.0.0', BackendData: undefined } };
}

function path(family: IPFamily, backend: string, routes: readonly IPNet[]): DataPathSnapshot {
  return {
    family, backend, device: family === 4 ? 'flannel.1' : 'flannel-v6.1', mode: 'kernel', setup: { backendType: backend, backendData: {}, mtu: 1450 }, pumpCounters: null,
    reconcile: {
      runs: 1, failed: 0, upToDate: true, lastError: null, repairs: { device: 0, address: 0, neighbour: 0, fdb: 0, route: 0 },
      applied: { addresses: [], neighbours: [], fdb: [], routes: routes.map((dst) => ({ dst, gateway: '0.0.0.0', onlink: true })) },
    },
  };
}

function snapshot(peers: readonly Lease[], dataPaths: readonly DataPathSnapshot[]): WeftdSnapshot {
  return {
    phase: 'ready', underlay: null, config: null, lease: dualLease(1), leaseState: 'held', leaseExpiresAtMs: null,
    peers, dataPaths, registry: null,
  };
}

describe('probe targets', () => {
  test('dual stack: each peer at <subnet>.0 over ICMP and <IPv6 subnet>:: over ICMPv6, only where that family\'s route is programmed', () => {
    const [a, b] = [dualLease(2), dualLease(3)];
    const s = snapshot([a, b], [path(4, 'vxlan', [a.subnet, b.subnet]), path(6, 'vxlan', [a.ipv6Subnet!])]);
    assert.deepEqual(probeTargets({ snapshot: () => s }), [
      { key: a.key, address: '10.5.2.0', family: 4 },
      { key: b.key, address: '10.5.3.0', family: 4 },
      { key: a.key, address: 'fd00:5:0:2::', family: 6 },
    ]);
  });

  test('IPv6-only: ICMPv6 to <IPv6 subnet>::, nothing over IPv4', () => {
    const a = v6OnlyLease(2);
    const s = snapshot([a], [path(6, 'vxlan', [a.ipv6Subnet!])]);
    assert.deepEqual(probeTargets({ snapshot: () => s }), [{ key: a.key, address: 'fd00:5:0:2::', family: 6 }]);
  });

  test('host-gw peers are probed at their container bridge (<subnet>.1, <IPv6 subnet>::1); a lease of another backend type is not', () => {
    const [a, other] = [dualLease(2, 'host-gw'), dualLease(3, 'vxlan')];
    const s = snapshot([a, other], [path(4, 'host-gw', [a.subnet, other.subnet]), path(6, 'host-gw', [a.ipv6Subnet!, other.ipv6Subnet!])]);
    assert.deepEqual(probeTargets({ snapshot: () => s }), [
      { key: a.key, address: '10.5.2.1', family: 4 },
      { key: a.key, address: 'fd00:5:0:2::1', family: 6 },
    ]);
  });
});

describe('status and metrics of IPv6 probes', () => {
  const a = dualLease(2);
  const s = snapshot([a], [path(4, 'vxlan', [a.subnet]), path(6, 'vxlan', [a.ipv6Subnet!])]);
  const now = Date.parse('2030-01-01T00:00:00Z');
  const probes = [
    { key: a.key, address: '10.5.2.0', family: 4 as const, state: 'reachable' as const, lastRttMs: 0.25, lastProbeAt: now - 2000, lastError: null, loss: 0, sent: 3, received: 3, since: 0 },
    { key: a.key, address: 'fd00:5:0:2::', family: 6 as const, state: 'unreachable' as const, lastRttMs: null, lastProbeAt: now - 2000, lastError: 'timeout', loss: 1, sent: 3, received: 0, since: 0 },
  ];

  test('weft status shows the IPv6 half of a dual-stack peer on its own row with its ICMPv6 probe', () => {
    const report = statusReport({ snapshot: s, readiness: { ready: true, reason: 'ready' }, device: 'up', probes, probesEnabled: true, probeError: null, probeIntervalSeconds: 30, version: '0', pid: 1, uptimeSeconds: 1 });
    assert.equal(report.peers[0]?.probe?.family, 4);
    assert.equal(report.peers[0]?.probeV6?.address, 'fd00:5:0:2::');
    const text = formatStatus(report, now);
    assert.match(text, /^10\.5\.2\.0\/24\s+10\.250\.0\.2\s+yes\s+reachable\s+0\.250 ms\s+0%\s+2s ago$/m);
    assert.match(text, /^fd00:5:0:2::\/64\s+yes\s+UNREACHABLE \(timeout\)\s+-\s+100%\s+2s ago$/m);
  });

  test('weft_probe_peers counts each family under its own label', () => {
    const m = parsePrometheusText(renderExposition(daemonMetricFamilies({
      snapshot: () => s, readiness: () => ({ ready: true, reason: 'ready' }), probes: () => probes, probeTotals: () => null,
      counters: newCounters(), version: '0',
    })));
    assert.equal(sampleValue(m, 'weft_probe_peers', { family: '4', state: 'reachable' }), 1);
    assert.equal(sampleValue(m, 'weft_probe_peers', { family: '6', state: 'unreachable' }), 1);
    assert.equal(sampleValue(m, 'weft_probe_peers', { family: '6', state: 'reachable' }), 0);
  });
});
