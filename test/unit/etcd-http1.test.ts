/**
 * The JSON gateway's own HTTP/1.1 client (src/lease/http1.ts) and the wire on it
 * (src/lease/etcd-http-wire.ts) against hostile or odd servers: a raw TCP server on loopback
 * answers exactly the bytes each test scripts. Every malformed or oversized answer must end the
 * call (or the watch stream) with a transport failure the registry retries — never an uncaught
 * exception, never an unbounded allocation — and well-formed answers in any framing (Content-Length,
 * chunked, split anywhere) must decode. The real etcd runs in test/e2e/lease-etcd-http.test.ts.
 */
import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { EtcdHttpError, EtcdHttpWire, decodeWatchMessage } from '../../src/lease/etcd-http-wire';
import type { WatchSink } from '../../src/lease/etcd-wire';
import { Http1Failure, LineSplitter, MAX_BODY_BYTES, MAX_HEAD_BYTES, ResponseParser, type ResponseHead } from '../../src/lease/http1';
import { waitFor } from './helpers/fakes';

/** One request as the raw server read it. */
interface SeenRequest { readonly head: string; readonly body: string; readonly connection: number }

/** Answers each request with what `script` returns: pieces written one after another (null: say nothing). */
type Script = (req: SeenRequest, socket: Socket) => readonly (string | Buffer)[] | null;

class RawServer {
  private server: Server | null = null;
  readonly requests: SeenRequest[] = [];
  connections = 0;
  script: Script = () => [ok('{}')];
  private readonly sockets = new Set<Socket>();

  async start(): Promise<string> {
    this.server = createServer((socket) => this.onConnection(socket));
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** Drops every connection (no FIN: a crash). */
  dropAll(): void {
    for (const s of this.sockets) s.destroy();
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server?.close(() => r()) ?? r());
  }

  private onConnection(socket: Socket): void {
    const connection = ++this.connections;
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.subarray(0, end).toString('latin1');
        const length = /content-length: (\d+)/i.exec(head);
        // A stream (chunked, never ending): its first chunk is enough.
        let bodyEnd: number;
        if (length !== null) bodyEnd = end + 4 + Number(length[1]);
        else {
          const crlf = buf.indexOf('\r\n', end + 4);
          if (crlf < 0) return;
          bodyEnd = crlf + 2 + parseInt(buf.subarray(end + 4, crlf).toString(), 16) + 2;
        }
        if (buf.length < bodyEnd) return;
        const req = { head, body: buf.subarray(end + 4, bodyEnd).toString(), connection };
        buf = length !== null ? buf.subarray(bodyEnd) : Buffer.alloc(0);
        this.requests.push(req);
        const pieces = this.script(req, socket);
        if (pieces !== null) void writeSlowly(socket, pieces);
        if (length === null) return; // the rest of a stream's body is its further requests
      }
    });
  }
}

async function writeSlowly(socket: Socket, pieces: readonly (string | Buffer)[]): Promise<void> {
  for (const p of pieces) {
    if (socket.destroyed) return;
    socket.write(p);
    if (pieces.length > 1) await new Promise((r) => setImmediate(r));
  }
}

