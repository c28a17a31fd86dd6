/**
 * A minimal HTTP/1.1 client for etcd's JSON gateway (etcd-http-wire.ts), over `node:net` (and
 * `node:tls`, loaded only for https:// endpoints). Why not Node's `http`: per peer join its
 * IncomingMessage streams, parser and event emitters cost ~10 % of weftd's main-thread time, and
 * loading it costs ~0.7 MB private memory, ~1.8 MB RSS and start-up time (docs/performance.md,
 * "The etcd wire without Node's http client"). The gateway needs little: POST with a JSON body,
 * answers with Content-Length or chunked, and long-lived chunked streams of newline-delimited JSON.
 *
 * What comes off the socket is hostile until parsed (a bad server or a man in the middle must
 * never crash weftd nor make it allocate without bound): the status line and headers are bounded
 * (MAX_HEAD_BYTES), so are chunk-size lines, chunk sizes, bodies (MAX_BODY_BYTES) and stream
 * messages (LineSplitter); anything malformed ends the exchange with an Http1Failure and drops the
 * connection, which the wire handles like any transport error (failover, reconnect with backoff).
 *
 * Not supported, because the gateway never needs them: redirects, compression, 1xx other than
 * being skipped, pipelining (one exchange at a time per connection), request bodies other than
 * Content-Length (unary) or chunked (streams).
 */
import { connect as netConnect, isIP, type Socket } from 'node:net';
import { createDeadline } from '../deadline';
import { parseIPv4 } from '../ip';
import { loadNative } from '../native';
import { nativeJoin } from './native-join';

/** Status line + headers (and, separately, trailers) of one response. */
export const MAX_HEAD_BYTES = 16 * 1024;
/** A unary answer's body, one chunk, one stream message: a range of 5000 leases is ~2 MB. */
export const MAX_BODY_BYTES = 32 * 1024 * 1024;
const MAX_HEADERS = 100;
const MAX_CHUNK_LINE_BYTES = 1024;

export type Http1FailureKind =
  /** The server's bytes are not HTTP/1.1 as this client accepts it. */
  | 'malformed'
  /** A bound (head, chunk, body, message) was exceeded. */
  | 'too-large'
  /** The connection closed before the answer was complete. */
  | 'closed'
  /** No complete answer within the call's deadline. */
  | 'timeout';

/** A transport failure of this client (as opposed to an error etcd answered with). */
export class Http1Failure extends Error {
  constructor(readonly kind: Http1FailureKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'Http1Failure';
  }
}

/** TLS material (readTlsFiles). */
export interface TlsFiles {
  readonly ca?: Buffer;
  readonly cert?: Buffer;
  readonly key?: Buffer;
}

/** Where to connect: from an http(s):// URL. */
export interface Http1Endpoint {
  /** Without IPv6 brackets. */
  readonly host: string;
  readonly port: number;
  /** null: plain TCP. */
  readonly tls: TlsFiles | null;
  /** scheme://host:port, for messages and the Host header. */
  readonly origin: string;
  readonly hostHeader: string;
}

export function endpointOf(url: URL, tls: TlsFiles): Http1Endpoint {
  const secure = url.protocol === 'https:';
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  return { host, port: Number(url.port || (secure ? 443 : 80)), tls: secure ? tls : null, origin: url.origin, hostHeader: url.host };
}

// ---- the response parser -----------------------------------------------------------------------

export interface ResponseHead {
  readonly status: number;
  /** Lower-case names; only the last value of a repeated header (Content-Length is checked). */
  readonly headers: ReadonlyMap<string, string>;
}

/** What a parsed response is told to. Exceptions it throws propagate out of push(). */
export interface ResponseSink {
  head(head: ResponseHead): void;
  /**
   * A piece of the (de-chunked) body: a view into the read buffer, valid only during this call
   * (the next read, of this connection or another, overwrites it): whatever keeps it copies it.
   */
  body(piece: Buffer): void;
  end(): void;
}

type ParserState = 'head' | 'length' | 'chunk-size' | 'chunk-data' | 'chunk-crlf' | 'trailers' | 'until-close' | 'done';

const STATUS_LINE = /^HTTP\/1\.([01]) ([1-9]\d\d)(?: [^\r\n]*)?$/;
const HEADER_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(.*?)[ \t]*$/;
const CHUNK_SIZE_LINE = /^([0-9a-fA-F]{1,8})[ \t]*(?:;.*)?$/;

