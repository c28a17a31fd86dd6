/**
 * The kernel VXLAN backend (flannel's pkg/backend/vxlan, compat §4).
 *
 * The device `flannel.<VNI>` is the one piece of state this class manages directly; everything
 * on it (address, neighbours, FDB, routes) is desired() output applied by the Reconciler.
 *
 * VtepMAC stability: peers program our VtepMAC (from our lease) into their neighbour and FDB
 * tables, so changing it cuts traffic until they see the new lease. Hence: an existing
 * compatible device keeps its MAC (a restart does not change it), a device recreated by this
 * process gets the MAC it had before (the reconciler healing a deleted device does not change
 * it), and a MAC changed by hand is put back. A device a fresh process has to create (deleted
 * while weftd was down, or incompatible) gets the constructor's `vtepMac` — weftd passes the
 * VtepMAC of our previous lease, which peers still have programmed — and only without one a new
 * random MAC. An existing compatible device always keeps its own MAC (flannel does the same).
 */
import type { VxlanBackendConfig } from '../../config/types';
import { WeftError } from '../../errors';
import { addressFamily, type IPFamily } from '../../ip';
import { leaseHalf } from '../../lease/family';
import type { Lease } from '../../lease/types';
import { silentLogger, type Logger } from '../../log';
import type { LinkRef } from '../../netlink/client';
import { isGone } from '../../netlink/client';
import { normalizeMac } from '../../netlink/codec';
import { isErrno } from '../../netlink/errors';
import type { LinkInfo, VxlanSpec } from '../../netlink/types';
import { randomBytes } from '../../random';
import type { Backend, BackendSetup, DesiredContext, DesiredState, PeerRules, Underlay } from '../backend';
import { onLinkAmong, repairLink, type LinkRepairNetlink } from '../link';
import { decodeVxlanData, vxlanDesired, vxlanPeerRules } from './desired';

/** Linux's default VXLAN port, which flannel uses when Port is 0 (not IANA's 4789). */
export const DEFAULT_VXLAN_PORT = 8472;
/** VXLAN over IPv4 costs 50 bytes: outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14. */
export const VXLAN_OVERHEAD = 50;
/** Over IPv6, 70: the outer header is 40 bytes (the kernel's VXLAN6_HEADROOM; flannel-v6.<VNI> gets it). */
export const VXLAN6_OVERHEAD = 70;

/** The part of NetlinkClient the backend uses (a seam for tests). */
export interface VxlanNetlink extends LinkRepairNetlink {
  getLink(name: string): Promise<LinkInfo | null>;
  createVxlan(spec: VxlanSpec): Promise<LinkInfo>;
  deleteLink(link: LinkRef): Promise<void>;
  isOnLink(ip: string, viaIndex?: number): Promise<boolean>;
}

export interface VxlanBackendOptions {
  readonly nl: VxlanNetlink;
  readonly config: VxlanBackendConfig;
  readonly log?: Logger;
  /** MAC to give the device if it has to be created (e.g. the VtepMAC of our previous lease). */
  readonly vtepMac?: string | null;
  /** Seam for tests: 6 random bytes. */
  readonly randomBytes?: (n: number) => Buffer;
  /**
   * The family this instance carries (default 4). 6: flannel's IPv6 device `flannel-v6.<VNI>`
   * over the underlay's IPv6 address, programmed from the leases' IPv6 half (BackendV6Data).
   */
  readonly family?: IPFamily;
}

/** The VXLAN data this backend writes into our lease. Field order is flannel's. */
export interface VxlanBackendData {
  readonly VNI: number;
  readonly VtepMAC: string;
}

export class VxlanBackend implements Backend {
  readonly type = 'vxlan';
  readonly family: IPFamily;
  readonly deviceName: string;
  private readonly nl: VxlanNetlink;
  private readonly config: VxlanBackendConfig;
  private readonly log: Logger;
  private readonly random: (n: number) => Buffer;
  private mac: string | null = null;
  /** MAC for a device this process creates before it has seen one (our previous lease's VtepMAC). */
  private readonly createMac: string | null;
  private lastWant: { spec: Omit<VxlanSpec, 'mac'>; underlay: Underlay } | null = null;
  private createError: unknown = null;

