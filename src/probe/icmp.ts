/**
 * ICMP echo over a raw IPv4 socket, or ICMPv6 echo over a raw IPv6 one, through `raw-socket` 1.8.1 (a nan addon without TypeScript
 * types). This file is the only one that loads it, lazily: the daemon's start-up never pays for
 * it, and a build without the addon fails here with a message, not at import time.
 *
 * One socket serves every probe: requests carry our identifier, a sequence number and a random
 * 16-byte cookie drawn when the pinger opens; a reply is matched on (identifier, sequence, source
 * address) AND must echo the cookie. Identifier and sequence are 32 guessable bits: without the
 * cookie anyone who can send us ICMP (a container, the underlay) could forge "reachable" for a
 * dead peer. An echo reply carries the request's payload back (RFC 792), so real replies always
 * pass. A raw ICMP socket sees every ICMP packet of the network namespace: an ICMP_FILTER lets
 * only echo replies wake us (not the peers' own probes arriving here), and replies that do not
 * match are ignored.
 *
 * At most MAX_PENDING echoes wait for replies at once; beyond that an echo fails at once with
 * "too many probes in flight" instead of queueing (so the sequence space, 65 536, can never run
 * out and the search for a free sequence number always ends).
 *
 * Cost: O(1) event-loop wake-ups per batch, not O(peers). A batch is sent in one turn of the
 * event loop, one sendto per echo straight through raw-socket's native wrap (its public `send`
 * queues each datagram until a writable event: one wake-up per echo), and each readable wake-up
 * reads every reply waiting (raw-socket's own handler reads one per wake-up); one timer for the
 * whole batch. Measured on a 30-host lab: a cycle of 29 echoes went from ~118 wake-ups a minute
 * on this socket to a few (docs/performance.md, "Idle"). Both reach into raw-socket 1.8.1's
 * `wrap` (pinned in package.json); without it (another version) the public API is used as before.
 *
 * One pinger is one family: `FAMILIES` holds what differs (socket protocol, echo types 8/0 or
 * 128/129, the filter option, where the ICMP header starts in what the socket delivers), and every
 * other line is shared. The differences that matter: an IPv4 raw socket delivers the IP header
 * and we compute the checksum; an ICMPv6 raw socket delivers the ICMPv6 message alone and the
 * kernel computes the checksum (it needs the pseudo-header's source address, which it picks:
 * RFC 3542 §3.1), so we leave the field zero.
 *
 * Source address: left to the kernel. For a peer gateway `<peer subnet>.0` the route is
 * `via <peer>.0 dev flannel.1 onlink`, so the kernel picks flannel.1's own address
 * (`<own subnet>.0`), and the peer's reply comes back through the overlay as well: a probe that
 * succeeds proves the path both ways.
 */
import { isIP } from 'node:net';
import { createDeadline, type Deadline } from '../deadline';
import { WeftError, describeError } from '../errors';
import { parseIPv6, type IPFamily } from '../ip';
import { randomBytes } from '../random';

/**
 * raw-socket 1.8.1's native socket (`socket.wrap`, not in its README): `send` is one synchronous
 * sendto (throws with strerror's text, e.g. on EAGAIN), `recv` one synchronous recvfrom into
 * `buffer` (throws when nothing is waiting: the socket is non-blocking). It is an EventEmitter:
 * 'recvReady' on every readable wake-up.
 */
interface RawSocketWrap {
  send(buffer: Buffer, offset: number, length: number, address: string, after: (bytes: number) => void): void;
  recv(buffer: Buffer, onDatagram: (buffer: Buffer, bytes: number, source: string) => void): void;
  on(event: 'recvReady', listener: () => void): unknown;
  removeAllListeners(event: 'recvReady'): unknown;
}

/** The part of raw-socket we use (its index.js; documented in its README). */
interface RawSocket {
  /** raw-socket 1.8.1's internals (see RawSocketWrap); checked before use. */
  readonly wrap?: unknown;
  readonly buffer?: unknown;
  emit(event: 'error', err: Error): boolean;
  on(event: 'message', listener: (buffer: Buffer, source: string) => void): this;
  on(event: 'error', listener: (err: Error) => void): this;
  on(event: 'close', listener: () => void): this;
  /** Queue a datagram; `after` runs once the kernel took it (or with the error). */
  send(buffer: Buffer, offset: number, length: number, address: string, after: (err: Error | null, bytes: number) => void): this;
  /** setsockopt(level, option, buffer, length). */
  setOption(level: number, option: number, value: Buffer, length: number): void;
  close(): this;
}

