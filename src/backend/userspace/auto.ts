/**
 * `--vxlan-fallback=auto` (the default): kernel VXLAN, unless the kernel refuses to create the
 * VXLAN device; then, logging the kernel's error, the user-space fallback for the rest of this
 * process's life (no flapping between data paths; restart weftd to try the kernel again).
 *
 * Only a failed *create* request falls back (the vxlan module missing: EOPNOTSUPP; a VNI or
 * port taken; a container without the right): a netlink timeout while looking the device up, or
 * a failure to set its MTU, is an ordinary retryable error, as it is with `off`.
 *
 * While on the kernel path this is exactly VxlanBackend. It extends it (rather than wrapping it)
 * so that everything that recognises a VXLAN backend, such as weftd's DirectRouting lookups,
 * keeps working in either mode.
 */
import { describeError } from '../../errors';
import type { Lease } from '../../lease/types';
import { silentLogger, type Logger } from '../../log';
import type { LinkInfo, VxlanSpec } from '../../netlink/types';
import type { BackendSetup, DataPathInfo, DataPathKind, DesiredContext, DesiredPumpEntry, DesiredState, Underlay } from '../backend';
import { VxlanBackend, type VxlanNetlink } from '../vxlan';
import { UserspaceVxlanBackend, type UserspaceVxlanOptions } from './vxlan';

export class AutoVxlanBackend extends VxlanBackend {
  private readonly opts: UserspaceVxlanOptions;
  private readonly alog: Logger;
  private user: UserspaceVxlanBackend | null = null;
  private createFailure: unknown = null;

  constructor(opts: UserspaceVxlanOptions) {
    // Route the kernel path's create request through a wrapper that remembers its failure.
    const box: { self: AutoVxlanBackend | null } = { self: null };
    const nl = opts.nl;
    const watched: VxlanNetlink = {
      getLink: (name) => nl.getLink(name),
      createVxlan: async (spec: VxlanSpec) => {
        try {
          return await nl.createVxlan(spec);
        } catch (err) {
          if (box.self) box.self.createFailure = err;
          throw err;
        }
      },
      setLinkUp: (l) => nl.setLinkUp(l),
      setLinkDown: (l) => nl.setLinkDown(l),
      setLinkMtu: (l, mtu) => nl.setLinkMtu(l, mtu),
      setLinkMac: (l, mac) => nl.setLinkMac(l, mac),
      deleteLink: (l) => nl.deleteLink(l),
      isOnLink: (ip, via) => nl.isOnLink(ip, via),
    };
    super({ ...opts, nl: watched });
    box.self = this;
    this.opts = opts;
    this.alog = (opts.log ?? silentLogger).child({ component: 'vxlan' });
  }

  get dataPath(): DataPathKind {
    return this.user ? 'userspace' : 'kernel';
  }

  override get vtepMac(): string | null {
    return this.user ? this.user.vtepMac : super.vtepMac;
  }

  override async ensureDevice(underlay: Underlay): Promise<BackendSetup> {
    if (this.user) return this.user.ensureDevice(underlay);
    const before = await this.opts.nl.getLink(this.deviceName);
    this.createFailure = null;
    try {
      return await super.ensureDevice(underlay);
    } catch (err) {
      if (this.createFailure === null) throw err;
      const why = describeError(this.createFailure);
      this.alog.warn(`cannot create the kernel VXLAN device ${this.deviceName} (${why}); falling back to the user-space VXLAN data path `
        + '(--vxlan-fallback=auto; docs/fallback.md). Peers see no difference; this host forwards at a fraction of kernel speed.');
      this.user = new UserspaceVxlanBackend({
        ...this.opts,
        vtepMac: super.vtepMac ?? this.opts.vtepMac ?? before?.mac ?? null,
        reason: `kernel VXLAN unavailable: ${why}`,
      });
      return this.user.ensureDevice(underlay);
    }
  }

  override deviceProblem(link: LinkInfo): string | null {
    return this.user ? this.user.deviceProblem(link) : super.deviceProblem(link);
  }

  override desired(own: Lease, peers: readonly Lease[], ctx: DesiredContext = {}): DesiredState {
    return this.user ? this.user.desired(own, peers, ctx) : super.desired(own, peers, ctx);
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

  override async close(): Promise<void> {
    await this.user?.close();
    await super.close();
  }
}