const ok = (body: string, extra = ''): string => `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n${extra}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
const chunked = (...chunks: string[]): string =>
  'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n' + chunks.map((c) => `${Buffer.byteLength(c).toString(16)}\r\n${c}\r\n`).join('') + '0\r\n\r\n';
const rangeAnswer = (key: string, value: string): string =>
  JSON.stringify({ header: { revision: '9' }, kvs: [{ key: Buffer.from(key).toString('base64'), value: Buffer.from(value).toString('base64'), mod_revision: '8', lease: '77' }] });

/** A sink recording what the wire tells it. */
function sink(): WatchSink & { log: string[] } {
  const log: string[] = [];
  return {
    log,
    resumeRevision: () => '0',
    response: (r) => log.push(r.created ? 'created' : r.events.length > 0 ? `events ${r.events.map((e) => `${e.deleted ? '-' : '+'}${e.kv.key}=${e.kv.value.toString()}@${e.kv.modRevision}`).join(',')}` : 'progress'),
    disconnected: (err) => log.push(`disconnected ${err instanceof Error ? err.message : String(err)}`),
    canceled: (why) => log.push(`canceled ${why}`),
  };
}

/** Feeds `bytes` to a parser in pieces of `step` bytes; what it reported. */
function parse(bytes: string | Buffer, step: number, maxBody?: number): { head: ResponseHead | null; body: string; ended: boolean; keepAlive: boolean } {
  let head: ResponseHead | null = null;
  const body: Buffer[] = [];
  let ended = false;
  const parser = new ResponseParser({ head: (h) => void (head = h), body: (p) => void body.push(Buffer.from(p)), end: () => void (ended = true) }, maxBody);
  const all = Buffer.from(bytes);
  for (let i = 0; i < all.length; i += step) parser.push(all.subarray(i, i + step));
  return { head, body: Buffer.concat(body).toString(), ended, keepAlive: parser.keepAlive };
}

describe('the HTTP/1.1 response parser', () => {
  it('decodes Content-Length and chunked answers fed whole or one byte at a time, skipping 100 Continue and trailers', () => {
    const answers = [
      ok('{"a":1}'),
      'HTTP/1.1 100 Continue\r\n\r\n' + ok('{"a":1}'),
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\n{"a\r\n4\r\n":1}\r\n0\r\nX-Trailer: y\r\n\r\n',
    ];
    for (const bytes of answers) {
      for (const step of [1, 2, 7, 10_000]) {
        const r = parse(bytes, step);
        assert.equal(r.head?.status, 200);
        assert.equal(r.body, '{"a":1}', `${JSON.stringify(bytes)} by ${step}`);
        assert.ok(r.ended);
        assert.ok(r.keepAlive);
      }
    }
  });

  it('reads a body without length until the connection closes, and then does not keep the connection', () => {
    let body = '';
    let ended = false;
    const parser = new ResponseParser({ head: () => undefined, body: (p) => void (body += p.toString()), end: () => void (ended = true) });
    parser.push(Buffer.from('HTTP/1.0 200 OK\r\n\r\n{"a"'));
    parser.push(Buffer.from(':1}'));
    assert.ok(!ended);
    parser.eof();
    assert.ok(ended);
    assert.equal(body, '{"a":1}');
    assert.equal(parser.keepAlive, false);
  });

  const hostile: [string, string | Buffer, Http1Failure['kind'], RegExp][] = [
    ['a status line that is not HTTP', 'SSH-2.0-OpenSSH\r\n\r\n', 'malformed', /invalid status line/],
    ['a status code out of range', 'HTTP/1.1 2000 OK\r\n\r\n', 'malformed', /invalid status line/],
    ['a header line without a colon', 'HTTP/1.1 200 OK\r\nnot a header\r\n\r\n', 'malformed', /invalid header line/],
    ['a folded header line', 'HTTP/1.1 200 OK\r\nA: b\r\n  c\r\n\r\n', 'malformed', /invalid header line/],
    ['headers without end', `HTTP/1.1 200 OK\r\n${'X-A: b\r\n'.repeat(MAX_HEAD_BYTES / 8 + 1)}`, 'too-large', /head over/],
    ['one endless header line', `HTTP/1.1 200 OK\r\nX: ${'a'.repeat(MAX_HEAD_BYTES)}`, 'too-large', /head over/],
    ['too many headers', `HTTP/1.1 200 OK\r\n${Array.from({ length: 120 }, (_, i) => `X-${i}: 1\r\n`).join('')}\r\n`, 'too-large', /more than 100 headers/],
    ['a Content-Length that is not a number', 'HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n', 'malformed', /invalid Content-Length/],
    ['two different Content-Lengths', 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n', 'malformed', /two different Content-Length/],
    ['a Content-Length over the bound', `HTTP/1.1 200 OK\r\nContent-Length: ${MAX_BODY_BYTES + 1}\r\n\r\n`, 'too-large', /Content-Length/],
    ['Transfer-Encoding and Content-Length', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n', 'malformed', /both/],
    ['a Transfer-Encoding other than chunked', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n', 'malformed', /unsupported Transfer-Encoding/],
    ['a chunk size that is not hex', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', 'malformed', /invalid chunk-size/],
    ['a negative chunk size', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n', 'malformed', /invalid chunk-size/],
    ['a chunk size of 9 hex digits', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100000000\r\n', 'malformed', /invalid chunk-size/],
    ['a chunk over the bound', `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${(MAX_BODY_BYTES + 1).toString(16)}\r\n`, 'too-large', /chunk of/],
    ['an endless chunk-size line', `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;${'x'.repeat(2000)}`, 'too-large', /chunk-size line/],
    ['chunk data longer than its size', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n', 'malformed', /not followed by CRLF/],
    ['bytes after the answer', ok('{}') + 'HTTP/1.1 200 OK\r\n', 'malformed', /after the end/],
    ['101 Switching Protocols', 'HTTP/1.1 101 Switching Protocols\r\n\r\n', 'malformed', /101/],
  ];
  for (const [what, bytes, kind, message] of hostile) {
    it(`fails ${what} with Http1Failure('${kind}'), fed whole or byte by byte`, () => {
      for (const step of [1, 1 << 20]) {
        assert.throws(() => parse(bytes, step), (e: unknown) => e instanceof Http1Failure && e.kind === kind && message.test(e.message));
      }
    });
  }

  it('bounds a whole body (a stream bounds its messages instead) and reports a cut answer as closed', () => {
    assert.throws(() => parse(chunked('a'.repeat(100), 'b'.repeat(100)), 1 << 20, 150), (e: unknown) => e instanceof Http1Failure && e.kind === 'too-large');
    const parser = new ResponseParser({ head: () => undefined, body: () => undefined, end: () => undefined });
    parser.push(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{"a"'));
    assert.throws(() => parser.eof(), (e: unknown) => e instanceof Http1Failure && e.kind === 'closed');
  });

  it('splits a stream into messages without copying those within one piece, and bounds a message without newline', () => {
    const lines: Buffer[] = [];
    const splitter = new LineSplitter(10, (l) => lines.push(l));
    const piece = Buffer.from('{"a":1}\n{"b"');
    splitter.push(piece);
    assert.equal(lines[0]!.buffer, piece.buffer, 'a view into the piece, not a copy');
    splitter.push(Buffer.from(':2}\n'));
    assert.deepEqual(lines.map(String), ['{"a":1}', '{"b":2}']);
    assert.throws(() => splitter.push(Buffer.from('x'.repeat(11))), (e: unknown) => e instanceof Http1Failure && e.kind === 'too-large');
  });
});

describe('decoding a watch message', () => {
  it('reads only what weft uses; values stay base64 until read', () => {
    const msg = decodeWatchMessage(Buffer.from(JSON.stringify({
      result: {
        header: { revision: '12', cluster_id: '1' }, watch_id: '1',
        events: [{ kv: { key: Buffer.from('/p/subnets/10.5.1.0-24').toString('base64'), value: Buffer.from('{"PublicIP":"10.0.0.1"}').toString('base64'), mod_revision: '12', lease: '5' } }, { type: 'DELETE', kv: { key: Buffer.from('/p/subnets/10.5.2.0-24').toString('base64'), mod_revision: '12' } }],
      },
    })));
    assert.ok(msg !== null && msg.error === undefined);
    assert.equal(msg.headerRevision, '12');
    assert.equal(msg.watchId, '1');
    assert.deepEqual(msg.events!.map((e) => [e.deleted, e.kv.key, e.kv.leaseId, e.kv.modRevision]), [[false, '/p/subnets/10.5.1.0-24', '5', '12'], [true, '/p/subnets/10.5.2.0-24', '0', '12']]);
    assert.equal(msg.events![0]!.kv.value.toString(), '{"PublicIP":"10.0.0.1"}');
    assert.equal(decodeWatchMessage(Buffer.from('  \r')), null);
  });

  for (const [what, line] of [
    ['not JSON', '{"result":'],
    ['JSON null', 'null'],
    ['a revision that is not a number', '{"result":{"header":{"revision":"12abc"}}}'],
    ['events that are not a list', '{"result":{"events":{"kv":{}}}}'],
    ['an event without kv', '{"result":{"events":[{"type":"PUT"}]}}'],
    ['a key that is not a string', '{"result":{"events":[{"kv":{"key":5}}]}}'],
    ['an unknown event type', '{"result":{"events":[{"type":"EXPLODE","kv":{"key":"YQ=="}}]}}'],
    ['a mod_revision that is an object', '{"result":{"events":[{"kv":{"key":"YQ==","mod_revision":{}}}]}}'],
  ] as const) {
    it(`refuses a message with ${what} (Http1Failure, no TypeError later)`, () => {
      assert.throws(() => decodeWatchMessage(Buffer.from(line)), (e: unknown) => e instanceof Http1Failure && e.kind === 'malformed');
    });
  }
});

describe('the wire over a hostile or odd server', () => {
  const server = new RawServer();
  let endpoint = '';
  before(async () => {
    endpoint = await server.start();
  });
  after(() => server.stop());

  it('runs sequential calls on one keep-alive connection and decodes answers split anywhere', async () => {
    const wire = new EtcdHttpWire({ endpoints: [endpoint], callTimeoutMs: 1000 });
    try {
      const answer = ok(rangeAnswer('/p/config', '{"Network":"10.5.0.0/16"}'));
      const framings: ((b: string) => (string | Buffer)[])[] = [(b) => [b], (b) => [...Buffer.from(b)].map((x) => Buffer.from([x]))];
      const before = server.connections;
      for (const framing of framings) {
        server.script = () => framing(answer);
        const r = await wire.range('/p/config', false);
        assert.equal(r.revision, '9');
        assert.deepEqual(r.kvs.map((kv) => [kv.key, kv.value.toString(), kv.leaseId, kv.modRevision]), [['/p/config', '{"Network":"10.5.0.0/16"}', '77', '8']]);
      }
      server.script = () => [chunked('{"header":{"revision":"3"},', '"ID":"42","TTL":"60"}')];
      assert.deepEqual(await wire.grant(60), { id: '42', ttl: 60 });
      assert.equal(server.connections - before, 1, 'one connection for every call');
      assert.match(server.requests.at(-1)!.head, /^POST \/v3\/lease\/grant HTTP\/1\.1\r\nHost: 127\.0\.0\.1:\d+\r\n/);
    } finally {
      wire.close();
    }
  });

  it('rejects every malformed answer as a transport failure (retried: unreachable), and the next call works on a new connection', async () => {
    const wire = new EtcdHttpWire({ endpoints: [endpoint], callTimeoutMs: 1000 });
    const bad: [string, Script][] = [
      ['garbage status line', () => ['SSH-2.0-x\r\n\r\n']],
      ['endless headers', () => [`HTTP/1.1 200 OK\r\n${'X-A: b\r\n'.repeat(4000)}`]],
      ['invalid chunk size', () => ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfoo\r\n']],
      ['huge chunk size', () => ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffff\r\n']],
      ['huge Content-Length', () => ['HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n']],
      ['closed in the middle', (_req, socket) => {
        socket.end('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"header"');
        return null;
      }],
      ['no answer at all', () => null],
    ];
    try {
      for (const [what, script] of bad) {
        server.script = script;
        const started = Date.now();
        const err = await wire.range('/p/config', false).then(() => null, (e: unknown) => e);
        assert.ok(err instanceof Error, `${what}: rejected`);
        assert.equal(wire.classify(err), 'unreachable', `${what}: ${String(err)}`);
        assert.ok(Date.now() - started < 2000, `${what}: within the call timeout`);
        server.script = () => [ok(rangeAnswer('/p/config', 'v'))];
        assert.equal((await wire.range('/p/config', false)).kvs[0]!.value.toString(), 'v', `${what}: the next call works`);
      }
    } finally {
      wire.close();
    }
  });

  it('takes JSON that is not an object, and HTTP errors, as answers (EtcdHttpError), not crashes', async () => {
    const wire = new EtcdHttpWire({ endpoints: [endpoint], callTimeoutMs: 1000 });
    try {
      server.script = () => [ok('null')];
      await assert.rejects(wire.range('/p/config', false), (e: unknown) => e instanceof EtcdHttpError && wire.classify(e) === 'answered');
      server.script = () => ['HTTP/1.1 404 Not Found\r\nContent-Length: 60\r\n\r\n{"error":"requested lease not found","code":5,"message":"x"}'];
      await assert.rejects(wire.revoke('1'), (e: unknown) => e instanceof EtcdHttpError && e.grpcCode === 5);
      server.script = () => [ok('{"header":{"revision":"1"},"kvs":[{"key":"YQ==","mod_revision":"not a number"}]}')];
      await assert.rejects(wire.range('/p/config', false), (e: unknown) => e instanceof Http1Failure && wire.classify(e) === 'unreachable');
    } finally {
      wire.close();
    }
  });

  it('refuses an auth token that would inject header lines', async () => {
    const wire = new EtcdHttpWire({ endpoints: [endpoint], callTimeoutMs: 1000, username: 'root', password: 'pw' });
    try {
      server.script = (req) => (req.head.startsWith('POST /v3/auth/authenticate') ? [ok('{"token":"abc\\r\\nX-Injected: 1"}')] : [ok('{}')]);
      const from = server.requests.length;
      await assert.rejects(wire.range('/p/config', false), (e: unknown) => e instanceof Http1Failure && /auth token/.test(e.message));
      assert.ok(!server.requests.slice(from).some((r) => /X-Injected/.test(r.head)));
    } finally {
      wire.close();
    }
  });

  it('keeps a copy of what it holds across reads: the connection reads every answer into one buffer', async () => {
    // Each part reaches the client in a read of its own (30 ms apart): a piece held as a view of
    // the read buffer would be overwritten by the next read (the unary answer's first half, the
    // watch message's start).
    const inTwoReads = (first: string, second: string): Script => (_req, socket) => {
      socket.write(first);
      setTimeout(() => socket.write(second), 30);
      return null;
    };
    const value = `{"Network":"10.5.0.0/16","pad":"${'x'.repeat(300)}"}`;
    const answer = ok(rangeAnswer('/p/config', value));
    const cut = answer.length - 200;
    const wire = new EtcdHttpWire({ endpoints: [endpoint], callTimeoutMs: 1000, watchProbeMs: 60_000 });
    const s = sink();
    try {
      server.script = inTwoReads(answer.slice(0, cut), answer.slice(cut));
      const r = await wire.range('/p/config', false);
      assert.deepEqual(r.kvs.map((kv) => [kv.key, kv.value.toString()]), [['/p/config', value]]);

      const put = `${JSON.stringify({ result: { header: { revision: '6' }, watch_id: '1', events: [{ kv: { key: Buffer.from('/w/a').toString('base64'), value: Buffer.from(value).toString('base64'), mod_revision: '6' } }] } })}\n`;
      const head = 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n';
      const chunk = (c: string): string => `${Buffer.byteLength(c).toString(16)}\r\n${c}\r\n`;
      const created = `${JSON.stringify({ result: { header: { revision: '5' }, watch_id: '1', created: true } })}\n`;
      const split = 20; // the second read is longer than the first: it overwrites where the start was read
      server.script = (req, socket) => (req.head.startsWith('POST /v3/watch') ? inTwoReads(head + chunk(created + put.slice(0, split)), chunk(put.slice(split)))(req, socket) : [ok('{}')]);
      wire.watchPrefix('/w/', s);
      await waitFor(() => s.log.some((l) => l.startsWith('events')), 'the watch event', 3000);
      assert.deepEqual(s.log.filter((l) => l.startsWith('events')), [`events +/w/a=${value}@6`]);
    } finally {
      wire.close();
    }
  });

  it('one read buffer for every connection: a unary answer read between two parts of a watch message does not corrupt it', async () => {
    const value = `{"Network":"10.5.0.0/16","pad":"${'y'.repeat(300)}"}`;
    const put = `${JSON.stringify({ result: { header: { revision: '6' }, watch_id: '1', events: [{ kv: { key: Buffer.from('/w/b').toString('base64'), value: Buffer.from(value).toString('base64'), mod_revision: '6' } }] } })}\n`;
    const head = 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n';
    const chunk = (c: string): string => `${Buffer.byteLength(c).toString(16)}\r\n${c}\r\n`;
    const created = `${JSON.stringify({ result: { header: { revision: '5' }, watch_id: '1', created: true } })}\n`;
    let sendRest: (() => void) | null = null;
    server.script = (req, socket) => {
      if (!req.head.startsWith('POST /v3/watch')) return [ok(rangeAnswer('/p/other', 'z'.repeat(900)))];
      socket.write(head + chunk(created + put.slice(0, 40)));
      sendRest = () => socket.write(chunk(put.slice(40)));
      return null;
    };
    const wire = new EtcdHttpWire({ endpoints: [endpoint], callTimeoutMs: 1000, watchProbeMs: 60_000 });
    const s = sink();
    try {
      wire.watchPrefix('/w/', s);
      await waitFor(() => s.log.includes('created') && sendRest !== null, 'the watch created', 3000);
      await new Promise((r) => setTimeout(r, 30));
      // Another connection's answer, longer than the watch's first read, lands in the same buffer.
      const r = await wire.range('/p/other', false);
      assert.equal(r.kvs[0]!.value.toString(), 'z'.repeat(900));
      sendRest!();
      await waitFor(() => s.log.some((l) => l.startsWith('events')), 'the watch event', 3000);
      assert.deepEqual(s.log.filter((l) => l.startsWith('events')), [`events +/w/b=${value}@6`]);
    } finally {
      wire.close();
    }
  });

  it('a watch decodes messages split across chunks and reads, and a hostile stream only disconnects it (then it re-opens)', async () => {
    const create = (id: string, rev: number): string => `${JSON.stringify({ result: { header: { revision: String(rev) }, watch_id: id, created: true } })}\n`;
    const put = (id: string, key: string, value: string, rev: number): string =>
      `${JSON.stringify({ result: { header: { revision: String(rev) }, watch_id: id, events: [{ kv: { key: Buffer.from(key).toString('base64'), value: Buffer.from(value).toString('base64'), mod_revision: String(rev) } }] } })}\n`;
    const streamHead = 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n';
    const chunk = (s: string): string => `${Buffer.byteLength(s).toString(16)}\r\n${s}\r\n`;
    const hostileStreams = [
      chunk('{"result": nope}\n'),
      chunk(`{"result":{"header":{"revision":"x1"},"watch_id":"1"}}\n`),
      chunk('{"result":{"watch_id":"1","events":[{"kv":null}]}}\n'),
      'zz\r\n',
      chunk('x'.repeat(1 << 16)).repeat(MAX_BODY_BYTES / (1 << 16) + 1), // one message over the bound, never a newline
    ];
    let stream = 0;
    server.script = (req) => {
      if (!req.head.startsWith('POST /v3/watch')) return [ok('{}')];
      assert.match(req.head, /Transfer-Encoding: chunked/);
      const n = stream++;
      if (n === 0) {
        // Well-formed, split badly: a message across two chunks, a chunk split across reads.
        const all = create('1', 5) + put('1', '/w/a', 'A', 6);
        const cut = all.length - 20;
        const bytes = streamHead + chunk(all.slice(0, cut)) + chunk(all.slice(cut));
        return [bytes.slice(0, 100), bytes.slice(100, 101), bytes.slice(101)];
      }
      if (n <= hostileStreams.length) return [streamHead + chunk(create('1', 6)) + hostileStreams[n - 1]!];
      return [streamHead + chunk(create('1', 6))];
    };
    const wire = new EtcdHttpWire({ endpoints: [endpoint], callTimeoutMs: 1000, watchProbeMs: 60_000 });
    const s = sink();
    try {
      wire.watchPrefix('/w/', s);
      await waitFor(() => s.log.includes('events +/w/a=A@6'), 'the split message', 3000);
      // Stream 0 stays open until the server drops it; the hostile ones follow, one per re-open.
      server.dropAll();
      await waitFor(() => stream > hostileStreams.length + 1 && s.log.filter((l) => l === 'created').length >= hostileStreams.length + 2, `every hostile stream survived (${s.log.join(' | ')})`, 20_000);
      const disconnects = s.log.filter((l) => l.startsWith('disconnected'));
      assert.ok(disconnects.length >= hostileStreams.length + 1, disconnects.join('\n'));
      assert.ok(disconnects.some((l) => /undecodable watch message/.test(l)));
      assert.ok(disconnects.some((l) => /malformed header revision/.test(l)));
      assert.ok(disconnects.some((l) => /invalid chunk-size/.test(l)));
      assert.ok(disconnects.some((l) => /stream message over/.test(l)));
    } finally {
      wire.close();
    }
  });
});
