/**
 * Batched rtnetlink writes: many requests in one `sendmsg` (several nlmsghdr in one datagram,
 * each with its own sequence number), the kernel's answers matched back to each request by
 * sequence number, so each request still gets its own success or errno.
 *
 * ACK only on errors: only the LAST request of a datagram carries NLM_F_ACK. The kernel handles
 * a multi-message datagram message by message, in order (netlink_rcv_skb): every request is
 * executed whatever happened to the others, and answered when it failed (an NLMSG_ERROR with its
 * errno is sent even without NLM_F_ACK) or when it asked for an ACK. Its answers reach our socket
 * in that order, so the errors of earlier requests arrive before the last request's answer,
 * which then completes every request of the datagram that had no error. One failure in the
 * middle fails only that request; one answer instead of one per request (a join's batch: 1
 * datagram in instead of ~6, see docs/netlink.md).
 *
 * The socket is transport.ts's (raw send, raw receive, no parsing).
 *
 * Receive buffer: the kernel answers synchronously, while it handles our sendmsg, so all the
 * acknowledgements of one datagram are queued at once. A chunk is bounded so they always fit
 * (`chunkLimit`: the receive buffer over a generous per-ACK allowance, capped), and the next chunk
 * is sent only when every answer to the previous one has arrived. Overflowing it would drop
 * answers (the request would time out) and, without scripts/patch-netlink.js, abort the process.
 */
import { getSystemErrorName } from 'node:util';
import { createDeadline, type Deadline } from '../deadline';
import type { Logger } from '../log';
import { RECV_BUFFER_BYTES } from './socket';
import { openNetlinkSocket, type RawSocket } from './transport';
import { forEachAck, stampBatchRequest, type EncodedBatch } from './wire';

const NETLINK_ROUTE = 0;

/**
 * What the kernel charges to our receive buffer per answer, rounded up generously: an ACK is 36
 * bytes, an error ACK also echoes the request (~100 bytes), but each sits in an skb whose
 * truesize (what SO_RCVBUF counts) is ~0.7–1.3 KiB. Although a datagram now asks for one ACK,
 * a chunk is still sized as if every request answered: in the worst case all of them fail.
 */
export const ACK_RCVBUF_ALLOWANCE = 2048;
/** Requests per datagram at most, whatever the receive buffer: beyond it nothing is gained. */
export const MAX_REQUESTS_PER_DATAGRAM = 512;
/** Bytes per datagram at most: well under the default SO_SNDBUF (net.core.wmem_default, 208 KiB), which bounds one sendmsg. */
export const MAX_DATAGRAM_BYTES = 64 << 10;

/**
 * The largest datagram a socket with this SO_SNDBUF accepts: netlink_sendmsg refuses one longer
 * than sk_sndbuf - 32 with EMSGSIZE (a host with a small net.core.wmem_default); a margin on top.
 */
export function datagramLimit(sendBufferBytes: number): number {
  return Math.max(1024, Math.min(MAX_DATAGRAM_BYTES, sendBufferBytes - 1024));
}

/** The raw socket seam, defined with the transport. */
export type { RawSocket } from './transport';

export type RawSocketFactory = () => RawSocket;

export const defaultRawSocketFactory: RawSocketFactory = () => openNetlinkSocket(NETLINK_ROUTE, { recvBufferBytes: RECV_BUFFER_BYTES });

/** One request's result: null when acknowledged, else the errno name and what happened. */
export type RequestOutcome = null | { readonly errno: string; readonly cause: Error };

/** How many requests one datagram may carry so their acknowledgements fit in `recvBufferBytes`. */
export function chunkLimit(recvBufferBytes: number): number {
  // Half the buffer: notifications or a late answer may share it.
  return Math.max(1, Math.min(MAX_REQUESTS_PER_DATAGRAM, Math.floor(recvBufferBytes / 2 / ACK_RCVBUF_ALLOWANCE)));
}

/** The `[start, end)` ranges of `sizes` sent as one datagram each. */
export function chunkRanges(sizes: readonly number[], maxRequests: number, maxBytes: number = MAX_DATAGRAM_BYTES): [number, number][] {
  const out: [number, number][] = [];
  let start = 0;
  let bytes = 0;
  for (let i = 0; i < sizes.length; i++) {
    const full = i - start >= maxRequests || (i > start && bytes + sizes[i]! > maxBytes);
    if (full) {
      out.push([start, i]);
      start = i;
      bytes = 0;
    }
    bytes += sizes[i]!;
  }
  if (start < sizes.length) out.push([start, sizes.length]);
  return out;
}

function errnoName(errno: number): string {
  try {
    return getSystemErrorName(-errno);
  } catch {
    return String(errno);
  }
}

/** The chunk being answered: sequence number → request index. */
interface InFlight {
  readonly pending: Map<number, number>;
  /** The sequence number of the datagram's last request (the only one with NLM_F_ACK). */
  readonly lastSeq: number;
  readonly outcomes: RequestOutcome[];
  /** Its size, for the timeout's message. */
  readonly requests: number;
  readonly done: (err: { errno: string; cause: Error } | null) => void;
}

