/**
 * Kernel change notifications on a socket of their own (never the request socket: a
 * notification arriving in the middle of a dump corrupts the package's multipart handling).
 *
 * The socket is referenced (`ref: true`): an unreferenced socket lets Node exit while weftd is
 * only waiting for changes. Notifications are parsed into `ChangeEvent`s and delivered in batches
 * coalesced over `coalesceMs`, so a burst (a peer's three objects, a device deletion taking its
 * routes with it) costs the listener one wake-up.
 *
 * When the socket fails (ENOBUFS after an overflow, once the package reports it as an 'error'
 * event; see docs/netlink.md), events were lost: the socket is reopened with backoff and the next
 * batch has `resync: true`.
 *
 * Decoding is what costs: the socket is a raw socket (transport.ts: raw datagrams, nothing
 * parsed), and each notification's header and fixed part are read first (`wanted`): the echoes of
 * our own writes (nlmsg_pid is one of our request sockets' port ids; FDB changes and neighbour
 * removals, which carry pid 0, by content: see NetlinkClient.isOwnWrite), the other family's
 * neighbours, and, per the owner's MonitorInterest, routes of other tables, objects on other
 * interfaces and (with `linkNames`) links of other interfaces and names are dropped there. Only what is left is decoded (`parseEvent`, by decode.ts: weft's
 * own decoders, not the `netlink` package's object-per-attribute parse).
 */
import { Backoff } from '../backoff';
import type { Logger } from '../log';
import { openNetlinkSocket, type MonitorRawSocket } from './transport';
import { monitorFilterProgram } from './bpf';
import { decodeAddress, decodeLink, decodeNeighbour, decodeRoute } from './decode';
import type { IPFamily } from '../ip';
import { RECV_BUFFER_BYTES } from './socket';
import type { ChangeBatch, ChangeEvent, Monitor, MonitorInterest } from './types';
import {
  AF_BRIDGE,
  AF_INET,
  AF_INET6,
  NLMSG_HDRLEN,
  RTA_OIF,
  RTA_TABLE,
  RTM_DELADDR,
  RTM_DELLINK,
  RTM_DELNEIGH,
  RTM_DELROUTE,
  RTM_NEWADDR,
  RTM_NEWNEIGH,
  RTM_NEWROUTE,
  u16le,
  u32le,
} from './wire';

/**
 * rtnetlink multicast groups (RTNLGRP_*) per address family: LINK 1, NEIGH 3, IPV4_IFADDR 5,
 * IPV4_ROUTE 7, IPV6_IFADDR 9, IPV6_ROUTE 11. An IPv4-only daemon does not wake up for IPv6 churn.
 */
const GROUPS = {
  4: [1, 3, 7, 5],
  6: [1, 3, 11, 9],
} as const;

/** The monitor's socket: a raw socket that can join multicast groups (defined with the transport). */
export type { MonitorRawSocket } from './transport';
export type MonitorSocketFactory = () => MonitorRawSocket;

/** NETLINK_ROUTE; referenced: weftd must stay alive waiting for changes. */
export const defaultMonitorSocketFactory: MonitorSocketFactory = () => openNetlinkSocket(0, { recvBufferBytes: RECV_BUFFER_BYTES, ref: true });

export interface MonitorOptions {
  readonly coalesceMs: number;
  readonly factory?: MonitorSocketFactory;
  readonly log: Logger;
  readonly onClose: () => void;
  /** Which family's addresses, routes and neighbours to follow (links and FDB always). Default 4. */
  readonly family?: IPFamily;
  /** What the owner cares about; everything else is dropped before decoding. */
  readonly interest?: MonitorInterest;
  /**
   * True for a notification of one of our own writes: its nlmsg_pid is one of our request
   * sockets' port ids, or (pid 0: FDB changes, neighbour removals) its content is a change we just
   * made, in which case the expectation is consumed: called with pid 0 only for a notification
   * this monitor wants. `body` is the message after its nlmsghdr.
   */
  readonly isOwnWrite?: (pid: number, type: number, body: Buffer) => boolean;
}

