/**
 * The JSON gateway's one watch stream while idle (src/lease/etcd-http-wire.ts HttpWatchSession):
 * every watch of a wire is a watcher on ONE stream, a quiet stream costs one progress request per
 * probe period (its deadline, half a period, is the same timer re-armed), and a stream whose etcd
 * stops answering (frozen: no RST) is ended within 1.5 periods and re-opened with every watcher
 * created again. Against a
 * stand-in for etcd's gateway (an HTTP server speaking its newline-delimited JSON), with the probe
 * period shortened to 100 ms; the real etcd runs in test/e2e/lease-etcd-http.test.ts.
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { EtcdHttpWire } from '../../src/lease/etcd-http-wire';
import type { WatchSink } from '../../src/lease/etcd-wire';
import { waitFor } from './helpers/fakes';

const PROBE_MS = 100;

interface Stream {
  readonly res: ServerResponse;
  /** Watch ids created on this stream, in order. */
  readonly created: string[];
  readonly cancelled: string[];
  progressRequests: number;
}

/** A watch endpoint: answers create/cancel/progress requests until `frozen`. */
class FakeGateway {
  readonly streams: Stream[] = [];
  frozen = false;
  private server: Server | null = null;
  revision = 7;

  async start(): Promise<string> {
    this.server = createServer((req, res) => this.onRequest(req, res));
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((r) => this.server?.close(() => r()) ?? r());
  }

  /** A PUT event for watcher `id` on the newest stream. */
  event(id: string, key: string): void {
    const s = this.streams.at(-1)!;
    this.revision++;
    this.send(s, { header: { revision: String(this.revision) }, watch_id: id, events: [{ kv: { key: Buffer.from(key).toString('base64'), value: '', mod_revision: String(this.revision) } }] });
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    assert.equal(req.url, '/v3/watch');
    res.writeHead(200, { 'content-type': 'application/json' });
    const stream: Stream = { res, created: [], cancelled: [], progressRequests: 0 };
    this.streams.push(stream);
    let buf = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        this.onLine(stream, JSON.parse(line) as Record<string, { watch_id?: string }>);
      }
    });
  }

  private onLine(s: Stream, msg: Record<string, { watch_id?: string }>): void {
    if (this.frozen) return;
    const header = { revision: String(this.revision) };
    if (msg.create_request !== undefined) {
      const id = msg.create_request.watch_id!;
      s.created.push(id);
      this.send(s, { header, watch_id: id, created: true });
    } else if (msg.cancel_request !== undefined) {
      s.cancelled.push(msg.cancel_request.watch_id!);
      this.send(s, { header, watch_id: msg.cancel_request.watch_id, canceled: true });
    } else if (msg.progress_request !== undefined) {
      s.progressRequests++;
      this.send(s, { header, watch_id: '-1' });
    }
  }

  private send(s: Stream, result: unknown): void {
    if (!s.res.writableEnded) s.res.write(`${JSON.stringify({ result })}\n`);
  }
}

/** A sink that records what the wire tells it. */
function recordingSink(): WatchSink & { log: string[] } {
  const log: string[] = [];
  return {
    log,
    resumeRevision: () => '0',
    response: (r) => log.push(r.created ? 'created' : r.events.length > 0 ? `events ${r.events.map((e) => e.kv.key).join(',')}` : 'progress'),
    disconnected: () => log.push('disconnected'),
    canceled: (why) => log.push(`canceled ${why}`),
  };
}

describe('the JSON gateway watch stream while idle', () => {
  const gw = new FakeGateway();
  let endpoint = '';
  before(async () => {
    endpoint = await gw.start();
  });
  after(() => gw.stop());

  it('runs every watch of a wire on one stream, probes a quiet one once per period, and re-opens a frozen one within 1.5 periods', async () => {
    const wire = new EtcdHttpWire({ endpoints: [endpoint], watchProbeMs: PROBE_MS, callTimeoutMs: 1000 });
    const subnets = recordingSink();
    const config = recordingSink();
    try {
      wire.watchPrefix('/p/subnets/', subnets);
      wire.watchPrefix('/p/config', config);
      await waitFor(() => subnets.log.includes('created') && config.log.includes('created'), 'both watchers created');
      assert.equal(gw.streams.length, 1, 'one stream for both');
      assert.deepEqual(gw.streams[0]!.created, ['1', '2']);

      // Events go to their own watcher only.
      gw.event('2', '/p/config');
      await waitFor(() => config.log.includes('events /p/config'), 'the config event');
      assert.ok(!subnets.log.some((l) => l.startsWith('events')));

      // One progress request per period (not one plus a deadline check), each answered.
      const from = gw.streams[0]!.progressRequests;
      await new Promise((r) => setTimeout(r, PROBE_MS * 10 + PROBE_MS / 2));
      const probes = gw.streams[0]!.progressRequests - from;
      assert.ok(probes >= 6 && probes <= 11, `progress requests in 10 periods: ${probes}`);
      assert.ok(subnets.log.includes('progress') && config.log.includes('progress'), 'a progress report reaches every watcher');
      assert.equal(gw.streams.length, 1, 'answered probes keep the stream');

      // Frozen: no answer, no RST. Ended within 1.5 periods (plus the reconnect backoff), re-opened
      // with both watchers created again.
      gw.frozen = true;
      const frozenAt = Date.now();
      await waitFor(() => subnets.log.includes('disconnected') && config.log.includes('disconnected'), 'the frozen stream ended', 2000);
      const noticedMs = Date.now() - frozenAt;
      // A period to the next request, half a period for its answer, plus slack for timers run late
      // on a loaded machine; never before the half period of the answer's deadline.
      assert.ok(noticedMs >= PROBE_MS / 2 && noticedMs <= PROBE_MS * 1.5 + 100, `noticed after ${noticedMs} ms (probe period ${PROBE_MS} ms)`);
      gw.frozen = false;
      await waitFor(() => gw.streams.length === 2 && gw.streams[1]!.created.length === 2, 'the stream re-opened with both watchers', 2000);
      assert.deepEqual([...gw.streams[1]!.created].sort(), ['1', '2']);
      await waitFor(() => subnets.log.filter((l) => l === 'created').length === 2 && config.log.filter((l) => l === 'created').length === 2, 'both created again');
    } finally {
      wire.close();
    }
  });

  it('closing one watcher cancels it on the stream; the other goes on; the last one ends the stream', async () => {
    const wire = new EtcdHttpWire({ endpoints: [endpoint], watchProbeMs: 10_000, callTimeoutMs: 1000 });
    const a = recordingSink();
    const b = recordingSink();
    const n = gw.streams.length;
    try {
      const wa = wire.watchPrefix('/q/subnets/', a);
      const wb = wire.watchPrefix('/q/config', b);
      await waitFor(() => a.log.includes('created') && b.log.includes('created'), 'both created');
      const stream = gw.streams[n]!;
      const [idA, idB] = stream.created;
      await wb.close();
      await waitFor(() => stream.cancelled.includes(idB!), 'the cancel_request of the closed watcher');
      gw.event(idA!, '/q/subnets/10.5.1.0-24');
      await waitFor(() => a.log.includes('events /q/subnets/10.5.1.0-24'), 'the other watcher goes on');
      assert.ok(!stream.res.writableEnded);
      await wa.close();
      await waitFor(() => stream.res.destroyed || stream.res.writableEnded || stream.res.socket === null, 'the stream ended with its last watcher', 2000);
      assert.equal(gw.streams.length, n + 1, 'no new stream opened');
    } finally {
      wire.close();
    }
  });
});
