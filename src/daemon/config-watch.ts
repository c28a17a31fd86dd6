/**
 * The network config changed under a running weftd: what then?
 *
 * flanneld reads `<prefix>/config` once, at start. weft does the same on purpose — a new
 * Network or SubnetLen means new subnets for every host and every container, which no daemon can
 * do safely on its own while traffic flows — but it does not stay silent about it: the key is
 * WATCHED (LeaseRegistry.watchConfig, on the same etcd watch stream as the subnets) and re-read
 * when it changes and whenever the watch is (re)established, and a change is reported loudly
 * (warning naming the key and what changed, plus `STATUS=`) once per distinct value, while the
 * daemon keeps running, routes intact, on the config it started with. Restarting weftd (on every
 * host) applies the new one. A value put back as it was, formatting aside, ends the warning.
 *
 * No periodic re-read: the watch stream's liveness probe notices a dead stream, and its
 * re-establishment triggers a read, so a poll would only repeat what the watch already covers
 * (it cost a wake-up and an HTTP round trip per resync). The one timer: while a read fails
 * (etcd answered the watch but not the GET), it is retried every `retryMs`.
 */
import type { Clock, TimerHandle } from '../clock';
import { systemClock } from '../clock';
import { parseNetworkConfig } from '../config/network';
import type { NetworkConfig } from '../config/types';
import { describeError } from '../errors';
import { formatIPv4, formatIPv4Cidr } from '../ip';
import type { Logger } from '../log';
import type { Notifier } from './notify';

export interface ConfigWatchOptions {
  /** Reads the config key's text (null: the key is absent). A rejection is retried after `retryMs`. */
  readonly read: () => Promise<string | null>;
  /**
   * Subscribes to the key (LeaseRegistry.watchConfig): `onChange` after every change of it and
   * every (re)connect of the watch. Returns the subscription, closed by stop().
   */
  readonly watch: (onChange: () => void) => { close(): Promise<void> };
  /** Full key, for messages: "/coreos.com/network/config". */
  readonly key: string;
  /** The config the daemon runs with. */
  readonly running: NetworkConfig;
  readonly log: Logger;
  readonly notifier: Notifier;
  /** A failed read is retried after this long; default 5000 ms. */
  readonly retryMs?: number;
  readonly clock?: Pick<Clock, 'setTimeout' | 'clearTimeout'>;
}

export class ConfigWatch {
  private subscription: { close(): Promise<void> } | null = null;
  private retryTimer: TimerHandle | null = null;
  private reported: string | null = null; // the text last warned about; null: none
  private checking: Promise<void> | null = null;
  /** A change arrived while a read was under way: that read may predate it, read again. */
  private again = false;
  private stopped = false;
  private readonly clock: Pick<Clock, 'setTimeout' | 'clearTimeout'>;

  constructor(private readonly opts: ConfigWatchOptions) {
    this.clock = opts.clock ?? systemClock;
  }

  start(): void {
    if (this.subscription !== null || this.stopped) return;
    this.subscription = this.opts.watch(() => void this.check());
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer !== null) this.clock.clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const sub = this.subscription;
    this.subscription = null;
    await sub?.close();
    await this.checking;
  }

  /** One look at the key (the watch calls it; tests too). Changes during a read get a read of their own. */
  check(): Promise<void> {
    if (this.checking !== null) {
      this.again = true;
      return this.checking;
    }
    const run = async (): Promise<void> => {
      do {
        this.again = false;
        await this.checkOnce();
      } while (this.again && !this.stopped);
    };
    this.checking = run().finally(() => {
      this.checking = null;
    });
    return this.checking;
  }

  private async checkOnce(): Promise<void> {
    if (this.stopped) return;
    let text: string | null;
    try {
      text = await this.opts.read();
    } catch {
      // etcd unreachable: the lease and watch code already say so. Read again later (the watch
      // may be up while this GET failed; when it is down, its reconnect reads anyway).
      this.retryLater();
      return;
    }
    if (this.retryTimer !== null) this.clock.clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const { key, running, log, notifier } = this.opts;
    const state = text === null ? '(deleted)' : text;
    if (text !== null && sameConfig(running, text)) {
      if (this.reported !== null) {
        log.info(`network config at ${key} is back to the one weftd runs with`, { key });
        notifier.status(`network config at ${key} matches the running config again`);
      }
      this.reported = null;
      return;
    }
    if (this.reported === state) return;
    this.reported = state;
    const keep = 'weftd keeps running on the config it started with (as flanneld does); restart weftd on every host to apply a new one';
    let what: string;
    if (text === null) {
      what = 'was deleted';
    } else {
      try {
        const changes = differences(running, parseNetworkConfig(text));
        what = `changed (${changes.join('; ') || 'formatting only'})`;
      } catch (err) {
        what = `changed to an invalid value (${describeError(err)})`;
      }
    }
    log.warn(`network config at ${key} ${what} under a running weftd; ${keep}`, { key });
    notifier.status(`WARNING: network config at ${key} ${what}; still running on the old config, restart to apply`);
  }

  private retryLater(): void {
    if (this.stopped || this.retryTimer !== null) return;
    this.retryTimer = this.clock.setTimeout(() => {
      this.retryTimer = null;
      void this.check();
    }, this.opts.retryMs ?? 5000);
  }
}

/** Same meaning (formatting and key order aside)? Unparsable text is never the same. */
function sameConfig(running: NetworkConfig, text: string): boolean {
  if (text === running.source) return true;
  try {
    return differences(running, parseNetworkConfig(text)).length === 0;
  } catch {
    return false;
  }
}

function differences(a: NetworkConfig, b: NetworkConfig): string[] {
  const out: string[] = [];
  const net = (n: NetworkConfig['network']): string => (n === null ? 'none' : formatIPv4Cidr(n));
  const cmp = (what: string, x: string, y: string): void => {
    if (x !== y) out.push(`${what} ${x} → ${y}`);
  };
  cmp('Network', net(a.network), net(b.network));
  cmp('SubnetLen', String(a.subnetLen), String(b.subnetLen));
  cmp('SubnetMin', formatIPv4(a.subnetMin), formatIPv4(b.subnetMin));
  cmp('SubnetMax', formatIPv4(a.subnetMax), formatIPv4(b.subnetMax));
  cmp('EnableIPv4', String(a.enableIPv4), String(b.enableIPv4));
  cmp('EnableIPv6', String(a.enableIPv6), String(b.enableIPv6));
  cmp('Backend', stableJson(a.backend.raw), stableJson(b.backend.raw));
  return out;
}

function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const rec = v as Record<string, unknown>;
    return `{${Object.keys(rec).sort().map((k) => `${JSON.stringify(k)}:${stableJson(rec[k])}`).join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}
