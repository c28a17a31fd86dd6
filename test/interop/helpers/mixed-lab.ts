/**
 * Mixed clusters for the interop suite (`npm run test:interop`): a lab (src/lab) whose hosts run
 * either a real flanneld v0.20.2 or weftd, on one real etcd, the real kernel and lab namespaces.
 *
 * flanneld's path comes from WEFT_FLANNELD. Without it (or when it does not run) every test
 * FAILS with the recipe to build it: this suite exists to test against the real thing, so a
 * missing flanneld is an error, never a skip.
 */
import assert from 'node:assert/strict';
import { accessSync, constants, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before } from 'node:test';
import { Lab, type LabOptions } from '../../../src/lab';
import { sleep } from '../../../src/lab/run';
import { sh, waitUntil } from '../../e2e/helpers/shell';

export const FLANNELD_RECIPE = [
  'set WEFT_FLANNELD to a flanneld v0.20.2 binary, built from flannel\'s source:',
  '  apt-get install -y golang-go git gcc   # Go >= 1.19 (Debian 12); gcc: cgo builds its udp backend',
  '  git clone --branch v0.20.2 --depth 1 https://github.com/flannel-io/flannel /tmp/flannel',
  '  cd /tmp/flannel && GOFLAGS=-mod=vendor go build -o flanneld .',
  '  WEFT_FLANNELD=/tmp/flannel/flanneld npm run test:interop',
].join('\n');

/** The flanneld binary to test against; fails the test (with the recipe) when there is none. */
export function requireFlanneld(): string {
  const path = process.env.WEFT_FLANNELD;
  if (path === undefined || path === '') assert.fail(`WEFT_FLANNELD is not set.\n${FLANNELD_RECIPE}`);
  try {
    accessSync(path, constants.X_OK);
  } catch (e) {
    assert.fail(`WEFT_FLANNELD=${path} is not an executable file (${(e as Error).message}).\n${FLANNELD_RECIPE}`);
  }
  try {
    execFileSync(path, ['--version'], { stdio: 'pipe', timeout: 10_000 });
  } catch (e) {
    assert.fail(`WEFT_FLANNELD=${path} does not run (${(e as Error).message}).\n${FLANNELD_RECIPE}`);
  }
  try {
    execFileSync('sh', ['-c', 'command -v etcd && command -v etcdctl'], { stdio: 'ignore' });
  } catch {
    assert.fail('etcd/etcdctl are not installed: apt-get install -y etcd-server etcd-client');
  }
  return resolve(path);
}

export type DaemonKind = 'flanneld' | 'weftd';

/** After a flanneld writes subnet.env: until its lease watch is open (see MixedLab.up). */
const FLANNELD_SETTLE_MS = 1500;

export interface MixedLabOptions {
  /** One letter per test file: namespaces helperE2-<pid><id>-…, lab name helperE2-<pid><id>. */
  readonly id: string;
  /** What runs on h1, h2, … in order. */
  readonly kinds: readonly DaemonKind[];
  readonly backend?: string;
  readonly ipv6?: 'dual' | 'only';
  readonly networkConfig?: LabOptions['networkConfig'];
  /** The lab's "internet" namespace (LabOptions.internet: INTERNET_IP, the hosts' default gateway). */
  readonly internet?: boolean;
  /** Flags both kinds get on every start (flannel's names, e.g. --ip-masq). */
  readonly daemonArgs?: readonly string[];
  /**
   * Wait for the lab's convergence (every host programs every other, both ways: Lab.waitConverged);
   * default true. false where flanneld cannot by design (IPv6-only: it programs no peer at all);
   * the test checks what can hold instead.
   */
  readonly converge?: boolean;
}

/**
 * Registers the suite's before/after around one MixedLab and returns its getter. A lab that could
 * not be built (no flanneld: the recipe) fails EVERY test with that error, not only the hook.
 */
export function useMixedLab(opts: MixedLabOptions): () => MixedLab {
  let lab: MixedLab | undefined;
  let failure: unknown;
  before(async () => {
    try {
      lab = await MixedLab.up(opts);
    } catch (e) {
      failure = e;
    }
  });
  after(async () => {
    await lab?.down();
  });
  return () => {
    if (failure !== undefined) throw failure;
    assert.ok(lab, 'the mixed lab was not built');
    return lab;
  };
}