/**
 * Incremental parser of one HTTP/1.1 response, fed the socket's Buffers as they come: body
 * pieces are views into them (no copy, no string); only header and chunk-size lines split across
 * two reads are joined. Throws Http1Failure for anything malformed or too large.
 */
export class ResponseParser {
  private state: ParserState = 'head';
  /** A line split across reads: its first part(s). */
  private carry: Buffer | null = null;
  private headBytes = 0;
  private status = 0;
  private headers = new Map<string, string>();
  private remaining = 0;
  private bodyBytes = 0;
  /** Whether the connection may carry another exchange after this one. */
  keepAlive = true;

  /** `maxBody`: bound of the whole body (Infinity for a stream: its messages are bounded instead). */
  constructor(private readonly sink: ResponseSink, private readonly maxBody: number = MAX_BODY_BYTES) {}

  get done(): boolean {
    return this.state === 'done';
  }

  push(data: Buffer): void {
    let at = 0;
    while (at < data.length) {
      if (this.state === 'chunk-size' && this.carry === null) {
        // The common case: "<hex>\r\n" whole in this read, parsed off the bytes (no string, no
        // regex); anything else (split across reads, extensions, the last chunk) goes to the line parser.
        const next = this.plainChunkSize(data, at);
        if (next >= 0) {
          at = next;
          continue;
        }
      }
      switch (this.state) {
        case 'head':
        case 'trailers':
        case 'chunk-size': {
          const limit = this.state === 'chunk-size' ? MAX_CHUNK_LINE_BYTES : MAX_HEAD_BYTES - this.headBytes;
          const nl = data.indexOf(0x0a, at);
          const end = nl < 0 ? data.length : nl;
          const carried = this.carry === null ? 0 : this.carry.length;
          if (carried + end - at > limit) {
            throw new Http1Failure('too-large', this.state === 'chunk-size' ? `chunk-size line over ${MAX_CHUNK_LINE_BYTES} bytes` : `response head over ${MAX_HEAD_BYTES} bytes`);
          }
          if (nl < 0) {
            this.carry = this.carry === null ? Buffer.from(data.subarray(at)) : Buffer.concat([this.carry, data.subarray(at)]);
            return;
          }
          let line = this.carry === null ? data.subarray(at, nl) : Buffer.concat([this.carry, data.subarray(at, nl)]);
          this.carry = null;
          at = nl + 1;
          if (this.state !== 'chunk-size') this.headBytes += line.length + 1;
          if (line.length > 0 && line[line.length - 1] === 0x0d) line = line.subarray(0, line.length - 1);
          this.line(line.toString('latin1'));
          break;
        }
        case 'length':
        case 'chunk-data': {
          const n = Math.min(this.remaining, data.length - at);
          this.remaining -= n;
          this.emit(data.subarray(at, at + n));
          at += n;
          if (this.remaining === 0) {
            if (this.state === 'length') this.finish();
            else {
              this.state = 'chunk-crlf';
              this.remaining = 2;
            }
          }
          break;
        }
        case 'chunk-crlf': {
          const expected = this.remaining === 2 ? 0x0d : 0x0a;
          if (data[at] !== expected) throw new Http1Failure('malformed', 'chunk data not followed by CRLF (wrong chunk size?)');
          at++;
          if (--this.remaining === 0) this.state = 'chunk-size';
          break;
        }
        case 'until-close':
          this.emit(at === 0 ? data : data.subarray(at));
          at = data.length;
          break;
        case 'done':
          throw new Http1Failure('malformed', `${data.length - at} bytes after the end of the response`);
      }
    }
  }

  /** The server closed its side: ends a body that runs until close; otherwise the answer is cut. */
  eof(): void {
    if (this.state === 'until-close') {
      this.finish();
      return;
    }
    if (this.state !== 'done') throw new Http1Failure('closed', `connection closed in the middle of the response (${this.state === 'head' && this.headBytes === 0 ? 'before any answer' : this.state})`);
  }

  /** A chunk-size line of 1-8 hex digits and CRLF at `at`: applied, returns the offset after it; else -1. */
  private plainChunkSize(data: Buffer, at: number): number {
    let size = 0;
    let i = at;
    for (; i < data.length && i - at <= 8; i++) {
      const c = data[i]!;
      const digit = c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x61 && c <= 0x66 ? c - 0x57 : c >= 0x41 && c <= 0x46 ? c - 0x37 : -1;
      if (digit < 0) break;
      size = size * 16 + digit;
    }
    if (i === at || i - at > 8 || i + 1 >= data.length || data[i] !== 0x0d || data[i + 1] !== 0x0a || size === 0 || size > MAX_BODY_BYTES) return -1;
    this.state = 'chunk-data';
    this.remaining = size;
    return i + 2;
  }

