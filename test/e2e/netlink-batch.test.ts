/**
 * Batched netlink writes (NetlinkClient.applyWrites) against the real kernel, in a network
 * namespace of this test's own (hB<pid>-batch, deleted afterwards): 1000 neighbours, 1000 FDB
 * entries and 1000 routes on a real VXLAN device, each phase one applyWrites call (several
 * datagrams: more requests than one datagram carries), checked with `ip route`, `ip neigh` and
 * `bridge fdb`. A route that someone else already holds, in the middle of the batch, fails alone
 * (EEXIST, NLM_F_EXCL) and stays as it was; deleting what is gone fails alone with ENOENT/ESRCH.
 * Only the last request of a datagram asks for an ACK (the kernel answers errors anyway): the
 * answers received are counted, one per datagram plus one per failed request. A datagram of five
 * mixed writes on a second device, whose 2nd and 4th fail, shows the failures stay alone.
 *
 * NetlinkClient talks to the namespace of its process, so the writes run in a child process
 * started with `ip netns exec`: this same file, with HB_BATCH_CHILD set, which prints one JSON
 * report.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { formatIPv4, parseIPv4 } from '../../src/ip';
import { isGone, NetlinkClient } from '../../src/netlink';
import { defaultRawSocketFactory, type RawSocket } from '../../src/netlink/batch';
import type { ChangeEvent, KernelWrite, RouteSpec } from '../../src/netlink/types';

const NS = `hB${process.pid}-batch`;
const DEV = 'vx0';
/** The device of the mixed datagram (its objects do not change vx0's counts). */
const DEV2 = 'vx1';
const PEERS = 1000;
/** The index of the peer whose route someone else (`ip route add`) holds before the batch. */
const TAKEN = 500;