export class MonitorSocket implements Monitor {
  private rt: MonitorRawSocket | null = null;
  /** The program attached to the open socket and the interface set it was built for; null: none. */
  private filter: { readonly program: Buffer; readonly objectIfindexes: ReadonlySet<number> | null } | null = null;
  /** The socket refused a filter once: do not try again (JavaScript filters alone). */
  private filterRefused = false;
  private events: ChangeEvent[] = [];
  private resync = false;
  private flushTimer: NodeJS.Timeout | null = null;
  private reopenTimer: NodeJS.Timeout | null = null;
  /** Reopening after lost events: 100 ms doubling to 5 s. */
  private readonly reopenBackoff = new Backoff({ initialMs: 100, maxMs: 5000 });
  private closed = false;

  constructor(
    private readonly onChange: (batch: ChangeBatch) => void,
    private readonly opts: MonitorOptions,
  ) {
    this.open();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.flushTimer) clearTimeout(this.flushTimer);
    if (this.reopenTimer) clearTimeout(this.reopenTimer);
    this.drop();
    this.opts.onClose();
  }

  /**
   * The owner's interest changed (its device has a new ifindex): rebuild the kernel filter. What
   * the old filter may have dropped in between (it kept only the old device's objects) is covered
   * by a resync; a filter that kept every interface's objects dropped nothing of the new device.
   */
  interestChanged(): void {
    const rt = this.rt;
    if (this.closed || rt === null) return;
    const before = this.filter;
    if (this.attachFilter(rt) && before !== null && before.objectIfindexes !== null) this.requestResync();
  }

  /**
   * Attach (or replace: SO_ATTACH_FILTER swaps atomically) the kernel filter for the current
   * interest. Returns whether a different program is now attached. When the socket refuses a
   * replacement, the old program (built for an older interest) may still be in place: the socket
   * is then reopened without one.
   */
  private attachFilter(rt: MonitorRawSocket): boolean {
    // A socket without attachFilter (a test's): the JavaScript checks alone, same events, more wake-ups.
    const attach = rt.attachFilter;
    if (typeof attach !== 'function' || this.filterRefused) return false;
    const interest = this.opts.interest ?? {};
    const objectIfindexes = (interest.objectIfindexes ?? interest.ifindexes)?.() ?? null;
    const program = monitorFilterProgram({ family: this.opts.family ?? 4, table: interest.table, objectIfindexes });
    if (this.filter !== null && this.filter.program.equals(program)) return false;
    try {
      attach.call(rt, program);
    } catch (err) {
      this.filterRefused = true;
      this.opts.log.warn('netlink monitor: the kernel refused the socket filter; filtering in JavaScript only (more wake-ups, same events)', { error: err });
      if (this.filter !== null) {
        this.filter = null;
        this.drop();
        this.scheduleReopen(0);
      }
      return false;
    }
    this.filter = { program, objectIfindexes };
    return true;
  }

  /** A request socket was reset: whatever it was reading must be re-read. */
  requestResync(): void {
    if (this.closed) return;
    this.resync = true;
    this.scheduleFlush();
  }

  private open(): void {
    const rt = (this.opts.factory ?? defaultMonitorSocketFactory)();
    try {
      rt.setRecvBufferSize(RECV_BUFFER_BYTES);
      for (const g of GROUPS[this.opts.family ?? 4]) rt.addMembership(g);
    } catch (err) {
      rt.close();
      throw err;
    }
    // Before any notification can be read: what the filter drops never wakes us.
    this.filter = null;
    this.attachFilter(rt);
    // Referenced: weftd must stay alive waiting for changes.
    rt.ref();
    rt.on('error', (err) => {
      if (this.rt !== rt) return;
      this.opts.log.warn('netlink monitor socket failed; changes may have been lost, reopening', { error: err.message });
      this.drop();
      this.scheduleReopen();
    });
    const filter: NotificationFilter = {
      family: this.opts.family ?? 4,
      interest: this.opts.interest ?? {},
      isOwnWrite: this.opts.isOwnWrite ?? (() => false),
    };
    rt.on('message', (datagram, rinfo) => {
      if (rinfo.port !== 0 || this.rt !== rt) return; // only the kernel speaks on these groups
      const before = this.events.length;
      decodeNotifications(datagram, filter, this.events);
      if (this.events.length > before) this.scheduleFlush();
    });
    this.rt = rt;
  }

  private scheduleReopen(delayMs?: number): void {
    if (this.closed || this.reopenTimer) return;
    this.reopenTimer = setTimeout(() => {
      this.reopenTimer = null;
      if (this.closed) return;
      try {
        this.open();
        this.reopenBackoff.reset();
        this.resync = true;
        this.scheduleFlush();
      } catch (err) {
        const retryInMs = this.reopenBackoff.next();
        this.opts.log.error('netlink monitor: cannot reopen socket; retrying', { error: err, retryInMs });
        this.scheduleReopen(retryInMs);
      }
    }, delayMs ?? this.reopenBackoff.next());
  }

  private scheduleFlush(): void {
    if (this.flushTimer || this.closed) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = null;
      const batch: ChangeBatch = { events: this.events, resync: this.resync };
      this.events = [];
      this.resync = false;
      try {
        this.onChange(batch);
      } catch (err) {
        this.opts.log.error('netlink monitor listener threw', { error: err });
      }
    }, this.opts.coalesceMs);
  }

  private drop(): void {
    const rt = this.rt;
    this.rt = null;
    if (!rt) return;
    try {
      rt.close();
    } catch {
      // already closed by the native layer after an error
    }
  }
}

