/**
 * What a running weftd must not load for the little it needs (docs/performance.md, fifth pass):
 * `node:crypto` initialises OpenSSL (~0.7 MB private memory per weftd) and `performance` loads
 * perf_hooks (ten modules). The health server, the prober, the VXLAN backend, the watchdog and the
 * netlink batch draw random bytes and read a monotonic clock without them. Checked in a fresh
 * node, from the list of Node's own modules it loaded.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { monotonicMs } from '../../src/clock';
import { randomBytes } from '../../src/random';

const SRC = join(__dirname, '..', '..', 'src');

describe('lean modules', () => {
  it('random bytes come from the kernel: the length asked for, never the same twice', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 64; i++) {
      const b = randomBytes(16);
      assert.equal(b.length, 16);
      seen.add(b.toString('hex'));
    }
    assert.equal(seen.size, 64);
    assert.equal(randomBytes(0).length, 0);
  });

  it('the monotonic clock is milliseconds since the process started, and never goes back', () => {
    const a = monotonicMs();
    const b = monotonicMs();
    assert.ok(a > 0 && b >= a);
    assert.ok(Math.abs(a - process.uptime() * 1000) < 50);
  });

  it('the health server, prober, VXLAN backend, watchdog and netlink load neither node:crypto nor perf_hooks for a cookie, a MAC or the time', () => {
    // What Node loads by itself and for node:http (its server observes perf entries) is the baseline.
    const loadedBy = (body: string): string[] => {
      const env = { ...process.env };
      delete env.NODE_EXTRA_CA_CERTS; // Node reads it through node:crypto at start-up
      const out = execFileSync(process.execPath, ['-e', `${body}; process.stdout.write(JSON.stringify(process.moduleLoadList));`], { encoding: 'utf8', env });
      return JSON.parse(out) as string[];
    };
    const baseline = new Set(loadedBy("require('node:http'); require('node:net'); require('node:fs')"));
    const loaded = loadedBy(`
      const src = ${JSON.stringify(SRC)};
      require(src + '/health/component');
      require(src + '/probe/prober');
      const icmp = require(src + '/probe/icmp');
      const vxlan = require(src + '/backend/vxlan/vxlan');
      require(src + '/daemon/watchdog');
      require(src + '/netlink/batch');
      require(src + '/netlink/client');
      new icmp.EchoPacket(1, require(src + '/random').randomBytes(16), 4).fill(7);
      vxlan.randomMac();
      require(src + '/clock').monotonicMs();`);
    const heavy = loaded.filter((m) => !baseline.has(m) && /^NativeModule (crypto|internal\/crypto\/|perf_hooks|internal\/perf\/)/.test(m));
    assert.deepEqual(heavy, []);
  });
});
