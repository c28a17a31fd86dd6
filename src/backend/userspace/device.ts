/**
 * A pump and its device (TAP for the VXLAN fallback, TUN for legacy udp), as one thing the
 * user-space backends ensure, check and close. The device is created by the pump (it must be
 * opened by weftd in its own network namespace) and then configured over netlink: MAC (TAP
 * only), MTU, up. Addresses, neighbours and routes are desired state, applied by the reconciler.
 *
 * ensure() is idempotent and heals:
 *   - a device of another kind under our name (a kernel VXLAN device from before the fallback,
 *     a TUN where a TAP belongs) is deleted, keeping its MAC as our VtepMAC when we have none;
 *   - a pump whose thread stopped (the device was deleted under it) is closed and reopened,
 *     which recreates the device with the MAC we had;
 *   - the peer table is re-applied to a reopened pump.
 * The device is persistent: close() stops the pump and leaves the device, address and routes,
 * as the kernel VXLAN backend leaves its device (a restarted weftd attaches to it again).
 *
 * A timer (unref'd) watches the drop counters and logs what grew, at most every
 * `reportIntervalMs`: flannel's udp backend takes packets from anyone silently; weft says who
 * knocked (lastNotPeer) and how often.
 */
import { randomMac } from '../vxlan/vxlan';
import { describeError, WeftError } from '../../errors';
import { silentLogger, type Logger } from '../../log';
import { isGone, type LinkRef } from '../../netlink/client';
import type { LinkInfo } from '../../netlink/types';
import type { DataPathInfo, DataPathKind, DesiredPumpEntry } from '../backend';
import { repairLink, type LinkRepairNetlink } from '../link';
import {
  dropIncreases, nativePumpFactory, pumpEntries,
  type NativePump, type NativePumpCounters, type NativePumpEntry, type PumpFactory,
} from './pump';

/** The netlink calls a pump device needs (a subset of NetlinkClient; a seam for tests). */
export interface PumpDeviceNetlink extends LinkRepairNetlink {
  getLink(name: string): Promise<LinkInfo | null>;
  deleteLink(link: LinkRef): Promise<void>;
}

export interface PumpDeviceSpec {
  readonly mode: 'vxlan' | 'udp';
  readonly name: string;
  readonly mtu: number;
  /** Where the UDP socket binds: the underlay interface's own address. */
  readonly localIp: string;
  readonly port: number;
  readonly vni?: number;
}

export interface PumpDeviceOptions {
  readonly nl: PumpDeviceNetlink;
  readonly log?: Logger;
  readonly pumps?: PumpFactory;
  /** Offloads (IFF_VNET_HDR, TSO, UDP GSO/GRO, coalescing). Default true. */
  readonly offloads?: boolean;
  /** How often drop counters are checked and, when they grew, logged. Default 5000 ms; 0 = never. */
  readonly reportIntervalMs?: number;
  /** Seam for tests: 6 random bytes. */
  readonly randomBytes?: (n: number) => Buffer;
}

/** Why `link` cannot be the device for `mode` (a TAP has a MAC, a TUN none), or null. */
export function deviceKindProblem(link: LinkInfo, mode: 'vxlan' | 'udp'): string | null {
  const want = mode === 'vxlan' ? 'TAP' : 'TUN';
  if (link.kind !== 'tun') return `it is ${link.kind ? `a ${link.kind}` : 'not a TUN/TAP'} device, want a ${want}`;
  if (mode === 'vxlan' && link.mac === null) return 'it is a TUN device, want a TAP';
  if (mode === 'udp' && link.mac !== null) return 'it is a TAP device, want a TUN';
  return null;
}

export class PumpDevice {
  private readonly nl: PumpDeviceNetlink;
  private readonly log: Logger;
  private readonly pumps: PumpFactory;
  private readonly offloads: boolean;
  private readonly random: ((n: number) => Buffer) | undefined;
  private pump: NativePump | null = null;
  private spec: PumpDeviceSpec | null = null;
  private macValue: string | null = null;
  private table: NativePumpEntry[] = [];
  private lastTableKey = '';
  private reportTimer: NodeJS.Timeout | null = null;
  private reported: NativePumpCounters | null = null;
  private reportedError: string | null = null;

  constructor(opts: PumpDeviceOptions) {
    this.nl = opts.nl;
    this.log = opts.log ?? silentLogger;
    this.pumps = opts.pumps ?? nativePumpFactory;
    this.offloads = opts.offloads ?? true;
    this.random = opts.randomBytes;
    const every = opts.reportIntervalMs ?? 5000;
    if (every > 0) {
      this.reportTimer = setInterval(() => this.reportDrops(), every);
      this.reportTimer.unref();
    }
  }

  /** The TAP's MAC (our VtepMAC) once ensure() ran in vxlan mode; null before or for a TUN. */
  get mac(): string | null {
    return this.macValue;
  }

