/**
 * `--vxlan-fallback=auto` (the default): kernel VXLAN, unless the kernel refuses to create the
 * VXLAN device; then, logging the kernel's error, the user-space fallback for the rest of this
 * process's life (no flapping between data paths; restart weftd to try the kernel again).
 *
 * Only a failed *create* request falls back (the vxlan module missing: EOPNOTSUPP; a VNI or
 * port taken; a container without the right): a netlink timeout while looking the device up, or
 * a failure to set its MTU, is an ordinary retryable error, as it is with `off`.
 *
 * A delegator over two backends: a VxlanBackend, and once it could not create its device
 * (VxlanBackend.createFailure) a UserspaceVxlanBackend; every call goes to the one in use. What
 * the daemon needs from either (on-link peers for DirectRouting, the pump's table) are optional
 * Backend capabilities both offer, so nothing has to recognise a VXLAN class.
 */
import { describeError } from '../../errors';
import type { Lease } from '../../lease/types';
import { silentLogger, type Logger } from '../../log';
import type { LinkInfo } from '../../netlink/types';
import type { Backend, BackendSetup, DataPathInfo, DataPathKind, DesiredContext, DesiredPumpEntry, DesiredState, PeerRules, Underlay } from '../backend';
import { VxlanBackend } from '../vxlan';
import { UserspaceVxlanBackend, type UserspaceVxlanOptions } from './vxlan';

export class AutoVxlanBackend implements Backend {
  readonly type = 'vxlan';
  readonly family = 4;
  readonly deviceName: string;
  private readonly opts: UserspaceVxlanOptions;
  private readonly log: Logger;
  private readonly kernel: VxlanBackend;
  private user: UserspaceVxlanBackend | null = null;

  constructor(opts: UserspaceVxlanOptions) {
    this.opts = opts;
    this.kernel = new VxlanBackend(opts);
    this.deviceName = this.kernel.deviceName;
    this.log = (opts.log ?? silentLogger).child({ component: 'vxlan' });
  }

  /** The backend in use: the fallback once chosen, else the kernel's. */
  private get active(): VxlanBackend | UserspaceVxlanBackend {
    return this.user ?? this.kernel;
  }

  get dataPath(): DataPathKind {
    return this.user ? 'userspace' : 'kernel';
  }

  get vtepMac(): string | null {
    return this.active.vtepMac;
  }

  async ensureDevice(underlay: Underlay): Promise<BackendSetup> {
    if (this.user) return this.user.ensureDevice(underlay);
    const before = await this.opts.nl.getLink(this.deviceName);
    try {
      return await this.kernel.ensureDevice(underlay);
    } catch (err) {
      const failure = this.kernel.createFailure;
      if (failure === null) throw err;
      const why = describeError(failure);
      this.log.warn(`cannot create the kernel VXLAN device ${this.deviceName} (${why}); falling back to the user-space VXLAN data path `
        + '(--vxlan-fallback=auto; docs/fallback.md). Peers see no difference; this host forwards at a fraction of kernel speed.');
      this.user = new UserspaceVxlanBackend({
        ...this.opts,
        vtepMac: this.kernel.vtepMac ?? this.opts.vtepMac ?? before?.mac ?? null,
        reason: `kernel VXLAN unavailable: ${why}`,
      });
      return this.user.ensureDevice(underlay);
    }
  }

  deviceProblem(link: LinkInfo): string | null {
    return this.active.deviceProblem(link);
  }

  desired(own: Lease, peers: readonly Lease[], ctx: DesiredContext = {}): DesiredState {
    return this.active.desired(own, peers, ctx);
  }

  /** The kernel device's per-peer rules; null while the user-space pump carries the traffic (its table is whole). */
  peerRules(own: Lease, ctx: DesiredContext): PeerRules | null {
    const active: Backend = this.active;
    return active.peerRules?.(own, ctx) ?? null;
  }

  onLinkPeers(peers: readonly Lease[], underlay: Underlay): Promise<Set<string>> {
    return this.active.onLinkPeers(peers, underlay);
  }

  applyPump(entries: readonly DesiredPumpEntry[]): void {
    this.user?.applyPump(entries);
  }

  dataPathInfo(): DataPathInfo {
    if (this.user) return this.user.dataPathInfo();
    return { kind: 'kernel', device: this.deviceName, reason: null, counters: null, running: true };
  }

  pumpCounters(): Readonly<Record<string, number>> {
    return this.user ? this.user.pumpCounters() : {};
  }

  async close(): Promise<void> {
    await this.user?.close();
    await this.kernel.close();
  }
}