/** What `decodeNotifications` keeps. */
export interface NotificationFilter {
  readonly family: IPFamily;
  readonly interest: MonitorInterest;
  readonly isOwnWrite: (pid: number, type: number, body: Buffer) => boolean;
}

/**
 * Decode the notifications of one datagram that pass `filter` into `out`. Each is first judged
 * by its header, fixed part and (routes) its RTA_TABLE/RTA_OIF attributes, read in place; only
 * the ones kept are decoded (decode.ts).
 */
export function decodeNotifications(datagram: Buffer, filter: NotificationFilter, out: ChangeEvent[]): void {
  let ifindexes: ReadonlySet<number> | null | undefined;
  let objectIfindexes: ReadonlySet<number> | null = null;
  let off = 0;
  while (off + NLMSG_HDRLEN <= datagram.length) {
    const len = u32le(datagram, off);
    if (len < NLMSG_HDRLEN || off + len > datagram.length) return;
    const type = u16le(datagram, off + 4);
    const body = datagram.subarray(off + NLMSG_HDRLEN, off + len);
    const pid = u32le(datagram, off + 12);
    off += (len + 3) & ~3;
    // A sender port is checked first (cheap, and never ambiguous). A pid-0 echo is matched by
    // content and consumed once: only by a monitor that wants it, so that another monitor of the
    // same client (the other family's reconciler) cannot take it away from the one it is for.
    if (pid !== 0 && filter.isOwnWrite(pid, type, body)) continue;
    if (ifindexes === undefined) {
      ifindexes = filter.interest.ifindexes?.() ?? null;
      objectIfindexes = filter.interest.objectIfindexes ? filter.interest.objectIfindexes() : ifindexes;
    }
    if (!wanted(type, body, filter, ifindexes, objectIfindexes)) continue;
    if (pid === 0 && filter.isOwnWrite(0, type, body)) continue;
    const ev = parseEvent(type, body);
    if (ev) out.push(ev);
  }
}

/**
 * Whether a notification (its type and body: fixed header then attributes) may matter. The
 * monitor socket's kernel filter (bpf.ts's monitorFilter) is an earlier copy of these checks for
 * neighbours, addresses and route tables: keep the two in step.
 */
