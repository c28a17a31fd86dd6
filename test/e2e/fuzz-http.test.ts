/**
 * Fuzzing weftd's health port (issue #9, "beyond the list"): random requests from a container and
 * from the host itself, and slow clients, against a real weftd on a 1-host lab (namespaces
 * prefixed wt<pid>z-, torn down at the end, also on failure). While the attack runs a
 * well-behaved client polls /healthz on the host's loopback. weftd must stay up (same PID, no
 * uncaught error in its log), answer or close every request in bounded time, cut slow clients
 * off, and keep answering /healthz.
 *
 * The other direction (issue #14, weft's own HTTP/1.1 client, src/lease/http1.ts): a hostile
 * etcd. A fake gateway on loopback answers the JSON-gateway wire's calls and watch streams with
 * seeded mutations of well-formed answers (bytes flipped, inserted, deleted, duplicated, cut;
 * numbers made huge or negative; connections closed at random points). Every call must settle
 * within its deadline, a broken stream only disconnects the watch (which re-opens), and nothing
 * the sink is given may throw later (revisions BigInt()-able, values readable): no uncaught
 * exception, no hang.
 *
 * The seed is printed and can be set with WEFT_FUZZ_SEED to replay a failure. Bounded: about
 * 25 s on 2 cores (the health port), a few seconds (the wire).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { HEADERS_TIMEOUT_MS, MAX_CONNECTIONS_PER_ADDRESS } from '../../src/health/component';
import { Lab } from '../../src/lab';
import { EtcdHttpWire } from '../../src/lease/etcd-http-wire';
import type { WatchSink } from '../../src/lease/etcd-wire';
import { prng } from './helpers/prng';

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

// ---- a hostile etcd against the JSON-gateway wire -------------------------------------------------

const b64 = (t: string): string => Buffer.from(t).toString('base64');
const CALLS = 400;
const STREAMS = 40;
const CALL_TIMEOUT_MS = 300;

/** Well-formed answers to mutate: unary (Content-Length and chunked) and watch streams. */
function unaryAnswer(r: () => number): string {
  const body = JSON.stringify({
    header: { revision: String(Math.floor(r() * 1000)) },
    kvs: [{ key: b64('/f/subnets/10.5.1.0-24'), value: b64('{"PublicIP":"10.0.0.1","BackendType":"vxlan"}'), mod_revision: '7', lease: '694277' }],
  });
  if (r() < 0.5) return `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
  const cut = Math.floor(r() * body.length);
  const chunk = (c: string): string => `${Buffer.byteLength(c).toString(16)}\r\n${c}\r\n`;
  return `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${chunk(body.slice(0, cut))}${chunk(body.slice(cut))}0\r\n\r\n`;
}

function streamAnswer(r: () => number): string {
  const chunk = (c: string): string => `${Buffer.byteLength(c).toString(16)}\r\n${c}\r\n`;
  const msgs = [
    { result: { header: { revision: '5' }, watch_id: '1', created: true } },
    { result: { header: { revision: '6' }, watch_id: '1', events: [{ kv: { key: b64('/f/subnets/10.5.2.0-24'), value: b64('{"PublicIP":"10.0.0.2"}'), mod_revision: '6' } }] } },
    { result: { header: { revision: '7' }, watch_id: '1', events: [{ type: 'DELETE', kv: { key: b64('/f/subnets/10.5.2.0-24'), mod_revision: '7' } }] } },
    { result: { header: { revision: '7' }, watch_id: '-1' } },
    { result: { header: { revision: '7' }, watch_id: '1', canceled: true, compact_revision: '3' } },
    { error: { grpc_code: 16, message: 'invalid auth token' } },
  ];
  let out = 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n';
  for (let i = 0, n = 1 + Math.floor(r() * 5); i < n; i++) out += chunk(`${JSON.stringify(msgs[i === 0 ? 0 : Math.floor(r() * msgs.length)])}\n`);
  return out;
}

/** 0-2 random mutations of `text` (as bytes): a third of the answers stay whole. */
function mutate(r: () => number, text: string): Buffer {
  let b = Buffer.from(text, 'latin1');
  for (let i = 0, n = Math.floor(r() * 3); i < n; i++) {
    const at = Math.floor(r() * b.length);
    const len = 1 + Math.floor(r() * 16);
    switch (Math.floor(r() * 7)) {
      case 0: b[at] = Math.floor(r() * 256); break;
      case 1: b = Buffer.concat([b.subarray(0, at), Buffer.from(Array.from({ length: len }, () => Math.floor(r() * 256))), b.subarray(at)]); break;
      case 2: b = Buffer.concat([b.subarray(0, at), b.subarray(at + len)]); break;
      case 3: b = Buffer.concat([b.subarray(0, at + len), b.subarray(at)]); break;
      case 4: b = b.subarray(0, at); break;
      case 5: b = Buffer.from(b.toString('latin1').replace(/\d+/, r() < 0.5 ? '99999999999999999999999' : '-1'), 'latin1'); break;
      default: b = Buffer.from(b.toString('latin1').replace(/"[A-Za-z0-9+/=]{8,}"/, r() < 0.5 ? '{}' : 'null'), 'latin1'); break;
    }
  }
  return b;
}

describe(`a hostile etcd against the JSON-gateway wire (seed ${SEED}; replay with WEFT_FUZZ_SEED=${SEED})`, { timeout: 120_000 }, () => {
  test('mutated answers and streams: every call settles in time, broken streams only disconnect the watch, nothing throws', async (t) => {
    const r = prng(SEED + 2);
    const uncaught: unknown[] = [];
    const onUncaught = (err: unknown): void => void uncaught.push(err);
    process.on('uncaughtException', onUncaught);
    process.on('unhandledRejection', onUncaught);
    const sockets = new Set<Socket>();
    const server = createServer((socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => undefined);
      let seen = '';
      socket.on('data', (d: Buffer) => {
        seen += d.toString('latin1');
        // Answer each request once its head is in (the bodies are small; their content does not matter).
        while (seen.includes('\r\n\r\n')) {
          const stream = seen.startsWith('POST /v3/watch');
          seen = stream ? '' : seen.slice(seen.indexOf('\r\n\r\n') + 4).replace(/^[^P]*/, '');
          const bytes = mutate(r, stream ? streamAnswer(r) : unaryAnswer(r));
          const split = Math.floor(r() * bytes.length);
          socket.write(bytes.subarray(0, split));
          socket.write(bytes.subarray(split));
          const fate = r();
          if (fate < 0.2) socket.end();
          else if (fate < 0.3) socket.destroy();
          if (stream) return;
        }
      });
    });
    await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
    const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const wire = new EtcdHttpWire({ endpoints: [endpoint], callTimeoutMs: CALL_TIMEOUT_MS, watchProbeMs: 200 });
    const figures = { calls: 0, resolved: 0, rejected: 0, slowestMs: 0, responses: 0, events: 0, disconnects: 0, cancels: 0 };
    try {
      // Unary calls, a few at a time.
      const one = async (): Promise<void> => {
        const started = Date.now();
        figures.calls++;
        let res: Awaited<ReturnType<EtcdHttpWire['range']>>;
        try {
          res = await wire.range('/f/subnets/', true);
        } catch (err) {
          figures.rejected++;
          assert.ok(err instanceof Error, `a call rejected with a non-Error: ${String(err)}`);
          return;
        } finally {
          figures.slowestMs = Math.max(figures.slowestMs, Date.now() - started);
        }
        figures.resolved++;
        // What the registry does with an answer must not throw (BigInt of a revision, the value).
        BigInt(res.revision);
        for (const kv of res.kvs) {
          BigInt(kv.modRevision);
          BigInt(kv.leaseId);
          kv.value.toString();
        }
      };
      for (let i = 0; i < CALLS; i += 4) await Promise.all([one(), one(), one(), one()]);

      // Watch streams: each re-open gets a new mutated stream.
      const sink: WatchSink = {
        resumeRevision: () => '0',
        response: (res) => {
          figures.responses++;
          if (res.headerRevision !== undefined) BigInt(res.headerRevision);
          for (const ev of res.events) {
            figures.events++;
            BigInt(ev.kv.modRevision);
            ev.kv.value.toString();
          }
        },
        disconnected: () => void figures.disconnects++,
        canceled: () => {
          figures.cancels++;
          canceled = true;
        },
      };
      let canceled = false;
      let watch = wire.watchPrefix('/f/subnets/', sink);
      const deadline = Date.now() + 45_000;
      while (figures.disconnects + figures.cancels < STREAMS && Date.now() < deadline) {
        await new Promise((res) => setTimeout(res, 20));
        // A stream that answers nothing broken is ended by the probe; a cancelled watch is started again.
        if (canceled && figures.disconnects + figures.cancels < STREAMS) {
          canceled = false;
          await watch.close();
          watch = wire.watchPrefix('/f/subnets/', sink);
        }
        for (const s of sockets) if (r() < 0.05) s.destroy();
      }
      await watch.close();
      t.diagnostic(`wire fuzz: ${JSON.stringify(figures)}`);
      assert.deepEqual(uncaught, [], 'no uncaught exception or unhandled rejection');
      assert.equal(figures.resolved + figures.rejected, CALLS);
      assert.ok(figures.slowestMs < CALL_TIMEOUT_MS + 1000, `every call settled within its deadline (slowest ${figures.slowestMs} ms)`);
      assert.ok(figures.resolved > 0 && figures.rejected > 0, 'the mutations left some answers whole and broke others');
      assert.ok(figures.disconnects + figures.cancels >= STREAMS, `the watch kept re-opening (${figures.disconnects} disconnects, ${figures.cancels} cancels)`);
      assert.ok(figures.responses > 0, 'some stream messages got through');
    } finally {
      wire.close();
      for (const s of sockets) s.destroy();
      await new Promise<void>((res) => server.close(() => res()));
      process.off('uncaughtException', onUncaught);
      process.off('unhandledRejection', onUncaught);
    }
  });
});