export interface PingFlow {
  readonly name: string;
  readonly sent: number;
  readonly received: number;
  readonly out: string;
}

/** A lab whose hosts run flanneld or weftd, and which remembers which runs where. */
export class MixedLab {
  private readonly kinds = new Map<string, DaemonKind>();

  private constructor(readonly lab: Lab, readonly flanneld: string, private readonly scratch: string, private readonly daemonArgs: readonly string[]) {}

  static async up(opts: MixedLabOptions): Promise<MixedLab> {
    const flanneld = requireFlanneld();
    const scratch = mkdtempSync(join(tmpdir(), `helperE2-${process.pid}${opts.id}-`));
    const name = `helperE2-${process.pid}${opts.id}`;
    let lab: Lab;
    try {
      lab = await Lab.up({
        name, prefix: `${name}-`, stateDir: join(scratch, 'lab'), hosts: opts.kinds.length, startDaemons: false, healthzPort: 0,
        ...(opts.backend ? { backend: opts.backend } : {}), ...(opts.ipv6 ? { ipv6: opts.ipv6 } : {}),
        ...(opts.networkConfig ? { networkConfig: opts.networkConfig } : {}), internet: opts.internet ?? false,
      });
    } catch (e) {
      rmSync(scratch, { recursive: true, force: true });
      throw e;
    }
    const m = new MixedLab(lab, flanneld, scratch, opts.daemonArgs ?? []);
    try {
      // weftd hosts first, then each flanneld with a pause: flanneld v0.20.2's etcd watch takes
      // only the first event of each watch response and re-opens the next watch at the current
      // revision, so a lease put while it settles in (another host starting right after it) is
      // missed until it restarts (docs/flannel-compat.md). A flanneld lists every lease at
      // start, so the hosts before it are safe; the pause is for the ones after.
      const order = [...opts.kinds.entries()].sort(([, a], [, b]) => (a === b ? 0 : a === 'weftd' ? -1 : 1));
      for (const [i, kind] of order) {
        await m.start(`h${i + 1}`, kind);
        if (kind === 'flanneld') await sleep(FLANNELD_SETTLE_MS);
      }
      for (const h of lab.hostNames()) await lab.setupContainer(h);
      if (opts.converge !== false && !(await lab.waitConverged(30_000))) assert.fail(`routes did not converge (${m.describe()}):\n${await m.diagnostics()}`);
      return m;
    } catch (e) {
      await m.down().catch(() => undefined);
      throw e;
    }
  }

  /** Start `kind` on `host` and wait until it has (re)written subnet.env. */
  async start(host: string, kind: DaemonKind): Promise<number> {
    const extraArgs = [...this.daemonArgs];
    const pid = await this.lab.startDaemon(host, kind === 'flanneld' ? { flanneldPath: this.flanneld, extraArgs } : { extraArgs });
    this.kinds.set(host, kind);
    return pid;
  }

  async stop(host: string, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    await this.lab.stopDaemon(host, signal);
  }

  kindOf(host: string): DaemonKind {
    const k = this.kinds.get(host);
    assert.ok(k, `nothing was started on ${host}`);
    return k;
  }

  /** "h1 flanneld, h2 weftd, …" for assertion messages. */
  describe(): string {
    return [...this.kinds].map(([h, k]) => `${h} ${k}`).join(', ');
  }

  /** Each host's routes (both families) and its daemon's warnings and errors: what a failure message needs. */
  async diagnostics(): Promise<string> {
    const out: string[] = [];
    for (const h of this.hosts()) {
      const r4 = (await this.lab.exec(h, ['ip', 'route'])).stdout.trim();
      const r6 = (await this.lab.exec(h, ['ip', '-6', 'route', 'show', 'proto', 'boot'])).stdout.trim();
      const log = this.lab.daemonLog(h).split('\n').filter((l) => /^[EW]\d{4}|"level":"(warn|error)"/.test(l)).slice(-8);
      out.push(`${h} (${this.kinds.get(h) ?? '-'}): subnet.env ${JSON.stringify(this.lab.subnetEnv(h)?.vars ?? null)}\n  ip route:\n    ${r4.replace(/\n/g, '\n    ')}\n  ip -6 route (proto boot):\n    ${r6.replace(/\n/g, '\n    ')}\n  log:\n    ${log.join('\n    ')}`);
    }
    return out.join('\n');
  }

