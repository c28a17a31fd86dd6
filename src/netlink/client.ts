/**
 * NetlinkClient: the one typed, promise-based door to rtnetlink. Requests are encoded by wire.ts,
 * sent on raw sockets (transport.ts, socket.ts) and their replies decoded by decode.ts: the
 * `netlink` package's index (its generated struct tables) is never loaded (docs/netlink.md).
 *
 * Contract:
 * - Sockets belong to the network namespace of the process that opens them (first request,
 *   first monitor): run weftd, or a test helper, inside the namespace it manages.
 * - Requests go through a small pool of sockets (`concurrency`, default 4), each strictly
 *   serialized, so at most `concurrency` requests are ever in flight. Order between two calls is
 *   only guaranteed if the caller awaits the first.
 * - "replace*" and "add*" use NLM_F_CREATE|NLM_F_REPLACE and are idempotent; "delete*" reject with
 *   errno ENOENT/ESRCH/ENODEV/EADDRNOTAVAIL when the object is already gone (see `isGone`).
 * - Failures are NetlinkError (a WeftError, code 'NETLINK') with message
 *   '<operation> <object>: <errno>', the `errno` name as a field and "Request rejected: <errno>"
 *   (or the socket's error) as cause. A reply that cannot be decoded safely is errno EBADMSG.
 * - A socket that dies or times out is replaced; every open monitor then gets a batch with
 *   `resync: true`.
 * - close(): rejects queued requests (ESOCKCLOSED), closes every socket and monitor.
 */
import { monotonicMs } from '../clock';
import { formatCidr, type IPFamily } from '../ip';
import { silentLogger, type Logger } from '../log';
import { decodeAddress, decodeLink, decodeNeighbour, decodeRoute, NLA_TYPE_MASK, type RawMessage } from './decode';
import { errnoOf, NetlinkError } from './errors';
import { BatchSocket, defaultRawSocketFactory, type RawSocketFactory, type RequestOutcome } from './batch';
import { MonitorSocket, type MonitorSocketFactory } from './monitor';
import { defaultSocketFactory, RequestSocket, type SocketFactory } from './socket';
import {
  encodeCreateVxlan,
  encodeDeleteLink,
  encodeDump,
  encodeGetLink,
  encodeGetRoute,
  encodeSetLink,
  encodeWrite,
  encodeWrites,
  fdbEchoKey,
  NDA_DST,
  RTM_DELNEIGH,
  RTM_GETADDR,
  RTM_GETLINK,
  RTM_GETNEIGH,
  RTM_GETROUTE,
  RTM_NEWNEIGH,
  type EncodedBatch,
} from './wire';
import {
  MAIN_TABLE,
  type AddressEntry,
  type ChangeBatch,
  type FdbEntry,
  type KernelWrite,
  type LinkIdentity,
  type MonitorInterest,
  type WriteOutcomes,
  type LinkInfo,
  type Monitor,
  type NeighbourEntry,
  type RouteEntry,
  type RouteLookup,
  type RouteSpec,
  type VxlanSpec,
} from './types';

const AF_INET = 2;
const AF_INET6 = 10;
const AF_BRIDGE = 7;

/** The rtnetlink address family of an IP family. */
function afOf(family: IPFamily): number {
  return family === 4 ? AF_INET : AF_INET6;
}
/**
 * How long after a batch its notifications without a sender port (FDB changes, neighbour
 * removals) are taken for echoes: they are queued within the sendmsg; generous for a stalled loop.
 */
const PID_ZERO_ECHO_TTL_MS = 2000;

/**
 * The key by which a notification that carries no sender port (nlmsg_pid 0) is matched with the
 * write of ours that caused it, computed alike from our request and from the kernel's
 * notification (`buf[start, end)`: the message after its nlmsghdr); null for what is never such
 * an echo. Two kinds of write of ours come back with pid 0:
 * - FDB changes (AF_BRIDGE): the VXLAN driver does not pass the requester's port on (`fdbEchoKey`);
 * - IP neighbour removals: neigh_delete first marks the entry NUD_FAILED (an RTM_NEWNEIGH with our
 *   port, dropped by port) and then unlinks it, and that RTM_DELNEIGH is sent by
 *   neigh_cleanup_and_release with pid 0. Keyed by family, device and address: `ndel 2 3 0a05ca00`.
 * (Captured on a 2- and 3-host lab: a peer's join comes back as 3 notifications, two with our port
 * and the FDB entry's; a leave as 5, the last two pid 0: test/unit/netlink-monitor-echoes.test.ts.)
 */
