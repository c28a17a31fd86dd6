/**
 * The ICMP pinger's cost in event-loop wake-ups (src/probe/icmp.ts): a batch of 40 echoes is
 * sent in one turn (no writable wake-up per echo) and the replies waiting are read together (not
 * one readable wake-up each). Real raw socket, real kernel: the echoes go to 40 addresses of
 * 127.0.0.0/8 on the loopback of a namespace of this test's own (wi<pid>-probe, deleted
 * afterwards), from a child process started with `ip netns exec` (this file, WI_PROBE_CHILD set).
 *
 * The wake-ups are counted where raw-socket's native wrap emits them ('sendReady' per writable
 * event, 'recvReady' per readable event). raw-socket's own path costs 40 + 40 for this batch.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { IcmpPinger } from '../../src/probe/icmp';

const NS = `wi${process.pid}-probe`;
const ECHOES = 40;

interface ChildReport {
  readonly ok: number;
  readonly errors: string[];
  readonly sendReady: number;
  readonly recvReady: number;
}

async function child(): Promise<void> {
  const pinger = new IcmpPinger({ family: 4 });
  const wrap = (pinger as unknown as { socket: { wrap: { emit: (event: string, ...args: unknown[]) => boolean } } }).socket.wrap;
  const counts = { sendReady: 0, recvReady: 0 };
  const emit = wrap.emit.bind(wrap);
  wrap.emit = (event: string, ...args: unknown[]): boolean => {
    if (event === 'sendReady' || event === 'recvReady') counts[event]++;
    return emit(event, ...args);
  };
  const targets = Array.from({ length: ECHOES }, (_, i) => `127.0.0.${i + 1}`);
  const results = await pinger.echoBatch(targets, 2000);
  pinger.close();
  const report: ChildReport = {
    ok: results.filter((r) => r.ok).length,
    errors: results.filter((r) => !r.ok).map((r) => r.error ?? '?'),
    ...counts,
  };
  process.stdout.write(JSON.stringify(report));
}

if (process.env.WI_PROBE_CHILD === '1') {
  void child().catch((err: unknown) => {
    process.stderr.write(String(err instanceof Error ? err.stack : err));
    process.exit(1);
  });
} else {
  describe('ICMP pinger wake-ups (raw socket, real kernel)', () => {
    before(() => {
      execFileSync('ip', ['netns', 'add', NS]);
      execFileSync('ip', ['-n', NS, 'link', 'set', 'lo', 'up']);
    });
    after(() => {
      spawnSync('ip', ['netns', 'del', NS]);
    });

    it(`sends a batch of ${ECHOES} echoes without a wake-up per echo and reads the waiting replies together`, () => {
      const r = spawnSync('ip', ['netns', 'exec', NS, process.execPath, __filename], {
        env: { ...process.env, WI_PROBE_CHILD: '1' }, encoding: 'utf8', timeout: 30_000,
      });
      assert.equal(r.status, 0, `child failed: ${r.stderr}`);
      const report = JSON.parse(r.stdout) as ChildReport;
      assert.equal(report.ok, ECHOES, `every echo answered: ${report.errors.join(', ')}`);
      assert.equal(report.sendReady, 0, 'no writable wake-up: the echoes went out in one turn');
      assert.ok(report.recvReady <= 4, `replies read a wake-up at a time: ${report.recvReady} wake-ups for ${ECHOES} replies`);
    });
  });
}