interface RawSocketModule {
  createSocket(opts: { protocol: number; addressFamily?: number; bufferSize?: number }): RawSocket;
  readonly Protocol: { readonly ICMP: number; readonly ICMPv6: number };
  readonly AddressFamily: { readonly IPv4: number; readonly IPv6: number };
}

function loadRawSocket(): RawSocketModule {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require('raw-socket') as RawSocketModule;
  } catch (err) {
    throw new WeftError('INTERNAL', `load raw-socket (ICMP probes): ${describeError(err)}; reinstall with npm ci (its addon is built by node-gyp)`, { cause: err });
  }
}

export interface EchoResult {
  readonly ok: boolean;
  /** Round-trip time in ms when ok. */
  readonly rttMs: number | null;
  /** Why not ok: "timeout", or the send error. */
  readonly error: string | null;
}

/** Sends echo requests and resolves with their fate. Never rejects. */
export interface Pinger {
  /** One echo request to each target (in order, duplicates allowed); results in the same order. */
  echoBatch(targets: readonly string[], timeoutMs: number): Promise<EchoResult[]>;
  /** Why the socket stopped working (it is then closed: open a new Pinger), or null. */
  readonly failure: string | null;
  close(): void;
}

/** What differs between ICMP over IPv4 and ICMPv6; everything else in this file is shared. */
interface FamilyCodec {
  readonly family: IPFamily;
  readonly protocol: 'ICMP' | 'ICMPv6';
  readonly addressFamily: 'IPv4' | 'IPv6';
  readonly echoRequest: number;
  readonly echoReply: number;
  /**
   * The type filter: setsockopt(level, option, mask), a set bit drops that type. IPv4:
   * SOL_RAW/ICMP_FILTER, one 32-bit word (linux/icmp.h); IPv6: IPPROTO_ICMPV6/ICMP6_FILTER, eight
   * words for 256 types (linux/icmpv6.h). Words in host order (x86/arm64: little-endian).
   */
  readonly filterLevel: number;
  readonly filterOption: number;
  readonly filterWords: number;
  /** We fill the checksum (IPv4); for ICMPv6 the kernel does. */
  readonly computeChecksum: boolean;
  /** Where the ICMP header starts in a received datagram, or null when it is not one of ours. */
  icmpOffset(datagram: Buffer): number | null;
}

export const FAMILIES: Readonly<Record<IPFamily, FamilyCodec>> = {
  4: {
    family: 4, protocol: 'ICMP', addressFamily: 'IPv4', echoRequest: 8, echoReply: 0,
    filterLevel: 255 /* SOL_RAW */, filterOption: 1 /* ICMP_FILTER */, filterWords: 1, computeChecksum: true,
    // Raw IPv4 sockets deliver the IP header: skip IHL words.
    icmpOffset: (d) => (d.length < 20 || d[0]! >> 4 !== 4 ? null : (d[0]! & 0x0f) * 4),
  },
  6: {
    family: 6, protocol: 'ICMPv6', addressFamily: 'IPv6', echoRequest: 128, echoReply: 129,
    filterLevel: 58 /* IPPROTO_ICMPV6 */, filterOption: 1 /* ICMP6_FILTER */, filterWords: 8, computeChecksum: false,
    // Raw ICMPv6 sockets deliver the ICMPv6 message alone (no IPv6 header).
    icmpOffset: () => 0,
  },
};

/** The filter mask letting only `codec`'s echo reply through. */
export function replyFilter(codec: FamilyCodec): Buffer {
  const mask = Buffer.alloc(4 * codec.filterWords, 0xff);
  const word = codec.echoReply >> 5;
  mask.writeUInt32LE((mask.readUInt32LE(4 * word) & ~(1 << (codec.echoReply & 31))) >>> 0, 4 * word);
  return mask;
}

/** Whether a reply's source is the target (IPv6 text compared by value: `::` forms differ). */
function sameAddress(family: IPFamily, a: string, b: string): boolean {
  if (a === b) return true;
  if (family === 4) return false;
  const x = parseIPv6(a.split('%')[0]!);
  return x !== null && x === parseIPv6(b);
}

const PAYLOAD_BYTES = 56; // ping's default: 64-byte ICMP messages
/** Random bytes at the start of every payload, checked in replies (128 bits: not guessable). */
export const COOKIE_BYTES = 16;
/**
 * Echoes in flight at most. A probe cycle sends 32, an on-demand round 3 batches of one per
 * peer (5000 peers: up to 15 000 in flight); a quarter of the 65 536 sequence numbers, so a free
 * one is always found within MAX_PENDING + 1 steps. The prober does not count an echo refused
 * for this as lost (see Prober.record).
 */
