/**
 * Peer probes: an ICMP echo to each peer's overlay gateway (`<peer subnet>.0`, the address on the
 * peer's flannel.1) through the overlay, on a slow jittered cycle and on demand. Dual stack and
 * IPv6-only: an ICMPv6 echo to `<peer IPv6 subnet>::` (flannel-v6.<VNI>) too — a target carries
 * its family, a dual-stack peer is two targets (one record each, same key), and one pinger
 * (socket) per family is opened on the first round that needs it. A blocked VXLAN
 * port or a broken path then shows up as "peer X unreachable over the overlay" instead of silence.
 *
 * States of one peer:
 *
 *   unknown ──reply──► reachable ──2 cycle probes lost in a row, or an on-demand round lost──► unreachable
 *      │                  ▲                                                                      │
 *      └──lost twice──────┼──────────────────────────────────────────────────────────────────────┤
 *                         └──────────────────────────────── reply ◄───────────────────────────────┘
 *
 * A cycle sends one echo to each of at most `maxPerCycle` peers, taken round-robin: with 1000
 * peers and the defaults (32 per 30 s) each peer is probed every ~16 minutes and the host sends
 * about one echo a second, whatever the cluster size; up to 32 peers, every peer every cycle. A
 * cycle still running when the next is due is skipped, never stacked. An on-demand round
 * (`probeNow`, used by `weft status --probe`) sends `count` echoes to every peer and decides at once.
 *
 * Logging: a state change is one line (warn when a peer becomes unreachable, info when it comes
 * back); when more than `maxChangeLines` peers change in one round, one summary line instead, so
 * a cluster-wide outage does not print a line per host.
 */
import { describeError } from '../errors';
import type { IPFamily } from '../ip';
import { silentLogger, type Logger } from '../log';
import { TOO_MANY_IN_FLIGHT, type EchoResult, type Pinger } from './icmp';

export type ProbeState = 'unknown' | 'reachable' | 'unreachable';

export interface ProbeTarget {
  /** The peer's lease key, e.g. "10.5.52.0-24". */
  readonly key: string;
  /** Address to ping: the peer's overlay gateway, e.g. "10.5.52.0" or "fd00:5:0:34::". */
  readonly address: string;
  /** The family of `address` (default 4): which socket sends the echo. */
  readonly family?: IPFamily;
}

export interface PeerProbe {
  readonly key: string;
  readonly address: string;
  readonly family: IPFamily;
  readonly state: ProbeState;
  /** RTT of the last reply (ms), null before the first one. */
  readonly lastRttMs: number | null;
  /** When the last probe round finished (ms since the epoch), null before. */
  readonly lastProbeAt: number | null;
  /** Why the last round failed ("timeout", a send error), null when it succeeded. */
  readonly lastError: string | null;
  /** Fraction of the last `window` echoes without a reply (0..1); null before any. */
  readonly loss: number | null;
  /** Echoes sent / replies received since the peer appeared. */
  readonly sent: number;
  readonly received: number;
  /** When the state last changed (ms since the epoch). */
  readonly since: number;
}

export interface ProberOptions {
  /** The peers to probe now (read at the start of every round). */
  readonly targets: () => readonly ProbeTarget[];
  /** Opens the ICMP socket of a family; called lazily on the first round that needs it (and again after a failure). */
  readonly openPinger: (family: IPFamily) => Pinger;
  readonly log?: Logger;
  /** Mean time between cycles. Default 30 000 ms, jittered ±20 %. */
  readonly intervalMs?: number;
  /** How long to wait for a reply. Default 1000 ms. */
  readonly timeoutMs?: number;
  /** Peers probed per cycle (round-robin). Default 32. */
  readonly maxPerCycle?: number;
  /** Echoes kept per peer for the loss figure. Default 10. */
  readonly window?: number;
  /** Above this many state changes in one round, log a summary. Default 10. */
  readonly maxChangeLines?: number;
  readonly now?: () => number;
  readonly random?: () => number;
  /** Called with the RTT (ms) of every reply (metrics). */
  readonly onReply?: (rttMs: number) => void;
}

interface PeerRecord {
  key: string;
  address: string;
  family: IPFamily;
  state: ProbeState;
  lastRttMs: number | null;
  lastProbeAt: number | null;
  lastError: string | null;
  history: boolean[];
  sent: number;
  received: number;
  consecutiveLost: number;
  since: number;
}

interface Change {
  readonly key: string;
  readonly address: string;
  readonly from: ProbeState;
  readonly to: ProbeState;
  readonly error: string | null;
}

export class Prober {
  private readonly opts: Required<Omit<ProberOptions, 'log' | 'onReply'>>;
  private readonly onReply: (rttMs: number) => void;
  private readonly log: Logger;
  /** By recordId(target): a dual-stack peer has one record per family. */
  private readonly peers = new Map<string, PeerRecord>();
  private readonly pingers = new Map<IPFamily, Pinger>();
  private readonly pingerErrors = new Map<IPFamily, string>();
  private timer: NodeJS.Timeout | null = null;
  private cycle: Promise<void> | null = null;
  /** Round-robin position for cycles over more peers than maxPerCycle. */
  private cursor = 0;
  private stopped = false;
  private started = false;
  /** Totals for metrics. */
  private sentTotal = 0;
  private receivedTotal = 0;
  private roundsTotal = 0;
  private skippedCycles = 0;

