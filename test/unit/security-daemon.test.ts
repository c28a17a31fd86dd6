/**
 * weftd's last-resort error policy, the systemd watchdog and the health server's request-target
 * and client checks (issue #9 finding 1 and 4): pure logic with a fake process and fake clocks.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, test } from 'node:test';
import { runStatusCommand } from '../../src/cli/status';
import { EXIT_UNCAUGHT, installLastResort, type ProcessEvents } from '../../src/daemon/last-resort';
import { startWatchdog, watchdogIntervalMs } from '../../src/daemon/watchdog';
import { WeftError } from '../../src/errors';
import { isLocalClient, isLoopback, parseTarget } from '../../src/health/component';
import { TOO_MANY_IN_FLIGHT, type EchoResult, type Pinger } from '../../src/probe/icmp';
import { Prober } from '../../src/probe/prober';
import type { LogFields, Logger } from '../../src/log';

function recordingLogger(): Logger & { lines: { level: string; msg: string; fields?: LogFields }[] } {
  const lines: { level: string; msg: string; fields?: LogFields }[] = [];
  const log = {
    lines,
    debug: (msg: string, fields?: LogFields) => lines.push({ level: 'debug', msg, fields }),
    info: (msg: string, fields?: LogFields) => lines.push({ level: 'info', msg, fields }),
    warn: (msg: string, fields?: LogFields) => lines.push({ level: 'warn', msg, fields }),
    error: (msg: string, fields?: LogFields) => lines.push({ level: 'error', msg, fields }),
    child: () => log,
  };
  return log as unknown as Logger & { lines: typeof lines };
}

describe('last-resort error policy', () => {
  test('an unhandled rejection is logged with its whole cause chain and weftd keeps running', () => {
    const proc = new EventEmitter();
    const log = recordingLogger();
    const exits: number[] = [];
    const state = installLastResort(proc as unknown as ProcessEvents, { log, exit: (c) => exits.push(c) });
    const err = new WeftError('INTERNAL', 'probe round', { cause: new Error('send ICMP', { cause: new Error('EPERM') }) });
    proc.emit('unhandledRejection', err);
    assert.deepEqual(exits, []);
    assert.equal(state.unhandledRejections, 1);
    assert.equal(log.lines.length, 1);
    assert.equal(log.lines[0]!.level, 'error');
    assert.match(log.lines[0]!.msg, /unhandled promise rejection.*probe round: send ICMP: EPERM.*keeps running/);
    assert.match(String(log.lines[0]!.fields?.stack), /probe round/);
  });

  test('an uncaught exception is logged, reported to systemd and exits with 70 (never silently)', () => {
    const proc = new EventEmitter();
    const log = recordingLogger();
    const exits: number[] = [];
    const statuses: string[] = [];
    installLastResort(proc as unknown as ProcessEvents, { log, exit: (c) => exits.push(c), status: (s) => statuses.push(s) });
    proc.emit('uncaughtException', new TypeError('x is undefined', { cause: new Error('inner') }), 'uncaughtException');
    assert.deepEqual(exits, [EXIT_UNCAUGHT]);
    assert.equal(EXIT_UNCAUGHT, 70);
    assert.match(log.lines[0]!.msg, /uncaught exception.*x is undefined: inner.*device, routes and lease stay in place/);
    assert.match(statuses[0]!, /crashed: x is undefined/);
  });
});

describe('systemd watchdog', () => {
  test('is on only when WATCHDOG_USEC is set for this process', () => {
    assert.equal(watchdogIntervalMs({}, 10), null);
    assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: '30000000' }, 10), 30000);
    assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '10' }, 10), 30000);
    assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '11' }, 10), null);
    assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: 'x' }, 10), null);
  });

  test('pings WATCHDOG=1 at once and then from the event loop every third of the interval', async () => {
    const sent: string[] = [];
    const stop = startWatchdog({ log: recordingLogger(), env: { WATCHDOG_USEC: '90000', NOTIFY_SOCKET: '/run/x' }, pid: 1, send: (p, m) => sent.push(`${p} ${m}`) });
    assert.deepEqual(sent, ['/run/x WATCHDOG=1']);
    await new Promise((r) => setTimeout(r, 110));
    stop();
    const n = sent.length;
    assert.ok(n >= 3 && n <= 5, `pings in 110 ms with a 30 ms period: ${n}`);
    await new Promise((r) => setTimeout(r, 70));
    assert.equal(sent.length, n, 'no ping after stop');
  });

  test('without NOTIFY_SOCKET nothing is sent', () => {
    const sent: string[] = [];
    const stop = startWatchdog({ log: recordingLogger(), env: { WATCHDOG_USEC: '90000' }, pid: 1, send: (_p, m) => sent.push(m) });
    stop();
    assert.deepEqual(sent, []);
  });
});

describe('health server request checks', () => {
  test('request targets: origin-form only; "//x:abc/" is a path, not a crash', () => {
    assert.deepEqual(parseTarget('//x:abc/')?.path, '//x:abc/');
    assert.equal(parseTarget('/probe?peer=a&peer=b')?.query.getAll('peer').join(','), 'a,b');
    assert.equal(parseTarget('/status')?.path, '/status');
    assert.equal(parseTarget('http://a/status'), null);
    assert.equal(parseTarget('*'), null);
    assert.equal(parseTarget(undefined), null);
    assert.equal(parseTarget('/%zz?%zz=%')?.path, '/%zz');
  });

  test('loopback clients: 127/8, ::1 and their IPv4-mapped forms; nothing else', () => {
    for (const a of ['127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1']) assert.equal(isLoopback(a), true, a);
    for (const a of ['10.250.0.12', '::ffff:10.5.1.2', 'fd00::1', '0.0.0.0', '', undefined]) assert.equal(isLoopback(a), false, String(a));
  });

  test('local clients: loopback, or our own address talking to itself (weft status with --healthz-ip=<host address>)', () => {
    assert.equal(isLocalClient('127.0.0.1', '127.0.0.1'), true);
    assert.equal(isLocalClient('10.250.0.11', '10.250.0.11'), true);
    assert.equal(isLocalClient('10.250.0.12', '10.250.0.11'), false);
    assert.equal(isLocalClient('10.5.7.2', '10.5.7.1'), false);
    assert.equal(isLocalClient(undefined, undefined), false);
  });
});

describe('prober under a full pending table', () => {
  test('an echo the pinger refused (too many in flight) does not make a peer unreachable', async () => {
    const pinger: Pinger = {
      failure: null,
      echoBatch: async (targets: readonly string[]): Promise<EchoResult[]> => targets.map(() => ({ ok: false, rttMs: null, error: TOO_MANY_IN_FLIGHT })),
      close: () => undefined,
    };
    const prober = new Prober({ targets: () => [{ key: '10.5.2.0-24', address: '10.5.2.0' }], openPinger: () => pinger, intervalMs: 60_000 });
    const [r] = await prober.probeNow(undefined, 1);
    await prober.stop();
    assert.equal(r?.state, 'unknown');
    assert.equal(r?.sent, 0);
  });
});

describe('weft status against something that is not weftd', () => {
  test('a server dripping one byte every 50 ms is given up on after --timeout, not kept forever', async () => {
    const server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      const t = setInterval(() => res.write(' '), 50);
      res.on('close', () => clearInterval(t));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const errs: string[] = [];
    const started = Date.now();
    try {
      const code = await runStatusCommand([`--healthz-port=${port}`, '--timeout=400'], { out: () => undefined, err: (t) => errs.push(t) }, {});
      assert.equal(code, 1);
    } finally {
      server.closeAllConnections();
      server.close();
    }
    assert.ok(Date.now() - started < 3000, `gave up after ${Date.now() - started} ms`);
    assert.match(errs.join('\n'), /no complete answer within 400 ms/);
  });
});
