/**
 * The one place weft opens a raw netlink socket (rtnetlink writes in batch.ts, notifications in
 * monitor.ts, requests and dumps built on it). Raw: datagrams in, datagrams out, nothing parsed.
 *
 * Backed for now by the `netlink` package's RawNetlinkSocket, loaded from `netlink/dist/raw`
 * directly: the package index also loads its generated struct tables (rt, nl80211, genl, wg;
 * ~4 MB of heap) that a raw socket never needs.
 */
import type { RawNetlinkSocket as PackageRawSocket } from 'netlink/dist/raw';

/** Where a datagram came from: port 0 is the kernel. */
export interface DatagramSource {
  readonly port: number;
}

/** The raw socket seam (batch.ts's writes, monitor.ts's notifications; tests script it). */
export interface RawSocket {
  /** One sendmsg of `msg` (to the kernel unless `options.port`); `callback` gets its error. */
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
export type MonitorRawSocket = RawSocket & { addMembership(group: number): void };

export interface NetlinkSocketOptions {
  /** SO_RCVBUF wanted (the kernel doubles it, capped by net.core.rmem_max unless privileged). */
  readonly recvBufferBytes: number;
  /** Keep the event loop alive while the socket is open (default false: unref'd). */
  readonly ref?: boolean;
}

type RawModule = typeof import('netlink/dist/raw');
let rawModule: RawModule | undefined;

/**
 * Open and bind a netlink socket of `protocol` (NETLINK_ROUTE = 0, ...) in the calling process's
 * network namespace, with the receive buffer raised. Throws (with the errno's code) when the
 * socket cannot be opened; nothing stays open then.
 */
export function openNetlinkSocket(protocol: number, opts: NetlinkSocketOptions): MonitorRawSocket {
  rawModule ??= require('netlink/dist/raw') as RawModule;
  // sendBufferSize 0 = leave the kernel default (the package only applies truthy values).
  const sock: PackageRawSocket = new rawModule.RawNetlinkSocket(protocol, { recvBufferSize: opts.recvBufferBytes, sendBufferSize: 0 });
  if (opts.ref !== true) sock.unref();
  return sock;
}
