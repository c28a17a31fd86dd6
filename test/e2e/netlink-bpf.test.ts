/**
 * The monitor's socket filter (src/netlink/bpf.ts) on the real kernel: two netlink sockets of
 * weft's addon (addon/src/nlsock.cc) in a namespace of this test's own (wi<pid>-bpf, deleted
 * afterwards) join RTNLGRP_LINK and RTNLGRP_NEIGH; one gets the program monitorFilter builds for
 * "the VXLAN device vx0 only". Then neighbours are added on vx0 and on a veth (the "underlay"),
 * an FDB entry on vx0, the veth's MTU changed. The unfiltered socket must see all of it (the
 * control: the notifications were sent), the filtered one the device's neighbour and FDB entry
 * and the link change, and not the veth's neighbours.
 *
 * The sockets open in the namespace of their process: the sockets live in a child process
 * started with `ip netns exec` (this same file, WI_BPF_CHILD set), which prints one JSON report.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { monitorFilterProgram } from '../../src/netlink/bpf';
import { loadNative } from '../../src/native';

const NS = `wi${process.pid}-bpf`;

interface Seen {
  readonly type: number;
  readonly family: number;
  readonly ifindex: number;
}
interface ChildReport {
  readonly vx0: number;
  readonly veth: number;
  readonly unfiltered: Seen[];
  readonly filtered: Seen[];
}

const ip = (...args: string[]): string => execFileSync('ip', args, { encoding: 'utf8' });
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function child(): Promise<void> {
  const ifindex = (name: string): number => Number(/^(\d+):/.exec(ip('-o', 'link', 'show', name))![1]);
  const vx0 = ifindex('vx0');
  const veth = ifindex('v0');
  const { NetlinkSocket } = loadNative();
  const open = (seen: Seen[]) => {
    const s = new NetlinkSocket(0 /* NETLINK_ROUTE */, (data, meta) => {
      for (let i = 0, off = 0; i < meta.length; i += 2) {
        const d = data.subarray(off, off + meta[i]!);
        seen.push({ type: d.readUInt16LE(4), family: d.readUInt8(16), ifindex: d.readInt32LE(20) });
        off += (meta[i]! + 3) & ~3;
      }
    }, (code) => { throw new Error(`netlink socket: ${code}`); });
    s.addMembership(1); // RTNLGRP_LINK
    s.addMembership(3); // RTNLGRP_NEIGH
    return s;
  };
  const unfiltered: Seen[] = [];
  const filtered: Seen[] = [];
  const a = open(unfiltered);
  const b = open(filtered);
  b.attachFilter(monitorFilterProgram({ family: 4, table: 254, objectIfindexes: new Set([vx0]) }));
  ip('neigh', 'add', '10.9.0.1', 'lladdr', '02:00:00:00:00:01', 'dev', 'v0', 'nud', 'permanent');
  ip('neigh', 'replace', '10.9.0.1', 'lladdr', '02:00:00:00:00:02', 'dev', 'v0', 'nud', 'permanent');
  ip('neigh', 'del', '10.9.0.1', 'dev', 'v0');
  ip('neigh', 'add', '10.5.7.0', 'lladdr', '02:00:00:00:00:07', 'dev', 'vx0', 'nud', 'permanent');
  execFileSync('bridge', ['fdb', 'append', '02:00:00:00:00:07', 'dev', 'vx0', 'dst', '10.9.0.7', 'self', 'permanent']);
  ip('link', 'set', 'v0', 'mtu', '1400');
  await sleep(300);
  a.close();
  b.close();
  const report: ChildReport = { vx0, veth, unfiltered, filtered };
  process.stdout.write(JSON.stringify(report));
}

if (process.env.WI_BPF_CHILD === '1') {
  void child().catch((err: unknown) => {
    process.stderr.write(String(err instanceof Error ? err.stack : err));
    process.exit(1);
  });
} else {
  describe('netlink monitor socket filter on the kernel (SO_ATTACH_FILTER)', () => {
    before(() => {
      ip('netns', 'add', NS);
      ip('-n', NS, 'link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'v1');
      ip('-n', NS, 'addr', 'add', '10.9.0.2/24', 'dev', 'v0');
      ip('-n', NS, 'link', 'set', 'v0', 'up');
      ip('-n', NS, 'link', 'set', 'v1', 'up');
      ip('-n', NS, 'link', 'add', 'vx0', 'type', 'vxlan', 'id', '1', 'dstport', '8472', 'local', '10.9.0.2', 'dev', 'v0', 'nolearning');
      ip('-n', NS, 'link', 'set', 'vx0', 'up');
    });
    after(() => {
      spawnSync('ip', ['netns', 'del', NS]);
    });

    it("passes the device's neighbour, its FDB entry and link changes; drops the underlay's neighbours", () => {
      const r = spawnSync('ip', ['netns', 'exec', NS, process.execPath, __filename], {
        env: { ...process.env, WI_BPF_CHILD: '1' }, encoding: 'utf8', timeout: 30_000,
      });
      assert.equal(r.status, 0, `child failed: ${r.stderr}`);
      const report = JSON.parse(r.stdout) as ChildReport;
      const neighOn = (seen: Seen[], ifindex: number, family = 2): Seen[] => seen.filter((s) => (s.type === 28 || s.type === 29) && s.ifindex === ifindex && s.family === family);
      const links = (seen: Seen[]): Seen[] => seen.filter((s) => s.type === 16 && s.ifindex === report.veth);
      // The control: the kernel sent every notification.
      assert.ok(neighOn(report.unfiltered, report.veth).length >= 3, `underlay neighbours sent: ${JSON.stringify(report.unfiltered)}`);
      assert.ok(neighOn(report.unfiltered, report.vx0).length >= 1);
      assert.ok(neighOn(report.unfiltered, report.vx0, 7).length >= 1, 'the FDB entry sent');
      assert.ok(links(report.unfiltered).length >= 1, 'the MTU change sent');
      // The filter.
      assert.deepEqual(neighOn(report.filtered, report.veth), [], 'the underlay neighbours dropped in the kernel');
      assert.equal(neighOn(report.filtered, report.vx0).length, neighOn(report.unfiltered, report.vx0).length, "the device's neighbours kept");
      assert.equal(neighOn(report.filtered, report.vx0, 7).length, neighOn(report.unfiltered, report.vx0, 7).length, 'the FDB entry kept');
      assert.equal(links(report.filtered).length, links(report.unfiltered).length, 'link changes kept');
    });
  });
}