  constructor(opts: ProberOptions) {
    this.opts = {
      targets: opts.targets,
      openPinger: opts.openPinger,
      intervalMs: opts.intervalMs ?? 30_000,
      timeoutMs: opts.timeoutMs ?? 1000,
      maxPerCycle: opts.maxPerCycle ?? 32,
      window: opts.window ?? 10,
      maxChangeLines: opts.maxChangeLines ?? 10,
      now: opts.now ?? Date.now,
      random: opts.random ?? Math.random,
    };
    this.log = (opts.log ?? silentLogger).child({ component: 'probe' });
    this.onReply = opts.onReply ?? (() => undefined);
  }

  /** Start the slow cycle (first cycle soon, jittered). */
  start(): void {
    if (this.started || this.stopped) return;
    this.started = true;
    this.arm(Math.min(1000, this.opts.intervalMs));
  }

  /** Stop the cycle, wait for a round in progress, close the socket. Idempotent. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    for (const p of this.pingers.values()) p.close();
    await this.cycle?.catch(() => undefined);
    this.pingers.clear();
  }

  /** Per-peer results, by key (peers no longer known are dropped at the next round). */
  results(): PeerProbe[] {
    return [...this.peers.values()].map((r) => ({
      key: r.key,
      address: r.address,
      family: r.family,
      state: r.state,
      lastRttMs: r.lastRttMs,
      lastProbeAt: r.lastProbeAt,
      lastError: r.lastError,
      loss: r.history.length === 0 ? null : r.history.filter((ok) => !ok).length / r.history.length,
      sent: r.sent,
      received: r.received,
      since: r.since,
    }));
  }

  get totals(): { readonly sent: number; readonly received: number; readonly rounds: number; readonly skippedCycles: number } {
    return { sent: this.sentTotal, received: this.receivedTotal, rounds: this.roundsTotal, skippedCycles: this.skippedCycles };
  }

  /** Why an ICMP socket could not be opened (IPv6's prefixed "ICMPv6: "), or null. */
  get socketError(): string | null {
    const errors = [...this.pingerErrors].map(([f, e]) => (f === 4 ? e : `ICMPv6: ${e}`));
    return errors.length === 0 ? null : errors.join('; ');
  }

  /**
   * Probe now, `count` echoes per peer (all peers, or those in `keys`), and decide each peer's
   * state from this round alone. Resolves when the round is over (≤ count × 100 ms + timeout).
   */
  async probeNow(keys?: readonly string[], count = 3): Promise<PeerProbe[]> {
    const wanted = keys === undefined ? null : new Set(keys);
    const targets = this.sync().filter((t) => wanted === null || wanted.has(t.key));
    await this.round(targets, count, true);
    return this.results().filter((r) => wanted === null || wanted.has(r.key));
  }

  // ---- internals -----------------------------------------------------------------------------

