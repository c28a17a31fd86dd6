/**
 * flannel's legacy `udp` backend (compat §5), for joining clusters that still run it: a TUN
 * `flannel0` (MTU underlay − 28), UDP port 8285, datagram = the raw IPv4 packet, TTL
 * decremented, ICMP net-unreachable for destinations no peer holds. Same pump as the VXLAN
 * fallback with other framing; unlike flannel's, it drops datagrams from non-peers.
 *
 * Our lease is flannel's udp lease exactly: `{"PublicIP":...,"PublicIPv6":null}` (no
 * BackendType, no BackendData).
 */
import type { IPv4Net, Lease } from '../../lease/types';
import { silentLogger, type Logger } from '../../log';
import type { LinkInfo } from '../../netlink/types';
import type {
  Backend, BackendSetup, DataPathInfo, DataPathKind, DesiredContext, DesiredPumpEntry, DesiredState, Underlay,
} from '../backend';
import { PumpDevice, type PumpDeviceNetlink } from '../userspace/device';
import type { PumpFactory } from '../userspace/pump';
import type { UdpBackendConfig } from './config';
import { udpDesired } from './desired';

/** IPv4 20 + UDP 8: what a datagram adds to each packet. */
export const UDP_OVERHEAD = 28;
export const UDP_DEVICE = 'flannel0';

export interface UdpBackendOptions {
  readonly nl: PumpDeviceNetlink;
  readonly config: UdpBackendConfig;
  /** The flannel Network: one route for all of it goes through flannel0. */
  readonly network: IPv4Net;
  readonly log?: Logger;
  readonly pumps?: PumpFactory;
  readonly offloads?: boolean;
  readonly reportIntervalMs?: number;
}

export class UdpBackend implements Backend {
  readonly type = 'udp';
  readonly deviceName = UDP_DEVICE;
  readonly dataPath: DataPathKind = 'udp';
  private readonly config: UdpBackendConfig;
  private readonly network: IPv4Net;
  private readonly device: PumpDevice;

  constructor(opts: UdpBackendOptions) {
    this.config = opts.config;
    this.network = opts.network;
    this.device = new PumpDevice({
      nl: opts.nl,
      log: (opts.log ?? silentLogger).child({ component: 'udp' }),
      ...(opts.pumps ? { pumps: opts.pumps } : {}),
      ...(opts.offloads === undefined ? {} : { offloads: opts.offloads }),
      ...(opts.reportIntervalMs === undefined ? {} : { reportIntervalMs: opts.reportIntervalMs }),
    });
  }

  async ensureDevice(underlay: Underlay): Promise<BackendSetup> {
    const mtu = underlay.mtu - UDP_OVERHEAD;
    await this.device.ensure({ mode: 'udp', name: this.deviceName, mtu, localIp: underlay.ifaceIPv4 ?? underlay.ipv4, port: this.config.port });
    return { backendType: '', backendData: undefined, mtu };
  }

  deviceProblem(link: LinkInfo): string | null {
    return this.device.problem(link);
  }

  desired(own: Lease, peers: readonly Lease[], ctx: DesiredContext = {}): DesiredState {
    return udpDesired(own, peers, { network: this.network }, ctx);
  }

  applyPump(entries: readonly DesiredPumpEntry[]): void {
    this.device.setPeers(entries);
  }

  dataPathInfo(): DataPathInfo {
    return this.device.info('udp', 'network config Backend.Type "udp"');
  }

  pumpCounters(): Readonly<Record<string, number>> {
    return { ...this.device.counters() };
  }

  async close(): Promise<void> {
    await this.device.close();
  }
}
