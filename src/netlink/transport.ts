/**
 * The one place weft opens a raw netlink socket (rtnetlink writes in batch.ts, notifications in
 * monitor.ts, requests and dumps built on it). Raw: datagrams in, datagrams out, nothing parsed.
 *
 * Backed by weft's addon (addon/src/nlsock.cc), not the `netlink` package's binding, which
 * peeks every datagram to size it, reads it again and calls JavaScript once per datagram: here
 * each readable wake-up drains the socket (recvmmsg, usually one call, no peek) and all its datagrams
 * reach JavaScript in one call, then are emitted one by one as 'message' (cheap: same tick).
 * An overflow of the receive buffer is an 'error' with code ENOBUFS (datagrams were lost; the
 * owner resynchronizes). See docs/netlink.md "The native socket".
 */
import { EventEmitter } from 'node:events';
import { loadNative, type NativeAddon, type NativeNetlinkSocket } from '../native';

/** Where a datagram came from: port 0 is the kernel. */
export interface DatagramSource {
  readonly port: number;
}

/** The raw socket seam (batch.ts's writes, monitor.ts's notifications; tests script it). */
export interface RawSocket {
  /**
   * One sendmsg of `msg` (to the kernel unless `options.port`). `callback` gets its error on a
   * later tick; a socket may also call it with no error, but need not (the native one does not:
   * a tick per datagram for nothing): success is the kernel's answer.
   */
  send(msg: Uint8Array, options?: { port?: number }, callback?: (error?: Error) => void): void;
  /** Each datagram received, in order. */
  on(event: 'message', listener: (msg: Buffer, rinfo: DatagramSource) => void): unknown;
  /** The socket failed (ENOBUFS: the receive buffer overflowed and datagrams were lost). */
  on(event: 'error', listener: (err: Error) => void): unknown;
  close(): void;
  address(): { port: number };
  getRecvBufferSize(): number;
  setRecvBufferSize(size: number): unknown;
  getSendBufferSize(): number;
  ref(): void;
  unref(): void;
}

/** A raw socket that can join multicast groups (RTNLGRP_*). */
export type MonitorRawSocket = RawSocket & {
  addMembership(group: number): void;
  /** SO_ATTACH_FILTER (classic BPF, struct sock_filter[]); optional so that test sockets may omit it. */
  attachFilter?(program: Uint8Array): void;
};

export interface NetlinkSocketOptions {
  /** SO_RCVBUF wanted (the kernel doubles it, capped by net.core.rmem_max unless privileged). */
  readonly recvBufferBytes: number;
  /** Keep the event loop alive while the socket is open (default false: unref'd). */
  readonly ref?: boolean;
}

/** `rinfo` of every datagram from the kernel (port 0): one frozen object, not one per datagram. */
const FROM_KERNEL: DatagramSource = Object.freeze({ port: 0 });

type NativeSocketClass = NativeAddon['NetlinkSocket'];
let nativeClass: NativeSocketClass | undefined;

function loadSocketClass(): NativeSocketClass {
  if (nativeClass) return nativeClass;
  let addon: NativeAddon;
  try {
    addon = loadNative();
  } catch (err) {
    throw new Error('cannot open a netlink socket: weft\'s native addon is missing; build it with "npm run build:addon"', { cause: err });
  }
  if (typeof addon.NetlinkSocket !== 'function') {
    throw new Error('cannot open a netlink socket: weft\'s native addon predates NetlinkSocket; rebuild it with "npm run build:addon"');
  }
  nativeClass = addon.NetlinkSocket;
  return nativeClass;
}

function socketError(code: string, syscall: string, errno: number, what: string): Error & { code: string; errno: number; syscall: string } {
  return Object.assign(new Error(`netlink ${syscall}: ${code}${what ? ` (${what})` : ''}`), { code, errno, syscall });
}

/** The seam over the addon's socket: dgram-like events on top of one call per wake-up. */
class NativeRawSocket extends EventEmitter implements MonitorRawSocket {
  private readonly native: NativeNetlinkSocket;
  private closed = false;

  constructor(Native: NativeSocketClass, protocol: number) {
    super();
    this.native = new Native(
      protocol,
      (data, meta) => this.deliver(data, meta),
      (code, syscall, errno) => {
        if (this.closed) return;
        const what = code === 'ENOBUFS' ? 'receive buffer overflowed, messages were lost' : code === 'EMSGSIZE' ? 'a datagram over 64 KiB was dropped' : '';
        this.emit('error', socketError(code, syscall, errno, what));
      },
    );
  }

  private deliver(data: Buffer, meta: Uint32Array): void {
    let off = 0;
    for (let i = 0; i + 1 < meta.length && !this.closed; i += 2) {
      const len = meta[i]!;
      const port = meta[i + 1]!;
      this.emit('message', data.subarray(off, off + len), port === 0 ? FROM_KERNEL : { port });
      off += (len + 3) & ~3;
    }
  }

  send(msg: Uint8Array, options?: { port?: number }, callback?: (error?: Error) => void): void {
    const code = this.native.send(msg, options?.port ?? 0);
    if (code === undefined) return;
    const err = socketError(code, 'sendto', 0, `${msg.byteLength} bytes`);
    if (callback) process.nextTick(callback, err);
    else process.nextTick(() => this.emit('error', err));
  }

  close(): void {
    this.closed = true;
    this.native.close();
  }

  address(): { port: number } {
    return { port: this.native.port() };
  }

  getRecvBufferSize(): number {
    return this.native.getRecvBufferSize();
  }

  setRecvBufferSize(size: number): void {
    this.native.setRecvBufferSize(size);
  }

  getSendBufferSize(): number {
    return this.native.getSendBufferSize();
  }

  ref(): void {
    this.native.ref();
  }

  unref(): void {
    this.native.unref();
  }

  addMembership(group: number): void {
    this.native.addMembership(group);
  }

  attachFilter(program: Uint8Array): void {
    this.native.attachFilter(program);
  }
}

/**
 * Open and bind a netlink socket of `protocol` (NETLINK_ROUTE = 0, ...) in the calling process's
 * network namespace, with the receive buffer raised. Throws (with the errno's `code`) when the
 * socket cannot be opened, and with a message naming `npm run build:addon` when the addon is
 * missing; nothing stays open then.
 */
export function openNetlinkSocket(protocol: number, opts: NetlinkSocketOptions): MonitorRawSocket {
  const sock = new NativeRawSocket(loadSocketClass(), protocol);
  try {
    sock.setRecvBufferSize(opts.recvBufferBytes);
  } catch (err) {
    sock.close();
    throw err;
  }
  if (opts.ref !== true) sock.unref();
  return sock;
}
