/**
 * flannel's wireguard backend on a 3-host lab, on this machine's user-space path: the kernel has
 * no WireGuard, so every weftd falls back to wireguard-go (--wireguard-fallback=auto), configured
 * over its UAPI socket. Real etcd, real namespaces, real wireguard-go, real `wg` and tcpdump.
 * A second, dual-stack lab (wt<pid>x-) checks flannel-wg-v6. Namespaces prefixed wt<pid>w- and
 * wt<pid>x-, torn down at the end (also on failure): the lab's teardown stops every process left
 * in its namespaces, wireguard-go included (by PID).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { publicKeyOf } from '../../src/backend/wireguard/keys';
import { UapiClient, type WgDeviceState } from '../../src/backend/wireguard/uapi';
import { Lab, hostUnderlayIp } from '../../src/lab';
import { waitUntil as pollUntil } from '../../src/lab/run';
import { containerAddr, requireTool, tcpTransfer } from './helpers/datapath';
import { sh } from './helpers/shell';

const PREFIX = `wt${process.pid}w-`;
const scratch = mkdtempSync(join(tmpdir(), `wt${process.pid}-wg-`));
const HEALTHZ = 8471;
let lab: Lab;

const hostDir = (h: string): string => dirname(lab.subnetFile(h));
const keyFile = (h: string): string => join(hostDir(h), 'wgkey');
const runDir = (h: string): string => join(hostDir(h), 'wireguard');
const uapi = (h: string): UapiClient => new UapiClient(join(runDir(h), 'flannel-wg.sock'));
const wgPid = (h: string): number => Number(readFileSync(join(runDir(h), 'flannel-wg.pid'), 'utf8').trim());
const publicKey = (h: string): string => publicKeyOf(Buffer.from(readFileSync(keyFile(h), 'utf8').trim(), 'base64'));
const leaseKey = (h: string): string => lab.subnetEnv(h)!.subnetNetwork.replace('/', '-');

async function leaseValue(h: string): Promise<string> {
  const r = await lab.etcdctl(['get', `/coreos.com/network/subnets/${leaseKey(h)}`, '--print-value-only']);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim();
}

/** Peers of h's device as public key → allowed IPs. */
async function peerTable(h: string): Promise<Map<string, string>> {
  const st: WgDeviceState = await uapi(h).get();
  return new Map(st.peers.map((p) => [p.publicKey, `${p.endpoint} ${p.allowedIps.join(',')}`]));
}

function expectedPeers(h: string): Map<string, string> {
  return new Map(lab.hostNames().filter((o) => o !== h).map((o) => [publicKey(o), `${hostUnderlayIp(Number(o.slice(1)))}:51820 ${lab.subnetEnv(o)!.subnetNetwork}`]));
}

async function waitPeers(h: string, ms = 15_000): Promise<void> {
  // A wireguard-go just (re)started may not have made its UAPI socket yet (ENOENT): not yet, not a failure.
  const ok = await pollUntil(async () => {
    try {
      return JSON.stringify([...(await peerTable(h))].sort()) === JSON.stringify([...expectedPeers(h)].sort());
    } catch {
      return false;
    }
  }, ms, 200);
  assert.ok(ok, `${h}'s peers: ${JSON.stringify([...(await peerTable(h))])}, expected ${JSON.stringify([...expectedPeers(h)])}`);
}

async function httpGet(h: string, path: string): Promise<string> {
  const script = `fetch('http://127.0.0.1:${HEALTHZ}${path}').then(async (r) => process.stdout.write(await r.text()), (e) => { console.error(String(e)); process.exit(2); })`;
  return sh(lab, h, process.execPath, '-e', script);
}