export function pidZeroEchoKey(type: number, buf: Buffer, start = 0, end: number = buf.length): string | null {
  if (end - start < 12) return null;
  const family = buf[start];
  if (family === AF_BRIDGE) return fdbEchoKey(type, buf, start, end);
  if (type !== RTM_DELNEIGH) return null;
  return neighbourRemovalKey(buf, start, end);
}

/** `ndel FAMILY IFINDEX DST` of an IP neighbour message (ndmsg then attributes); null without NDA_DST. */
function neighbourRemovalKey(buf: Buffer, start: number, end: number): string | null {
  const family = buf[start];
  if (family !== AF_INET && family !== AF_INET6) return null;
  for (let a = start + 12; a + 4 <= end; ) {
    const alen = buf.readUInt16LE(a);
    if (alen < 4 || a + alen > end) break;
    if ((buf.readUInt16LE(a + 2) & NLA_TYPE_MASK) === NDA_DST) return `ndel ${family} ${buf.readInt32LE(start + 4)} ${buf.toString('hex', a + 4, a + alen)}`;
    a += (alen + 3) & ~3;
  }
  return null;
}

export interface NetlinkClientOptions {
  /** Request sockets, i.e. the bound on requests in flight. Default 4. */
  readonly concurrency?: number;
  /** Per-request timeout. Default 5000 ms. */
  readonly requestTimeoutMs?: number;
  /** Coalescing window of monitor batches. Default 10 ms. */
  readonly monitorCoalesceMs?: number;
  /** Seam for tests: the request sockets' raw socket; default a raw NETLINK_ROUTE socket (transport.ts). */
  readonly socketFactory?: SocketFactory;
  /** Seam for tests: the raw socket of `applyWrites`; default a RawNetlinkSocket (NETLINK_ROUTE). */
  readonly rawSocketFactory?: RawSocketFactory;
  /** Seam for tests: the monitor's raw socket; default a RawNetlinkSocket (NETLINK_ROUTE). */
  readonly monitorSocketFactory?: MonitorSocketFactory;
}

/** A link by index, optionally with its name for error messages (the one shape: types.ts). */
export type LinkRef = LinkIdentity;

/**
 * What a NetlinkClient offers, as a structural type: the seam weftd and the backends take, so the
 * in-memory kernel (memory-kernel.ts) stands in for the real one in tests.
 */
export type Netlink = Pick<NetlinkClient, keyof NetlinkClient>;

export class NetlinkClient {
  /** The monitor drops the notifications of this client's own writes (isOwnWrite): ReconcilerNetlink.dropsOwnEchoes. */
  readonly dropsOwnEchoes?: boolean = true;
  private readonly log: Logger;
  private readonly pool: RequestSocket[];
  private readonly monitors = new Set<MonitorSocket>();
  private readonly names = new Map<number, string>();
  private readonly coalesceMs: number;
  private readonly factory: SocketFactory;
  private readonly batch: BatchSocket;
  /**
   * Changes our batches made whose notification carries no sender port and has not been seen yet
   * (`pidZeroEchoKey` → until when, monotonicMs() ms): FDB changes and neighbour removals.
   */
  private readonly expectedPidZeroEchoes = new Map<string, number>();
  private readonly monitorFactory: MonitorSocketFactory | undefined;

  constructor(log: Logger = silentLogger, opts: NetlinkClientOptions = {}) {
    this.log = log;
    this.factory = opts.socketFactory ?? defaultSocketFactory;
    this.coalesceMs = opts.monitorCoalesceMs ?? 10;
    const n = Math.max(1, opts.concurrency ?? 4);
    const timeout = opts.requestTimeoutMs ?? 5000;
    this.pool = Array.from(
      { length: n },
      (_, i) => new RequestSocket(`req${i}`, log, timeout, (why) => this.onSocketReset(why), this.factory),
    );
    this.monitorFactory = opts.monitorSocketFactory;
    this.batch = new BatchSocket(log, timeout, (why) => this.onSocketReset(why), opts.rawSocketFactory ?? defaultRawSocketFactory);
    // No check of the netlink package's binding patch here any more: none of these sockets uses
    // the package (transport.ts); only the kernel WireGuard path still does.
  }

  // ---------------------------------------------------------------- links

