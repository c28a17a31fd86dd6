/**
 * ICMP echo over a raw IPv4 socket, through `raw-socket` 1.8.1 (a nan addon without TypeScript
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
 * Cost: probes are sent in batches (one timer per batch, not per echo); raw-socket writes one
 * queued datagram per writable event, which paces a batch by itself.
 *
 * Source address: left to the kernel. For a peer gateway `<peer subnet>.0` the route is
 * `via <peer>.0 dev flannel.1 onlink`, so the kernel picks flannel.1's own address
 * (`<own subnet>.0`), and the peer's reply comes back through the overlay as well: a probe that
 * succeeds proves the path both ways.
 */
import { randomBytes } from 'node:crypto';
import { WeftError, describeError } from '../errors';

/** The part of raw-socket we use (its index.js; documented in its README). */
interface RawSocket {
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
  readonly Protocol: { readonly ICMP: number };
  readonly AddressFamily: { readonly IPv4: number };
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

const ICMP_ECHO_REPLY = 0;
/** setsockopt(SOL_RAW, ICMP_FILTER, mask): a set bit drops that ICMP type (linux/icmp.h). */
const SOL_RAW = 255;
const ICMP_FILTER = 1;
const ICMP_ECHO_REQUEST = 8;
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

interface Pending {
  readonly target: string;
  sentAt: bigint;
  readonly resolve: (r: EchoResult) => void;
}

export class IcmpPinger implements Pinger {
  private readonly socket: RawSocket;
  private readonly id: number;
  private readonly cookie: Buffer = randomBytes(COOKIE_BYTES);
  private seq = 0;
  private readonly pending = new Map<number, Pending>();
  private closed = false;
  private broken: string | null = null;

  get failure(): string | null {
    return this.broken;
  }

  /** Throws WeftError when the socket cannot be opened (no CAP_NET_RAW, addon missing). */
  constructor(random: () => number = Math.random) {
    const raw = loadRawSocket();
    try {
      this.socket = raw.createSocket({ protocol: raw.Protocol.ICMP, addressFamily: raw.AddressFamily.IPv4 });
    } catch (err) {
      throw new WeftError('INTERNAL', `open raw ICMP socket for peer probes: ${describeError(err)} (needs CAP_NET_RAW)`, { cause: err });
    }
    this.id = Math.floor(random() * 0xffff) & 0xffff;
    try {
      const mask = Buffer.alloc(4);
      mask.writeUInt32LE((~(1 << ICMP_ECHO_REPLY)) >>> 0);
      this.socket.setOption(SOL_RAW, ICMP_FILTER, mask, 4);
    } catch {
      // Without the filter every ICMP packet wakes us; replies are still matched below.
    }
    this.socket.on('message', (buf, source) => this.onMessage(buf, source));
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
    const seqs: number[] = [];
    const results = targets.map((target) => new Promise<EchoResult>((resolve) => {
      const seq = this.nextSeq();
      if (seq === null) {
        resolve({ ok: false, rttMs: null, error: TOO_MANY_IN_FLIGHT });
        return;
      }
      seqs.push(seq);
      const packet = echoRequest(this.id, seq, this.cookie);
      const p: Pending = { target, sentAt: process.hrtime.bigint(), resolve };
      this.pending.set(seq, p);
      this.socket.send(packet, 0, packet.length, target, (err) => {
        if (err) this.finish(seq, { ok: false, rttMs: null, error: describeError(err) });
        else p.sentAt = process.hrtime.bigint(); // RTT from when the kernel took it, not from the queue
      });
    }));
    // One timer for the whole batch: what has not answered by then timed out.
    const timer = setTimeout(() => {
      for (const seq of seqs) this.finish(seq, { ok: false, rttMs: null, error: 'timeout' });
    }, timeoutMs);
    return Promise.all(results).finally(() => clearTimeout(timer));
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
    const reply = parseEchoReply(buf);
    if (reply === null || reply.id !== this.id) return;
    const p = this.pending.get(reply.seq);
    if (p === undefined || p.target !== source) return;
    if (!echoesCookie(buf, this.cookie)) return; // forged: right id/seq/source, wrong payload
    const rttMs = Number(process.hrtime.bigint() - p.sentAt) / 1e6;
    this.finish(reply.seq, { ok: true, rttMs, error: null });
  }

  private finish(seq: number, r: EchoResult): void {
    const p = this.pending.get(seq);
    if (p === undefined) return;
    this.pending.delete(seq);
    p.resolve(r);
  }

  private failAll(error: string): void {
    for (const seq of [...this.pending.keys()]) this.finish(seq, { ok: false, rttMs: null, error });
  }
}

/**
 * An ICMP echo request (type 8) with `PAYLOAD_BYTES` of payload and its checksum: `cookie` first
 * (at most PAYLOAD_BYTES), then ping's usual pattern.
 */
export function echoRequest(id: number, seq: number, cookie: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(8 + PAYLOAD_BYTES);
  b.writeUInt8(ICMP_ECHO_REQUEST, 0);
  b.writeUInt8(0, 1);
  b.writeUInt16BE(id & 0xffff, 4);
  b.writeUInt16BE(seq & 0xffff, 6);
  for (let i = 8; i < b.length; i++) b[i] = i & 0xff;
  cookie.copy(b, 8, 0, Math.min(cookie.length, PAYLOAD_BYTES));
  b.writeUInt16BE(inetChecksum(b), 2);
  return b;
}

/** A received IPv4 datagram (raw sockets deliver the IP header) → echo reply id/seq, or null. */
export function parseEchoReply(datagram: Buffer): { id: number; seq: number } | null {
  if (datagram.length < 20 || datagram[0]! >> 4 !== 4) return null;
  const ihl = (datagram[0]! & 0x0f) * 4;
  if (datagram.length < ihl + 8) return null;
  if (datagram[ihl] !== ICMP_ECHO_REPLY || datagram[ihl + 1] !== 0) return null;
  return { id: datagram.readUInt16BE(ihl + 4), seq: datagram.readUInt16BE(ihl + 6) };
}

/** Whether a received IPv4 echo reply carries `cookie` at the start of its payload. */
export function echoesCookie(datagram: Buffer, cookie: Buffer): boolean {
  if (datagram.length < 20) return false;
  const start = (datagram[0]! & 0x0f) * 4 + 8;
  if (datagram.length < start + cookie.length) return false;
  return datagram.subarray(start, start + cookie.length).equals(cookie);
}

/** RFC 1071 checksum (the checksum field must be zero when computing). */
export function inetChecksum(b: Buffer): number {
  let sum = 0;
  for (let i = 0; i + 1 < b.length; i += 2) sum += b.readUInt16BE(i);
  if (b.length % 2 === 1) sum += b[b.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}
