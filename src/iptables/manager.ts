/**
 * IptablesManager: the daemon component that keeps `--ip-masq` and `--iptables-forward-rules`
 * in place (compat §7) without forking iptables every few seconds, as flanneld does.
 *
 * When a check runs (one `iptables-save`; a repair adds one `iptables-restore --noflush`):
 * - on change: our wanted rules changed (first lease, a lease re-acquired with another subnet);
 * - on change of the ruleset: the kernel notifies every nf_tables commit on NFNLGRP_NFTABLES;
 *   the manager then reads the ruleset generation over netlink — no process — and checks only
 *   when it moved since the last check (someone ran iptables, Docker started a container...).
 *   Where the group cannot be joined it polls the generation every `--iptables-resync` seconds
 *   (flannel's flag, default 5) instead; an idle daemon thus has no 5-second wake-up;
 * - as a safety net, every max(60 s, --iptables-resync) — 5 min when notified: a check when the
 *   generation moved since the last successful check (a notification lost without the kernel
 *   saying so, a watch socket gone quiet), or cannot be read, or that check failed; otherwise
 *   nothing is forked, since iptables-save would print the very ruleset that check saw. With the
 *   legacy variant (whose tables have no generation) it is always a full check, and the only
 *   periodic trigger.
 * A rule deleted by hand thus comes back at once (within --iptables-resync seconds when polling).
 *
 * Restoring touches only what is missing or wrong (rules.ts: planRestore). Rules stay in place
 * when weftd stops — a restart never opens a window without masquerading — and are removed only
 * by `weft cleanup`.
 *
 * States: idle ─(trigger)─► checking ─► idle; triggers during a check coalesce into one follow-up.
 * Failures are logged once per distinct message and retried on the next trigger.
 */
import type { DaemonComponent, DaemonView } from '../daemon/components';
import { systemClock, type Clock } from '../clock';
import { describeError } from '../errors';
import { formatCidr, type IPFamily } from '../ip';
import { silentLogger, type Logger } from '../log';
import type { RulesetGeneration } from '../netlink/nft-generation';
import { NftGeneration } from '../netlink/nft-generation';
import { parseIptablesSave, planRestore, supportsRandomFully, wantedRules, type RuleSet, type Table, type WantedInput } from './rules';
import { BinaryIptablesRunner, type IptablesRunner } from './runner';

export const FULL_RESYNC_MIN_MS = 60_000;
/** The full check's period when the kernel notifies nf_tables changes. */
export const FULL_RESYNC_NOTIFIED_MS = 300_000;

export interface IptablesManagerOptions {
  readonly ipMasq: boolean;
  readonly forwardRules: boolean;
  /** --iptables-resync, seconds: the generation poll period. */
  readonly resyncSeconds: number;
  readonly log?: Logger;
  readonly runner?: IptablesRunner;
  /** null: no generation source (tests of the legacy path); default: nf_tables over netlink when iptables is iptables-nft. */
  readonly generation?: RulesetGeneration | null;
  /** Time seam (tests): the periodic checks. Default systemClock. */
  readonly clock?: Pick<Clock, 'every'>;
  /**
   * 6: the same rules for the IPv6Network with ip6tables (dual stack, IPv6-only). Such a manager
   * stays dormant — runs no process — until the daemon holds a lease with an IPv6 subnet.
   */
  readonly family?: IPFamily;
}


export interface IptablesStats {
  /** Checks run (each one iptables-save). */
  readonly checks: number;
  /** Repairs applied (each one iptables-restore). */
  readonly restores: number;
}

export class IptablesManager implements DaemonComponent {
  readonly name: string;
  private readonly family: IPFamily;
  private detecting = false;
  private readonly opts: IptablesManagerOptions;
  private readonly log: Logger;
  private readonly runner: IptablesRunner;
  private readonly clock: Pick<Clock, 'every'>;
  private generation: RulesetGeneration | null = null;
  private wanted: RuleSet | null = null;
  private wantedKey = '';
  private randomFully: boolean | null = null;
  private lastGeneration: number | null = null;
  /** The last check failed (or none ran yet): the safety net then checks whatever the generation says. */
  private lastCheckFailed = true;
  private running: Promise<void> | null = null;
  private again = false;
  private stopped = false;
  private readonly cancels: (() => void)[] = [];
  private lastError = '';
  private checks = 0;
  private restores = 0;
  private idleWaiters: (() => void)[] = [];