  hosts(): string[] {
    return this.lab.hostNames();
  }

  async down(): Promise<void> {
    try {
      await this.lab.down();
    } finally {
      rmSync(this.scratch, { recursive: true, force: true });
    }
  }

  // ---- what each host has -------------------------------------------------------------------

  subnetOf(host: string): string {
    const env = this.lab.subnetEnv(host);
    assert.ok(env, `no subnet.env on ${host} (${this.kindOf(host)})`);
    return env.subnetNetwork;
  }

  ipv6SubnetOf(host: string): string {
    const env = this.lab.subnetEnv(host);
    assert.ok(env?.ipv6Subnet, `no FLANNEL_IPV6_SUBNET on ${host} (${this.kindOf(host)})`);
    return networkOf6(env.ipv6Subnet);
  }

  subnetFileText(host: string): string {
    return readFileSync(this.lab.subnetFile(host), 'utf8');
  }

  publicIpOf(host: string): string {
    return `10.250.0.${10 + Number(host.slice(1))}`;
  }

  publicIpv6Of(host: string): string {
    return `fd00:250::${10 + Number(host.slice(1))}`;
  }

  /** Every subnet key and its value under /coreos.com/network/subnets/. */
  async leaseValues(): Promise<Map<string, string>> {
    const r = await this.lab.etcdctl(['get', '--prefix', '/coreos.com/network/subnets/']);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.split('\n').filter((l) => l !== '');
    const out = new Map<string, string>();
    for (let i = 0; i + 1 < lines.length; i += 2) out.set(lines[i]!.replace('/coreos.com/network/subnets/', ''), lines[i + 1]!);
    return out;
  }

  /** The lease value of `host`'s subnet (its key in etcd: the subnet with '-' for '/'). */
  async leaseOf(host: string): Promise<string> {
    const prefix = this.subnetOf(host).replace('/', '-');
    const values = await this.leaseValues();
    const key = [...values.keys()].find((k) => isKeyOf(k, prefix));
    assert.ok(key, `no lease ${prefix} in etcd (${[...values.keys()].join(', ')}); ${this.describe()}`);
    return values.get(key)!;
  }

  async vtepMacOf(host: string, field: 'BackendData' | 'BackendV6Data' = 'BackendData'): Promise<string> {
    const lease = JSON.parse(await this.leaseOf(host)) as Record<string, { VtepMAC?: string } | undefined>;
    const mac = lease[field]?.VtepMAC;
    assert.ok(mac, `${host}'s lease has no ${field}.VtepMAC`);
    return mac;
  }