  private emit(piece: Buffer): void {
    this.bodyBytes += piece.length;
    if (this.bodyBytes > this.maxBody) throw new Http1Failure('too-large', `response body over ${this.maxBody} bytes`);
    if (piece.length > 0) this.sink.body(piece);
  }

  private finish(): void {
    this.state = 'done';
    this.sink.end();
  }

  private line(text: string): void {
    if (this.state === 'chunk-size') {
      const m = CHUNK_SIZE_LINE.exec(text);
      if (m === null) throw new Http1Failure('malformed', `invalid chunk-size line ${JSON.stringify(text.slice(0, 40))}`);
      const size = parseInt(m[1]!, 16);
      if (size > MAX_BODY_BYTES) throw new Http1Failure('too-large', `chunk of ${size} bytes (at most ${MAX_BODY_BYTES})`);
      if (size === 0) {
        this.state = 'trailers';
        this.headBytes = 0;
      } else {
        this.state = 'chunk-data';
        this.remaining = size;
      }
      return;
    }
    if (this.state === 'trailers') {
      if (text === '') this.finish();
      return; // trailers are read (bounded) and ignored
    }
    // The head.
    if (this.status === 0) {
      const m = STATUS_LINE.exec(text);
      if (m === null) throw new Http1Failure('malformed', `invalid status line ${JSON.stringify(text.slice(0, 60))}`);
      this.status = Number(m[2]);
      if (m[1] === '0') this.keepAlive = false;
      return;
    }
    if (text !== '') {
      const m = HEADER_LINE.exec(text);
      if (m === null) throw new Http1Failure('malformed', `invalid header line ${JSON.stringify(text.slice(0, 60))}`);
      const name = m[1]!.toLowerCase();
      const value = m[2]!;
      const previous = this.headers.get(name);
      if (name === 'content-length' && previous !== undefined && previous !== value) throw new Http1Failure('malformed', 'two different Content-Length headers');
      this.headers.set(name, value);
      if (this.headers.size > MAX_HEADERS) throw new Http1Failure('too-large', `more than ${MAX_HEADERS} headers`);
      return;
    }
    this.endOfHead();
  }

  private endOfHead(): void {
    const status = this.status;
    const headers = this.headers;
    if (status < 200) {
      // 100 Continue and friends: informational, the real answer follows. 101 was never asked for.
      if (status === 101) throw new Http1Failure('malformed', 'unexpected 101 Switching Protocols');
      this.status = 0;
      this.headers = new Map();
      return;
    }
    if (/(^|,)\s*close\s*(,|$)/i.test(headers.get('connection') ?? '')) this.keepAlive = false;
    this.sink.head({ status, headers });
    const te = headers.get('transfer-encoding');
    const cl = headers.get('content-length');
    if (te !== undefined) {
      if (te.toLowerCase() !== 'chunked') throw new Http1Failure('malformed', `unsupported Transfer-Encoding ${JSON.stringify(te.slice(0, 40))}`);
      if (cl !== undefined) throw new Http1Failure('malformed', 'both Transfer-Encoding and Content-Length');
      this.state = 'chunk-size';
      return;
    }
    if (status === 204 || status === 304) {
      this.finish();
      return;
    }
    if (cl !== undefined) {
      if (!/^\d{1,15}$/.test(cl)) throw new Http1Failure('malformed', `invalid Content-Length ${JSON.stringify(cl.slice(0, 40))}`);
      const length = Number(cl);
      if (length > this.maxBody) throw new Http1Failure('too-large', `Content-Length ${length} over ${this.maxBody} bytes`);
      if (length === 0) this.finish();
      else {
        this.state = 'length';
        this.remaining = length;
      }
      return;
    }
    this.state = 'until-close';
    this.keepAlive = false;
  }
}

/**
 * Splits a stream body into newline-delimited messages, straight from the body pieces: a message
 * within one piece is a view into it (no copy), valid only during onLine, like the piece; the start
 * of a message split across pieces is copied until its end comes. A message over `maxLine` bytes
 * (even without its newline yet) throws Http1Failure('too-large').
 */
export class LineSplitter {
  private parts: Buffer[] = [];
  private size = 0;