  /**
   * Make the device and its pump exist and run, with `spec`'s MTU (and, for a TAP, our MAC:
   * the one we had, else `preferredMac`, else the MAC of a device we replace, else the one the
   * kernel gave the new TAP). Returns the device as it is now.
   */
  async ensure(spec: PumpDeviceSpec, preferredMac: string | null = null): Promise<LinkInfo> {
    let link = await this.nl.getLink(spec.name);
    let inheritedMac: string | null = null;
    const kindProblem = link ? deviceKindProblem(link, spec.mode) : null;
    if (link && kindProblem !== null) {
      inheritedMac = spec.mode === 'vxlan' ? link.mac : null;
      this.log.warn(`device ${spec.name} exists but ${kindProblem}; deleting it to set up the user-space data path`, {
        ...(inheritedMac ? { keepingMac: inheritedMac } : {}),
      });
      await this.closePump();
      try {
        await this.nl.deleteLink({ index: link.index, name: link.name });
      } catch (err) {
        if (!isGone(err)) throw err;
      }
      link = null;
    }
    const status = this.pump?.status();
    const changed = this.spec !== null &&
      (this.spec.localIp !== spec.localIp || this.spec.port !== spec.port || this.spec.mtu !== spec.mtu || this.spec.vni !== spec.vni);
    if (this.pump && (!link || !status?.running || changed)) {
      const why = !link ? 'the device is gone' : !status?.running ? `its thread stopped: ${status?.error ?? 'unknown error'}` : 'its parameters changed';
      this.log.warn(`reopening the user-space data path on ${spec.name}: ${why}`);
      await this.closePump();
    }
    if (!this.pump) this.open(spec);
    this.spec = spec;

    link = await this.nl.getLink(spec.name);
    if (!link) throw new WeftError('NETLINK', `device ${spec.name} is missing right after the pump created it`, { retryable: true });
    // Our MAC on a TAP: the one we had, else the preferred one, else the replaced device's, else the kernel's.
    const mac = spec.mode === 'vxlan' ? this.macValue ?? preferredMac ?? inheritedMac ?? link.mac ?? randomMac(this.random) : null;
    link = await repairLink(this.nl, link, { mtu: spec.mtu, mac });
    if (mac !== null) this.macValue = mac;
    return link;
  }

  /** Pure: why an existing, up device does not match what ensure() set up, or null. */
  problem(link: LinkInfo): string | null {
    const spec = this.spec;
    if (spec === null) return null;
    const kind = deviceKindProblem(link, spec.mode);
    if (kind !== null) return kind;
    if (spec.mode === 'vxlan' && this.macValue !== null && link.mac !== this.macValue) return `MAC ${link.mac ?? 'none'}, want VtepMAC ${this.macValue}`;
    if (link.mtu !== spec.mtu) return `MTU ${link.mtu}, want ${spec.mtu}`;
    const st = this.pump?.status();
    if (!st?.running) return `the user-space data path is not running${st?.error ? `: ${st.error}` : ''}`;
    return null;
  }

  /** Install the peer table; kept and re-applied when the pump is reopened. */
  setPeers(entries: readonly DesiredPumpEntry[]): void {
    const table = pumpEntries(entries);
    const key = JSON.stringify(table);
    if (key === this.lastTableKey && this.pump) return; // the reconciler calls this on every run
    this.table = table;
    this.lastTableKey = key;
    this.pump?.setPeers(table);
    this.log.debug('user-space data path: peer table', { device: this.spec?.name, peers: table.length });
  }

  counters(): NativePumpCounters | null {
    return this.pump?.counters() ?? null;
  }

  info(kind: DataPathKind, reason: string | null): DataPathInfo {
    const st = this.pump?.status();
    return {
      kind,
      device: this.spec?.name ?? '',
      reason,
      counters: this.pump ? { ...this.pump.counters() } : null,
      running: st?.running ?? false,
    };
  }

  /** Stop the pump (its threads and fds); the device stays. */
  async close(): Promise<void> {
    if (this.reportTimer !== null) clearInterval(this.reportTimer);
    this.reportTimer = null;
    this.reportDrops();
    await this.closePump();
  }

  private open(spec: PumpDeviceSpec): void {
    try {
      this.pump = this.pumps({
        mode: spec.mode,
        device: spec.name,
        localIp: spec.localIp,
        port: spec.port,
        mtu: spec.mtu,
        ...(spec.vni === undefined ? {} : { vni: spec.vni }),
        offloads: this.offloads,
      });
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      const hint = code === 'EADDRINUSE'
        ? ` (another program, or a kernel VXLAN device, uses UDP port ${spec.port})`
        : code === 'EBUSY' ? ` (another process holds ${spec.name})` : '';
      throw new WeftError('NETLINK', `set up the user-space data path on ${spec.name}: ${describeError(err)}${hint}`, { cause: err, retryable: true });
    }
    this.reported = null;
    this.reportedError = null;
    this.pump.setPeers(this.table);
    this.log.info(`user-space data path running on ${spec.name}`, {
      mode: spec.mode, local: `${spec.localIp}:${spec.port}`, mtu: spec.mtu, offloads: this.offloads,
    });
  }

  private async closePump(): Promise<void> {
    const p = this.pump;
    this.pump = null;
    if (p) p.close();
  }

  /** Log drop counters that grew since the last report (and a thread that died). */
  private reportDrops(): void {
    const p = this.pump;
    if (!p) return;
    const now = p.counters();
    const grew = dropIncreases(this.reported, now);
    const st = p.status();
    if (Object.keys(grew).length > 0) {
      const totals = Object.fromEntries(Object.keys(grew).map((k) => [k, now[k as keyof NativePumpCounters]]));
      this.log.warn('user-space data path dropped packets', {
        device: this.spec?.name, increase: grew, totals, ...(grew.dropNotPeer ? { lastNotPeer: st.lastNotPeer } : {}),
      });
    }
    this.reported = now;
    if (st.error !== null && st.error !== this.reportedError) {
      this.reportedError = st.error;
      this.log.error('user-space data path stopped; the reconciler sets it up again', { device: this.spec?.name, error: st.error });
    }
  }
}
