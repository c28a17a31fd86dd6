/**
 * The ICMP pinger under hostile conditions (issue #9 findings 2 and 6), with the real raw socket
 * in a network namespace this test creates (wt<pid>-icmp, loopback only; deleted at the end,
 * also on failure). Each scenario runs in a child process with a deadline, so a pinger that
 * spins forever fails the test instead of hanging the runner.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';

const ICMP = resolve(__dirname, '..', '..', 'src', 'probe', 'icmp.js');
const NS = `wt${process.pid}-icmp`;

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Run `script` with node inside the namespace; its stdout as JSON, failing after `deadlineMs`. */
function inNs<T>(script: string, deadlineMs: number): T {
  const r = spawnSync('ip', ['netns', 'exec', NS, process.execPath, '-e', script, ICMP], { encoding: 'utf8', timeout: deadlineMs, killSignal: 'SIGKILL' });
  assert.ok(r.error === undefined, `the pinger did not finish within ${deadlineMs} ms (${r.error?.message ?? ''}): it hangs\n${r.stderr}`);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as T;
}

describe('ICMP pinger against hostile conditions (real raw socket, own namespace)', { timeout: 60_000 }, () => {
  before(() => {
    try {
      execFileSync('sh', ['-c', 'command -v ip'], { stdio: 'ignore' });
    } catch {
      assert.fail('ip is not installed: apt-get install -y iproute2');
    }
    ip('netns', 'add', NS);
    ip('-n', NS, 'link', 'set', 'lo', 'up');
  });

  after(() => {
    try {
      ip('netns', 'del', NS);
    } catch {
      // already gone
    }
  });

  test('finding 2: 70 000 echoes at once fail fast beyond the pending bound instead of spinning on sequence numbers', () => {
    // The kernel does not answer in this namespace, so nothing completes while the batch is queued.
    execFileSync('ip', ['netns', 'exec', NS, 'sysctl', '-qw', 'net.ipv4.icmp_echo_ignore_all=1']);
    const script = `
      const { IcmpPinger } = require(process.argv[1]);
      const p = new IcmpPinger();
      const t0 = Date.now();
      p.echoBatch(Array(70000).fill('127.0.0.1'), 300).then((rs) => {
        const errors = {};
        for (const r of rs) errors[r.error] = (errors[r.error] || 0) + 1;
        p.close();
        process.stdout.write(JSON.stringify({ n: rs.length, ok: rs.filter((r) => r.ok).length, errors, ms: Date.now() - t0 }));
      });`;
    const r = inNs<{ n: number; ok: number; errors: Record<string, number>; ms: number }>(script, 15000);
    assert.equal(r.n, 70000);
    assert.equal(r.ok, 0);
    const refused = Object.entries(r.errors).filter(([e]) => /too many probes in flight/.test(e)).reduce((a, [, n]) => a + n, 0);
    assert.ok(refused > 0 && refused < 70000, `echoes refused by the pending bound: ${JSON.stringify(r.errors)}`);
  });

  test('finding 6: a forged echo reply with the right id, sequence and source but without the cookie is not taken for a reply', () => {
    execFileSync('ip', ['netns', 'exec', NS, 'sysctl', '-qw', 'net.ipv4.icmp_echo_ignore_all=1']);
    // The forger sees our echo request (as an off-path attacker guessing id and sequence would
    // know them) and answers from the target's address with ping's usual payload pattern.
    const forge = `
      const { IcmpPinger, inetChecksum } = require(process.argv[1]);
      const raw = require(require.resolve('raw-socket', { paths: [require('path').dirname(process.argv[1])] }));
      const forger = raw.createSocket({ protocol: raw.Protocol.ICMP });
      let forged = 0;
      forger.on('message', (buf) => {
        const ihl = (buf[0] & 15) * 4;
        if (buf[ihl] !== 8) return;
        const icmp = Buffer.from(buf.subarray(ihl));
        const reply = Buffer.alloc(icmp.length);
        reply[0] = 0; reply[1] = 0;
        icmp.copy(reply, 4, 4, 8);                                   // id and sequence
        for (let i = 8; i < reply.length; i++) reply[i] = i & 0xff;  // the guessable payload
        reply.writeUInt16BE(inetChecksum(reply), 2);
        forged++;
        forger.send(reply, 0, reply.length, '127.0.0.1', () => undefined);
      });
      const p = new IcmpPinger();
      p.echoBatch(['127.0.0.1', '127.0.0.1'], 800).then((rs) => {
        p.close(); forger.close();
        process.stdout.write(JSON.stringify({ forged, results: rs }));
      });`;
    const r = inNs<{ forged: number; results: { ok: boolean; error: string | null }[] }>(forge, 15000);
    assert.equal(r.forged, 2, 'the forger answered both echoes');
    assert.deepEqual(r.results.map((x) => x.ok), [false, false], `forged replies accepted: ${JSON.stringify(r.results)}`);
    assert.deepEqual(r.results.map((x) => x.error), ['timeout', 'timeout']);

    // A real reply (the kernel's, which echoes the payload) is still taken.
    execFileSync('ip', ['netns', 'exec', NS, 'sysctl', '-qw', 'net.ipv4.icmp_echo_ignore_all=0']);
    const real = `
      const { IcmpPinger } = require(process.argv[1]);
      const p = new IcmpPinger();
      p.echoBatch(['127.0.0.1'], 2000).then((rs) => { p.close(); process.stdout.write(JSON.stringify(rs)); });`;
    const ok = inNs<{ ok: boolean; rttMs: number | null }[]>(real, 15000);
    assert.equal(ok[0]?.ok, true, JSON.stringify(ok));
  });
});