  constructor(opts: IptablesManagerOptions) {
    this.opts = opts;
    this.family = opts.family ?? 4;
    this.name = this.family === 4 ? 'iptables' : 'ip6tables';
    this.log = (opts.log ?? silentLogger).child({ component: this.name });
    this.runner = opts.runner ?? (this.family === 4
      ? new BinaryIptablesRunner()
      : new BinaryIptablesRunner(undefined, { iptables: 'ip6tables', save: 'ip6tables-save', restore: 'ip6tables-restore' }));
    this.clock = opts.clock ?? systemClock;
  }

  get stats(): IptablesStats {
    return { checks: this.checks, restores: this.restores };
  }

  async start(daemon: DaemonView): Promise<void> {
    daemon.on('lease', () => {
      const snap = daemon.snapshot();
      if (this.family === 4) {
        if (snap.config?.network && snap.lease) this.setNetwork(snap.config.network, snap.lease.subnet);
        this.startDetection();
        return;
      }
      if (!snap.config?.enableIPv6 || !snap.config.ipv6Network || !snap.lease?.ipv6Subnet) return;
      this.setNetwork(snap.config.ipv6Network, snap.lease.ipv6Subnet);
      this.startDetection();
    });
    // Nothing before subnet.env: the first lease event comes right after weftd wrote it, and only
    // then are `iptables --version` and the first check forked (they used to compete with the
    // start-up for the CPU). Never blocking: detection and checks run in the background.
  }

  private startDetection(): void {
    if (this.detecting) return;
    this.detecting = true;
    void this.detect().then(() => this.startTimers());
  }