  async getLink(name: string): Promise<LinkInfo | null> {
    try {
      const msgs = await this.request(`get link ${name}`, encodeGetLink({ name }));
      return msgs[0] ? this.toLink(msgs[0]) : null;
    } catch (err) {
      if (errnoOf(err) === 'ENODEV') return null;
      throw err;
    }
  }

  async getLinkByIndex(index: number): Promise<LinkInfo | null> {
    try {
      const msgs = await this.request(`get link #${index}`, encodeGetLink({ index }));
      return msgs[0] ? this.toLink(msgs[0]) : null;
    } catch (err) {
      if (errnoOf(err) === 'ENODEV') return null;
      throw err;
    }
  }

  async listLinks(): Promise<LinkInfo[]> {
    const msgs = await this.request('list links', encodeDump(RTM_GETLINK, 0));
    return msgs.map((m) => this.toLink(m));
  }

  /** Create a VXLAN device (fails with EEXIST if the name is taken), down, with the given MAC and MTU. */
  async createVxlan(spec: VxlanSpec): Promise<LinkInfo> {
    const op = `create vxlan device ${spec.name} (vni ${spec.vni}, local ${spec.localIP}, dev #${spec.underlayIndex}, dstport ${spec.port})`;
    await this.request(op, encodeCreateVxlan(spec));
    const link = await this.getLink(spec.name);
    if (!link) throw new NetlinkError(op, 'ENODEV', new Error('device vanished right after creation'));
    return link;
  }

  async setLinkUp(link: LinkRef): Promise<void> {
    await this.request(`set link ${this.nameOf(link)} up`, encodeSetLink(indexOf(link), { up: true }));
  }

  async setLinkDown(link: LinkRef): Promise<void> {
    await this.request(`set link ${this.nameOf(link)} down`, encodeSetLink(indexOf(link), { up: false }));
  }

  async setLinkMtu(link: LinkRef, mtu: number): Promise<void> {
    await this.request(`set MTU ${mtu} on link ${this.nameOf(link)}`, encodeSetLink(indexOf(link), { mtu }));
  }

  async setLinkMac(link: LinkRef, mac: string): Promise<void> {
    await this.request(`set MAC ${mac} on link ${this.nameOf(link)}`, encodeSetLink(indexOf(link), { mac }));
  }

  async deleteLink(link: LinkRef): Promise<void> {
    await this.request(`delete link ${this.nameOf(link)}`, encodeDeleteLink(indexOf(link)));
  }

  // ---------------------------------------------------------------- addresses

  /** Addresses of one family (default IPv4), of one link or all. */
  async listAddresses(ifindex?: number, family: IPFamily = 4): Promise<AddressEntry[]> {
    const af = afOf(family);
    const msgs = await this.request(`list IPv${family} addresses`, encodeDump(RTM_GETADDR, af));
    const out: AddressEntry[] = [];
    for (const m of msgs) {
      const a = decodeAddress(m.body);
      if (a.family !== af) continue;
      if (ifindex !== undefined && a.ifindex !== ifindex) continue;
      if (a.ip === null) continue;
      out.push({ ifindex: a.ifindex, ip: a.ip, prefixLen: a.prefixLen });
    }
    return out;
  }

  async addAddress(link: LinkRef, ip: string, prefixLen: number): Promise<void> {
    // IPv6 takes IFA_ADDRESS only (IFA_LOCAL means a peer address there); IPv4 both, as `ip addr` does (wire.ts).
    await this.write({ op: 'addAddress', link, ip, prefixLen });
  }

  async deleteAddress(link: LinkRef, ip: string, prefixLen: number): Promise<void> {
    await this.write({ op: 'deleteAddress', link, ip, prefixLen });
  }

  // ---------------------------------------------------------------- neighbours (ARP)

  /** Neighbours (ARP for IPv4, NDP for IPv6; default IPv4), of one link or all. */
  async listNeighbours(ifindex?: number, family: IPFamily = 4): Promise<NeighbourEntry[]> {
    const af = afOf(family);
    const msgs = await this.request(`list IPv${family} neighbours`, encodeDump(RTM_GETNEIGH, af));
    const out: NeighbourEntry[] = [];
    for (const m of msgs) {
      const n = decodeNeighbour(m.body);
      if (n.family !== af) continue;
      if (ifindex !== undefined && n.ifindex !== ifindex) continue;
      if (n.dst === null) continue;
      out.push({ ifindex: n.ifindex, ip: n.dst, mac: n.mac, permanent: n.permanent });
    }
    return out;
  }