describe('a cluster on the wireguard backend (user space: wireguard-go)', { timeout: 180_000 }, () => {
  before(async () => {
    requireTool('wireguard-go');
    requireTool('wg', 'wireguard-tools');
    requireTool('tcpdump');
    lab = await Lab.up({ prefix: PREFIX, name: `wt${process.pid}w`, stateDir: join(scratch, 'lab'), hosts: 3, backend: 'wireguard', healthzPort: HEALTHZ });
  });

  after(async () => {
    await lab?.down();
    rmSync(scratch, { recursive: true, force: true });
  });

  test('every container pings every other container, both ways', async () => {
    const m = await lab.pingMatrix();
    assert.ok(m.ok, JSON.stringify(m.results.filter((r) => !r.ok)));
    assert.equal(m.results.length, 6);
  });

  test('flannel-wg: MTU underlay − 80, .0/32, one route for the Network; the lease is flannel\'s, byte for byte; the key file is 0600', async () => {
    for (const h of lab.hostNames()) {
      assert.match(await sh(lab, h, 'ip', '-d', 'link', 'show', 'flannel-wg'), /mtu 1420 [\s\S]*tun type tun/);
      assert.match(await sh(lab, h, 'ip', '-4', 'addr', 'show', 'dev', 'flannel-wg'), new RegExp(`inet ${lab.subnetEnv(h)!.subnetNetwork.split('/')[0]!.replace(/\./g, '\\.')}/32`));
      assert.match(await sh(lab, h, 'ip', 'route', 'show', 'dev', 'flannel-wg'), /^10\.5\.0\.0\/16 scope link/m);
      assert.equal(lab.subnetEnv(h)!.mtu, 1420);
      assert.equal(statSync(keyFile(h)).mode & 0o777, 0o600);
      // What flanneld's wireguard backend writes (json.Marshal of LeaseAttrs with BackendData {PublicKey}).
      assert.equal(await leaseValue(h),
        `{"PublicIP":"${hostUnderlayIp(Number(h.slice(1)))}","PublicIPv6":null,"BackendType":"wireguard","BackendData":{"PublicKey":"${publicKey(h)}"}}`);
      await waitPeers(h);
      const st = await uapi(h).get();
      assert.equal(st.listenPort, 51820);
    }
  });

  test('the private key is in no log, /status or /metrics; the data path says user space', async () => {
    for (const h of lab.hostNames()) {
      const priv = readFileSync(keyFile(h), 'utf8').trim();
      const hex = Buffer.from(priv, 'base64').toString('hex');
      const status = await httpGet(h, '/status');
      const metrics = await httpGet(h, '/metrics');
      const log = lab.daemonLog(h);
      for (const [what, text] of [['log', log], ['/status', status], ['/metrics', metrics]] as const) {
        assert.ok(!text.includes(priv) && !text.includes(hex), `${h}: private key in ${what}`);
      }
      assert.equal((JSON.parse(status) as { dataPath: { mode: string } }).dataPath.mode, 'userspace');
      assert.match(metrics, /^weft_datapath_info\{backend="wireguard",device="flannel-wg",mode="userspace"\} 1$/m);
      assert.match(metrics, /^weft_peers_programmed 2$/m);
      assert.deepEqual((JSON.parse(status) as { peers: { programmed: boolean }[] }).peers.map((p) => p.programmed), [true, true]);
      assert.match(log, /ready: subnet [^"]*, data path userspace \(flannel-wg\)/);
      assert.match(log, /falling back to wireguard-go/);
    }
  });

  test('weft status --probe reaches every peer\'s flannel-wg address through the tunnel', async () => {
    const weft = join(__dirname, '..', '..', 'src', 'cli', 'weft.js');
    const out = await sh(lab, 'h1', process.execPath, weft, 'status', '--probe', `--healthz-port=${HEALTHZ}`);
    assert.match(out, /data path\s+wireguard userspace, device flannel-wg up, MTU 1420/);
    assert.match(out, /peers: 2 known, 2 programmed, 2 reachable, 0 unreachable/);
  });

  test('100 MB over TCP arrive intact', async () => {
    const out = await tcpTransfer(lab, 'h1-c1', 'h3-c1', containerAddr(lab, 'h3'), 100, 7301);
    assert.match(out.sent, /^104857600 [0-9a-f]{64}$/);
    assert.equal(out.received, out.sent);
    console.log(`# 100 MB h1-c1 → h3-c1 over wireguard-go: ${out.ms} ms (${(838.86 / (out.ms / 1000)).toFixed(0)} Mbit/s)`);
  });

  test('on the underlay, traffic between two hosts is only UDP to port 51820; no inner address or payload is visible', async () => {
    const pcap = join(scratch, 'underlay.pcap');
    const filter = `host ${hostUnderlayIp(1)} and host ${hostUnderlayIp(2)}`;
    const capture = lab.exec('h2', ['timeout', '6', 'tcpdump', '-i', 'eth0', '-nn', '-U', '-w', pcap, filter], { timeoutMs: 10_000 });
    await new Promise((r) => setTimeout(r, 1000));
    // ICMP with a recognisable pattern, both ways, and a TCP connection.
    await sh(lab, 'h1-c1', 'ping', '-c', '5', '-i', '0.2', '-p', 'cafebabe', containerAddr(lab, 'h2'));
    await tcpTransfer(lab, 'h2-c1', 'h1-c1', containerAddr(lab, 'h1'), 1, 7302);
    await capture;
    const packets = readPcap(readFileSync(pcap));
    assert.ok(packets.length >= 10, `captured ${packets.length} packets`);
    const inner = [containerAddr(lab, 'h1'), containerAddr(lab, 'h2')].map((a) => Buffer.from(a.split('.').map(Number)));
    for (const p of packets) {
      assert.equal(p.proto, 17, `a non-UDP packet on the underlay: protocol ${p.proto}`);
      assert.ok(p.sport === 51820 || p.dport === 51820, `UDP ${p.sport} → ${p.dport}, not the listen port`);
      assert.ok(!p.payload.includes(Buffer.from('cafebabecafebabe', 'hex')), 'the ping pattern is visible');
      for (const a of inner) assert.ok(!p.payload.includes(a), `inner address ${[...a].join('.')} visible in a datagram`);
    }
  });

  test('a restart of weftd keeps the key, the lease, wireguard-go and the sessions (no ping lost)', async () => {
    const lease = await leaseValue('h2');
    const pid = wgPid('h2');
    const pinging = lab.exec('h1-c1', ['ping', '-c', '40', '-i', '0.1', '-W', '1', containerAddr(lab, 'h2')], { timeoutMs: 30_000 });
    await new Promise((r) => setTimeout(r, 500));
    await lab.restartDaemon('h2');
    const r = await pinging;
    const received = Number(/(\d+) received/.exec(r.stdout)?.[1] ?? -1);
    assert.ok(received >= 39, `pings across the restart: ${r.stdout.split('\n').slice(-3).join(' ')}`);
    assert.equal(await leaseValue('h2'), lease);
    assert.equal(wgPid('h2'), pid, 'the same wireguard-go, adopted');
    assert.match(lab.daemonLog('h2'), /adopted the running wireguard-go for flannel-wg/);
    await waitPeers('h2');
  });

  test('wireguard-go killed: weftd starts a new one, configures it, and traffic flows again', async () => {
    const old = wgPid('h3');
    process.kill(old, 'SIGKILL');
    assert.ok(await pollUntil(() => {
      try { return wgPid('h3') !== old && process.kill(wgPid('h3'), 0); } catch { return false; }
    }, 15_000, 100), 'a new wireguard-go on h3');
    await waitPeers('h3');
    assert.ok(await lab.ping('h1-c1', 'h3-c1', { attempts: 20, intervalMs: 500 }), 'h1-c1 → h3-c1 after the restart of wireguard-go');
    assert.ok(await lab.ping('h3-c1', 'h2-c1', { attempts: 20, intervalMs: 500 }), 'h3-c1 → h2-c1');
  });

  test('a hung wireguard-go (SIGSTOP) is killed and replaced; traffic flows again', async () => {
    const old = wgPid('h2');
    process.kill(old, 'SIGSTOP');
    try {
      assert.ok(await pollUntil(() => {
        try { return wgPid('h2') !== old && process.kill(wgPid('h2'), 0); } catch { return false; }
      }, 20_000, 100), 'a new wireguard-go on h2');
    } finally {
      try { process.kill(old, 'SIGCONT'); } catch { /* killed, as it should be */ }
    }
    assert.match(lab.daemonLog('h2'), new RegExp(`wireguard-go for flannel-wg \\(pid ${old}\\) is hung`));
    await waitPeers('h2');
    assert.ok(await lab.ping('h1-c1', 'h2-c1', { attempts: 20, intervalMs: 500 }), 'h1-c1 → h2-c1 after the hung wireguard-go was replaced');
  });

  test('a peer removed by hand with `wg set … remove` comes back', async () => {
    const victim = publicKey('h2');
    // `wg` looks for the socket in /var/run/wireguard: show it the lab host's directory.
    await sh(lab, 'h1', 'unshare', '-m', 'sh', '-c',
      `mkdir -p /run/wireguard && mount --bind ${runDir('h1')} /run/wireguard && wg set flannel-wg peer ${victim} remove`);
    await waitPeers('h1', 10_000);
    assert.match(lab.daemonLog('h1'), /repaired: re-added wireguard peer/);
    assert.ok(await lab.ping('h1-c1', 'h2-c1', { attempts: 10, intervalMs: 500 }));
  });

  test('a lease with a malformed public key is skipped with a warning; nothing else changes', async () => {
    const before = { peers: await peerTable('h1'), routes: await sh(lab, 'h1', 'ip', 'route') };
    const bad = '{"PublicIP":"10.250.0.99","PublicIPv6":null,"BackendType":"wireguard","BackendData":{"PublicKey":"not-a-key"}}';
    const put = await lab.etcdctl(['put', '/coreos.com/network/subnets/10.5.250.0-24', bad]);
    assert.equal(put.code, 0, put.stderr);
    try {
      assert.ok(await pollUntil(() => /peer lease skipped[^\n]*10\.5\.250\.0-24[^\n]*not a WireGuard public key/.test(lab.daemonLog('h1')), 10_000, 100),
        'h1 warns about the malformed lease');
      await new Promise((r) => setTimeout(r, 2500)); // one watch period
      assert.deepEqual(await peerTable('h1'), before.peers);
      assert.equal(await sh(lab, 'h1', 'ip', 'route'), before.routes);
    } finally {
      await lab.etcdctl(['del', '/coreos.com/network/subnets/10.5.250.0-24']);
    }
  });

  test('a peer that re-keys (new PublicKey in its lease) replaces its old entry on the others', async () => {
    const old = publicKey('h3');
    await lab.stopDaemon('h3');
    unlinkSync(keyFile('h3'));
    await lab.startDaemon('h3');
    const fresh = publicKey('h3');
    assert.notEqual(fresh, old);
    assert.ok(await pollUntil(async () => (await leaseValue('h3')).includes(fresh), 10_000, 100), 'h3\'s lease carries the new key');
    for (const h of ['h1', 'h2']) {
      await waitPeers(h);
      assert.ok(!(await peerTable(h)).has(old), `${h} still has h3's old key`);
    }
    assert.ok(await lab.ping('h1-c1', 'h3-c1', { attempts: 20, intervalMs: 500 }));
    assert.ok(await lab.ping('h3-c1', 'h2-c1', { attempts: 20, intervalMs: 500 }));
  });
});

interface Captured { readonly proto: number; readonly sport: number; readonly dport: number; readonly payload: Buffer }

/** IPv4 packets of a pcap file (Ethernet link type), with their transport ports and payload. */
function readPcap(buf: Buffer): Captured[] {
  assert.equal(buf.readUInt32LE(0), 0xa1b2c3d4, 'a little-endian microsecond pcap');
  const out: Captured[] = [];
  let off = 24;
  while (off + 16 <= buf.length) {
    const caplen = buf.readUInt32LE(off + 8);
    const frame = buf.subarray(off + 16, off + 16 + caplen);
    off += 16 + caplen;
    if (frame.readUInt16BE(12) !== 0x0800) continue;
    const ip = frame.subarray(14);
    const ihl = (ip[0]! & 0x0f) * 4;
    const proto = ip[9]!;
    const l4 = ip.subarray(ihl);
    const ports = proto === 17 || proto === 6;
    out.push({ proto, sport: ports ? l4.readUInt16BE(0) : 0, dport: ports ? l4.readUInt16BE(2) : 0, payload: proto === 17 ? l4.subarray(8) : l4 });
  }
  return out;
}

describe('dual stack on the wireguard backend (Mode separate: flannel-wg and flannel-wg-v6)', { timeout: 120_000 }, () => {
  let lab6: Lab;
  const dir6 = join(scratch, 'lab6');

  before(async () => {
    requireTool('wireguard-go');
    lab6 = await Lab.up({ prefix: `wt${process.pid}x-`, name: `wt${process.pid}x`, stateDir: dir6, hosts: 2, backend: 'wireguard', ipv6: 'dual', healthzPort: 0 });
  });

  after(async () => {
    await lab6?.down();
  });

  test('containers ping each other over IPv4 and over IPv6', async () => {
    const m4 = await lab6.pingMatrix();
    assert.ok(m4.ok, JSON.stringify(m4.results.filter((r) => !r.ok)));
    const m6 = await lab6.pingMatrix({ family: 6 });
    assert.ok(m6.ok, JSON.stringify(m6.results.filter((r) => !r.ok)));
    assert.equal(m6.results.length, 2);
  });

  test('flannel-wg-v6 listens on 51821 with the same key; the lease carries BackendV6Data byte for byte as flanneld writes it', async () => {
    for (const h of lab6.hostNames()) {
      const dir = dirname(lab6.subnetFile(h));
      const pub = publicKeyOf(Buffer.from(readFileSync(join(dir, 'wgkey'), 'utf8').trim(), 'base64'));
      const st = await new UapiClient(join(dir, 'wireguard', 'flannel-wg-v6.sock')).get();
      assert.equal(st.listenPort, 51821);
      const other = lab6.hostNames().find((o) => o !== h)!;
      const otherEnv = lab6.subnetEnv(other)!;
      assert.equal(st.peers.length, 1);
      assert.equal(st.peers[0]!.endpoint, `[fd00:250::${10 + Number(other.slice(1))}]:51821`);
      assert.deepEqual(st.peers[0]!.allowedIps, [otherEnv.ipv6Subnet!.replace(/::1\//, '::/')]);
      const link = (await lab6.exec(h, ['ip', '-d', 'link', 'show', 'flannel-wg-v6'])).stdout;
      assert.match(link, /mtu 1420 /);
      assert.match((await lab6.exec(h, ['ip', '-6', 'route', 'show', 'dev', 'flannel-wg-v6'])).stdout, /^fd00:5::\/48 /m);
      const env = lab6.subnetEnv(h)!;
      const key = `${env.subnetNetwork.replace('/', '-')}&${env.ipv6Subnet!.replace(/::1\//, '::-')}`;
      const r = await lab6.etcdctl(['get', `/coreos.com/network/subnets/${key}`, '--print-value-only']);
      assert.equal(r.stdout.trim(), `{"PublicIP":"10.250.0.${10 + Number(h.slice(1))}","PublicIPv6":"fd00:250::${10 + Number(h.slice(1))}",`
        + `"BackendType":"wireguard","BackendData":{"PublicKey":"${pub}"},"BackendV6Data":{"PublicKey":"${pub}"}}`);
    }
  });
});