/** One batch handed to submit(): its chunks are sent one after another, then `done` gets the outcomes. */
interface Job {
  readonly batch: EncodedBatch;
  readonly outcomes: RequestOutcome[];
  readonly done: (outcomes: RequestOutcome[]) => void;
  /** The socket its chunks go out on (null until the first); a fresh one after that one died. */
  sock: RawSocket | null;
  /** `[start, end)` of each datagram, sized for `sock` (null until the first chunk is sent). */
  ranges: [number, number][] | null;
  /** The next range to send. */
  next: number;
}

export class BatchSocket {
  private sock: RawSocket | null = null;
  private portId: number | null = null;
  private limit = 1;
  private maxBytes = MAX_DATAGRAM_BYTES;
  private seq = 1;
  private inFlight: InFlight | null = null;
  /** The batch being sent (one at a time: the kernel answers a datagram before the next goes). */
  private current: Job | null = null;
  /** Batches submitted while one was being sent, in order. */
  private readonly queue: Job[] = [];
  private closed = false;
  /**
   * The chunk in flight's deadline: armed when it is sent, cancelled by its answer. A Deadline
   * (src/deadline.ts), not a setTimeout: a cleared Node timeout still woke the loop at its expiry,
   * one empty wake-up after every isolated lease event (the lazy Node timer this replaces fired
   * once per timeoutMs to check the chunk in flight, for the same reason: arming and clearing a
   * Node timer per datagram cost more than the rest of a join's batch).
   */
  private readonly watchdog: Deadline = createDeadline(() => this.watchdogExpired());

  constructor(
    private readonly log: Logger,
    private readonly timeoutMs: number,
    private readonly onReset: (why: string) => void,
    private readonly factory: RawSocketFactory = defaultRawSocketFactory,
  ) {}

  /** The netlink port id of the open socket (the nlmsg_pid of its writes' notifications), or null. */
  get port(): number | null {
    return this.portId;
  }

  /**
   * Send the requests of `batch` (encoded with seq/pid 0; stamped here) in as few datagrams as
   * the receive buffer allows, and resolve with each one's outcome, in order. Never rejects: a
   * socket that cannot be opened, dies or times out fails the requests not yet answered
   * (ESOCKCLOSED, ETIMEDOUT). Batches run one after another. (submit() with a promise.)
   */
  send(batch: EncodedBatch): Promise<RequestOutcome[]> {
    return new Promise((resolve) => this.submit(batch, resolve));
  }

  /**
   * send() without a promise: when no batch is being sent, the first datagram leaves within this
   * call (no microtask between the caller's decision and the sendmsg: issue #14, a join's batch
   * goes out in the watch message's own pass); otherwise after the batches submitted before it.
   * `done` is called once, with every request's outcome — from the socket's callback that
   * completes the batch, never within this call unless nothing is sent (an empty batch, a closed
   * client, a socket that cannot be opened).
   */
  submit(batch: EncodedBatch, done: (outcomes: RequestOutcome[]) => void): void {
    const count = batch.offsets.length - 1;
    const job: Job = { batch, outcomes: new Array<RequestOutcome>(count).fill(null), done, sock: null, ranges: null, next: 0 };
    if (this.current !== null) {
      this.queue.push(job);
      return;
    }
    this.run(job);
  }

  close(): void {
    this.closed = true;
    this.watchdog.close();
    this.abort('ESOCKCLOSED', new Error('netlink client closed'));
    this.drop();
  }

  /** Start `first` (nothing else is being sent), and after it every queued one. */
  private run(first: Job | undefined): void {
    for (let j = first; j !== undefined; j = this.queue.shift()) {
      this.current = j;
      // Sent (a chunk awaits its answers): the chunk's completion carries on from here.
      if (this.sendNext(j)) return;
    }
    this.current = null;
  }

  /**
   * Send `job`'s next chunk; true when one went out (its answers continue the job), false when
   * the job is over (every chunk answered, or the rest failed without being sent) — `done` was
   * then called.
   */
  private sendNext(job: Job): boolean {
    const count = job.outcomes.length;
    const ranges = job.ranges;
    if (count === 0 || (ranges !== null && job.next >= ranges.length)) return this.finish(job);
    if (this.closed) return this.failRest(job, ranges === null ? 0 : ranges[job.next]![0], 'ESOCKCLOSED', new Error('netlink client closed'));
    let sock: RawSocket;
    try {
      sock = this.ensure();
    } catch (err) {
      const cause = err instanceof Error ? err : new Error(String(err));
      if (ranges !== null) return this.failRest(job, ranges[job.next]![0], 'ESOCKCLOSED', cause);
      const code = (cause as Error & { code?: unknown }).code;
      return this.failRest(job, 0, typeof code === 'string' ? code : 'ESOCKCLOSED', new Error(`cannot open a netlink socket: ${cause.message}`, { cause }));
    }
    if (ranges === null) {
      // Sized for the socket the first chunk goes out on; a chunk after a socket died goes out
      // on a fresh one as planned (the same limits: same factory).
      const sizes = new Array<number>(count);
      for (let j = 0; j < count; j++) sizes[j] = job.batch.offsets[j + 1]! - job.batch.offsets[j]!;
      job.ranges = chunkRanges(sizes, this.limit, this.maxBytes);
    }
    job.sock = sock;
    const [start, end] = job.ranges![job.next++]!;
    this.sendChunk(sock, job, start, end);
    return true;
  }

