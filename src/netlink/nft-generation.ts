/**
 * The nf_tables ruleset generation: a counter the kernel bumps on every ruleset change in the
 * network namespace (NFT_MSG_GETGEN over NETLINK_NETFILTER → NFTA_GEN_ID). Reading it is one small
 * netlink round trip, no process: the iptables manager polls it and runs `iptables-save` only
 * when it moved, instead of forking iptables every few seconds as flannel does.
 *
 * Only meaningful when iptables is the nf_tables variant (iptables-nft, Debian's default): the
 * legacy tables are not part of the nf_tables ruleset and do not move the counter.
 *
 * One request socket, no multicast groups (so nothing can overflow its receive buffer), one request
 * at a time, unref'd: it never keeps the process alive. `watch()` opens a second socket joined to
 * NFNLGRP_NFTABLES: the kernel then tells us of every ruleset commit (each ends with a NEWGEN
 * message), so an idle daemon need not poll the generation at all.
 *
 * Both are raw sockets from transport.ts: the query goes through socket.ts's RequestSocket
 * (sequence numbers, ACK, timeout, a fresh socket after a failure), the notifications are walked
 * by decode.ts; the `netlink` package's higher layers are not loaded.
 */
import { silentLogger } from '../log';
import { forEachMessage } from './decode';
import { toNetlinkError } from './errors';
import { RequestSocket } from './socket';
import { openNetlinkSocket, type MonitorRawSocket } from './transport';

const NFNL_SUBSYS_NFTABLES = 10;
const NFT_MSG_GETGEN = 16;
const NFT_MSG_NEWGEN = 15;
const NFTA_GEN_ID = 1;
/** struct nfgenmsg { u8 nfgen_family (AF_UNSPEC); u8 version (NFNETLINK_V0); be16 res_id } */
const NFGENMSG = Buffer.from([0, 0, 0, 0]);
const TIMEOUT_MS = 2000;
const NETLINK_NETFILTER = 12;
const NLM_F_REQUEST = 0x1;
const NLM_F_ACK = 0x4;
const NEWGEN_TYPE = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN;

/** NFT_MSG_GETGEN: nlmsghdr (seq and pid stamped by the request socket) + nfgenmsg. */
function encodeGetGen(): Buffer {
  const b = Buffer.alloc(16 + NFGENMSG.length);
  b.writeUInt32LE(b.length, 0);
  b.writeUInt16LE((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN, 4);
  b.writeUInt16LE(NLM_F_REQUEST | NLM_F_ACK, 6);
  NFGENMSG.copy(b, 16);
  return b;
}

/** Whether a datagram of NFNLGRP_NFTABLES carries a commit's NEWGEN (a malformed one counts: re-read). */
function hasNewGen(datagram: Buffer): boolean {
  let found = false;
  try {
    forEachMessage(datagram, (m) => {
      if (m.type === NEWGEN_TYPE) found = true;
    });
  } catch {
    return true;
  }
  return found;
}

export interface RulesetGeneration {
  /** The current generation; rejects with a NetlinkError when the kernel cannot say. */
  current(): Promise<number>;
  /**
   * Call `onChange` after each ruleset commit (and once when changes may have been lost: the
   * socket overflowed or failed). false: notifications are not available here, so poll.
   */
  watch?(onChange: () => void): boolean;
  unwatch?(): void;
  close(): void;
}

/** NFNLGRP_NFTABLES (linux/netfilter/nfnetlink.h): every nf_tables ruleset change. */
export const NFNLGRP_NFTABLES = 7;

/** Opens a NETLINK_NETFILTER socket with that receive buffer (a seam for tests; default transport.ts). */
export type NetfilterSocketFactory = (recvBufferBytes: number) => MonitorRawSocket;

const openNetfilterSocket: NetfilterSocketFactory = (recvBufferBytes) => openNetlinkSocket(NETLINK_NETFILTER, { recvBufferBytes });

export class NftGeneration implements RulesetGeneration {
  constructor(private readonly openSocket: NetfilterSocketFactory = openNetfilterSocket) {}

  /** The query's request socket, opened on the first query; it joins no group, so nothing but replies arrives. */
  private sock: RequestSocket | null = null;
  private events: MonitorRawSocket | null = null;
  private tail: Promise<unknown> = Promise.resolve();

  private unwatched = false;

  watch(onChange: () => void): boolean {
    if (this.unwatched) return false;
    if (this.events !== null) return true;
    let s: MonitorRawSocket;
    try {
      // A larger buffer than the default: iptables-restore of a big ruleset (Docker, kube-proxy)
      // sends a message per rule; an overflow is not a loss for us (we re-read the generation).
      s = this.openSocket(1 << 20);
    } catch {
      return false;
    }
    try {
      s.addMembership(NFNLGRP_NFTABLES);
    } catch {
      s.close();
      return false;
    }
    s.on('message', (datagram, rinfo) => {
      if (rinfo.port !== 0) return; // only the kernel speaks on this group
      // Only the commit's NEWGEN matters; the per-rule messages before it are skipped by type.
      if (hasNewGen(datagram)) onChange();
    });
    s.on('error', () => {
      // ENOBUFS (a flood of rule messages) or worse: changes may have been missed; say so once
      // and listen again on a fresh socket.
      s.close();
      if (this.events !== s) return;
      this.events = null;
      onChange();
      setTimeout(() => void this.watch(onChange), 1000).unref();
    });
    this.events = s;
    return true;
  }

  current(): Promise<number> {
    const next = this.tail.then(() => this.query());
    this.tail = next.catch(() => undefined);
    return next;
  }

  close(): void {
    this.sock?.close();
    this.sock = null;
  }

  /** Stop listening for changes (close() only closes the request socket: a failed query reopens it). */
  unwatch(): void {
    this.unwatched = true;
    const s = this.events;
    this.events = null;
    s?.close();
  }

  private async query(): Promise<number> {
    const op = 'read the nf_tables ruleset generation';
    try {
      // The request socket replaces its raw socket itself after a timeout or an error.
      this.sock ??= new RequestSocket('nft', silentLogger, TIMEOUT_MS, () => undefined, () => this.openSocket(64 << 10));
      const msgs = await this.sock.request(op, encodeGetGen());
      for (const m of msgs) {
        if ((m.type & 0xff) !== NFT_MSG_NEWGEN) continue;
        const id = genIdOf(m.body);
        if (id !== null) return id;
      }
      throw new Error('no NFTA_GEN_ID in the reply');
    } catch (err) {
      // A socket that failed once is not trusted again.
      this.close();
      throw toNetlinkError(op, err);
    }
  }
}

/** NFTA_GEN_ID from a NEWGEN payload: nfgenmsg (4 bytes), then attributes (len u16, type u16, value). */
export function genIdOf(data: Buffer): number | null {
  let off = 4;
  while (off + 4 <= data.length) {
    const len = data.readUInt16LE(off);
    const type = data.readUInt16LE(off + 2) & 0x3fff;
    if (len < 4) return null;
    if (type === NFTA_GEN_ID && len >= 8) return data.readUInt32BE(off + 4);
    off += (len + 3) & ~3;
  }
  return null;
}