  async deleteLease(host: string): Promise<void> {
    const prefix = this.subnetOf(host).replace('/', '-');
    const key = [...(await this.leaseValues()).keys()].find((k) => isKeyOf(k, prefix));
    assert.ok(key, `no lease for ${host}`);
    const r = await this.lab.etcdctl(['del', `/coreos.com/network/subnets/${key}`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^1\s*$/, `deleted ${key}`);
  }

  // ---- kernel state -------------------------------------------------------------------------

  async routeTo(host: string, subnet: string): Promise<string> {
    const fam = subnet.includes(':') ? ['-6'] : [];
    return (await sh(this.lab, host, 'ip', ...fam, 'route', 'show', 'exact', subnet)).trim().replace(/\s+/g, ' ');
  }

  async neighbour(host: string, ip: string, dev: string): Promise<string> {
    const fam = ip.includes(':') ? ['-6'] : [];
    return (await sh(this.lab, host, 'ip', ...fam, 'neigh', 'show', ip, 'dev', dev)).trim();
  }

  async fdb(host: string, dev: string): Promise<string> {
    return sh(this.lab, host, 'bridge', 'fdb', 'show', 'dev', dev);
  }

  /**
   * flannel's vxlan footprint for `peer` on `host`, from the peer's lease in etcd:
   * `<subnet> via <subnet>.0 dev flannel.1 onlink`, permanent neighbour <subnet>.0 → VtepMAC,
   * FDB VtepMAC → PublicIP `self permanent`; with family 6 the same on flannel-v6.1 from
   * BackendV6Data and PublicIPv6 (route at metric 1024). Returns what is wrong ('' when all is right).
   */
  async vxlanPeerProblems(host: string, peer: string, family: 4 | 6 = 4): Promise<string> {
    const v6 = family === 6;
    const subnet = v6 ? this.ipv6SubnetOf(peer) : this.subnetOf(peer);
    const gw = subnet.split('/')[0]!;
    const dev = v6 ? 'flannel-v6.1' : 'flannel.1';
    const mac = await this.vtepMacOf(peer, v6 ? 'BackendV6Data' : 'BackendData');
    const wrong: string[] = [];
    const route = await this.routeTo(host, subnet);
    const want = v6 ? `${subnet} via ${gw} dev ${dev} metric 1024 onlink pref medium` : `${subnet} via ${gw} dev ${dev} onlink`;
    if (route !== want) wrong.push(`route "${route}", want "${want}"`);
    const neigh = await this.neighbour(host, gw, dev);
    if (neigh !== `${gw} lladdr ${mac} PERMANENT`) wrong.push(`neighbour "${neigh}"`);
    const fdb = await this.fdb(host, dev);
    const pub = v6 ? this.publicIpv6Of(peer) : this.publicIpOf(peer);
    if (!fdb.split('\n').includes(`${mac} dst ${pub} self permanent`)) wrong.push(`fdb "${fdb.trim()}"`);
    return wrong.length === 0 ? '' : `${host} (${this.kindOf(host)}) → ${peer} (${this.kindOf(peer)}) ${subnet} ${mac}: ${wrong.join('; ')}`;
  }

  /**
   * flannel's host-gw route for `peer` on `host`: `<subnet> via <PublicIP> dev eth0` (no onlink,
   * no metric); with family 6 `<IPv6 subnet> via <PublicIPv6> dev eth0` at the kernel's default
   * IPv6 metric 1024. '' when right.
   */
  async hostgwPeerProblems(host: string, peer: string, family: 4 | 6 = 4): Promise<string> {
    const subnet = family === 6 ? this.ipv6SubnetOf(peer) : this.subnetOf(peer);
    const want = family === 6 ? `${subnet} via ${this.publicIpv6Of(peer)} dev eth0 metric 1024 pref medium` : `${subnet} via ${this.publicIpOf(peer)} dev eth0`;
    const route = await this.routeTo(host, subnet);
    return route === want ? '' : `${host} (${this.kindOf(host)}) → ${peer} (${this.kindOf(peer)}): route "${route}", want "${want}"`;
  }

  /** Nothing left on `host` for a departed peer: no route, neighbour or FDB entry. */
  async vxlanLeftovers(host: string, subnet: string, gw: string, mac: string): Promise<string> {
    const left: string[] = [];
    const route = await this.routeTo(host, subnet);
    if (route !== '') left.push(`route "${route}"`);
    const neigh = await this.neighbour(host, gw, 'flannel.1');
    if (neigh !== '') left.push(`neighbour "${neigh}"`);
    const fdb = (await this.fdb(host, 'flannel.1')).split('\n').filter((l) => l.startsWith(mac));
    if (fdb.length > 0) left.push(`fdb "${fdb.join(' | ')}"`);
    return left.join('; ');
  }

  /** Wait until `check()` returns '' (no problems); fail with its last answer. */
  async settle(what: string, check: () => Promise<string>, timeoutMs = 15_000): Promise<void> {
    let last = '';
    let broke: unknown;
    const ok = await waitUntil(async () => {
      try {
        return (last = await check()) === '';
      } catch (e) {
        broke = e; // the check itself failed (an assertion inside it): stop waiting, report that
        return true;
      }
    }, timeoutMs, what, 200).then(() => true, () => false);
    if (broke !== undefined) throw broke;
    if (!ok) assert.fail(`${what} after ${timeoutMs} ms: ${last}\n(${this.describe()})`);
  }

  /** Every container pings every other container (family 6: their IPv6 addresses); fails naming the broken pairs. */
  async assertPingMatrix(family: 4 | 6 = 4, attempts = 5): Promise<number> {
    const m = await this.lab.pingMatrix({ family, attempts });
    const bad = m.results.filter((r) => !r.ok).map((r) => `${r.from} (${this.kindOf(r.from.replace(/-c1$/, ''))}) → ${r.to} (${this.kindOf(r.to.replace(/-c1$/, ''))}) ${r.target}`);
    if (bad.length > 0) assert.fail(`IPv${family} ping matrix: ${bad.length} of ${m.results.length} pairs failed: ${bad.join(', ')}\n${await this.diagnostics()}`);
    return m.results.length;
  }

  /**
   * Pings `count` packets every `intervalMs` from container `from` to `to`'s container, in the
   * background; resolves to how many were sent and answered.
   */
  pingRun(from: string, to: string, count: number, intervalMs = 100): Promise<{ sent: number; received: number; out: string }> {
    return this.lab.exec(`${from}-c1`, ['ping', '-n', '-q', '-i', String(intervalMs / 1000), '-c', String(count), '-W', '1', this.containerIp(to)],
      { timeoutMs: count * intervalMs + 30_000 }).then((r) => {
      const m = /(\d+) packets transmitted, (\d+) received/.exec(r.stdout);
      assert.ok(m, `ping ${from} → ${to}: ${r.stdout}${r.stderr}`);
      return { sent: Number(m[1]), received: Number(m[2]), out: r.stdout.trim() };
    });
  }

  /**
   * Stop the daemon on `host` (SIGTERM) and start `to` there, while pings run across it: from
   * every other host's container to `host`'s, and from `host`'s to the first other host's.
   * Returns each flow's count (none asserted here), how long stop + start took (until the new
   * daemon wrote subnet.env) and when the stop began (epoch ms).
   */
  async replaceWhilePinging(host: string, to: DaemonKind, packets = 80): Promise<{ flows: PingFlow[]; swapMs: number; stoppedAt: number }> {
    const from = this.kindOf(host);
    const others = this.hosts().filter((h) => h !== host);
    const runs = [
      ...others.map((o) => ({ name: `${o}-c1 (${this.kindOf(o)}) → ${host}-c1`, run: this.pingRun(o, host, packets) })),
      { name: `${host}-c1 → ${others[0]}-c1 (${this.kindOf(others[0]!)})`, run: this.pingRun(host, others[0]!, packets) },
    ];
    await sleep(1000);
    const t0 = Date.now();
    await this.stop(host);
    await this.start(host, to);
    const swapMs = Date.now() - t0;
    const flows = await Promise.all(runs.map(async (r) => ({ name: r.name, ...(await r.run) })));
    // The figures docs/flannel-compat.md quotes, with the load they were taken under.
    process.stdout.write(`# replace ${this.lab.name} ${host} ${from} → ${to}: stop + start ${swapMs} ms; ` +
      `${flows.map((f) => `${f.name} ${f.sent - f.received}/${f.sent} lost`).join(', ')} (load ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')})\n`);
    return { flows, swapMs, stoppedAt: t0 };
  }

  containerIp(host: string): string {
    const env = this.lab.subnetEnv(host);
    assert.ok(env, `no subnet.env on ${host}`);
    return env.containerAddress.split('/')[0]!;
  }
}

/** Whether etcd key `key` is the lease of subnet `prefix` (10.5.3.0-24 or, IPv6-only, fd00:5:0:3::-64): alone or one half of a dual key. */
function isKeyOf(key: string, prefix: string): boolean {
  return key === prefix || key.startsWith(`${prefix}&`) || key.endsWith(`&${prefix}`);
}

/** fd00:5:0:7::1/64 → fd00:5:0:7::/64 (only for the lab's /64s: the host part is the last group). */
function networkOf6(cidr: string): string {
  const [addr, len] = cidr.split('/');
  assert.equal(len, '64', `IPv6 subnet ${cidr}: the lab uses /64`);
  return `${addr!.replace(/::1$/, '::')}/64`;
}
