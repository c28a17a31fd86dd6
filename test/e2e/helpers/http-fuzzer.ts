/**
 * A hostile HTTP client for weftd's health port, run as a program inside a lab namespace:
 *
 *   node http-fuzzer.js random HOST PORT SEED COUNT     random requests over raw TCP
 *   node http-fuzzer.js slow HOST PORT CONNECTIONS      slowloris: headers one byte a second
 *   node http-fuzzer.js watch HOST PORT SECONDS         GET /healthz every 200 ms: failures, worst latency
 *
 * Prints one JSON line of figures. Random requests are built from a seeded generator (a failing
 * seed reproduces): methods, request targets (the crash of issue #9 and its relatives), HTTP
 * versions, headers (huge, many, malformed, conflicting lengths), bodies, bare LF line ends,
 * pipelining and plain garbage. A request "hangs" when the server neither answers nor closes
 * the connection within HANG_MS (more than the server's header/request timeouts).
 */
import { connect, type Socket } from 'node:net';
import { prng as rng } from './prng';

const HANG_MS = 15_000;
const CONCURRENCY = 24;


function pick<T>(r: () => number, xs: readonly T[]): T {
  return xs[Math.floor(r() * xs.length)]!;
}

function bytes(r: () => number, n: number, printable = false): string {
  let s = '';
  for (let i = 0; i < n; i++) s += String.fromCharCode(printable ? 33 + Math.floor(r() * 94) : Math.floor(r() * 256));
  return s;
}

const METHODS = ['GET', 'GET', 'GET', 'HEAD', 'POST', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH', 'TRACE', 'CONNECT', 'PRI', 'get', 'G\u00c9T', 'XYZZY', ''];
const TARGETS = [
  '/healthz', '/readyz', '/metrics', '/status', '/probe', '/', '//x:abc/', '//x:abc/healthz', '//', '///', '//[::1', '//a@b:c/',
  '/%', '/%zz', '/%00', '/..%2f..%2fetc%2fpasswd', '/../../', '*', 'http://weftd/status', 'http://x:abc/', 'http://[::1', 'healthz',
  '/healthz#frag', '/healthz?', '/probe?peer=', '/probe?peer=%ff%fe', '/status?x=' + 'y'.repeat(6000), '/?' + '&'.repeat(2000),
  '/\u00ff\u00fe', '/healthz/../status', '/HEALTHZ', '/metrics;x', '/probe?peer=10.5.1.0-24&peer=a',
];
const VERSIONS = ['HTTP/1.1', 'HTTP/1.1', 'HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'HTTP/9.9', 'HTTP/1.1 extra', 'http/1.1', ''];

/**
 * Half the requests are well-formed HTTP/1.x with hostile targets, queries and headers (they
 * reach weftd's handler); the other half break the protocol (they exercise Node's parser and
 * weftd's connection handling).
 */
function randomRequest(r: () => number): string {
  if (r() < 0.5) return plausibleRequest(r);
  const roll = r();
  if (roll < 0.12) return bytes(r, 1 + Math.floor(r() * 2000)); // garbage
  const eol = r() < 0.1 ? '\n' : '\r\n';
  const target = r() < 0.1 ? '/' + bytes(r, 1 + Math.floor(r() * 300), true) : pick(r, TARGETS);
  let head = `${pick(r, METHODS)} ${target} ${pick(r, VERSIONS)}${eol}`;
  if (r() < 0.9) head += `Host: ${r() < 0.9 ? 'weftd' : bytes(r, 20, true)}${eol}`;
  let body = '';
  const headers = Math.floor(r() * 8);
  for (let i = 0; i < headers; i++) {
    const kind = r();
    if (kind < 0.15) {
      const n = pick(r, ['0', '5', '-1', 'abc', '99999999999999999999', '3, 4', '']);
      head += `Content-Length: ${n}${eol}`;
      if (/^\d+$/.test(n) && Number(n) < 100_000) body = bytes(r, Number(n));
    } else if (kind < 0.25) {
      head += `Transfer-Encoding: ${pick(r, ['chunked', 'gzip, chunked', 'x', 'chunked, identity'])}${eol}`;
      body = pick(r, ['5\r\nhello\r\n0\r\n\r\n', 'zz\r\n', '0\r\n\r\n', 'ffffffffffffffff\r\n']);
    } else if (kind < 0.32) {
      head += `X-Big: ${'a'.repeat(Math.floor(r() * 20_000))}${eol}`; // past maxHeaderSize sometimes
    } else if (kind < 0.38) {
      head += `Connection: ${pick(r, ['close', 'keep-alive', 'upgrade', 'Upgrade, HTTP2-Settings'])}${eol}`;
      if (r() < 0.5) head += `Upgrade: ${pick(r, ['websocket', 'h2c', 'x'])}${eol}`;
    } else if (kind < 0.43) {
      head += `Expect: 100-continue${eol}`;
    } else if (kind < 0.48) {
      head += `no colon here${eol}`;
    } else if (kind < 0.53) {
      head += `X-Fold: a${eol} folded${eol}`;
    } else if (kind < 0.58) {
      for (let j = 0; j < 100; j++) head += `X-${j}: ${j}${eol}`; // past maxHeadersCount
    } else if (kind < 0.63) {
      head += `${bytes(r, 10, true)}: ${bytes(r, 30)}${eol}`;
    } else {
      head += `X-${bytes(r, 8, true).replace(/[:]/g, '')}: ${bytes(r, 20, true)}${eol}`;
    }
  }
  let req = head + eol + body;
  if (r() < 0.1) req += `GET /healthz HTTP/1.1${eol}Host: a${eol}${eol}`; // pipelined
  return req;
}

const PLAIN_METHODS = ['GET', 'GET', 'GET', 'HEAD', 'POST', 'POST', 'PUT', 'DELETE', 'OPTIONS'];

function plausibleRequest(r: () => number): string {
  const target = r() < 0.15 ? '/' + bytes(r, 1 + Math.floor(r() * 200), true).replace(/[#]/g, '') : pick(r, TARGETS.filter((t) => t.startsWith('/')));
  let head = `${pick(r, PLAIN_METHODS)} ${target} ${r() < 0.8 ? 'HTTP/1.1' : 'HTTP/1.0'}\r\nHost: weftd\r\n`;
  let body = '';
  const headers = Math.floor(r() * 5);
  for (let i = 0; i < headers; i++) {
    const kind = r();
    if (kind < 0.15) {
      const n = Math.floor(r() * 3000);
      head += `Content-Length: ${n}\r\n`;
      body = bytes(r, n);
    } else if (kind < 0.25) {
      head += `Connection: ${pick(r, ['close', 'keep-alive'])}\r\n`;
    } else if (kind < 0.3) {
      head += 'Expect: 100-continue\r\n';
    } else if (kind < 0.35) {
      head += `X-Big: ${'a'.repeat(Math.floor(r() * 12_000))}\r\n`;
    } else {
      head += `X-${bytes(r, 6, true).replace(/[^A-Za-z0-9]/g, 'q')}: ${bytes(r, 40, true)}\r\n`;
    }
  }
  let req = head + '\r\n' + body;
  if (r() < 0.15) req += 'GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n'; // pipelined
  return req;
}

type Outcome = 'answered' | 'closed' | 'hang' | 'refused';

function one(host: string, port: number, payload: string): Promise<{ outcome: Outcome; status: string }> {
  return new Promise((resolve) => {
    let got = '';
    let settled = false;
    const s: Socket = connect(port, host);
    const done = (outcome: Outcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ outcome, status: /^HTTP\/1\.[01] (\d)/.exec(got)?.[1] ?? '-' });
    };
    const timer = setTimeout(() => done('hang'), HANG_MS);
    s.on('connect', () => s.write(Buffer.from(payload, 'latin1'), () => undefined));
    s.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      // One full response head is enough: the server did its part.
      if (got.includes('\r\n\r\n')) done('answered');
    });
    s.on('error', (e: NodeJS.ErrnoException) => done(e.code === 'ECONNREFUSED' ? 'refused' : 'closed'));
    s.on('close', () => done(got.startsWith('HTTP/') ? 'answered' : 'closed'));
  });
}