  /** `ip neigh replace IP lladdr MAC dev LINK nud permanent` */
  async replaceNeighbour(link: LinkRef, ip: string, mac: string): Promise<void> {
    await this.write({ op: 'replaceNeighbour', link, ip, mac });
  }

  async deleteNeighbour(link: LinkRef, ip: string): Promise<void> {
    await this.write({ op: 'deleteNeighbour', link, ip });
  }

  // ---------------------------------------------------------------- FDB (AF_BRIDGE)

  async listFdb(ifindex?: number): Promise<FdbEntry[]> {
    const msgs = await this.request('list FDB entries', encodeDump(RTM_GETNEIGH, AF_BRIDGE));
    const out: FdbEntry[] = [];
    for (const m of msgs) {
      const n = decodeNeighbour(m.body);
      if (n.family !== AF_BRIDGE) continue;
      if (ifindex !== undefined && n.ifindex !== ifindex) continue;
      if (n.mac === null) continue;
      out.push({ ifindex: n.ifindex, mac: n.mac, dst: n.dst, permanent: n.permanent, self: n.self });
    }
    return out;
  }

  /** `bridge fdb replace MAC dev LINK dst DST self permanent` */
  async replaceFdb(link: LinkRef, mac: string, dst: string): Promise<void> {
    await this.write({ op: 'replaceFdb', link, mac, dst });
  }

  async deleteFdb(link: LinkRef, mac: string, dst: string | null): Promise<void> {
    await this.write({ op: 'deleteFdb', link, mac, dst });
  }

  // ---------------------------------------------------------------- routes

  /** Routes of one table (default: main) and one family (default IPv4). */
  async listRoutes(table: number = MAIN_TABLE, family: IPFamily = 4): Promise<RouteEntry[]> {
    const af = afOf(family);
    const msgs = await this.request(`list IPv${family} routes`, encodeDump(RTM_GETROUTE, af));
    const out: RouteEntry[] = [];
    for (const m of msgs) {
      const r = decodeRoute(m.body);
      if (r.family !== af || r.table !== table || r.dst === null) continue;
      out.push({
        dst: r.dst,
        gateway: r.gateway,
        oif: r.oif,
        onlink: r.onlink,
        table: r.table,
        priority: r.priority,
        protocol: r.protocol,
        type: r.type,
      });
    }
    return out;
  }

  /** `ip route replace DST [via GW] dev OIF [onlink] [metric N]` in the main table. */
  async replaceRoute(spec: RouteSpec): Promise<void> {
    await this.write({ op: 'replaceRoute', spec });
  }

  /**
   * `ip route add DST ...` (NLM_F_CREATE|NLM_F_EXCL): rejects with EEXIST instead of replacing a
   * route that already holds (dst, metric) in the main table — which may not be weft's.
   */
  async addRoute(spec: RouteSpec): Promise<void> {
    await this.write({ op: 'addRoute', spec });
  }

  async deleteRoute(spec: RouteSpec): Promise<void> {
    await this.write({ op: 'deleteRoute', spec });
  }

  /** What the kernel would do to reach `ip` (`ip route get IP`); null when unreachable. */
  async getRouteTo(ip: string): Promise<RouteLookup | null> {
    try {
      const msgs = await this.request(`look up route to ${ip}`, encodeGetRoute(ip));
      const m = msgs[0];
      if (!m) return null;
      const r = decodeRoute(m.body);
      return { oif: r.oif, gateway: r.gateway, prefsrc: r.prefsrc };
    } catch (err) {
      const e = errnoOf(err);
      if (e === 'ENETUNREACH' || e === 'EHOSTUNREACH') return null;
      throw err;
    }
  }

  /**
   * flannel's DirectRouting test: `ip` is on our L2 when the kernel reaches it without a gateway.
   * With `viaIndex`, it must also be reached through that interface (the underlay).
   */
  async isOnLink(ip: string, viaIndex?: number): Promise<boolean> {
    const r = await this.getRouteTo(ip);
    if (!r || r.gateway !== null || r.oif === null) return false;
    return viaIndex === undefined || r.oif === viaIndex;
  }

  /** The output interface of the main table's default route with the lowest metric; null if none. */
  async defaultRouteInterface(family: IPFamily = 4): Promise<number | null> {
    const routes = await this.listRoutes(MAIN_TABLE, family);
    const defaults = routes
      .filter((r) => r.dst.prefixLen === 0 && r.oif !== null)
      .sort((a, b) => a.priority - b.priority);
    return defaults[0]?.oif ?? null;
  }

