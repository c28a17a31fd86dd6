/**
 * Kernel VXLAN programming against the real kernel, in network namespaces created (and deleted)
 * by this test. Two "hosts" wt<pid>-a and wt<pid>-b share an L2 through a veth pair
 * (10.250.0.1/24, 10.250.0.2/24); each runs test/e2e/helpers/vxlan-agent.js (NetlinkClient +
 * VxlanBackend + Reconciler) inside its namespace with synthetic leases:
 *   A owns 10.5.1.0/24, B owns 10.5.2.0/24, VNI 1.
 * Nothing touches the host's own interfaces or routes.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { after, before, describe, it } from 'node:test';

const PREFIX = `wt${process.pid}-`;
const NS_A = `${PREFIX}a`;
const NS_B = `${PREFIX}b`;
const NS_C = `${PREFIX}c`;
const AGENT = path.join(__dirname, 'helpers', 'vxlan-agent.js');
const HEAL_BUDGET_MS = 1000;

function run(cmd: string, args: string[], allowFail = false): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.error) throw r.error;
  if (r.status !== 0 && !allowFail) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr.trim()}`);
  return r.stdout;
}
const ip = (ns: string, ...args: string[]): string => run('ip', ['-n', ns, ...args]);
const bridgeFdb = (ns: string, dev: string): string => run('bridge', ['-n', ns, 'fdb', 'show', 'dev', dev], true);

function requirePrereqs(): void {
  const r = spawnSync('ip', ['-V'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) throw new Error('iproute2 not found: apt-get install -y iproute2');
  const b = spawnSync('bridge', ['-V'], { encoding: 'utf8' });
  if (b.error || b.status !== 0) throw new Error('iproute2 not found (no `bridge` command): apt-get install -y iproute2');
  if (process.getuid?.() !== 0) throw new Error('the vxlan e2e test needs root (network namespaces): run it with sudo');
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Poll `check` every 10 ms; the elapsed time when it first holds, or null after `limitMs`. */
async function timeUntil(check: () => boolean, limitMs = 3000): Promise<number | null> {
  const start = performance.now();
  for (;;) {
    if (check()) return performance.now() - start;
    if (performance.now() - start > limitMs) return null;
    await sleep(10);
  }
}

interface Reply {
  id: number;
  ok: boolean;
  result?: unknown;
  error?: string;
}

class Agent {
  readonly proc: ChildProcess;
  stderr = '';
  private nextId = 1;
  private readonly pending = new Map<number, (r: Reply) => void>();