  private arm(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.cycle !== null) {
        this.skippedCycles++;
      } else {
        this.cycle = this.round(this.nextSlice(this.sync()), 1, false)
          .catch((err: unknown) => this.log.error('probe cycle failed', { error: describeError(err) }))
          .finally(() => {
            this.cycle = null;
          });
      }
      const jitter = 0.8 + this.opts.random() * 0.4;
      this.arm(Math.round(this.opts.intervalMs * jitter));
    }, delayMs);
    this.timer.unref();
  }

  /** The next `maxPerCycle` targets, round-robin. */
  private nextSlice(targets: readonly ProbeTarget[]): ProbeTarget[] {
    const n = targets.length;
    const max = this.opts.maxPerCycle;
    if (n <= max) return [...targets];
    const out: ProbeTarget[] = [];
    for (let i = 0; i < max; i++) out.push(targets[(this.cursor + i) % n]!);
    this.cursor = (this.cursor + max) % n;
    return out;
  }

  /** Bring the peer records in line with the current targets; returns the targets. */
  private sync(): ProbeTarget[] {
    const targets = [...this.opts.targets()];
    const keep = new Set(targets.map(recordId));
    for (const k of [...this.peers.keys()]) if (!keep.has(k)) this.peers.delete(k);
    for (const t of targets) {
      const cur = this.peers.get(recordId(t));
      if (cur === undefined || cur.address !== t.address) {
        this.peers.set(recordId(t), {
          key: t.key, address: t.address, family: t.family ?? 4, state: 'unknown', lastRttMs: null, lastProbeAt: null, lastError: null,
          history: [], sent: 0, received: 0, consecutiveLost: 0, since: this.opts.now(),
        });
      }
    }
    return targets;
  }

  private getPinger(family: IPFamily): Pinger | null {
    const open = this.pingers.get(family);
    if (open !== undefined) return open;
    const what = family === 4 ? 'ICMP' : 'ICMPv6';
    try {
      const pinger = this.opts.openPinger(family);
      this.pingers.set(family, pinger);
      if (this.pingerErrors.delete(family)) this.log.info(`${what} probe socket open again`);
      return pinger;
    } catch (err) {
      const why = describeError(err);
      if (this.pingerErrors.get(family) !== why) this.log.error(`peer probes disabled${family === 4 ? '' : ' for IPv6'}: ${why}`);
      this.pingerErrors.set(family, why);
      return null;
    }
  }

  /**
   * `count` batches of one echo per target, 100 ms apart (each family's echoes through its own
   * socket, in the same batch); then each peer's state is updated.
   */
  private async round(all: readonly ProbeTarget[], count: number, decisive: boolean): Promise<void> {
    if (all.length === 0 || this.stopped) return;
    const groups: { pinger: Pinger; targets: ProbeTarget[] }[] = [];
    for (const family of [4, 6] as const) {
      const targets = all.filter((t) => (t.family ?? 4) === family);
      const pinger = targets.length === 0 ? null : this.getPinger(family);
      if (pinger !== null) groups.push({ pinger, targets });
    }
    if (groups.length === 0) return;
    this.roundsTotal++;
    const batches = groups.map((): Promise<EchoResult[]>[] => []);
    for (let i = 0; i < count && !this.stopped; i++) {
      if (i > 0) await sleep(100);
      groups.forEach((g, j) => {
        batches[j]!.push(g.pinger.echoBatch(g.targets.map((t) => t.address), this.opts.timeoutMs));
        this.sentTotal += g.targets.length;
      });
    }
    const changes: Change[] = [];
    for (const [j, g] of groups.entries()) {
      const done = await Promise.all(batches[j]!);
      g.targets.forEach((t, i) => {
        const c = this.record(t, done.map((b) => b[i]!), decisive);
        if (c !== null) changes.push(c);
      });
      // The socket failed during the round (raw-socket closes it): reopen next time.
      const family = g.targets[0]!.family ?? 4;
      if (this.pingers.get(family) === g.pinger && g.pinger.failure !== null) {
        g.pinger.close();
        this.pingers.delete(family);
      }
    }
    this.logChanges(changes);
  }

  private record(t: ProbeTarget, all: readonly EchoResult[], decisive: boolean): Change | null {
    const key = t.key;
    const r = this.peers.get(recordId(t));
    if (r === undefined) return null;
    // An echo the pinger refused (too many in flight) was never sent: it says nothing about the peer.
    const results = all.filter((x) => x.error !== TOO_MANY_IN_FLIGHT);
    if (results.length === 0) return null;
    const ok = results.filter((x) => x.ok);
    r.sent += results.length;
    r.received += ok.length;
    this.receivedTotal += ok.length;
    for (const x of results) {
      r.history.push(x.ok);
      if (x.ok && x.rttMs !== null) this.onReply(x.rttMs);
    }
    if (r.history.length > this.opts.window) r.history.splice(0, r.history.length - this.opts.window);
    r.lastProbeAt = this.opts.now();
    const before = r.state;
    if (ok.length > 0) {
      r.lastRttMs = ok[ok.length - 1]!.rttMs;
      r.lastError = null;
      r.consecutiveLost = 0;
      r.state = 'reachable';
    } else {
      r.lastError = results.find((x) => x.error !== null)?.error ?? 'timeout';
      r.consecutiveLost++;
      if (decisive || r.consecutiveLost >= 2) r.state = 'unreachable';
    }
    if (r.state === before) return null;
    r.since = r.lastProbeAt;
    return { key, address: r.address, from: before, to: r.state, error: r.lastError };
  }

  private logChanges(changes: readonly Change[]): void {
    // unknown → reachable is the normal start: not worth a line.
    const worth = changes.filter((c) => c.to === 'unreachable' || c.from === 'unreachable');
    if (worth.length === 0) return;
    if (worth.length <= this.opts.maxChangeLines) {
      for (const c of worth) {
        if (c.to === 'unreachable') {
          this.log.warn(`peer ${c.key} unreachable over the overlay (no ICMP reply from ${c.address}: ${c.error ?? 'timeout'}); check that UDP to its VXLAN port is allowed on both hosts`, { peer: c.key });
        } else {
          this.log.info(`peer ${c.key} reachable again over the overlay`, { peer: c.key });
        }
      }
      return;
    }
    const down = worth.filter((c) => c.to === 'unreachable');
    const up = worth.filter((c) => c.to !== 'unreachable');
    const sample = (xs: readonly Change[]): string[] => xs.slice(0, 10).map((c) => c.key);
    if (down.length > 0) this.log.warn(`${down.length} peers unreachable over the overlay`, { peers: sample(down) });
    if (up.length > 0) this.log.info(`${up.length} peers reachable again over the overlay`, { peers: sample(up) });
  }
}

/** A peer record per lease key and family (a dual-stack peer is probed over both). */
function recordId(t: ProbeTarget): string {
  return `${t.family ?? 4}|${t.key}`;
}

function sleep(ms: number): Promise<void> {
  return ms <= 0 ? Promise.resolve() : new Promise((r) => setTimeout(r, ms));
}
