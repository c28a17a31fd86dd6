/**
 * One netlink request socket: a raw socket from transport.ts (no `netlink` package layers), the
 * request encoded by wire.ts, the replies split by decode.ts (docs/netlink.md).
 *
 * - Requests are strictly serialized: one request in flight per socket, which bounds what the
 *   kernel can queue towards us and keeps a dump's parts from mixing with another reply.
 * - Each request gets the next sequence number; only messages carrying it are taken. A dump
 *   (NLM_F_DUMP) collects its multipart messages, across as many datagrams as the kernel sends,
 *   until NLMSG_DONE; any other request ends at its acknowledgement (NLMSG_ERROR with errno 0,
 *   after the reply of a GET). NLMSG_ERROR with an errno rejects with a NetlinkError naming the
 *   operation and the errno ("Request rejected: EEXIST" as its cause, as the package said it).
 * - SO_RCVBUF is raised to 4 MiB (the kernel doubles it, capped by net.core.rmem_max): a large
 *   dump must not overflow it.
 * - A socket that errs or does not answer within the timeout is closed, the request in flight is
 *   rejected (ESOCKCLOSED / ETIMEDOUT), and a fresh socket is opened for the next request;
 *   `onReset` tells the owner so that state read through the old socket can be re-read. A reply
 *   that cannot be decoded safely (decode.ts) rejects its request the same way and resets too:
 *   the stream is no longer trusted.
 * - The socket is referenced only while a request is in flight: an idle client never keeps the
 *   process alive.
 */
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { getSystemErrorName } from 'node:util';
import type { Logger } from '../log';
import { decodeDoneErrno, decodeErrno, forEachMessage, NetlinkDecodeError, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, type RawMessage } from './decode';
import { NetlinkError, toNetlinkError } from './errors';
import { openNetlinkSocket, type RawSocket } from './transport';
import { stampMessage } from './wire';

export const RECV_BUFFER_BYTES = 4 << 20;
const NETLINK_ROUTE = 0;
const NLM_F_DUMP = 0x300;

/**
 * Whether the `netlink` package's native binding carries weft's fix (scripts/patch-netlink.js):
 * without it a socket error such as a receive-buffer overflow aborts the process instead of
 * reaching our 'error' listeners. node-gyp-build loads build/Release/ before the prebuilds.
 * Only the kernel WireGuard path (wireguard.ts) still opens the package's sockets.
 */
export function nativeBindingPatched(): boolean {
  try {
    const dir = path.dirname(require.resolve('netlink/package.json'));
    return existsSync(path.join(dir, '.weft-patched')) && existsSync(path.join(dir, 'build', 'Release', 'netlink_binding.node'));
  } catch {
    return false;
  }
}

/** Opens a raw rtnetlink socket in the calling process's network namespace (a seam for tests). */
export type SocketFactory = () => RawSocket;

export const defaultSocketFactory: SocketFactory = () => openNetlinkSocket(NETLINK_ROUTE, { recvBufferBytes: RECV_BUFFER_BYTES });

/** The request in flight. */
interface InFlight {
  readonly seq: number;
  readonly dump: boolean;
  readonly replies: RawMessage[];
  readonly finish: (err: unknown) => void;
}

function errnoName(errno: number): string {
  try {
    return getSystemErrorName(-errno);
  } catch {
    return String(errno);
  }
}

export class RequestSocket {
  private sock: RawSocket | null = null;
  private tail: Promise<unknown> = Promise.resolve();
  private waiting = 0;
  private inFlight: InFlight | null = null;
  private closed = false;
  private portId: number | null = null;
  private seq = 1;

  constructor(
    private readonly label: string,
    private readonly log: Logger,
    private readonly timeoutMs: number,
    private readonly onReset: (why: string) => void,
    private readonly factory: SocketFactory = defaultSocketFactory,
  ) {}

  /** The netlink port id of the open socket (the nlmsg_pid of its writes' notifications), or null. */
  get port(): number | null {
    return this.portId;
  }

  /** Requests queued or in flight on this socket. */
  get load(): number {
    return this.waiting;
  }

  /**
   * Send `request` (one encoded message, wire.ts; its seq and pid are stamped here) alone on this
   * socket and resolve with the reply messages (without the closing DONE or ACK): a dump's parts,
   * a GET's one answer, nothing for a write. Rejects with a NetlinkError naming `operation`: the
   * kernel's errno, ETIMEDOUT, or ESOCKCLOSED when the socket died or the client was closed.
   */
  request(operation: string, request: Buffer): Promise<RawMessage[]> {
    this.waiting++;
    const result = this.tail.then(() => this.execute(operation, request));
    this.tail = result.catch(() => undefined);
    return result.finally(() => {
      this.waiting--;
    });
  }