async function random(host: string, port: number, seed: number, count: number): Promise<void> {
  const r = rng(seed);
  const payloads = Array.from({ length: count }, () => randomRequest(r));
  const figures = { requests: count, answered: 0, closed: 0, hang: 0, refused: 0, byStatus: {} as Record<string, number>, ms: 0 };
  const t0 = Date.now();
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < payloads.length) {
      const p = payloads[next++]!;
      const res = await one(host, port, p);
      figures[res.outcome]++;
      figures.byStatus[res.status + 'xx'] = (figures.byStatus[res.status + 'xx'] ?? 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  figures.ms = Date.now() - t0;
  process.stdout.write(JSON.stringify(figures) + '\n');
}

/** Slowloris: open `n` connections, send a header byte a second; how long until the server cuts each. */
async function slow(host: string, port: number, n: number): Promise<void> {
  const t0 = Date.now();
  const lives = await Promise.all(Array.from({ length: n }, () => new Promise<{ ms: number; answered: boolean }>((resolve) => {
    const s = connect(port, host);
    let answered = false;
    const line = 'GET /healthz HTTP/1.1\r\nHost: a\r\nX-Slow: ';
    let i = 0;
    const tick = setInterval(() => {
      if (i < line.length) s.write(line[i++]!);
      else s.write('a');
    }, 1000);
    const give = setTimeout(() => s.destroy(), 60_000); // never reached when the server cuts us off
    s.on('data', () => {
      answered = true;
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      clearInterval(tick);
      clearTimeout(give);
      resolve({ ms: Date.now() - t0, answered });
    });
  })));
  const ms = lives.map((l) => l.ms).sort((a, b) => a - b);
  process.stdout.write(JSON.stringify({ connections: n, maxMs: ms[ms.length - 1], minMs: ms[0], keptOver20s: ms.filter((x) => x > 20_000).length }) + '\n');
}

/** The well-behaved client next to the attack: does /healthz keep answering, and how fast? */
async function watch(host: string, port: number, seconds: number): Promise<void> {
  const end = Date.now() + seconds * 1000;
  const figures = { checks: 0, failures: 0, worstMs: 0, lastError: '' };
  while (Date.now() < end) {
    const t = Date.now();
    try {
      const r = await fetch(`http://${host}:${port}/healthz`, { signal: AbortSignal.timeout(5000) });
      if (r.status !== 200 || (await r.text()) !== 'ok\n') throw new Error(`HTTP ${r.status}`);
    } catch (err) {
      figures.failures++;
      figures.lastError = String(err);
    }
    figures.checks++;
    figures.worstMs = Math.max(figures.worstMs, Date.now() - t);
    await new Promise((res) => setTimeout(res, 200));
  }
  process.stdout.write(JSON.stringify(figures) + '\n');
}

const [mode, host, port, a, b] = process.argv.slice(2);
if (mode === 'random') void random(host!, Number(port), Number(a), Number(b));
else if (mode === 'slow') void slow(host!, Number(port), Number(a));
else if (mode === 'watch') void watch(host!, Number(port), Number(a));
else {
  process.stderr.write('usage: http-fuzzer.js random HOST PORT SEED COUNT | slow HOST PORT CONNECTIONS | watch HOST PORT SECONDS\n');
  process.exit(2);
}