  /** Set the overlay network and our subnet (the daemon does this on every lease); checks when the rules change. */
  setNetwork(network: WantedInput['network'], subnet: WantedInput['subnet']): void {
    const key = `${formatCidr(network)} ${formatCidr(subnet)}`;
    if (key === this.wantedKey) return;
    this.wantedKey = key;
    this.network = { network, subnet };
    this.wanted = null; // recomputed once --random-fully support is known
    this.trigger('rules changed');
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const c of this.cancels.splice(0)) c();
    await this.running?.catch(() => undefined);
    this.generation?.close();
  }

  /** Resolves when no check is running or pending (tests). */
  idle(): Promise<void> {
    if (this.running === null) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private network: { network: WantedInput['network']; subnet: WantedInput['subnet'] } | null = null;

  /** Once: which iptables (nf_tables → poll the generation), and whether --random-fully works. */
  private async detect(): Promise<void> {
    try {
      const v = await this.runner.version();
      this.randomFully = supportsRandomFully(v);
      if (this.opts.generation !== undefined) this.generation = this.opts.generation;
      else if (v.mode === 'nf_tables') this.generation = new NftGeneration();
      this.log.info(`${this.name} rules managed`, {
        iptables: `${v.major}.${v.minor}.${v.patch} (${v.mode})`,
        ipMasq: this.opts.ipMasq,
        forwardRules: this.opts.forwardRules,
        randomFully: this.randomFully,
        changeDetection: this.generation ? 'nf_tables generation' : 'none (legacy iptables): full check only',
      });
    } catch (err) {
      this.randomFully = false;
      this.generation = this.opts.generation ?? null;
      this.reportError(err);
    }
    this.trigger('start');
  }

  private startTimers(): void {
    if (this.stopped) return;
    const gen = this.generation;
    // Notified by the kernel when it can be (no timer); polled when it cannot.
    const notified = gen !== null && gen.watch?.(() => void this.poll()) === true;
    // The safety net (safetyNet): every 5 min when the kernel notifies, else every minute at least.
    const fullMs = Math.max(notified ? FULL_RESYNC_NOTIFIED_MS : FULL_RESYNC_MIN_MS, this.opts.resyncSeconds * 1000);
    this.cancels.push(this.clock.every(fullMs, () => void this.safetyNet()));
    if (gen === null) return;
    if (notified) {
      this.cancels.push(() => gen.unwatch?.());
      this.log.debug('nf_tables changes notified on NFNLGRP_NFTABLES');
      return;
    }
    this.cancels.push(this.clock.every(this.opts.resyncSeconds * 1000, () => void this.poll()));
  }

  /** No process: ask the kernel whether the ruleset changed since our last check. */
  private async poll(): Promise<void> {
    if (this.stopped || this.generation === null) return;
    // A change during a check: that check reads the generation again when it ends (loop()).
    if (this.running !== null) {
      this.again = true;
      return;
    }
    try {
      const gen = await this.generation.current();
      if (gen !== this.lastGeneration) this.trigger('ruleset changed');
    } catch (err) {
      this.log.debug('reading the ruleset generation failed; relying on the periodic resync', { error: describeError(err) });
    }
  }

  /**
   * The periodic safety net. iptables-save prints the nf_tables ruleset, and every commit to that
   * ruleset moves the generation: while the generation is where the last successful check left
   * it, the rules are exactly what that check saw, and forking iptables-save again would only read
   * them again (a fork and ~10 ms of CPU every 5 min on every host: half of an idle weftd's
   * periodic work, docs/performance.md). So with a generation the net is one netlink read, and it
   * checks only when the generation moved without a notification telling us, or cannot be read,
   * or the last check failed (its retry). Legacy iptables has no generation: a full check.
   */
  private async safetyNet(): Promise<void> {
    // No generation, a failed last check, or a check running (the trigger coalesces): no read.
    const gen = this.generation === null || this.lastCheckFailed || this.running !== null ? null : await this.currentGeneration();
    // lastCheckFailed again: a check may have ended (and failed) while the generation was read.
    if (gen !== null && gen === this.lastGeneration && !this.lastCheckFailed) {
      this.log.debug('iptables rules in place (ruleset generation unchanged since the last check)', { trigger: 'periodic resync', generation: gen });
      return;
    }
    this.trigger('periodic resync');
  }

  private trigger(why: string): void {
    if (this.stopped || this.network === null || this.randomFully === null) return;
    if (this.running !== null) {
      this.again = true;
      return;
    }
    this.running = this.loop(why).finally(() => {
      this.running = null;
      for (const w of this.idleWaiters.splice(0)) w();
    });
  }

  private async loop(why: string): Promise<void> {
    let reason = why;
    let verifications = 0;
    do {
      this.again = false;
      const restored = await this.check(reason).then((r) => {
        this.lastCheckFailed = false;
        return r;
      }, (err: unknown) => {
        this.lastCheckFailed = true;
        this.reportError(err);
        return false;
      });
      reason = 'changed during the last check';
      // A change made by someone else between our save and our restore is folded into the
      // generation we read after the restore, so no poll would notice it: after a restore,
      // check once more (bounded, so a fight with another rule writer cannot spin).
      if (restored && verifications < 2) {
        verifications++;
        this.again = true;
        reason = 'verify after restore';
      }
    } while (this.again && !this.stopped);
  }

  /** Resolves true when rules had to be restored. */
  private async check(why: string): Promise<boolean> {
    const net = this.network!;
    // The rules this check applies, held for its whole run: a lease that moves meanwhile
    // (setNetwork) resets the field and sets `again`, so the next pass applies the new rules.
    const wanted = (this.wanted ??= wantedRules({ ...net, ipMasq: this.opts.ipMasq, forwardRules: this.opts.forwardRules, randomFully: this.randomFully === true }));
    const tables = [...new Set<Table>([...wanted.chains.map((c) => c.table)])];
    const before = await this.currentGeneration();
    this.checks++;
    const plan = planRestore(wanted, parseIptablesSave(await this.runner.save(tables)));
    if (plan.text === null) {
      this.lastGeneration = before;
      this.clearError();
      this.log.debug('iptables rules in place', { trigger: why });
      return false;
    }
    await this.runner.restore(plan.text);
    this.restores++;
    this.lastGeneration = await this.currentGeneration();
    this.clearError();
    const first = why === 'start' || why === 'rules changed';
    this.log.info(first ? 'iptables rules applied' : 'iptables rules restored', {
      trigger: why,
      changes: plan.changes,
    });
    return true;
  }

  private async currentGeneration(): Promise<number | null> {
    if (this.generation === null) return null;
    return this.generation.current().catch(() => null);
  }

  private reportError(err: unknown): void {
    const msg = describeError(err);
    if (msg === this.lastError) return;
    this.lastError = msg;
    this.log.error('iptables rules could not be checked or applied; retrying on the next change or resync', { error: msg });
  }

  private clearError(): void {
    if (this.lastError === '') return;
    this.lastError = '';
    this.log.info('iptables rules recovered');
  }
}
