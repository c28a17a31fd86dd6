/**
 * The VXLAN fallback: VXLAN on the wire, carried by the user-space pump instead of the kernel.
 *
 * For hosts whose kernel cannot create a VXLAN device (no vxlan module, a locked-down container,
 * a kernel built without it). The host looks like any other VXLAN host to its peers:
 *   - a TAP named like the VXLAN device (`flannel.<VNI>`), MAC = our VtepMAC, MTU = underlay − 50,
 *     address `<subnet>.0/32` (desired state, like kernel VXLAN);
 *   - a UDP socket on the VXLAN port (8472) of the underlay address: frames from the TAP go out
 *     with an 8-byte VXLAN header (our VNI) to the peer whose VtepMAC is the destination MAC;
 *     datagrams from peers are checked (source = a peer's PublicIP, our VNI) and written to the TAP;
 *   - our lease says `"BackendType":"vxlan"` with our VtepMAC, so kernel VXLAN hosts and
 *     flanneld program us like any other peer: a mixed cluster just works. BackendData also says
 *     `"WeftDatapath":"userspace"` (flannel decodes BackendData into a struct of VNI and VtepMAC
 *     with encoding/json, which ignores unknown fields) so `weft leases` can show the data path.
 * Neighbours and routes on this host are exactly kernel VXLAN's (vxlanDesired); the FDB lives in
 * the pump (DesiredState.pump), the reconciler leaves kernel FDB alone.
 *
 * It shares with VxlanBackend, by calling the same functions (not by inheriting), what is the
 * same: device name, desired state (vxlanDesired) and DirectRouting lookups (vxlanOnLinkPeers: a
 * DirectRouting peer on our L2 needs no tunnel at all, user space or not).
 */
import type { VxlanBackendConfig } from '../../config/types';
import { WeftError } from '../../errors';
import type { Lease } from '../../lease/types';
import { silentLogger, type Logger } from '../../log';
import type { LinkInfo } from '../../netlink/types';
import type { Backend, BackendSetup, DataPathInfo, DataPathKind, DesiredContext, DesiredPumpEntry, DesiredState, Underlay } from '../backend';
import { DEFAULT_VXLAN_PORT, VXLAN_OVERHEAD, vxlanDesired, vxlanOnLinkPeers, type VxlanBackendOptions, type VxlanNetlink } from '../vxlan';
import { PumpDevice } from './device';
import { fdbToPump, type PumpFactory } from './pump';

/** The lease BackendData of a fallback host: vxlan's, plus where the packets are handled. */
export interface UserspaceVxlanLeaseData {
  readonly VNI: number;
  readonly VtepMAC: string;
  readonly WeftDatapath: 'userspace';
}

export interface UserspaceVxlanOptions extends VxlanBackendOptions {
  readonly pumps?: PumpFactory;
  /** Why this host runs the fallback ('forced', or the kernel's error); shown in logs and status. */
  readonly reason?: string;
  readonly offloads?: boolean;
  readonly reportIntervalMs?: number;
}

export class UserspaceVxlanBackend implements Backend {
  readonly type = 'vxlan';
  /** The pump speaks VXLAN over IPv4 only (registry.ts refuses the fallback for IPv6). */
  readonly family = 4;
  readonly deviceName: string;
  readonly reason: string;
  private readonly device: PumpDevice;
  private readonly nl: VxlanNetlink;
  private readonly cfg: VxlanBackendConfig;
  private readonly preferredMac: string | null;
  private readonly ulog: Logger;

  constructor(opts: UserspaceVxlanOptions) {
    this.nl = opts.nl;
    this.cfg = opts.config;
    this.deviceName = `flannel.${opts.config.vni}`;
    this.reason = opts.reason ?? 'forced (--vxlan-fallback=force)';
    this.preferredMac = opts.vtepMac ?? null;
    this.ulog = (opts.log ?? silentLogger).child({ component: 'vxlan-userspace' });
    this.device = new PumpDevice({
      nl: opts.nl,
      log: this.ulog,
      ...(opts.pumps ? { pumps: opts.pumps } : {}),
      ...(opts.offloads === undefined ? {} : { offloads: opts.offloads }),
      ...(opts.reportIntervalMs === undefined ? {} : { reportIntervalMs: opts.reportIntervalMs }),
      ...(opts.randomBytes ? { randomBytes: opts.randomBytes } : {}),
    });
  }

  get dataPath(): DataPathKind {
    return 'userspace';
  }

  /** The TAP's MAC (our VtepMAC) once ensureDevice() ran; null before. */
  get vtepMac(): string | null {
    return this.device.mac;
  }

  async ensureDevice(underlay: Underlay): Promise<BackendSetup> {
    if (this.cfg.gbp) {
      throw new WeftError('CONFIG_INVALID', 'network config: Backend (vxlan): GBP is not supported by the user-space VXLAN fallback; '
        + 'remove GBP or run this host with kernel VXLAN (--vxlan-fallback=off)');
    }
    const mtu = this.cfg.mtu ?? underlay.mtu - VXLAN_OVERHEAD;
    const link = await this.device.ensure({
      mode: 'vxlan',
      name: this.deviceName,
      mtu,
      localIp: underlay.ifaceIPv4 ?? underlay.ipv4,
      port: this.cfg.port || DEFAULT_VXLAN_PORT,
      vni: this.cfg.vni,
    }, this.preferredMac);
    if (link.mac === null) throw new Error(`TAP ${this.deviceName} has no MAC address`); // a TAP always has one
    const data: UserspaceVxlanLeaseData = { VNI: this.cfg.vni, VtepMAC: link.mac, WeftDatapath: 'userspace' };
    return { backendType: 'vxlan', backendData: data, mtu };
  }

  deviceProblem(link: LinkInfo): string | null {
    return this.device.problem(link);
  }

  desired(own: Lease, peers: readonly Lease[], ctx: DesiredContext = {}): DesiredState {
    return fdbToPump(vxlanDesired(own, peers, { vni: this.cfg.vni, directRouting: this.cfg.directRouting, family: this.family }, ctx));
  }

  onLinkPeers(peers: readonly Lease[], underlay: Underlay): Promise<Set<string>> {
    return vxlanOnLinkPeers(this.nl, { directRouting: this.cfg.directRouting, family: this.family, log: this.ulog }, peers, underlay);
  }

  applyPump(entries: readonly DesiredPumpEntry[]): void {
    this.device.setPeers(entries);
  }

  dataPathInfo(): DataPathInfo {
    return this.device.info('userspace', this.reason);
  }

  pumpCounters(): Readonly<Record<string, number>> {
    return { ...this.device.counters() };
  }

  async close(): Promise<void> {
    await this.device.close();
  }
}