  close(): void {
    this.closed = true;
    this.inFlight?.finish(new Error('netlink client closed'));
    this.drop();
  }

  private execute(operation: string, request: Buffer): Promise<RawMessage[]> {
    if (this.closed) return Promise.reject(new NetlinkError(operation, 'ESOCKCLOSED', new Error('netlink client closed')));
    let sock: RawSocket;
    try {
      sock = this.ensure();
    } catch (err) {
      return Promise.reject(toNetlinkError(`${operation}: open netlink socket`, err));
    }
    const seq = this.seq;
    this.seq = (this.seq % 0xffffffff) + 1;
    stampMessage(request, seq, this.portId ?? 0);
    return new Promise<RawMessage[]>((resolve, reject) => {
      let settled = false;
      const replies: RawMessage[] = [];
      const finish = (err: unknown): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (this.inFlight?.seq === seq) this.inFlight = null;
        if (this.sock === sock) sock.unref();
        if (err === null) resolve(replies);
        else reject(err instanceof NetlinkError ? err : new NetlinkError(operation, 'ESOCKCLOSED', err));
      };
      const timer = setTimeout(() => {
        finish(new NetlinkError(operation, 'ETIMEDOUT', new Error(`no answer from the kernel within ${this.timeoutMs} ms`)));
        // A late answer would be ignored by its sequence number; a fresh socket all the same, as
        // the kernel may be stuck on this one (and its buffer full of what we did not read).
        this.reset(`request timed out (${operation})`);
      }, this.timeoutMs);
      this.inFlight = {
        seq,
        dump: (request.readUInt16LE(6) & NLM_F_DUMP) === NLM_F_DUMP,
        replies,
        finish: (err) => {
          if (err === null || err instanceof NetlinkError) finish(err);
          else if (err instanceof NetlinkDecodeError) finish(new NetlinkError(operation, 'EBADMSG', err));
          else if (typeof err === 'number') finish(new NetlinkError(operation, errnoName(err), new Error(`Request rejected: ${errnoName(err)}`)));
          else finish(err);
        },
      };
      sock.ref();
      sock.send(request, {}, (err) => {
        if (err) finish(toNetlinkError(operation, err));
      });
    });
  }

  /** One datagram from the kernel: the in-flight request's messages, by sequence number. */
  private onDatagram(datagram: Buffer): void {
    const f = this.inFlight;
    if (!f) return; // a late answer to a request already given up
    try {
      forEachMessage(datagram, (m) => {
        if (m.seq !== f.seq || this.inFlight !== f) return;
        if (m.type === NLMSG_ERROR) {
          const errno = decodeErrno(m.body);
          // An ACK ends a write or a GET; a dump ends at DONE (the kernel does not ACK a dump).
          if (errno !== 0) f.finish(errno);
          else if (!f.dump) f.finish(null);
        } else if (m.type === NLMSG_DONE) {
          const errno = decodeDoneErrno(m.body);
          f.finish(errno === 0 ? null : errno);
        } else if (m.type !== NLMSG_NOOP) {
          f.replies.push(m);
        }
      });
    } catch (err) {
      if (this.inFlight !== f) return;
      f.finish(err);
      this.reset(`undecodable reply: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  private ensure(): RawSocket {
    if (this.sock) return this.sock;
    const sock = this.factory();
    try {
      sock.setRecvBufferSize(RECV_BUFFER_BYTES);
      this.portId = sock.address().port;
    } catch (err) {
      closeQuietly(sock);
      throw err;
    }
    sock.unref();
    sock.on('message', (msg, rinfo) => {
      if (this.sock === sock && rinfo.port === 0) this.onDatagram(msg);
    });
    sock.on('error', (err) => {
      if (this.sock !== sock) return;
      this.log.warn('netlink request socket failed; reopening', { socket: this.label, error: err.message });
      this.inFlight?.finish(err);
      this.reset(`socket error: ${err.message}`);
    });
    this.sock = sock;
    return sock;
  }

  private reset(why: string): void {
    this.drop();
    if (!this.closed) this.onReset(why);
  }

  private drop(): void {
    closeQuietly(this.sock);
    this.sock = null;
    this.portId = null;
    this.inFlight = null;
  }
}

/** Close a socket that may already have been closed by the native layer after an error. */
export function closeQuietly(sock: RawSocket | null): void {
  if (!sock) return;
  try {
    sock.close();
  } catch {
    // already closed
  }
}