  constructor(private readonly maxLine: number, private readonly onLine: (line: Buffer) => void) {}

  push(piece: Buffer): void {
    let at = 0;
    for (;;) {
      const nl = piece.indexOf(0x0a, at);
      if (nl < 0) break;
      let line: Buffer;
      if (this.parts.length === 0) line = piece.subarray(at, nl);
      else {
        this.parts.push(piece.subarray(at, nl));
        line = Buffer.concat(this.parts, this.size + nl - at);
        this.parts = [];
        this.size = 0;
      }
      if (line.length > this.maxLine) throw new Http1Failure('too-large', `stream message over ${this.maxLine} bytes`);
      at = nl + 1;
      this.onLine(line);
    }
    const rest = piece.length - at;
    if (rest === 0) return;
    if (this.size + rest > this.maxLine) throw new Http1Failure('too-large', `stream message over ${this.maxLine} bytes (no newline yet)`);
    // Kept across reads: a copy (the piece is a view into the read buffer, which the next read overwrites).
    this.parts.push(Buffer.from(at === 0 ? piece : piece.subarray(at)));
    this.size += rest;
  }
}

// ---- connections -------------------------------------------------------------------------------

/** A header value that came from elsewhere (an auth token from etcd) must not inject lines. */
function checkHeaderValue(name: string, value: string): void {
  if (!/^[\t\x20-\x7e\x80-\xff]*$/.test(value)) throw new Http1Failure('malformed', `refusing to send header ${name}: its value has control characters`);
}

function requestHead(endpoint: Http1Endpoint, path: string, headers: Readonly<Record<string, string>>, contentLength: number | null): string {
  let head = `POST ${path} HTTP/1.1\r\nHost: ${endpoint.hostHeader}\r\nContent-Type: application/json\r\n`;
  // A stream's connection is never reused, and says so: etcd's gateway (Go's net/http) holds a
  // keep-alive stream's answer back until the request body ends, which a watch's never does.
  head += contentLength === null ? 'Transfer-Encoding: chunked\r\nConnection: close\r\n' : `Content-Length: ${contentLength}\r\n`;
  for (const name of Object.keys(headers)) {
    const value = headers[name]!;
    checkHeaderValue(name, value);
    head += `${name}: ${value}\r\n`;
  }
  return head + '\r\n';
}

/** One chunk of a chunked request body. */
function chunk(data: string): string {
  return `${Buffer.byteLength(data).toString(16)}\r\n${data}\r\n`;
}

/** The plain connections' read buffer: one read of the kernel's socket at most. */
const READ_BUFFER_BYTES = 64 * 1024;
let readBuffer: Buffer | null = null;

/**
 * Opens the connection; every read's bytes go to `onData`, a view valid only during the call.
 *
 * Plain TCP reads straight into one buffer (`onread`), without the Readable stream's push,
 * buffering and 'data' emit per read: issue #14, a peer join's watch message and a watch probe's
 * answer are one read each, on every host. One buffer for every plain connection of the process:
 * a read's bytes are handed on and consumed (or copied) within its callback, before libuv reads
 * the next socket into it. TLS (which has no `onread`) keeps its stream; its Buffers are handed on
 * the same way, under the same contract.
 */
function openSocket(endpoint: Http1Endpoint, onData: (data: Buffer) => void): Socket {
  if (endpoint.tls === null) {
    return netConnect({
      host: endpoint.host,
      port: endpoint.port,
      noDelay: true,
      onread: {
        buffer: (readBuffer ??= Buffer.allocUnsafeSlow(READ_BUFFER_BYTES)),
        callback: (bytes: number, buffer: Uint8Array): boolean => {
          onData(Buffer.from(buffer.buffer, buffer.byteOffset, bytes));
          return true; // keep reading (false would pause the socket)
        },
      },
    });
  }
  // Loaded on demand: the TLS stack only when an endpoint needs it (start-up time, memory).
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const tls = require('node:tls') as typeof import('node:tls');
  const socket = tls.connect({
    host: endpoint.host, port: endpoint.port, ...endpoint.tls,
    // SNI only for names; the certificate is checked against the host either way (as https does).
    ...(isIP(endpoint.host) === 0 ? { servername: endpoint.host } : {}),
  });
  socket.setNoDelay(true);
  socket.on('data', onData);
  return socket;
}

/** One exchange's listeners on a connection. */
interface Exchange extends ResponseSink {
  error(err: Error): void;
}