  // ---------------------------------------------------------------- batches

  /**
   * Apply `writes` as one batch: encoded by src/netlink/wire.ts, sent as few datagrams as the
   * receive buffer allows (src/netlink/batch.ts), each write acknowledged on its own. Resolves
   * (never rejects) with each write's outcome in order: null, or the NetlinkError the single
   * method of the same name would have rejected with (same operation text, same errno). The
   * writes of one batch are independent: the kernel applies them in order, and a failure fails
   * only its own write. Order against other calls is only guaranteed by awaiting.
   *
   * When no batch is in flight the first datagram is sent within this call (issue #14: a join's
   * writes leave in the watch message's own pass), and the promise is resolved straight from the
   * socket's callback that completes the batch: one promise step per batch, for its answer.
   */
  applyWrites(writes: readonly KernelWrite[]): Promise<WriteOutcomes> {
    return new Promise((resolve) => {
      const outcomes: (Error | null)[] = new Array<Error | null>(writes.length).fill(null);
      // A malformed address or MAC fails its write alone: the single method would have thrown the same TypeError.
      const batch = encodeWrites(writes, (i, err) => {
        outcomes[i] = err;
      });
      // Before sending: the notifications may be read before the acknowledgements.
      const echoKeys = this.expectPidZeroEchoes(batch);
      this.batch.submit(batch, (answers: RequestOutcome[]) => {
        for (let j = 0; j < answers.length; j++) {
          const a = answers[j]!;
          if (a === null) continue;
          const key = echoKeys?.get(j);
          if (key !== undefined) this.expectedPidZeroEchoes.delete(key); // failed: no change, no echo
          const i = batch.indices[j]!;
          outcomes[i] = new NetlinkError(this.describeWrite(writes[i]!), a.errno, a.cause);
        }
        resolve(outcomes);
      });
    });
  }

  /** The operation text of a write, as its single method names it in errors. */
  private describeWrite(w: KernelWrite): string {
    switch (w.op) {
      case 'addAddress':
        return `add address ${w.ip}/${w.prefixLen} to link ${this.nameOf(w.link)}`;
      case 'deleteAddress':
        return `delete address ${w.ip}/${w.prefixLen} from link ${this.nameOf(w.link)}`;
      case 'replaceNeighbour':
        return `replace neighbour ${w.ip} lladdr ${w.mac} on link ${this.nameOf(w.link)}`;
      case 'deleteNeighbour':
        return `delete neighbour ${w.ip} on link ${this.nameOf(w.link)}`;
      case 'replaceFdb':
        return `replace FDB entry ${w.mac} dst ${w.dst} on link ${this.nameOf(w.link)}`;
      case 'deleteFdb':
        return `delete FDB entry ${w.mac}${w.dst ? ` dst ${w.dst}` : ''} on link ${this.nameOf(w.link)}`;
      case 'addRoute':
        return `add route ${this.describeRoute(w.spec)}`;
      case 'replaceRoute':
        return `replace route ${this.describeRoute(w.spec)}`;
      case 'deleteRoute':
        return `delete route ${this.describeRoute(w.spec)}`;
    }
  }

  // ---------------------------------------------------------------- monitor

  /**
   * Subscribe to link, neighbour/FDB, IPv4 route and IPv4 address changes on a socket of its own.
   * `onChange` gets coalesced batches; `resync: true` means changes may have been lost.
   *
   * Notifications of this client's own writes (their nlmsg_pid is one of its request sockets'
   * port ids) are dropped unread: the writer already knows. So are, when `interest` says so,
   * routes of other tables and objects on other interfaces (docs/netlink.md).
   */
  monitor(onChange: (batch: ChangeBatch) => void, family: IPFamily = 4, interest: MonitorInterest = {}): Monitor {
    let m: MonitorSocket | null = null;
    m = new MonitorSocket(onChange, {
      family,
      interest,
      isOwnWrite: (pid, type, body) => this.isOwnWrite(pid, type, body),
      coalesceMs: this.coalesceMs,
      ...(this.monitorFactory ? { factory: this.monitorFactory } : {}),
      log: this.log,
      onClose: () => {
        if (m) this.monitors.delete(m);
      },
    });
    this.monitors.add(m);
    return m;
  }

  close(): void {
    for (const s of this.pool) s.close();
    this.batch.close();
    for (const m of [...this.monitors]) m.close();
  }

