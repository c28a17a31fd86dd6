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
 */
import { rt as rtStructs, type RtNetlinkSocket } from 'netlink';
import { Backoff } from '../backoff';
import type { Logger } from '../log';
import { bufferToIp, bufferToMac } from './codec';
import { addressFamily, parseIPv4, type IPFamily } from '../ip';
import { closeQuietly, openSocket, type SocketFactory } from './socket';
import type { ChangeBatch, ChangeEvent, Monitor } from './types';

/** Multicast groups per address family: an IPv4-only daemon does not wake up for IPv6 churn. */
const GROUPS = {
  4: ['LINK', 'NEIGH', 'IPV4_ROUTE', 'IPV4_IFADDR'],
  6: ['LINK', 'NEIGH', 'IPV6_ROUTE', 'IPV6_IFADDR'],
} as const;

// rtnetlink "deleted" message types (linux/rtnetlink.h); everything else on these groups is a NEW*.
const RTM_DELLINK = 17;
const RTM_DELADDR = 21;
const RTM_DELROUTE = 25;
const RTM_DELNEIGH = 29;
const AF_INET = 2;
const AF_INET6 = 10;
const AF_BRIDGE = 7;

export interface MonitorOptions {
  readonly coalesceMs: number;
  readonly factory: SocketFactory;
  readonly log: Logger;
  readonly onClose: () => void;
  /** Which family's addresses and routes to follow (links, neighbours and FDB always). Default 4. */
  readonly family?: IPFamily;
}

export class MonitorSocket implements Monitor {
  private rt: RtNetlinkSocket | null = null;
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

  /** A request socket was reset: whatever it was reading must be re-read. */
  requestResync(): void {
    if (this.closed) return;
    this.resync = true;
    this.scheduleFlush();
  }

  private open(): void {
    const rt = openSocket(this.opts.factory, true);
    try {
      for (const g of GROUPS[this.opts.family ?? 4]) rt.addMembership(g);
    } catch (err) {
      rt.socket.close();
      throw err;
    }
    rt.socket.on('error', (err) => {
      if (this.rt !== rt) return;
      this.opts.log.warn('netlink monitor socket failed; changes may have been lost, reopening', { error: err.message });
      this.drop();
      this.scheduleReopen();
    });
    rt.socket.on('message', (msgs, rinfo) => {
      if (rinfo.port !== 0) return; // only the kernel speaks on these groups
      for (const m of msgs) {
        const ev = parseEvent(m.type, m.data);
        if (ev) this.events.push(ev);
      }
      if (this.events.length) this.scheduleFlush();
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
    closeQuietly(this.rt);
    this.rt = null;
  }
}

/** Turn one notification into a ChangeEvent; null for what weft never cares about (other families, malformed). */
export function parseEvent(type: number, data: Buffer): ChangeEvent | null {
  let msg: rtStructs.Message;
  try {
    msg = rtStructs.parseMessage(type, data);
  } catch {
    return null;
  }
  switch (msg.kind) {
    case 'link':
      return {
        kind: 'link',
        removed: type === RTM_DELLINK,
        ifindex: msg.data.index ?? 0,
        name: msg.attrs.ifname ?? null,
      };
    case 'address':
      if (msg.data.family !== AF_INET && msg.data.family !== AF_INET6) return null;
      return {
        kind: 'address', removed: type === RTM_DELADDR, ifindex: msg.data.index ?? 0,
        ip: bufferToIp(msg.attrs.local ?? msg.attrs.address), prefixLen: msg.data.prefixlen ?? 32,
      };
    case 'neighbor': {
      const permanent = msg.data.state?.permanent === true;
      if (msg.data.family === AF_INET || msg.data.family === AF_INET6) {
        return {
          kind: 'neighbour', removed: type === RTM_DELNEIGH, ifindex: msg.data.ifindex ?? 0,
          ip: bufferToIp(msg.attrs.dst), mac: bufferToMac(msg.attrs.lladdr), permanent,
        };
      }
      if (msg.data.family === AF_BRIDGE) {
        return {
          kind: 'fdb', removed: type === RTM_DELNEIGH, ifindex: msg.data.ifindex ?? 0,
          mac: bufferToMac(msg.attrs.lladdr), dst: bufferToIp(msg.attrs.dst), permanent,
        };
      }
      return null;
    }
    case 'route': {
      if (msg.data.family !== AF_INET && msg.data.family !== AF_INET6) return null;
      const v6 = msg.data.family === AF_INET6;
      const dstIp = bufferToIp(msg.attrs.dst) ?? (v6 ? '::' : '0.0.0.0');
      const prefixLen = msg.data.dstLen ?? 0;
      return {
        kind: 'route',
        removed: type === RTM_DELROUTE,
        table: msg.attrs.table ?? msg.data.table ?? 0,
        oif: msg.attrs.oif ?? null,
        dst: v6 ? { ip: addressFamily(dstIp) === 6 ? dstIp : '::', prefixLen } : { ip: parseIPv4(dstIp) ?? 0, prefixLen },
        gateway: bufferToIp(msg.attrs.gateway),
      };
    }
    default:
      return null;
  }
}