  /** Every request from `from` on fails with `errno` (not sent); the job is over. */
  private failRest(job: Job, from: number, errno: string, cause: Error): false {
    for (let i = from; i < job.outcomes.length; i++) job.outcomes[i] = { errno, cause };
    return this.finish(job);
  }

  private finish(job: Job): false {
    job.done(job.outcomes);
    return false;
  }

  private sendChunk(sock: RawSocket, job: Job, start: number, end: number): void {
    const batch = job.batch;
    const outcomes = job.outcomes;
    const pid = this.portId ?? 0;
    const pending = new Map<number, number>();
    let lastSeq = 0;
    for (let i = start; i < end; i++) {
      const seq = this.nextSeq();
      const at = batch.offsets[i]!;
      stampBatchRequest(batch.buffer, seq, pid, at, i === end - 1);
      pending.set(seq, i);
      lastSeq = seq;
    }
    // The requests are contiguous in the batch's buffer: the datagram is a view of it, no copy.
    const datagram = batch.buffer.subarray(batch.offsets[start]!, batch.offsets[end]!);
    this.inFlight = {
      pending,
      lastSeq,
      outcomes,
      requests: end - start,
      done: (err) => {
        this.inFlight = null;
        this.watchdog.cancel();
        if (err) for (const i of pending.values()) outcomes[i] = err;
        pending.clear();
        if (this.sock === sock) sock.unref();
        // The next chunk of this job, or the job is over: the next queued one.
        if (!this.sendNext(job)) this.run(this.queue.shift());
      },
    };
    this.watchdog.arm(this.timeoutMs);
    sock.ref();
    sock.send(datagram, {}, (err) => {
      if (!err || this.sock !== sock) return;
      const code = (err as Error & { code?: unknown }).code;
      this.log.warn('netlink batch: sendmsg failed', { requests: end - start, bytes: datagram.length, error: err.message });
      this.abort(typeof code === 'string' ? code : 'ESOCKCLOSED', err);
    });
  }

  private watchdogExpired(): void {
    const f = this.inFlight;
    if (!f) return;
    // A late answer could be taken for the next chunk's: start afresh on a new socket — dropped
    // before the chunk fails, since its failure sends the next chunk at once (on a fresh one).
    this.reset('batch timed out');
    this.abort('ETIMEDOUT', new Error(`no answer from the kernel within ${this.timeoutMs} ms (${f.pending.size} of ${f.requests} requests unanswered)`));
  }

  private nextSeq(): number {
    const s = this.seq;
    this.seq = (this.seq % 0xffffffff) + 1;
    return s;
  }

  private onMessage(msg: Buffer): void {
    const f = this.inFlight;
    if (!f) return;
    forEachAck(msg, (seq, errno) => {
      const i = f.pending.get(seq);
      if (i === undefined) return;
      f.pending.delete(seq);
      f.outcomes[i] = errno === 0 ? null : { errno: errnoName(errno), cause: new Error(`Request rejected: ${errnoName(errno)}`) };
      // The last request's answer comes after every earlier error (same datagram, handled in
      // order): whatever is still pending succeeded (outcomes start as null).
      if (seq === f.lastSeq) f.pending.clear();
    });
    if (f.pending.size === 0) f.done(null);
  }

  private abort(errno: string, cause: Error): void {
    this.inFlight?.done({ errno, cause });
  }

  private ensure(): RawSocket {
    if (this.sock) return this.sock;
    const sock = this.factory();
    try {
      sock.setRecvBufferSize(RECV_BUFFER_BYTES);
      this.limit = chunkLimit(sock.getRecvBufferSize());
      this.maxBytes = datagramLimit(sock.getSendBufferSize());
      this.portId = sock.address().port;
    } catch (err) {
      sock.close();
      throw err;
    }
    sock.unref();
    sock.on('message', (msg) => {
      if (this.sock === sock) this.onMessage(msg);
    });
    sock.on('error', (err) => {
      if (this.sock !== sock) return;
      this.log.warn('netlink batch socket failed; reopening', { error: err.message });
      // Dropped first: the chunk's failure sends the next one at once, on a fresh socket.
      this.reset(`batch socket error: ${err.message}`);
      this.abort('ESOCKCLOSED', err);
    });
    this.sock = sock;
    return sock;
  }

  private reset(why: string): void {
    this.drop();
    if (!this.closed) this.onReset(why);
  }

  private drop(): void {
    const s = this.sock;
    this.sock = null;
    this.portId = null;
    if (!s) return;
    try {
      s.close();
    } catch {
      // already closed by the native layer after an error
    }
  }
}