  constructor(readonly ns: string) {
    this.proc = spawn('ip', ['netns', 'exec', ns, process.execPath, AGENT, 'agent'], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    readline.createInterface({ input: this.proc.stdout! }).on('line', (line) => {
      try {
        const r = JSON.parse(line) as Reply;
        this.pending.get(r.id)?.(r);
        this.pending.delete(r.id);
      } catch {
        // not a reply
      }
    });
  }

  async call<T>(cmd: string, args: Record<string, unknown> = {}, timeoutMs = 10_000): Promise<T> {
    const id = this.nextId++;
    const reply = await new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`agent in ${this.ns}: ${cmd} got no reply within ${timeoutMs} ms; stderr:\n${this.stderr.slice(-3000)}`));
      }, timeoutMs);
      this.pending.set(id, (r) => {
        clearTimeout(timer);
        resolve(r);
      });
      this.proc.stdin!.write(JSON.stringify({ id, cmd, args }) + '\n');
    });
    if (!reply.ok) throw new Error(`agent in ${this.ns}: ${cmd}: ${reply.error}`);
    return reply.result as T;
  }

  kill(): void {
    if (this.proc.pid !== undefined && this.proc.exitCode === null) {
      try {
        process.kill(this.proc.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }

  async exit(): Promise<void> {
    const done = new Promise<void>((r) => this.proc.once('exit', () => r()));
    await this.call('exit').catch(() => undefined);
    await Promise.race([done, sleep(2000)]);
    this.kill();
  }
}

interface Setup {
  backendType: string;
  backendData: { VNI: number; VtepMAC: string };
  mtu: number;
}
interface InitResult {
  setup: Setup;
  underlay: { ifName: string; ifIndex: number; ipv4: string; mtu: number };
}
interface Repairs {
  repairs: Record<string, number>;
  converged: boolean;
}

describe('vxlan backend on the real kernel (network namespaces)', { timeout: 120_000 }, () => {
  const agents: Agent[] = [];
  let a: Agent;
  let b: Agent;
  let macA = '';
  let macB = '';

  const startAgent = (ns: string): Agent => {
    const ag = new Agent(ns);
    agents.push(ag);
    return ag;
  };
  const peerOfB = (): Record<string, unknown> => ({ subnet: '10.5.2.0/24', publicIp: '10.250.0.2', mac: macB });
  const peerOfA = (): Record<string, unknown> => ({ subnet: '10.5.1.0/24', publicIp: '10.250.0.1', mac: macA });
  const routeToB = (): string => ip(NS_A, 'route', 'show', '10.5.2.0/24');
  const neighB = (): string => ip(NS_A, 'neigh', 'show', 'dev', 'flannel.1');
  const hasAllForB = (): boolean =>
    /10\.5\.2\.0\/24 via 10\.5\.2\.0 dev flannel\.1 onlink/.test(routeToB()) &&
    neighB().includes(`10.5.2.0 lladdr ${macB} PERMANENT`) &&
    bridgeFdb(NS_A, 'flannel.1').includes(`${macB} dst 10.250.0.2 self permanent`) &&
    ip(NS_A, '-4', 'addr', 'show', 'dev', 'flannel.1').includes('inet 10.5.1.0/32');

  before(async () => {
    requirePrereqs();
    for (const ns of [NS_A, NS_B]) {
      run('ip', ['netns', 'add', ns]);
      ip(ns, 'link', 'set', 'lo', 'up');
    }
    ip(NS_A, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NS_B);
    ip(NS_A, 'addr', 'add', '10.250.0.1/24', 'dev', 'eth0');
    ip(NS_B, 'addr', 'add', '10.250.0.2/24', 'dev', 'eth0');
    ip(NS_A, 'link', 'set', 'eth0', 'up');
    ip(NS_B, 'link', 'set', 'eth0', 'up');
    a = startAgent(NS_A);
    b = startAgent(NS_B);
  });

  after(async () => {
    for (const ag of agents) ag.kill();
    await sleep(50);
    for (const ns of [NS_A, NS_B, NS_C]) spawnSync('ip', ['netns', 'del', ns]);
    const left = run('ip', ['netns', 'list'], true).split('\n').filter((l) => l.startsWith(PREFIX));
    assert.deepEqual(left, [], 'namespaces left behind');
  });

  it('creates flannel.1 as flannel does: VNI 1, dstport 8472, nolearning, local = underlay IP, MTU underlay - 50, up', async () => {
    const ra = await a.call<InitResult>('init', { iface: 'eth0', vni: 1, ownSubnet: '10.5.1.0/24', resyncIntervalMs: 2000 });
    const rb = await b.call<InitResult>('init', { iface: 'eth0', vni: 1, ownSubnet: '10.5.2.0/24', resyncIntervalMs: 2000 });
    macA = ra.setup.backendData.VtepMAC;
    macB = rb.setup.backendData.VtepMAC;
    assert.equal(ra.setup.backendType, 'vxlan');
    assert.equal(ra.setup.backendData.VNI, 1);
    assert.equal(ra.setup.mtu, 1450);
    assert.equal(ra.underlay.ipv4, '10.250.0.1');
    assert.match(macA, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
    assert.equal(parseInt(macA.slice(0, 2), 16) & 0x03, 0x02, 'locally administered unicast');
    assert.notEqual(macA, macB);
    const link = ip(NS_A, '-d', 'link', 'show', 'flannel.1');
    assert.match(link, /mtu 1450 /);
    assert.match(link, /state UNKNOWN|,UP/);
    assert.match(link, /vxlan id 1 local 10\.250\.0\.1 dev eth0 /);
    assert.match(link, /dstport 8472 /);
    assert.match(link, /nolearning/);
    assert.ok(link.includes(`link/ether ${macA} `), link);
  });

  it('programs address, neighbour, FDB entry and onlink route for a peer', async () => {
    await a.call('peers', { peers: [peerOfA(), peerOfB()] }); // its own lease in the list is ignored
    await b.call('peers', { peers: [peerOfA()] });
    assert.ok(hasAllForB(), `A is missing state for B:\n${routeToB()}\n${neighB()}\n${bridgeFdb(NS_A, 'flannel.1')}`);
    assert.match(ip(NS_B, 'route', 'show', '10.5.1.0/24'), /10\.5\.1\.0\/24 via 10\.5\.1\.0 dev flannel\.1 onlink/);
    // The kernel's own FDB view: exactly one entry for the peer, nothing else.
    assert.equal(bridgeFdb(NS_A, 'flannel.1').trim(), `${macB} dst 10.250.0.2 self permanent`);
  });

  it('carries TCP traffic between the hosts overlay addresses', async () => {
    await b.call('listen', { host: '10.5.2.0', port: 7777 });
    const r = await a.call<{ reply: string; local: string }>('connect', { host: '10.5.2.0', port: 7777 });
    assert.equal(r.reply, 'pong:ping');
    assert.equal(r.local, '10.5.1.0', 'the source is our overlay address');
  });

  it('restores a route deleted by hand within 1 s', async (t) => {
    ip(NS_A, 'route', 'del', '10.5.2.0/24');
    const ms = await timeUntil(() => /via 10\.5\.2\.0 dev flannel\.1 onlink/.test(routeToB()));
    assert.ok(ms !== null && ms < HEAL_BUDGET_MS, `route restored after ${ms?.toFixed(0) ?? 'never'} ms`);
    t.diagnostic(`route restored after ${ms.toFixed(0)} ms`);
  });

  it('restores a neighbour deleted by hand within 1 s', async (t) => {
    ip(NS_A, 'neigh', 'del', '10.5.2.0', 'dev', 'flannel.1');
    const ms = await timeUntil(() => neighB().includes(`10.5.2.0 lladdr ${macB} PERMANENT`));
    assert.ok(ms !== null && ms < HEAL_BUDGET_MS, `neighbour restored after ${ms?.toFixed(0) ?? 'never'} ms`);
    t.diagnostic(`neighbour restored after ${ms.toFixed(0)} ms`);
  });

  it('restores an FDB entry deleted by hand within 1 s and prunes one added by hand', async (t) => {
    run('bridge', ['-n', NS_A, 'fdb', 'del', macB, 'dev', 'flannel.1', 'dst', '10.250.0.2', 'self']);
    const ms = await timeUntil(() => bridgeFdb(NS_A, 'flannel.1').includes(`${macB} dst 10.250.0.2 self permanent`));
    assert.ok(ms !== null && ms < HEAL_BUDGET_MS, `FDB entry restored after ${ms?.toFixed(0) ?? 'never'} ms`);
    t.diagnostic(`FDB entry restored after ${ms.toFixed(0)} ms`);
    // A stale VtepMAC (a peer's previous one) is removed, as flannel never does.
    run('bridge', ['-n', NS_A, 'fdb', 'append', '02:00:00:00:00:99', 'dev', 'flannel.1', 'dst', '10.250.0.9', 'self', 'permanent']);
    const gone = await timeUntil(() => !bridgeFdb(NS_A, 'flannel.1').includes('02:00:00:00:00:99'));
    assert.ok(gone !== null && gone < HEAL_BUDGET_MS, `stale FDB entry pruned after ${gone?.toFixed(0) ?? 'never'} ms`);
  });

  it('recreates a deleted device with the same MAC and everything on it within 1 s', async (t) => {
    ip(NS_A, 'link', 'del', 'flannel.1');
    const ms = await timeUntil(() => {
      const link = ip(NS_A, 'link', 'show').includes('flannel.1');
      return link && hasAllForB();
    });
    assert.ok(ms !== null && ms < HEAL_BUDGET_MS, `device and its state restored after ${ms?.toFixed(0) ?? 'never'} ms`);
    t.diagnostic(`device and its state restored after ${ms.toFixed(0)} ms`);
    assert.ok(ip(NS_A, 'link', 'show', 'flannel.1').includes(`link/ether ${macA} `), 'VtepMAC kept');
    const r = await a.call<{ reply: string }>('connect', { host: '10.5.2.0', port: 7777 });
    assert.equal(r.reply, 'pong:ping');
    const stats = await a.call<Repairs>('stats');
    assert.ok(stats.repairs.route! >= 1 && stats.repairs.neighbour! >= 1 && stats.repairs.fdb! >= 1 && stats.repairs.device! >= 1, JSON.stringify(stats));
  });

  it('brings a device set down by hand back up', async (t) => {
    ip(NS_A, 'link', 'set', 'flannel.1', 'down');
    const ms = await timeUntil(() => /<[^>]*\bUP\b/.test(ip(NS_A, 'link', 'show', 'flannel.1')) && hasAllForB());
    assert.ok(ms !== null && ms < HEAL_BUDGET_MS, `device up again after ${ms?.toFixed(0) ?? 'never'} ms`);
    t.diagnostic(`device up again after ${ms.toFixed(0)} ms`);
  });

  it('puts back a VtepMAC or MTU changed by hand within 1 s', async (t) => {
    ip(NS_A, 'link', 'set', 'flannel.1', 'address', '02:11:22:33:44:55', 'mtu', '1300');
    const ms = await timeUntil(() => {
      const link = ip(NS_A, 'link', 'show', 'flannel.1');
      return link.includes(`link/ether ${macA} `) && link.includes('mtu 1450 ');
    });
    assert.ok(ms !== null && ms < HEAL_BUDGET_MS, `MAC and MTU restored after ${ms?.toFixed(0) ?? 'never'} ms`);
    t.diagnostic(`MAC and MTU restored after ${ms.toFixed(0)} ms`);
    assert.ok(hasAllForB());
  });

  it('keeps the MAC of an existing device: ensureDevice again, and after a restart', async () => {
    const again = await a.call<Setup>('ensureDevice');
    assert.equal(again.backendData.VtepMAC, macA);
    await a.exit();
    a = startAgent(NS_A);
    const r = await a.call<InitResult>('init', { iface: 'eth0', vni: 1, ownSubnet: '10.5.1.0/24', resyncIntervalMs: 2000 });
    assert.equal(r.setup.backendData.VtepMAC, macA);
    assert.ok(hasAllForB(), 'state survived the restart untouched');
    const res = await a.call<{ result: { changes: number } }>('peers', { peers: [peerOfB()] });
    assert.equal(res.result.changes, 0, 'nothing to do after a restart');
  });

  it('removes neighbour, FDB entry and route when the peer goes, and leaves foreign state alone', async () => {
    // Foreign state: a route into another range via the underlay, a neighbour on the underlay.
    ip(NS_A, 'route', 'add', '10.99.0.0/24', 'via', '10.250.0.2', 'dev', 'eth0');
    ip(NS_A, 'neigh', 'replace', '10.250.0.77', 'lladdr', '02:00:00:00:00:77', 'dev', 'eth0', 'nud', 'permanent');
    await a.call('peers', { peers: [] });
    assert.equal(routeToB().trim(), '');
    assert.ok(!neighB().includes('10.5.2.0'), neighB());
    assert.equal(bridgeFdb(NS_A, 'flannel.1').trim(), '');
    assert.ok(ip(NS_A, '-4', 'addr', 'show', 'dev', 'flannel.1').includes('inet 10.5.1.0/32'), 'own address stays');
    assert.match(ip(NS_A, 'route', 'show', '10.99.0.0/24'), /via 10\.250\.0\.2 dev eth0/);
    assert.match(ip(NS_A, 'neigh', 'show', 'dev', 'eth0'), /10\.250\.0\.77 lladdr 02:00:00:00:00:77 PERMANENT/);
    // ...and the removal is not undone by the next resync.
    await a.call('reconcile');
    assert.equal(routeToB().trim(), '');
  });

  it('uses a direct route over the underlay with DirectRouting when the peer is on our L2', async (t) => {
    await a.exit();
    a = startAgent(NS_A);
    await a.call('init', { iface: 'eth0', vni: 1, ownSubnet: '10.5.1.0/24', directRouting: true, network: '10.5.0.0/16' });
    const r = await a.call<{ onLink: string[] }>('peers', { peers: [peerOfB()] });
    assert.deepEqual(r.onLink, ['10.250.0.2']);
    assert.match(routeToB(), /10\.5\.2\.0\/24 via 10\.250\.0\.2 dev eth0/);
    assert.equal(bridgeFdb(NS_A, 'flannel.1').trim(), '', 'no FDB entry for a direct peer');
    const c = await a.call<{ reply: string }>('connect', { host: '10.5.2.0', port: 7777 });
    assert.equal(c.reply, 'pong:ping');
    // Deleting the direct route is healed too (underlay routes into the Network are ours).
    ip(NS_A, 'route', 'del', '10.5.2.0/24');
    const ms = await timeUntil(() => /via 10\.250\.0\.2 dev eth0/.test(routeToB()));
    assert.ok(ms !== null && ms < HEAL_BUDGET_MS, `direct route restored after ${ms?.toFixed(0) ?? 'never'} ms`);
    t.diagnostic(`direct route restored after ${ms.toFixed(0)} ms`);
    // The foreign route outside the Network is still untouched.
    assert.match(ip(NS_A, 'route', 'show', '10.99.0.0/24'), /via 10\.250\.0\.2 dev eth0/);
  });

  it('replaces an incompatible flannel.1 and says why', async () => {
    run('ip', ['netns', 'add', NS_C]);
    ip(NS_C, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth1');
    ip(NS_C, 'addr', 'add', '10.251.0.1/24', 'dev', 'eth0');
    ip(NS_C, 'link', 'set', 'eth0', 'up');
    ip(NS_C, 'link', 'add', 'flannel.1', 'type', 'vxlan', 'id', '7', 'dstport', '4789', 'dev', 'eth0', 'local', '10.251.0.1');
    const c = startAgent(NS_C);
    await c.call('init', { iface: 'eth0', vni: 1, ownSubnet: '10.5.3.0/24' });
    const link = ip(NS_C, '-d', 'link', 'show', 'flannel.1');
    assert.match(link, /vxlan id 1 local 10\.251\.0\.1 dev eth0 .*dstport 8472/);
    assert.match(c.stderr, /incompatible configuration \(VNI 7, want 1; dstport 4789, want 8472; learning, want nolearning\)/);
    await c.exit();
  });
});
