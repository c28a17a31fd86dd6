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
 */
import { createNetlink, Protocol, type NetlinkSocket } from 'netlink';
import { toNetlinkError } from './errors';

const NFNL_SUBSYS_NFTABLES = 10;
const NFT_MSG_GETGEN = 16;
const NFT_MSG_NEWGEN = 15;
const NFTA_GEN_ID = 1;
/** struct nfgenmsg { u8 nfgen_family (AF_UNSPEC); u8 version (NFNETLINK_V0); be16 res_id } */
const NFGENMSG = Buffer.from([0, 0, 0, 0]);
const TIMEOUT_MS = 2000;

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

export class NftGeneration implements RulesetGeneration {
  private sock: NetlinkSocket | null = null;
  private events: NetlinkSocket | null = null;
  private tail: Promise<unknown> = Promise.resolve();

  private unwatched = false;

  watch(onChange: () => void): boolean {
    if (this.unwatched) return false;
    if (this.events !== null) return true;
    let s: NetlinkSocket;
    try {
      // A larger buffer than the default: iptables-restore of a big ruleset (Docker, kube-proxy)
      // sends a message per rule; an overflow is not a loss for us (we re-read the generation).
      s = createNetlink(Protocol.NETFILTER, { ref: false, recvBufferSize: 1 << 20, sendBufferSize: 0 });
      s.addMembership(NFNLGRP_NFTABLES);
    } catch {
      return false;
    }
    s.on('message', (msgs, rinfo) => {
      if (rinfo.port !== 0) return; // only the kernel speaks on this group
      // Only the commit's NEWGEN matters; the per-rule messages before it are skipped unparsed.
      if (msgs.some((m) => m.type === ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN))) onChange();
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
    try {
      this.sock ??= this.open();
      const [msgs] = await this.sock.request((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN, [NFGENMSG], { timeout: TIMEOUT_MS });
      for (const m of msgs) {
        if ((m.type & 0xff) !== NFT_MSG_NEWGEN) continue;
        const id = genIdOf(Buffer.from(m.data));
        if (id !== null) return id;
      }
      throw new Error('no NFTA_GEN_ID in the reply');
    } catch (err) {
      // A socket that failed once is not trusted again.
      this.close();
      throw toNetlinkError('read the nf_tables ruleset generation', err);
    }
  }

  private open(): NetlinkSocket {
    // Buffer sizes 0: leave the kernel defaults (the package only applies truthy values); replies are tiny.
    const s = createNetlink(Protocol.NETFILTER, { ref: false, recvBufferSize: 0, sendBufferSize: 0 });
    s.on('error', () => this.close());
    return s;
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