export const MAX_PENDING = 16_384;
export const TOO_MANY_IN_FLIGHT = `too many probes in flight (${MAX_PENDING}); try again later`;
/** Replies read per readable wake-up at most (the rest wake the loop again: it is level-triggered). */
export const MAX_READS_PER_WAKEUP = 64;

/** raw-socket's native wrap and receive buffer when they have the 1.8.1 shape, else null. */
function nativeWrap(socket: RawSocket): { readonly wrap: RawSocketWrap; readonly buffer: Buffer } | null {
  const wrap = socket.wrap as Partial<RawSocketWrap> | undefined;
  const buffer = socket.buffer;
  if (wrap === undefined || wrap === null || !Buffer.isBuffer(buffer)) return null;
  if (typeof wrap.send !== 'function' || typeof wrap.recv !== 'function' || typeof wrap.on !== 'function' || typeof wrap.removeAllListeners !== 'function') return null;
  return { wrap: wrap as RawSocketWrap, buffer };
}

/** A send that failed only because the socket buffer is full: the queued path will retry it. */
function wouldBlock(err: unknown): boolean {
  return /temporarily unavailable|would block|no buffer space/i.test(describeError(err));
}

/** One batch's results, filled in as its echoes are answered, fail or time out. */
interface Batch {
  readonly results: EchoResult[];
  remaining: number;
  readonly resolve: (results: EchoResult[]) => void;
  /** The replies' deadline: a Deadline, since the last reply nearly always comes first (src/deadline.ts). */
  timer: Deadline | null;
}

interface Pending {
  readonly target: string;
  sentAt: bigint;
  readonly batch: Batch;
  readonly index: number;
}

export class IcmpPinger implements Pinger {
  private readonly socket: RawSocket;
  private readonly id: number;
  private readonly codec: FamilyCodec;
  private readonly cookie: Buffer = randomBytes(COOKIE_BYTES);
  /** Every echo request is this packet with its sequence number (and checksum) filled in. */
  private readonly packet: EchoPacket;
  private seq = 0;
  private readonly pending = new Map<number, Pending>();
  private closed = false;
  private broken: string | null = null;
  /** raw-socket's native wrap (direct sends, draining reads), null: its public API only. */
  private readonly direct: { readonly wrap: RawSocketWrap; readonly buffer: Buffer } | null;

  get failure(): string | null {
    return this.broken;
  }

  /** Throws WeftError when the socket cannot be opened (no CAP_NET_RAW, addon missing). */
  constructor(opts: { readonly family?: IPFamily; readonly random?: () => number } = {}) {
    this.codec = FAMILIES[opts.family ?? 4];
    const raw = loadRawSocket();
    try {
      this.socket = raw.createSocket({ protocol: raw.Protocol[this.codec.protocol], addressFamily: raw.AddressFamily[this.codec.addressFamily] });
    } catch (err) {
      throw new WeftError('INTERNAL', `open raw ${this.codec.protocol} socket for peer probes: ${describeError(err)} (needs CAP_NET_RAW)`, { cause: err });
    }
    this.id = Math.floor((opts.random ?? Math.random)() * 0xffff) & 0xffff;
    this.packet = new EchoPacket(this.id, this.cookie, this.codec.family);
    try {
      const mask = replyFilter(this.codec);
      this.socket.setOption(this.codec.filterLevel, this.codec.filterOption, mask, mask.length);
    } catch {
      // Without the filter every ICMP packet wakes us; replies are still matched below.
    }
    this.direct = nativeWrap(this.socket);
    if (this.direct !== null) {
      // Replace raw-socket's one-read-per-wake-up handler with one that drains.
      const { wrap, buffer } = this.direct;
      wrap.removeAllListeners('recvReady');
      wrap.on('recvReady', () => this.drain(wrap, buffer));
    } else {
      this.socket.on('message', (buf, source) => this.onMessage(buf, source));
    }
    // raw-socket closes the socket after an error: later probes report it instead of hanging.
    this.socket.on('error', (err) => {
      this.broken = describeError(err);
      this.failAll(this.broken);
    });
  }