const subnet = (i: number): string => formatIPv4(parseIPv4('10.64.0.0')! + i * 256);
const peerMac = (i: number): string => `02:00:00:00:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;
const vtep = (i: number): string => formatIPv4(parseIPv4('10.250.0.0')! + 2 + i);

interface PhaseReport {
  readonly ms: number;
  readonly cpuMs: number;
  /** index → error message, for the writes that failed. */
  readonly failed: Record<string, string>;
  readonly gone: number[];
  /** Datagrams the batch socket sent, and answers (NLMSG_ERROR messages: ACKs and errors) it received. */
  readonly sent: number;
  readonly answers: number;
}

interface ChildReport {
  readonly neighbours: PhaseReport;
  readonly fdb: PhaseReport;
  readonly routes: PhaseReport;
  readonly deletes: PhaseReport;
  readonly mixed: PhaseReport;
  /** Notifications the monitor decoded (after dropping our own echoes and off-device objects), by kind. */
  readonly decoded: Record<string, number>;
  /** The same, for the changes another process made afterwards. */
  readonly decodedOthers: Record<string, number>;
}

async function child(): Promise<void> {
  // The real batch socket, counting what crosses it.
  const counts = { sent: 0, answers: 0 };
  const countingFactory = (): RawSocket => {
    const sock = defaultRawSocketFactory();
    const send = sock.send.bind(sock);
    sock.send = (msg, options, callback) => {
      counts.sent++;
      send(msg, options, callback);
    };
    sock.on('message', (msg: Buffer) => {
      for (let off = 0; off + 16 <= msg.length; off += (msg.readUInt32LE(off) + 3) & ~3) {
        if (msg.readUInt16LE(off + 4) === 2) counts.answers++;
        if (msg.readUInt32LE(off) < 16) break;
      }
    });
    return sock;
  };
  const nl = new NetlinkClient(undefined, { rawSocketFactory: countingFactory });
  const link = await nl.getLink(DEV);
  if (!link) throw new Error(`${DEV} missing in the namespace`);
  const link2 = await nl.getLink(DEV2);
  if (!link2) throw new Error(`${DEV2} missing in the namespace`);
  const decoded: Record<string, number> = {};
  const m = nl.monitor(
    (b) => {
      for (const e of b.events as readonly ChangeEvent[]) decoded[e.kind] = (decoded[e.kind] ?? 0) + 1;
    },
    4,
    { table: 254, ifindexes: () => new Set([link.index]) },
  );
  const dev = { index: link.index, name: link.name };
  const route = (i: number): RouteSpec => ({ dst: { ip: parseIPv4(subnet(i))!, prefixLen: 24 }, gateway: subnet(i), oif: link.index, onlink: true });
  const phase = async (writes: KernelWrite[]): Promise<PhaseReport> => {
    const cpu = process.cpuUsage();
    const t0 = performance.now();
    const before = { ...counts };
    const out = await nl.applyWrites(writes);
    const ms = performance.now() - t0;
    const c = process.cpuUsage(cpu);
    const failed: Record<string, string> = {};
    const gone: number[] = [];
    out.forEach((err, i) => {
      if (err === null) return;
      failed[i] = err.message;
      if (isGone(err)) gone.push(i);
    });
    return { ms, cpuMs: (c.user + c.system) / 1000, failed, gone, sent: counts.sent - before.sent, answers: counts.answers - before.answers };
  };
  const idx = Array.from({ length: PEERS }, (_, i) => i);
  const neighbours = await phase(idx.map((i) => ({ op: 'replaceNeighbour', link: dev, ip: subnet(i), mac: peerMac(i) })));
  const fdb = await phase(idx.map((i) => ({ op: 'replaceFdb', link: dev, mac: peerMac(i), dst: vtep(i) })));
  const routes = await phase(idx.map((i) => ({ op: 'addRoute', spec: route(i) })));
  // Remove peers 0..9, and peer 2000 whose route never existed.
  const deletes = await phase([...idx.slice(0, 10), 2000].map((i) => ({ op: 'deleteRoute', spec: route(i) })));
  // One datagram: ok, EEXIST (the foreign route's prefix), ok, ESRCH (never there), ok.
  const dev2 = { index: link2.index, name: link2.name };
  const route2 = (i: number): RouteSpec => ({ dst: { ip: parseIPv4(subnet(i))!, prefixLen: 24 }, gateway: subnet(i), oif: link2.index, onlink: true });
  const mixed = await phase([
    { op: 'replaceNeighbour', link: dev2, ip: subnet(1500), mac: peerMac(1500) },
    { op: 'addRoute', spec: route2(TAKEN) },
    { op: 'replaceFdb', link: dev2, mac: peerMac(1500), dst: vtep(1500) },
    { op: 'deleteRoute', spec: route2(3000) },
    { op: 'addRoute', spec: route2(1500) },
  ]);
  // A peer leaving: its FDB entry and neighbour removed by us. The kernel notifies the neighbour's
  // removal twice, NUD_FAILED with our port and then RTM_DELNEIGH with pid 0 (recognised by content).
  await nl.applyWrites([{ op: 'deleteFdb', link: dev, mac: peerMac(950), dst: vtep(950) }, { op: 'deleteNeighbour', link: dev, ip: subnet(950) }]);
  await new Promise((r) => setTimeout(r, 300)); // the monitor's last batch
  const ours = { ...decoded };
  // Someone else (another process: another port id) removes a route and an FDB entry we wrote:
  // those notifications must get through.
  execFileSync('ip', ['route', 'del', `${subnet(900)}/24`, 'dev', DEV]);
  execFileSync('bridge', ['fdb', 'del', peerMac(900), 'dev', DEV, 'self']);
  // And a neighbour (two notifications: NUD_FAILED with ip's port, then the removal with pid 0).
  execFileSync('ip', ['neigh', 'del', subnet(901), 'dev', DEV]);
  await new Promise((r) => setTimeout(r, 300));
  const others = Object.fromEntries(Object.entries(decoded).map(([k, v]) => [k, v - (ours[k] ?? 0)]));
  m.close();
  nl.close();
  const report: ChildReport = { neighbours, fdb, routes, deletes, mixed, decoded: ours, decodedOthers: others };
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

function run(cmd: string, args: string[], allowFail = false): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error) throw r.error;
  if (r.status !== 0 && !allowFail) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr.trim()}`);
  return r.stdout;
}

