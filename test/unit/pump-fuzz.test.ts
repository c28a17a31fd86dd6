/**
 * Datagram fuzz of the packet pump (issue #9, finding 5): addon/test/fuzz_pump.cc drives the real
 * receive and transmit paths of addon/src/pump.cc, built with AddressSanitizer and
 * UndefinedBehaviorSanitizer, with random and mutated real VXLAN/udp packets in all four modes.
 * Bounded: a fixed number of iterations (a few seconds); the build is cached by source content.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, it } from 'node:test';

const ADDON = resolve(__dirname, '../../../addon');
const SOURCES = ['test/fuzz_pump.cc', 'src/pump.cc', 'src/pump.h', 'src/csum.h', 'src/segment.h'].map((f) => join(ADDON, f));
const ITERATIONS = 8000;

function build(): string {
  const hash = createHash('sha256');
  for (const f of SOURCES) hash.update(readFileSync(f));
  const bin = join(tmpdir(), `weft-fuzz-pump-${hash.digest('hex').slice(0, 16)}`);
  if (existsSync(bin)) return bin;
  const cxx = process.env.CXX ?? 'g++';
  const probe = spawnSync(cxx, ['--version']);
  if (probe.error) assert.fail(`${cxx} not found: install g++ (apt-get install g++; scripts/install-deps.sh dev) — it brings libasan and libubsan`);
  execFileSync(cxx, [
    '-std=c++17', '-O1', '-g', '-DWEFT_PUMP_TEST', '-fsanitize=address,undefined', '-fno-sanitize-recover=all',
    '-fno-omit-frame-pointer', `-I${join(ADDON, 'src')}`, SOURCES[0]!, SOURCES[1]!, '-lpthread', '-o', bin,
  ], { stdio: ['ignore', 'inherit', 'inherit'] });
  return bin;
}

describe('packet pump under ASan/UBSan with hostile datagrams', () => {
  it('survives random and mutated VXLAN/udp datagrams and frames: no sanitizer report, no corrupted header passed on with a valid checksum, counters move', { timeout: 120_000 }, () => {
    const bin = build();
    const r = spawnSync(bin, [String(ITERATIONS), String(Date.now() % 1_000_000)], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.error, undefined, `fuzz_pump did not finish: ${String(r.error)}`);
    assert.doesNotMatch(r.stderr, /Sanitizer|runtime error/, r.stderr.slice(0, 4000));
    assert.equal(r.status, 0, `exit ${r.status}, signal ${r.signal}\n${r.stderr.slice(0, 4000)}`);
    const res = JSON.parse(r.stdout.trim()) as Record<string, number>;
    // The figures, for the record (docs/security.md).
    console.log(`pump fuzz: ${JSON.stringify(res)}`);
    assert.equal(res.violations, 0);
    assert.ok(res.datagrams! > ITERATIONS / 2, 'datagrams were fed');
    assert.ok(res.corruptHeaders! > 0, 'corrupted headers were among them');
    assert.ok(res.drops! > 0, 'drop counters moved');
    assert.ok(res.packetsIn! > 0, 'good packets were accepted');
  });
});