  echoBatch(targets: readonly string[], timeoutMs: number): Promise<EchoResult[]> {
    if (this.closed || this.broken !== null) {
      return Promise.resolve(targets.map(() => ({ ok: false, rttMs: null, error: this.broken ?? 'pinger closed' })));
    }
    if (targets.length === 0) return Promise.resolve([]);
    // One promise and one timer for the whole batch (a cycle is every peer at once): what has
    // not answered when the timer fires timed out.
    return new Promise<EchoResult[]>((resolve) => {
      const batch: Batch = { results: new Array<EchoResult>(targets.length), remaining: targets.length, resolve, timer: null };
      const seqs: number[] = [];
      for (let i = 0; i < targets.length; i++) {
        const seq = this.nextSeq();
        if (seq === null) {
          settle(batch, i, { ok: false, rttMs: null, error: TOO_MANY_IN_FLIGHT });
          continue;
        }
        seqs.push(seq);
        const p: Pending = { target: targets[i]!, sentAt: process.hrtime.bigint(), batch, index: i };
        this.pending.set(seq, p);
        this.send(seq, p);
      }
      if (batch.remaining === 0) return;
      batch.timer = createDeadline(() => {
        for (const seq of seqs) this.finish(seq, { ok: false, rttMs: null, error: 'timeout' });
      });
      batch.timer.arm(timeoutMs);
    });
  }

  /**
   * Echo `seq` to `p.target`: one sendto now when the native wrap is there (no writable wake-up
   * per echo; the kernel copies the packet, so one buffer serves every echo), else — or when the
   * socket buffer is full — raw-socket's queue, with a packet of its own. A send error finishes
   * the echo at once.
   */
  private send(seq: number, p: Pending): void {
    const packet = this.packet.fill(seq);
    if (this.direct !== null && isIP(p.target) !== 0) {
      try {
        this.direct.wrap.send(packet, 0, packet.length, p.target, ignoreSent);
        return;
      } catch (err) {
        if (!wouldBlock(err)) {
          this.finish(seq, { ok: false, rttMs: null, error: describeError(err) });
          return;
        }
      }
    }
    this.socket.send(Buffer.from(packet), 0, packet.length, p.target, (err) => {
      if (err) this.finish(seq, { ok: false, rttMs: null, error: describeError(err) });
      else p.sentAt = process.hrtime.bigint(); // RTT from when the kernel took it, not from the queue
    });
  }

  /** A readable wake-up: read every reply waiting (up to MAX_READS_PER_WAKEUP). */
  private drain(wrap: RawSocketWrap, buffer: Buffer): void {
    for (let i = 0; i < MAX_READS_PER_WAKEUP && !this.closed; i++) {
      try {
        wrap.recv(buffer, (buf, bytes, source) => this.onMessage(buf.subarray(0, bytes), source));
      } catch (err) {
        // Nothing more waiting (EAGAIN) after the first read; a failing first read is the
        // socket's error, as raw-socket itself reports it.
        if (i === 0) this.socket.emit('error', err instanceof Error ? err : new Error(String(err)));
        return;
      }
    }
  }

  /** A sequence number no pending echo uses, or null when MAX_PENDING echoes wait already. */
  private nextSeq(): number | null {
    if (this.pending.size >= MAX_PENDING) return null;
    // pending.size < 65 536, so at most pending.size + 1 steps find a free number.
    let seq = (this.seq + 1) & 0xffff;
    for (let i = 0; i <= 0xffff && this.pending.has(seq); i++) seq = (seq + 1) & 0xffff;
    if (this.pending.has(seq)) return null;
    this.seq = seq;
    return seq;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.failAll('pinger closed');
    try {
      this.socket.close();
    } catch {
      // already closed after an error
    }
  }

  private onMessage(buf: Buffer, source: string): void {
    const seq = matchEchoReply(buf, source, { family: this.codec.family, id: this.id, cookie: this.cookie, targetOf: (s) => this.pending.get(s)?.target });
    const p = seq === null ? undefined : this.pending.get(seq);
    if (seq === null || p === undefined) return;
    const rttMs = Number(process.hrtime.bigint() - p.sentAt) / 1e6;
    this.finish(seq, { ok: true, rttMs, error: null });
  }

  private finish(seq: number, r: EchoResult): void {
    const p = this.pending.get(seq);
    if (p === undefined) return;
    this.pending.delete(seq);
    settle(p.batch, p.index, r);
  }

  private failAll(error: string): void {
    for (const seq of [...this.pending.keys()]) this.finish(seq, { ok: false, rttMs: null, error });
  }
}

/**
 * Records one echo's result; the batch resolves with its last one. Once per echo: finish() takes
 * the echo out of `pending` before it settles it, and a refused echo was never in it.
 */
function settle(batch: Batch, index: number, r: EchoResult): void {
  batch.results[index] = r;
  if (--batch.remaining > 0) return;
  batch.timer?.close();
  batch.resolve(batch.results);
}

/** raw-socket's send callback on the direct path, where the sendto already happened. */
function ignoreSent(): void {}

/**
 * One pinger's echo request, built once: only the sequence number changes between echoes, so
 * the IPv4 checksum is the template's sum plus the sequence number (RFC 1624's incremental
 * update), not a pass over the packet per echo.
 */