  constructor(opts: VxlanBackendOptions) {
    this.nl = opts.nl;
    this.config = opts.config;
    this.log = (opts.log ?? silentLogger).child({ component: 'vxlan' });
    this.random = opts.randomBytes ?? randomBytes;
    this.family = opts.family ?? 4;
    this.deviceName = this.family === 4 ? `flannel.${opts.config.vni}` : `flannel-v6.${opts.config.vni}`;
    this.createMac = opts.vtepMac ? normalizeMac(opts.vtepMac) : null;
  }

  /** The device's MAC as last set up by ensureDevice(); null before the first call. */
  get vtepMac(): string | null {
    return this.mac;
  }

  async ensureDevice(underlay: Underlay): Promise<BackendSetup> {
    this.createError = null;
    const mtu = this.config.mtu ?? underlay.mtu - (this.family === 4 ? VXLAN_OVERHEAD : VXLAN6_OVERHEAD);
    const want: Omit<VxlanSpec, 'mac'> = {
      name: this.deviceName,
      vni: this.config.vni,
      localIP: localAddress(underlay, this.family),
      underlayIndex: underlay.ifIndex,
      port: this.config.port || DEFAULT_VXLAN_PORT,
      learning: this.config.learning,
      gbp: this.config.gbp,
      mtu,
    };
    const link = await this.ensureLink(want, underlay);
    if (link.mac === null) throw new Error(`device ${this.deviceName} has no MAC address`); // vxlan always has one
    this.mac = link.mac;
    this.lastWant = { spec: want, underlay };
    return {
      backendType: 'vxlan',
      backendData: { VNI: this.config.vni, VtepMAC: link.mac } satisfies VxlanBackendData,
      mtu,
    };
  }

  deviceProblem(link: LinkInfo): string | null {
    if (this.lastWant === null) return null;
    const { spec, underlay } = this.lastWant;
    const why = incompatibility(link, spec, underlay);
    if (why !== null) return why;
    if (this.mac !== null && link.mac !== this.mac) return `MAC ${link.mac ?? 'none'}, want VtepMAC ${this.mac}`;
    if (link.mtu !== spec.mtu) return `MTU ${link.mtu}, want ${spec.mtu}`;
    return null;
  }

  desired(own: Lease, peers: readonly Lease[], ctx: DesiredContext = {}): DesiredState {
    return vxlanDesired(own, peers, { vni: this.config.vni, directRouting: this.config.directRouting, family: this.family }, ctx);
  }

  /** desired() per peer (Backend.peerRules), for O(change) lease events. */
  peerRules(own: Lease, ctx: DesiredContext): PeerRules {
    return vxlanPeerRules(own, { vni: this.config.vni, directRouting: this.config.directRouting, family: this.family }, ctx);
  }

  /**
   * For DirectRouting: the PublicIPs of vxlan peers the kernel reaches without a gateway through
   * the underlay. Empty when DirectRouting is off. One route lookup per distinct PublicIP: call it
   * when the peer set changes, not on every reconcile.
   */
  onLinkPeers(peers: readonly Lease[], underlay: Underlay): Promise<Set<string>> {
    return vxlanOnLinkPeers(this.nl, { directRouting: this.config.directRouting, family: this.family, log: this.log }, peers, underlay);
  }

  /**
   * The error of the create request that made the last ensureDevice() fail, or null (it
   * succeeded, or failed otherwise). The auto backend falls back to user space on exactly this.
   */
  get createFailure(): unknown {
    return this.createError;
  }

  async close(): Promise<void> {
    // Nothing held: the device stays (a restart must not cut traffic).
  }

  private async ensureLink(want: Omit<VxlanSpec, 'mac'>, underlay: Underlay): Promise<LinkInfo> {
    for (let attempt = 0; ; attempt++) {
      let link = await this.nl.getLink(want.name);
      if (link) {
        const why = incompatibility(link, want, underlay);
        if (why !== null) {
          this.log.warn(`device ${want.name} exists with an incompatible configuration (${why}); deleting and recreating it`);
          try {
            await this.nl.deleteLink(link);
          } catch (err) {
            if (!isGone(err)) throw err;
          }
          link = null;
        }
      }
      const created = !link;
      if (!link) {
        const mac = this.mac ?? this.createMac ?? randomMac(this.random);
        try {
          link = await this.nl.createVxlan({ ...want, mac });
        } catch (err) {
          // Someone (a second weftd, an operator) created it between our look-up and create:
          // look again and judge what is there.
          if (isErrno(err, 'EEXIST') && attempt < 2) continue;
          this.createError = err;
          throw err;
        }
        this.log.info(`created device ${want.name}`, {
          vni: want.vni, local: want.localIP, dev: underlay.ifName, dstport: want.port, mtu: want.mtu, mac,
        });
      }
      // New or compatible: fix in place what can be (MTU, a MAC changed behind our back); up.
      return repairLink(this.nl, link, { mtu: want.mtu, mac: this.mac }, created ? silentLogger : this.log);
    }
  }
}

