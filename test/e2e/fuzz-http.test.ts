/**
 * Fuzzing weftd's health port (issue #9, "beyond the list"): random requests from a container and
 * from the host itself, and slow clients, against a real weftd on a 1-host lab (namespaces
 * prefixed wt<pid>z-, torn down at the end, also on failure). While the attack runs a
 * well-behaved client polls /healthz on the host's loopback. weftd must stay up (same PID, no
 * uncaught error in its log), answer or close every request in bounded time, cut slow clients
 * off, and keep answering /healthz.
 *
 * The seed is printed and can be set with WEFT_FUZZ_SEED to replay a failure. Bounded: about
 * 25 s on 2 cores.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { HEADERS_TIMEOUT_MS, MAX_CONNECTIONS_PER_ADDRESS } from '../../src/health/component';
import { Lab } from '../../src/lab';

const FUZZER = resolve(__dirname, 'helpers', 'http-fuzzer.js');
const PREFIX = `wt${process.pid}z-`;
const PORT = 8471;
const SEED = Number(process.env.WEFT_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const FROM_CONTAINER = 3000;
const FROM_HOST = 1000;
const SLOW_CLIENTS = MAX_CONNECTIONS_PER_ADDRESS + 8;
const scratch = mkdtempSync(join(tmpdir(), `wt${process.pid}-fuzz-`));

let lab: Lab;

interface RandomFigures { requests: number; answered: number; closed: number; hang: number; refused: number; byStatus: Record<string, number>; ms: number }
interface SlowFigures { connections: number; maxMs: number; minMs: number; keptOver20s: number }
interface WatchFigures { checks: number; failures: number; worstMs: number; lastError: string }

async function fuzzer<T>(ns: string, args: readonly string[], timeoutMs: number): Promise<T> {
  const r = await lab.exec(ns, [process.execPath, FUZZER, ...args], { timeoutMs });
  assert.equal(r.code, 0, `fuzzer ${args.join(' ')} in ${ns}: exit ${r.code}\n${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

describe(`HTTP fuzzing of the health port (seed ${SEED}; replay with WEFT_FUZZ_SEED=${SEED})`, { timeout: 120_000 }, () => {
  before(async () => {
    lab = await Lab.up({ prefix: PREFIX, name: `wt${process.pid}z`, stateDir: join(scratch, 'lab'), hosts: 1, healthzPort: PORT });
  });

  after(async () => {
    await lab?.down();
    rmSync(scratch, { recursive: true, force: true });
  });

  test('random requests and slow clients neither crash nor hang weftd, and /healthz keeps answering', async (t) => {
    const pid = lab.daemonPid('h1');
    assert.ok(pid !== null);
    // The container reaches the host at its bridge address (the first address of the subnet).
    const hostAddr = lab.subnetEnv('h1')!.subnet.split('/')[0]!;
    const watching = fuzzer<WatchFigures>('h1', ['watch', '127.0.0.1', String(PORT), '15'], 60_000);
    const [fromContainer, fromHost] = await Promise.all([
      fuzzer<RandomFigures>('h1-c1', ['random', hostAddr, String(PORT), String(SEED), String(FROM_CONTAINER)], 90_000),
      fuzzer<RandomFigures>('h1', ['random', '127.0.0.1', String(PORT), String(SEED + 1), String(FROM_HOST)], 90_000),
    ]);
    // Then the slow clients (from the container: its address then holds every slot it may).
    const slow = await fuzzer<SlowFigures>('h1-c1', ['slow', hostAddr, String(PORT), String(SLOW_CLIENTS)], 90_000);
    const watch = await watching;
    t.diagnostic(`from a container: ${JSON.stringify(fromContainer)}`);
    t.diagnostic(`from the host:    ${JSON.stringify(fromHost)}`);
    t.diagnostic(`slow clients:     ${JSON.stringify(slow)}`);
    t.diagnostic(`/healthz watcher: ${JSON.stringify(watch)}`);

    assert.equal(lab.daemonPid('h1'), pid, `weftd died or restarted:\n${lab.daemonLog('h1').slice(-3000)}`);
    assert.doesNotMatch(lab.daemonLog('h1'), /uncaught exception|unhandled promise rejection|ERR_INVALID_URL/);
    for (const [who, f] of [['container', fromContainer], ['host', fromHost]] as const) {
      assert.equal(f.hang, 0, `${who}: requests neither answered nor closed within 15 s`);
      assert.equal(f.refused, 0, `${who}: connections refused (the server went away)`);
      assert.equal(f.answered + f.closed, f.requests);
      assert.equal(f.byStatus['5xx'] ?? 0, 0, `${who}: 5xx answers mean a handler failed`);
      assert.ok(f.answered > f.requests / 2, `${who}: most requests get an HTTP answer (${f.answered}/${f.requests})`);
    }
    // Slow clients are cut off after the header timeout (+ the 1 s sweep), the ones above the
    // per-address cap at once; none is kept for long.
    assert.equal(slow.keptOver20s, 0);
    assert.ok(slow.maxMs <= HEADERS_TIMEOUT_MS + 5000, `slowest slow client cut off after ${slow.maxMs} ms`);
    assert.ok(slow.minMs < 1000, `connections beyond ${MAX_CONNECTIONS_PER_ADDRESS} from one address are refused at once (first cut after ${slow.minMs} ms)`);
    assert.equal(watch.failures, 0, `/healthz failed during the attack: ${watch.lastError}`);
    assert.ok(watch.checks >= 30, `watcher ran ${watch.checks} checks`);
    assert.ok(watch.worstMs < 4000, `worst /healthz latency during the attack: ${watch.worstMs} ms`);
  });
});