export class EchoPacket {
  private readonly buffer: Buffer;
  /** One's-complement sum of the template with sequence and checksum zero, not yet folded. */
  private readonly baseSum: number | null;

  constructor(id: number, cookie: Buffer, family: IPFamily) {
    this.buffer = echoRequest(id, 0, cookie, family);
    if (FAMILIES[family].computeChecksum) {
      this.buffer.writeUInt16BE(0, 2);
      this.baseSum = wordSum(this.buffer);
    } else {
      this.baseSum = null;
    }
  }

  /** The packet for `seq` (the same buffer every time: send it before the next call). */
  fill(seq: number): Buffer {
    this.buffer.writeUInt16BE(seq & 0xffff, 6);
    if (this.baseSum !== null) this.buffer.writeUInt16BE(foldChecksum(this.baseSum + (seq & 0xffff)), 2);
    return this.buffer;
  }
}

/**
 * The sequence number of the pending echo `datagram` (from `source`) answers, or null when it is
 * not a reply to one of ours: not an echo reply of the family, another identifier, a sequence
 * with nothing pending, another source than the echo's target, or — forged by someone who saw or
 * guessed id and sequence — a payload without our cookie.
 */
export function matchEchoReply(
  datagram: Buffer,
  source: string,
  expect: { readonly family: IPFamily; readonly id: number; readonly cookie: Buffer; readonly targetOf: (seq: number) => string | undefined },
): number | null {
  const reply = parseEchoReply(datagram, expect.family);
  if (reply === null || reply.id !== expect.id) return null;
  const target = expect.targetOf(reply.seq);
  if (target === undefined || !sameAddress(expect.family, source, target)) return null;
  return echoesCookie(datagram, expect.cookie, expect.family) ? reply.seq : null;
}

/**
 * An echo request (ICMP type 8, ICMPv6 type 128) with `PAYLOAD_BYTES` of payload: `cookie` first
 * (at most PAYLOAD_BYTES), then ping's usual pattern. IPv4: with its checksum; ICMPv6: checksum
 * left zero for the kernel.
 */
export function echoRequest(id: number, seq: number, cookie: Buffer = Buffer.alloc(0), family: IPFamily = 4): Buffer {
  const codec = FAMILIES[family];
  const b = Buffer.alloc(8 + PAYLOAD_BYTES);
  b.writeUInt8(codec.echoRequest, 0);
  b.writeUInt8(0, 1);
  b.writeUInt16BE(id & 0xffff, 4);
  b.writeUInt16BE(seq & 0xffff, 6);
  for (let i = 8; i < b.length; i++) b[i] = i & 0xff;
  cookie.copy(b, 8, 0, Math.min(cookie.length, PAYLOAD_BYTES));
  if (codec.computeChecksum) b.writeUInt16BE(inetChecksum(b), 2);
  return b;
}

/**
 * What a raw socket of `family` delivered (IPv4: with the IP header; ICMPv6: the message alone)
 * → echo reply id/seq, or null.
 */
export function parseEchoReply(datagram: Buffer, family: IPFamily = 4): { id: number; seq: number } | null {
  const codec = FAMILIES[family];
  const at = codec.icmpOffset(datagram);
  if (at === null || datagram.length < at + 8) return null;
  if (datagram[at] !== codec.echoReply || datagram[at + 1] !== 0) return null;
  return { id: datagram.readUInt16BE(at + 4), seq: datagram.readUInt16BE(at + 6) };
}

/** Whether a received echo reply of `family` carries `cookie` at the start of its payload. */
export function echoesCookie(datagram: Buffer, cookie: Buffer, family: IPFamily = 4): boolean {
  const at = FAMILIES[family].icmpOffset(datagram);
  if (at === null) return false;
  const start = at + 8;
  if (datagram.length < start + cookie.length) return false;
  return datagram.subarray(start, start + cookie.length).equals(cookie);
}

/** RFC 1071 checksum (the checksum field must be zero when computing). */
export function inetChecksum(b: Buffer): number {
  return foldChecksum(wordSum(b));
}

/** The sum of `b`'s 16-bit big-endian words (an odd last byte padded with zero), unfolded. */
function wordSum(b: Buffer): number {
  let sum = 0;
  for (let i = 0; i + 1 < b.length; i += 2) sum += b.readUInt16BE(i);
  if (b.length % 2 === 1) sum += b[b.length - 1]! << 8;
  return sum;
}

/** A word sum folded to 16 bits, complemented: the checksum field's value. */
function foldChecksum(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}