/** One TCP (or TLS) connection carrying one exchange at a time. */
class Connection {
  private exchange: Exchange | null = null;
  private parser: ResponseParser | null = null;
  private gone = false;

  readonly socket: Socket;
  private readonly origin: string;

  constructor(endpoint: Http1Endpoint, private readonly onGone: (c: Connection) => void) {
    this.origin = endpoint.origin;
    const socket = openSocket(endpoint, (d) => this.onData(d));
    this.socket = socket;
    socket.on('end', () => this.onEof());
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => this.fail(new Http1Failure('closed', `connection to ${this.origin} closed`)));
  }

  get reusable(): boolean {
    return !this.gone && this.exchange === null;
  }

  begin(exchange: Exchange, maxBody: number): void {
    this.exchange = exchange;
    const parser = new ResponseParser({
      head: (h) => exchange.head(h),
      body: (p) => exchange.body(p),
      end: () => {
        this.exchange = null;
        this.parser = null;
        if (!parser.keepAlive) this.destroy();
        exchange.end();
      },
    }, maxBody);
    this.parser = parser;
  }

  /** Ends the connection and its exchange (with `err`; none: silently). */
  fail(err: Error | null): void {
    const exchange = this.exchange;
    this.exchange = null;
    this.parser = null;
    this.destroy();
    if (exchange !== null && err !== null) exchange.error(err);
  }

  destroy(): void {
    if (this.gone) return;
    this.gone = true;
    this.socket.destroy();
    this.onGone(this);
  }

  private onData(d: Buffer): void {
    const parser = this.parser;
    if (parser === null) {
      // Bytes nobody asked for (an idle keep-alive connection): a confused or hostile server.
      this.destroy();
      return;
    }
    try {
      parser.push(d);
    } catch (err) {
      if (!(err instanceof Http1Failure)) throw err; // a bug in a listener: not the server's doing
      this.fail(new Http1Failure(err.kind, `${this.origin}: ${err.message}`, { cause: err.cause }));
    }
  }

  private onEof(): void {
    try {
      this.parser?.eof();
    } catch (err) {
      if (!(err instanceof Http1Failure)) throw err;
      this.fail(new Http1Failure(err.kind, `${this.origin}: ${err.message}`));
      return;
    }
    this.fail(new Http1Failure('closed', `${this.origin} closed the connection`));
  }
}

export interface Http1Answer {
  readonly status: number;
  readonly body: Buffer;
}

/** Listeners of a stream (Http1Client.openStream). */
export interface StreamListeners {
  head(head: ResponseHead): void;
  /**
   * A body piece (de-chunked): a view into the read buffer, valid only during this
   * call (copy what is kept). May throw Http1Failure to end the stream.
   */
  body(piece: Buffer): void;
  /** Once, unless aborted: null when the server ended the body, else why the connection failed. */
  end(err: Error | null): void;
  /**
   * When given, a plain-HTTP stream to an IPv4 address may be read by the addon
   * (src/lease/native-join.ts), which delivers whole lines instead of body pieces: line i is
   * meta[2i] bytes, flagged meta[2i+1] = 1 when the addon applied it (its record in `records`).
   */
  lines?(data: Buffer, meta: Uint32Array, records: Buffer): void;
}

/** An open stream: a request whose chunked body stays open. */
export interface Http1Stream {
  /** Writes one more chunk of the request body. */
  send(data: string): void;
  /** Ends it without telling the listeners. */
  abort(): void;
  /** Ends it with `err` (the listeners' end() gets it). */
  fail(err: Error): void;
  /**
   * A stream the addon reads (the native join path): which watchers are open on it, so that it
   * applies only their events. Absent on Node's sockets.
   */
  watchOpen?(id: string): void;
  watchClosed?(id: string): void;
}

/**
 * HTTP/1.1 to one endpoint: unary POSTs on keep-alive connections (idle ones kept, unref'd so
 * they never keep a process alive; as many as there are calls in flight — the callers bound
 * that), and streams on connections of their own.
 */
export class Http1Client {
  private readonly idle: Connection[] = [];
  private readonly open = new Set<Connection>();

  constructor(readonly endpoint: Http1Endpoint) {}