  /**
   * Whether a notification is the echo of one of this client's own writes: its nlmsg_pid is the
   * port of one of our request sockets, or (pid 0) it is an FDB change or a neighbour removal a
   * batch of ours just made, matched by content (`pidZeroEchoKey`), each expected echo consumed
   * once. Another program's change has another port, or pid 0 and content we did not just write.
   */
  private isOwnWrite(pid: number, type: number, body: Buffer): boolean {
    if (pid !== 0) {
      if (pid === this.batch.port) return true;
      for (const s of this.pool) if (s.port === pid) return true;
      return false;
    }
    if (this.expectedPidZeroEchoes.size === 0) return false;
    const key = pidZeroEchoKey(type, body);
    if (key === null) return false;
    const until = this.expectedPidZeroEchoes.get(key);
    if (until === undefined) return false;
    this.expectedPidZeroEchoes.delete(key);
    return monotonicMs() < until;
  }

  /**
   * Remember the changes of a batch about to be sent whose notifications carry no sender port.
   * A neighbour (re)added by the batch forgets a removal of it still expected: had the kernel kept
   * the removed entry (NUD_FAILED, still referenced), its RTM_DELNEIGH never comes, and the
   * expectation must not swallow someone else's removal of the new entry.
   */
  private expectPidZeroEchoes(batch: EncodedBatch): Map<number, string> | null {
    let keys: Map<number, string> | null = null;
    const now = monotonicMs();
    const expected = this.expectedPidZeroEchoes;
    if (expected.size > 8192) for (const [k, until] of expected) if (until <= now) expected.delete(k);
    const buf = batch.buffer;
    for (let j = 0; j + 1 < batch.offsets.length; j++) {
      const start = batch.offsets[j]!;
      const end = batch.offsets[j + 1]!;
      // Every message has a fixed header after its nlmsghdr: its first byte is the family.
      const family = buf[start + 16];
      const type = buf.readUInt16LE(start + 4);
      if (family !== AF_BRIDGE && type !== RTM_DELNEIGH) {
        if (expected.size !== 0 && type === RTM_NEWNEIGH) {
          const removal = neighbourRemovalKey(buf, start + 16, end);
          if (removal !== null) expected.delete(removal);
        }
        continue;
      }
      const key = pidZeroEchoKey(type, buf, start + 16, end);
      if (key === null) continue;
      (keys ??= new Map()).set(j, key);
      expected.set(key, now + PID_ZERO_ECHO_TTL_MS);
    }
    return keys;
  }

  // ---------------------------------------------------------------- internals

  /** Send one encoded request on the least loaded socket; resolves with its reply messages. */
  private request(operation: string, message: Buffer): Promise<RawMessage[]> {
    let best = this.pool[0]!;
    for (const s of this.pool) if (s.load < best.load) best = s;
    return best.request(operation, message);
  }

  /**
   * One write alone, encoded as applyWrites encodes it (wire.ts), on a request socket: rejects
   * with the NetlinkError naming it (a malformed address or MAC: the TypeError of its encoding).
   */
  private async write(w: KernelWrite): Promise<void> {
    const message = encodeWrite(w);
    await this.request(this.describeWrite(w), message);
  }

  private onSocketReset(why: string): void {
    this.log.warn('netlink request socket replaced; asking monitors to resync', { why });
    for (const m of this.monitors) m.requestResync();
  }

  private toLink(m: RawMessage): LinkInfo {
    const link = decodeLink(m.body);
    this.names.set(link.index, link.name);
    return { index: link.index, name: link.name, up: link.up, mtu: link.mtu, mac: link.mac, kind: link.kind, vxlan: link.vxlan };
  }

  private nameOf(link: LinkRef): string {
    if (typeof link !== 'number') return link.name;
    return this.names.get(link) ?? `#${link}`;
  }

  private describeRoute(spec: RouteSpec): string {
    return (
      `${formatCidr(spec.dst)}` +
      (spec.gateway ? ` via ${spec.gateway}` : '') +
      ` dev ${this.nameOf(spec.oif)}` +
      (spec.onlink ? ' onlink' : '') +
      (spec.priority ? ` metric ${spec.priority}` : '')
    );
  }
}

function indexOf(link: LinkRef): number {
  return typeof link === 'number' ? link : link.index;
}

/** True when a delete failed only because the object is already gone. */
export function isGone(err: unknown): boolean {
  const e = errnoOf(err);
  return e === 'ENOENT' || e === 'ESRCH' || e === 'ENODEV' || e === 'EADDRNOTAVAIL';
}