/** Why an existing device cannot serve as ours (flannel's vxlanLinksIncompat), or null. */
export function incompatibility(link: LinkInfo, want: Omit<VxlanSpec, 'mac'>, underlay?: Underlay): string | null {
  if (link.kind !== 'vxlan' || link.vxlan === null) return `it is ${link.kind ? `a ${link.kind}` : 'not a vxlan'} device`;
  const v = link.vxlan;
  const diffs: string[] = [];
  if (v.vni !== want.vni) diffs.push(`VNI ${v.vni}, want ${want.vni}`);
  if (v.local !== want.localIP) diffs.push(`local ${v.local ?? 'unset'}, want ${want.localIP}`);
  if (v.underlayIndex !== null && v.underlayIndex !== 0 && v.underlayIndex !== want.underlayIndex) {
    diffs.push(`dev #${v.underlayIndex}, want #${want.underlayIndex}${underlay ? ` (${underlay.ifName})` : ''}`);
  }
  if (v.port !== 0 && v.port !== want.port) diffs.push(`dstport ${v.port}, want ${want.port}`);
  if (v.learning !== want.learning) diffs.push(want.learning ? 'nolearning, want learning' : 'learning, want nolearning');
  if (v.gbp !== want.gbp) diffs.push(want.gbp ? 'no gbp, want gbp' : 'gbp, want no gbp');
  return diffs.length ? diffs.join('; ') : null;
}

/** The VXLAN device's local address for `family`: the interface's own address. */
function localAddress(underlay: Underlay, family: IPFamily): string {
  const ip = family === 4 ? underlay.ifaceIPv4 ?? underlay.ipv4 : underlay.ifaceIPv6 ?? underlay.ipv6 ?? null;
  if (!ip || (family === 6 && addressFamily(ip) !== 6)) {
    throw new WeftError(
      'INTERFACE',
      `vxlan: interface ${underlay.ifName} has no IPv${family} address for the IPv${family} VXLAN device (the network config enables IPv${family}); ` +
        'give it a global IPv6 address, or pick another one with --iface / --iface-regex',
    );
  }
  return ip;
}

/**
 * For DirectRouting: the PublicIPs (of `family`) of vxlan peers the kernel reaches without a
 * gateway through the underlay. Empty when DirectRouting is off. One route lookup per distinct
 * PublicIP: call it when the peer set changes, not on every reconcile. Shared by the kernel
 * backend and the user-space fallback (a DirectRouting peer on our L2 needs no tunnel at all).
 */
export async function vxlanOnLinkPeers(
  nl: Pick<VxlanNetlink, 'isOnLink'>,
  opts: { readonly directRouting: boolean; readonly family: IPFamily; readonly log: Logger },
  peers: readonly Lease[],
  underlay: Underlay,
): Promise<Set<string>> {
  if (!opts.directRouting) return new Set();
  const ips: string[] = [];
  for (const p of peers) {
    const half = leaseHalf(p, opts.family);
    if (p.attrs.BackendType === 'vxlan' && half.publicIP && decodeVxlanData(half.backendData).ok) ips.push(half.publicIP);
  }
  return onLinkAmong(nl, ips, underlay.ifIndex, (ip, err) =>
    opts.log.warn('DirectRouting: route lookup failed; using VXLAN for this peer', { publicIp: ip, error: err }));
}

/** A random locally administered (bit 1 set) unicast (bit 0 clear) MAC. */
export function randomMac(random: (n: number) => Buffer = randomBytes): string {
  const b = Buffer.from(random(6).subarray(0, 6));
  b[0] = (b[0]! & 0xfe) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}
