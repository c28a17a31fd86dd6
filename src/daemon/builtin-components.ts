/**
 * The explicit list of components weftd runs beside its core loop, chosen from the options.
 * One line per component: what is built in stays visible here.
 *
 * None of them is needed to write subnet.env, so none is loaded before it (issue #14, start-up):
 * each line names its module in a lazy loader, and `DeferredComponent` loads and starts the
 * component on the first `lease` event — emitted right after subnet.env is written, before the
 * first reconcile, so READY=1 still comes after every component has started. The health server
 * must also answer while weftd waits (for etcd, for the network config): it starts after
 * HEALTH_START_WITHOUT_LEASE_MS even without a lease.
 */
import type { DaemonOptions } from '../config/types';
import { describeError } from '../errors';
import type { Lease } from '../lease/types';
import type { Logger } from '../log';
import type { DaemonComponent, DaemonView, WeftdEvents } from './components';

/**
 * How long weftd may go without a lease before the health server starts anyway: /healthz and
 * /readyz (503 "waiting for …") must answer while weftd waits for etcd or the config. A restart
 * with etcd up writes subnet.env well within it (~100–400 ms on a loaded 2-core machine).
 */
export const HEALTH_START_WITHOUT_LEASE_MS = 1000;

export function createComponents(opts: DaemonOptions, log: Logger): DaemonComponent[] {
  const components: DaemonComponent[] = [];
  const iptables = (): typeof import('../iptables/manager') => require('../iptables/manager') as typeof import('../iptables/manager');
  if (opts.healthzPort > 0) {
    components.push(new DeferredComponent('health', log, () => {
      const { HealthComponent } = require('../health/component') as typeof import('../health/component');
      return new HealthComponent({
        ip: opts.healthzIp, port: opts.healthzPort, exposeDetails: opts.healthzExposeDetails, probeIntervalMs: opts.probeIntervalSeconds * 1000, log,
      });
    }, HEALTH_START_WITHOUT_LEASE_MS));
  }
  if (opts.ipMasq || opts.iptablesForwardRules) {
    components.push(new DeferredComponent('iptables', log, () =>
      new (iptables().IptablesManager)({ ipMasq: opts.ipMasq, forwardRules: opts.iptablesForwardRules, resyncSeconds: opts.iptablesResyncSeconds, log })));
    // The same for the IPv6Network with ip6tables; dormant unless the lease has an IPv6 subnet.
    components.push(new DeferredComponent('ip6tables', log, () =>
      new (iptables().IptablesManager)({ ipMasq: opts.ipMasq, forwardRules: opts.iptablesForwardRules, resyncSeconds: opts.iptablesResyncSeconds, log, family: 6 })));
  }
  components.push(new DeferredComponent('idle-gc', log, () => {
    const { IdleGc } = require('./idle-gc') as typeof import('./idle-gc');
    return new IdleGc();
  }));
  return components;
}

/**
 * A component loaded (its module required) and started on the daemon's first `lease` event, or
 * after `startWithoutLeaseMs` when that comes first. The component sees the daemon as if it had
 * been started before anything else: a `lease` listener it registers while the first lease is
 * being delivered is called with that lease (the emitter does not call listeners added during
 * an emit), so its behaviour — rules on the first lease, the subnet.env time in /metrics — is
 * the same as when it was started first.
 */
export class DeferredComponent implements DaemonComponent {
  private inner: DaemonComponent | null = null;
  private started: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(
    readonly name: string,
    private readonly log: Logger,
    private readonly load: () => DaemonComponent,
    private readonly startWithoutLeaseMs?: number,
  ) {}

  /** The component once loaded (tests; the health component's port). */
  get loaded(): DaemonComponent | null {
    return this.inner;
  }

  async start(daemon: DaemonView): Promise<void> {
    daemon.on('lease', (lease) => this.startInner(daemon, lease));
    if (this.startWithoutLeaseMs !== undefined) {
      this.timer = setTimeout(() => this.startInner(daemon, null), this.startWithoutLeaseMs);
    }
  }

  private startInner(daemon: DaemonView, delivering: Lease | null): void {
    if (this.started !== null || this.stopped) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    let inner: DaemonComponent;
    try {
      inner = this.inner = this.load();
    } catch (err) {
      // A module that does not load is a broken install: say which, keep the overlay running.
      this.log.error(`component ${this.name} could not be loaded: ${describeError(err)}; reinstall weft`);
      this.started = Promise.resolve();
      return;
    }
    // Only while `start` runs synchronously (where components subscribe): a listener added later
    // is a new subscriber, not one that missed the lease being delivered now.
    let replaying = delivering;
    const view: DaemonView = {
      get phase() {
        return daemon.phase;
      },
      snapshot: () => daemon.snapshot(),
      on: <K extends keyof WeftdEvents>(event: K, listener: (...args: WeftdEvents[K]) => void): unknown => {
        daemon.on(event, listener);
        if (event === 'lease' && replaying !== null) (listener as (...args: WeftdEvents['lease']) => void)(replaying);
        return view;
      },
    };
    this.started = inner.start(view).catch((err: unknown) => {
      this.log.error(`component ${this.name} failed to start: ${describeError(err)}`);
    });
    replaying = null;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (this.started === null) return;
    await this.started;
    await this.inner?.stop();
  }
}