function wanted(
  type: number,
  body: Buffer,
  filter: NotificationFilter,
  ifindexes: ReadonlySet<number> | null,
  objectIfindexes: ReadonlySet<number> | null,
): boolean {
  const ipFamily = filter.family === 6 ? AF_INET6 : AF_INET;
  switch (type) {
    case RTM_NEWADDR:
    case RTM_DELADDR: // ifaddrmsg: family u8, prefixlen u8, flags u8, scope u8, index u32
      if (body.length < 8) return false;
      return objectIfindexes === null || objectIfindexes.has(body.readUInt32LE(4));
    case RTM_NEWNEIGH:
    case RTM_DELNEIGH: {
      // ndmsg: family u8, pad u8, pad u16, ifindex s32, ...
      if (body.length < 12) return false;
      const family = body.readUInt8(0);
      if (family !== AF_BRIDGE && family !== ipFamily) return false;
      return objectIfindexes === null || objectIfindexes.has(body.readInt32LE(4));
    }
    case RTM_NEWROUTE:
    case RTM_DELROUTE: {
      // rtmsg (12 bytes: table u8 at 4), then attributes: RTA_TABLE overrides the u8 table.
      if (body.length < 12) return false;
      if (filter.interest.table === undefined && ifindexes === null) return true;
      let table = body.readUInt8(4);
      let oif: number | null = null;
      for (let a = 12; a + 4 <= body.length; ) {
        const alen = body.readUInt16LE(a);
        if (alen < 4 || a + alen > body.length) break;
        const atype = body.readUInt16LE(a + 2) & 0x3fff;
        if (atype === RTA_TABLE && alen >= 8) table = body.readUInt32LE(a + 4);
        else if (atype === RTA_OIF && alen >= 8) oif = body.readUInt32LE(a + 4);
        a += (alen + 3) & ~3;
      }
      if (filter.interest.table !== undefined && table !== filter.interest.table) return false;
      return ifindexes === null || (oif !== null && ifindexes.has(oif));
    }
    case RTM_NEWLINK:
    case RTM_DELLINK: {
      // ifinfomsg (16 bytes: index s32 at 4), then attributes (IFLA_IFNAME 3).
      const names = filter.interest.linkNames;
      if (names === undefined || ifindexes === null || body.length < 16 || ifindexes.has(body.readInt32LE(4))) return true;
      const name = linkName(body);
      return name === null || names().has(name);
    }
    default:
      return true; // anything else parseEvent decides
  }
}

const RTM_NEWLINK = 16;
const IFLA_IFNAME = 3;

/** IFLA_IFNAME of a link message's body, read in place; null when absent or malformed. */
function linkName(body: Buffer): string | null {
  for (let a = 16; a + 4 <= body.length; ) {
    const alen = body.readUInt16LE(a);
    if (alen < 4 || a + alen > body.length) return null;
    if ((body.readUInt16LE(a + 2) & 0x3fff) === IFLA_IFNAME) {
      let end = a + alen;
      while (end > a + 4 && body[end - 1] === 0) end--;
      return body.toString('utf8', a + 4, end);
    }
    a += (alen + 3) & ~3;
  }
  return null;
}

/**
 * Turn one notification into a ChangeEvent; null for what weft never cares about (other
 * families, other message types) and for a malformed message (decode.ts throws; one bad message
 * must not take the monitor down, and the periodic resync re-reads the kernel anyway).
 */
export function parseEvent(type: number, data: Buffer): ChangeEvent | null {
  try {
    switch (type) {
      case RTM_NEWLINK:
      case RTM_DELLINK: {
        const l = decodeLink(data);
        return { kind: 'link', removed: type === RTM_DELLINK, ifindex: l.index, name: l.ifname };
      }
      case RTM_NEWADDR:
      case RTM_DELADDR: {
        const a = decodeAddress(data);
        if (a.family !== AF_INET && a.family !== AF_INET6) return null;
        return { kind: 'address', removed: type === RTM_DELADDR, ifindex: a.ifindex, ip: a.ip, prefixLen: a.prefixLen };
      }
      case RTM_NEWNEIGH:
      case RTM_DELNEIGH: {
        const n = decodeNeighbour(data);
        if (n.family === AF_INET || n.family === AF_INET6) {
          return { kind: 'neighbour', removed: type === RTM_DELNEIGH, ifindex: n.ifindex, ip: n.dst, mac: n.mac, permanent: n.permanent };
        }
        if (n.family === AF_BRIDGE) {
          return { kind: 'fdb', removed: type === RTM_DELNEIGH, ifindex: n.ifindex, mac: n.mac, dst: n.dst, permanent: n.permanent };
        }
        return null;
      }
      case RTM_NEWROUTE:
      case RTM_DELROUTE: {
        const r = decodeRoute(data);
        if (r.dst === null) return null;
        return { kind: 'route', removed: type === RTM_DELROUTE, table: r.table, oif: r.oif, dst: r.dst, gateway: r.gateway };
      }
      default:
        return null;
    }
  } catch {
    return null;
  }
}