if (process.env.HB_BATCH_CHILD) {
  child().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
} else {
  describe('batched netlink writes on a real VXLAN device (namespace of our own)', () => {
    let report: ChildReport;

    before(() => {
      if (process.getuid?.() !== 0) throw new Error('this e2e test needs root (network namespaces): run it with sudo');
      const v = spawnSync('bridge', ['-V'], { encoding: 'utf8' });
      if (v.error || v.status !== 0) throw new Error('iproute2 not found (no `bridge` command): apt-get install -y iproute2');
      run('ip', ['netns', 'del', NS], true);
      run('ip', ['netns', 'add', NS]);
      run('ip', ['-n', NS, 'link', 'add', DEV, 'type', 'vxlan', 'id', '42', 'dstport', '8472', 'local', '10.250.0.1', 'nolearning']);
      run('ip', ['-n', NS, 'addr', 'add', '10.63.0.0/32', 'dev', DEV]);
      run('ip', ['-n', NS, 'link', 'set', DEV, 'up']);
      run('ip', ['-n', NS, 'link', 'add', DEV2, 'type', 'vxlan', 'id', '43', 'dstport', '8473', 'local', '10.250.0.1', 'nolearning']);
      run('ip', ['-n', NS, 'link', 'set', DEV2, 'up']);
      // Someone else's route to peer TAKEN's subnet, on the same device, another gateway.
      run('ip', ['-n', NS, 'route', 'add', `${subnet(TAKEN)}/24`, 'via', '10.63.0.1', 'dev', DEV, 'onlink']);
      const out = spawnSync('ip', ['netns', 'exec', NS, process.execPath, __filename], {
        encoding: 'utf8',
        env: { ...process.env, HB_BATCH_CHILD: '1', NODE_TEST_CONTEXT: '' },
        maxBuffer: 16 << 20,
      });
      if (out.status !== 0) throw new Error(`batch child failed (${out.status}): ${out.stderr}`);
      report = JSON.parse(out.stdout.trim().split('\n').pop()!) as ChildReport;
      for (const [name, p] of Object.entries(report).filter(([k]) => !k.startsWith('decoded')) as [string, PhaseReport][]) {
        process.stderr.write(`# ${name}: ${p.ms.toFixed(1)} ms wall, ${p.cpuMs.toFixed(1)} ms CPU, ${p.sent} datagrams, ${p.answers} answers (load ${run('cat', ['/proc/loadavg']).split(' ')[0]})\n`);
      }
    });

    after(() => {
      run('ip', ['netns', 'del', NS], true);
    });

    it('programs 1000 permanent neighbours and FDB entries, each acknowledged', () => {
      assert.deepEqual(report.neighbours.failed, {});
      assert.deepEqual(report.fdb.failed, {});
      const neigh = run('ip', ['-n', NS, 'neigh', 'show', 'dev', DEV, 'nud', 'permanent']).trim().split('\n').map((l) => l.trim());
      assert.equal(neigh.length, PEERS - 2, 'all but the one we removed and the one `ip neigh del` removed');
      assert.ok(neigh.includes(`${subnet(777)} lladdr ${peerMac(777)} PERMANENT`), `neighbour of peer 777 in:\n${neigh.slice(0, 3).join('\n')}`);
      const fdb = run('bridge', ['-n', NS, 'fdb', 'show', 'dev', DEV]).trim().split('\n').map((l) => l.trim()).filter((l) => l.includes(' dst '));
      assert.equal(fdb.length, PEERS - 2, 'all but the one we removed and the one `bridge fdb del` removed');
      assert.ok(fdb.includes(`${peerMac(777)} dst ${vtep(777)} self permanent`), `FDB entry of peer 777 in:\n${fdb.slice(0, 3).join('\n')}`);
    });

    it('adds 999 routes; the one someone else holds fails alone with EEXIST and is left as it was', () => {
      assert.deepEqual(report.routes.failed, { [TAKEN]: `add route ${subnet(TAKEN)}/24 via ${subnet(TAKEN)} dev ${DEV} onlink: EEXIST` });
      const routes = run('ip', ['-n', NS, 'route', 'show', 'dev', DEV]).trim().split('\n').map((l) => l.trim());
      // 999 of ours, less 10 deleted by a batch and 1 by `ip route del`, + the foreign one (the /32 address adds no route).
      assert.equal(routes.length, PEERS - 1 - 10 - 1 + 1, routes.slice(0, 3).join('\n'));
      assert.ok(routes.includes(`${subnet(TAKEN)}/24 via 10.63.0.1 onlink`), 'the foreign route is untouched');
      assert.ok(routes.includes(`${subnet(TAKEN + 1)}/24 via ${subnet(TAKEN + 1)} onlink`), 'the route after it in the batch went in');
      assert.ok(routes.includes(`${subnet(PEERS - 1)}/24 via ${subnet(PEERS - 1)} onlink`), 'the last route (second datagram) went in');
    });

    it('deletes in a batch: the route that was never there fails alone, as gone', () => {
      assert.deepEqual(Object.keys(report.deletes.failed), ['10']);
      assert.deepEqual(report.deletes.gone, [10]);
      const routes = run('ip', ['-n', NS, 'route', 'show', 'dev', DEV]);
      assert.ok(!routes.includes(`${subnet(3)}/24 `));
    });

    it('asks for one ACK per datagram: one answer per datagram plus one per failed request (fewer if the last one failed)', () => {
      assert.equal(report.neighbours.answers, report.neighbours.sent);
      assert.equal(report.fdb.answers, report.fdb.sent);
      assert.equal(report.routes.answers, report.routes.sent + 1, 'one EEXIST in the middle');
      assert.equal(report.deletes.answers, 1, 'one datagram whose last request failed: its error is the only answer');
      assert.equal(report.mixed.answers, 3, 'two errors, then the final ACK');
      assert.ok(report.neighbours.sent >= 2 && report.neighbours.sent <= 4, `1000 requests in a few datagrams, not ${report.neighbours.sent}`);
    });

    it('a datagram whose 2nd and 4th requests fail: those fail alone, the 1st, 3rd and 5th are applied', () => {
      assert.equal(report.mixed.sent, 1);
      assert.deepEqual(Object.keys(report.mixed.failed), ['1', '3']);
      assert.match(report.mixed.failed['1']!, /EEXIST/);
      assert.deepEqual(report.mixed.gone, [3]);
      assert.match(run('ip', ['-n', NS, 'neigh', 'show', 'dev', DEV2]), new RegExp(`${subnet(1500)} lladdr ${peerMac(1500)} PERMANENT`));
      assert.match(run('bridge', ['-n', NS, 'fdb', 'show', 'dev', DEV2]), new RegExp(`${peerMac(1500)} dst ${vtep(1500)} self permanent`));
      const routes = run('ip', ['-n', NS, 'route', 'show', 'dev', DEV2]);
      assert.ok(routes.includes(`${subnet(1500)}/24 via ${subnet(1500)} onlink`), routes);
      assert.ok(!routes.includes(`${subnet(TAKEN)}/24`), 'the refused route is not there');
    });

    it('decodes none of the notifications of its own writes (neighbours and routes by sender port, FDB entries and neighbour removals by content)', () => {
      assert.deepEqual(report.decoded, {});
    });

    it("decodes someone else's changes to the same objects (a route, an FDB entry and a neighbour removed by ip/bridge)", () => {
      assert.deepEqual(report.decodedOthers, { route: 1, fdb: 1, neighbour: 2 });
    });
  });
}
