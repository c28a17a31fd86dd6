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
import type { Logger } from '../log';
import { RECV_BUFFER_BYTES } from './socket';
import { openNetlinkSocket, type RawSocket } from './transport';
import { forEachAck, NLM_F_ACK, stampMessage, type EncodedBatch } from './wire';

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
  /** performance.now() when it was sent (the watchdog's reference). */
  readonly sentAt: number;
  /** Its size, for the timeout's message. */
  readonly requests: number;
  readonly done: (err: { errno: string; cause: Error } | null) => void;
}

export class BatchSocket {
  private sock: RawSocket | null = null;
  private portId: number | null = null;
  private limit = 1;
  private maxBytes = MAX_DATAGRAM_BYTES;
  private seq = 1;
  private inFlight: InFlight | null = null;
  private tail: Promise<unknown> = Promise.resolve();
  private closed = false;
  /**
   * One timer for every chunk instead of one per chunk (arming and clearing a timer per datagram
   * cost more than the rest of a join's batch): it fires at most every timeoutMs, checks the chunk
   * in flight, and is unref'd while nothing is.
   */
  private watchdog: NodeJS.Timeout | null = null;

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
   * (ESOCKCLOSED, ETIMEDOUT). Batches run one after another.
   */
  send(batch: EncodedBatch): Promise<RequestOutcome[]> {
    const result = this.tail.then(() => this.sendAll(batch));
    this.tail = result.catch(() => undefined);
    return result;
  }

  close(): void {
    this.closed = true;
    if (this.watchdog) clearTimeout(this.watchdog);
    this.watchdog = null;
    this.abort('ESOCKCLOSED', new Error('netlink client closed'));
    this.drop();
  }

  private async sendAll(batch: EncodedBatch): Promise<RequestOutcome[]> {
    const count = batch.offsets.length - 1;
    const outcomes: RequestOutcome[] = new Array<RequestOutcome>(count).fill(null);
    if (count === 0) return outcomes;
    if (this.closed) return outcomes.fill({ errno: 'ESOCKCLOSED', cause: new Error('netlink client closed') });
    let sock: RawSocket;
    try {
      sock = this.ensure();
    } catch (err) {
      const cause = err instanceof Error ? err : new Error(String(err));
      const code = (cause as Error & { code?: unknown }).code;
      return outcomes.fill({ errno: typeof code === 'string' ? code : 'ESOCKCLOSED', cause: new Error(`cannot open a netlink socket: ${cause.message}`, { cause }) });
    }
    const sizes = new Array<number>(count);
    for (let j = 0; j < count; j++) sizes[j] = batch.offsets[j + 1]! - batch.offsets[j]!;
    for (const [start, end] of chunkRanges(sizes, this.limit, this.maxBytes)) {
      await this.sendChunk(sock, batch, start, end, outcomes);
      if (this.sock !== sock) {
        // The socket died or timed out under this chunk: the rest go out on a fresh one.
        if (this.closed) {
          for (let i = end; i < count; i++) outcomes[i] = { errno: 'ESOCKCLOSED', cause: new Error('netlink client closed') };
          break;
        }
        try {
          sock = this.ensure();
        } catch (err) {
          for (let i = end; i < count; i++) outcomes[i] = { errno: 'ESOCKCLOSED', cause: err instanceof Error ? err : new Error(String(err)) };
          break;
        }
      }
    }
    return outcomes;
  }

  private sendChunk(sock: RawSocket, batch: EncodedBatch, start: number, end: number, outcomes: RequestOutcome[]): Promise<void> {
    const pid = this.portId ?? 0;
    const pending = new Map<number, number>();
    let lastSeq = 0;
    for (let i = start; i < end; i++) {
      const seq = this.nextSeq();
      const at = batch.offsets[i]!;
      stampMessage(batch.buffer, seq, pid, at);
      // nlmsg_flags (u16 at 6): NLM_F_ACK on the last request only (errors are answered anyway).
      const flags = batch.buffer.readUInt16LE(at + 6);
      batch.buffer.writeUInt16LE(i === end - 1 ? flags | NLM_F_ACK : flags & ~NLM_F_ACK, at + 6);
      pending.set(seq, i);
      lastSeq = seq;
    }
    // The requests are contiguous in the batch's buffer: the datagram is a view of it, no copy.
    const datagram = batch.buffer.subarray(batch.offsets[start]!, batch.offsets[end]!);
    return new Promise<void>((resolve) => {
      this.inFlight = {
        pending,
        lastSeq,
        outcomes,
        sentAt: performance.now(),
        requests: end - start,
        done: (err) => {
          this.inFlight = null;
          this.watchdog?.unref();
          if (err) for (const i of pending.values()) outcomes[i] = err;
          pending.clear();
          resolve();
        },
      };
      this.armWatchdog(this.timeoutMs);
      sock.ref();
      sock.send(datagram, {}, (err) => {
        if (!err || this.sock !== sock) return;
        const code = (err as Error & { code?: unknown }).code;
        this.log.warn('netlink batch: sendmsg failed', { requests: end - start, bytes: datagram.length, error: err.message });
        this.abort(typeof code === 'string' ? code : 'ESOCKCLOSED', err);
      });
    }).finally(() => {
      if (this.sock === sock) sock.unref();
    });
  }

  private armWatchdog(delayMs: number): void {
    if (this.watchdog) {
      this.watchdog.ref();
      return;
    }
    this.watchdog = setTimeout(() => {
      this.watchdog = null;
      const f = this.inFlight;
      if (!f) return; // idle: armed again by the next chunk
      const waited = performance.now() - f.sentAt;
      if (waited < this.timeoutMs) {
        this.armWatchdog(this.timeoutMs - waited);
        return;
      }
      this.abort('ETIMEDOUT', new Error(`no answer from the kernel within ${this.timeoutMs} ms (${f.pending.size} of ${f.requests} requests unanswered)`));
      // A late answer could be taken for the next chunk's: start afresh on a new socket.
      this.reset('batch timed out');
    }, delayMs);
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
      this.abort('ESOCKCLOSED', err);
      this.reset(`batch socket error: ${err.message}`);
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