  /** POST `body`; resolves with the whole answer (any status), rejects with Http1Failure or a socket error. */
  post(path: string, body: string, headers: Readonly<Record<string, string>>, timeoutMs: number): Promise<Http1Answer> {
    return new Promise<Http1Answer>((resolve, reject) => {
      let head: string;
      try {
        head = requestHead(this.endpoint, path, headers, Buffer.byteLength(body));
      } catch (err) {
        reject(err);
        return;
      }
      const conn = this.idle.pop() ?? this.connect();
      conn.socket.ref();
      let status = 0;
      let pieces: Buffer[] = [];
      let size = 0;
      // A Deadline (src/deadline.ts): the answer nearly always comes, and a cleared setTimeout
      // would still wake the loop at its expiry.
      const timer = createDeadline(() => conn.fail(new Http1Failure('timeout', `no answer from ${this.endpoint.origin} within ${timeoutMs} ms`)));
      timer.arm(timeoutMs);
      conn.begin({
        head: (h) => {
          status = h.status;
        },
        body: (p) => {
          pieces.push(Buffer.from(p)); // a view into the read buffer: kept, so copied
          size += p.length;
        },
        end: () => {
          timer.close();
          if (conn.reusable) {
            conn.socket.unref();
            this.idle.push(conn);
          }
          resolve({ status, body: pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces, size) });
          pieces = [];
        },
        error: (err) => {
          timer.close();
          reject(err);
        },
      }, MAX_BODY_BYTES);
      conn.socket.write(head + body);
    });
  }

  /** POST with a chunked body that stays open (`first`: its first chunk), on a connection of its own. */
  openStream(path: string, headers: Readonly<Record<string, string>>, first: string, listeners: StreamListeners): Http1Stream {
    const head = requestHead(this.endpoint, path, headers, null);
    const nativeIp = this.endpoint.tls === null && listeners.lines !== undefined && nativeJoin.owner !== null ? parseIPv4(this.endpoint.host) : null;
    if (nativeIp !== null) return this.openNativeStream(nativeIp, head, first, listeners);
    const conn = this.connect();
    conn.socket.setKeepAlive(true, 30_000);
    let ended = false;
    conn.begin({
      head: (h) => listeners.head(h),
      body: (p) => listeners.body(p),
      end: () => {
        ended = true;
        conn.destroy();
        listeners.end(null);
      },
      error: (err) => {
        ended = true;
        listeners.end(err);
      },
    }, Infinity);
    conn.socket.write(head + chunk(first));
    return {
      send: (data) => {
        if (!ended && data.length > 0) conn.socket.write(chunk(data));
      },
      abort: () => {
        ended = true;
        conn.fail(null);
      },
      fail: (err) => conn.fail(err),
    };
  }

  /**
   * The stream read by the addon (addon/src/fastjoin.cc): connect, the request, the chunked
   * answer and its lines in C++; the lines reach `listeners.lines` in batches. TLS streams stay
   * on Node's sockets (the addon has no TLS of its own).
   */
  private openNativeStream(ip: number, head: string, first: string, listeners: StreamListeners): Http1Stream {
    let ended = false;
    const origin = this.endpoint.origin;
    const ws = new (loadNative().WatchStream)(ip, this.endpoint.port, Buffer.from(head + chunk(first)), nativeJoin.drainMs,
      (status) => listeners.head({ status, headers: new Map() }),
      (data, meta, records) => {
        if (!ended) listeners.lines!(data, meta, records);
      },
      (err) => {
        nativeJoin.streams.delete(ws);
        if (ended) return;
        ended = true;
        listeners.end(err === null ? null : new Error(`${origin}: ${err}`));
      });
    nativeJoin.streams.add(ws);
    return {
      send: (data) => {
        if (!ended && data.length > 0) ws.send(Buffer.from(chunk(data)));
      },
      abort: () => {
        ended = true;
        nativeJoin.streams.delete(ws);
        ws.abort();
      },
      fail: (err) => {
        if (ended) return;
        ended = true;
        nativeJoin.streams.delete(ws);
        ws.abort();
        listeners.end(err);
      },
      watchOpen: (id) => ws.watchOpen(id),
      watchClosed: (id) => ws.watchClosed(id),
    };
  }

  /** Closes every connection: calls in flight reject, streams not aborted before get end(). */
  close(): void {
    for (const c of [...this.open]) c.fail(new Http1Failure('closed', `client for ${this.endpoint.origin} closed`));
    this.idle.length = 0;
  }

  private connect(): Connection {
    const conn = new Connection(this.endpoint, (c) => {
      this.open.delete(c);
      const i = this.idle.indexOf(c);
      if (i >= 0) this.idle.splice(i, 1);
    });
    this.open.add(conn);
    return conn;
  }
}
