/**
 * One rtnetlink request socket with the guard rails the `netlink` 0.3.0 package needs
 * (see docs/netlink.md):
 *
 * - Requests are strictly serialized: a dump started while another request is in flight on the
 *   same socket fails inside the package ("Multipart message not terminated properly"), and one
 *   request at a time also bounds what the kernel can queue towards us.
 * - SO_RCVBUF is raised to 4 MiB (the kernel doubles it, capped by net.core.rmem_max): an
 *   overflow is the one failure the package cannot report to JavaScript (it aborts the process).
 * - 'error' is listened to on `rt.socket` (RtNetlinkSocket does not re-emit it). A socket that
 *   errs or does not answer within the timeout is closed, the request in flight is rejected, and
 *   a fresh socket is opened for the next request; `onReset` tells the owner so that state read
 *   through the old socket can be re-read.
 */
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { createRtNetlink, type RtNetlinkSocket } from 'netlink';
import type { Logger } from '../log';
import { NetlinkError, toNetlinkError } from './errors';

export const RECV_BUFFER_BYTES = 4 << 20;

/**
 * Whether the `netlink` package's native binding carries weft's fix (scripts/patch-netlink.js):
 * without it a socket error such as a receive-buffer overflow aborts the process instead of
 * reaching our 'error' listeners. node-gyp-build loads build/Release/ before the prebuilds.
 */
export function nativeBindingPatched(): boolean {
  try {
    const dir = path.dirname(require.resolve('netlink/package.json'));
    return existsSync(path.join(dir, '.weft-patched')) && existsSync(path.join(dir, 'build', 'Release', 'netlink_binding.node'));
  } catch {
    return false;
  }
}

/** Opens an rtnetlink socket in the calling process's network namespace. */
export type SocketFactory = (opts: { ref: boolean }) => RtNetlinkSocket;

export const defaultSocketFactory: SocketFactory = (opts) =>
  // sendBufferSize 0 = leave the kernel default (the package only applies truthy values).
  createRtNetlink({ ref: opts.ref, recvBufferSize: RECV_BUFFER_BYTES, sendBufferSize: 0 });

/** Open a socket with the receive buffer raised; closes it again if that fails. */
export function openSocket(factory: SocketFactory, ref: boolean): RtNetlinkSocket {
  const rt = factory({ ref });
  try {
    rt.socket.setRecvBufferSize(RECV_BUFFER_BYTES);
  } catch (err) {
    rt.socket.close();
    throw err;
  }
  return rt;
}

export class RequestSocket {
  private rt: RtNetlinkSocket | null = null;
  private tail: Promise<unknown> = Promise.resolve();
  private waiting = 0;
  private abortInFlight: ((err: Error) => void) | null = null;
  private closed = false;
  private portId: number | null = null;

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
   * Run `fn` alone on this socket. Rejects with a NetlinkError naming `operation`: the kernel's
   * errno, ETIMEDOUT, or ESOCKCLOSED when the socket died or the client was closed.
   */
  run<T>(operation: string, fn: (rt: RtNetlinkSocket) => Promise<T>): Promise<T> {
    this.waiting++;
    const result = this.tail.then(() => this.execute(operation, fn));
    this.tail = result.catch(() => undefined);
    return result.finally(() => {
      this.waiting--;
    });
  }

  close(): void {
    this.closed = true;
    this.abortInFlight?.(new Error('netlink client closed'));
    this.drop();
  }

  private execute<T>(operation: string, fn: (rt: RtNetlinkSocket) => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new NetlinkError(operation, 'ESOCKCLOSED', new Error('netlink client closed')));
    let rt: RtNetlinkSocket;
    try {
      rt = this.ensure();
    } catch (err) {
      return Promise.reject(toNetlinkError(`${operation}: open netlink socket`, err));
    }
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const finish = (err: unknown, value?: T): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.abortInFlight = null;
        if (err === null) resolve(value as T);
        else reject(toNetlinkError(operation, err));
      };
      const timer = setTimeout(() => {
        finish(new NetlinkError(operation, 'ETIMEDOUT', new Error(`no answer from the kernel within ${this.timeoutMs} ms`)));
        // A late answer could still arrive and be taken for the next request's: start afresh.
        this.reset(`request timed out (${operation})`);
      }, this.timeoutMs);
      this.abortInFlight = (err) => finish(new NetlinkError(operation, 'ESOCKCLOSED', err));
      let pending: Promise<T>;
      try {
        pending = fn(rt);
      } catch (err) {
        finish(err);
        return;
      }
      pending.then(
        (v) => finish(null, v),
        (e) => finish(e),
      );
    });
  }

  private ensure(): RtNetlinkSocket {
    if (this.rt) return this.rt;
    const rt = openSocket(this.factory, false);
    rt.socket.on('error', (err) => {
      if (this.rt !== rt) return;
      this.log.warn('netlink request socket failed; reopening', { socket: this.label, error: err.message });
      this.abortInFlight?.(err);
      this.reset(`socket error: ${err.message}`);
    });
    rt.socket.on('invalid', (err) => {
      this.log.debug('netlink: invalid message ignored', { socket: this.label, error: String(err) });
    });
    this.rt = rt;
    try {
      this.portId = rt.socket.address().port;
    } catch {
      this.portId = null; // a fake socket without an address: its notifications are simply not recognised
    }
    return rt;
  }

  private reset(why: string): void {
    this.drop();
    if (!this.closed) this.onReset(why);
  }

  private drop(): void {
    closeQuietly(this.rt);
    this.rt = null;
    this.portId = null;
  }
}

/** Close a socket that may already have been closed by the native layer after an error. */
export function closeQuietly(rt: RtNetlinkSocket | null): void {
  if (!rt) return;
  try {
    rt.socket.close();
  } catch {
    // already closed
  }
}
