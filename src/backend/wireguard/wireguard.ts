/**
 * flannel's `wireguard` backend (v0.20+; compat: docs/wireguard.md), IPv4:
 *   - device `flannel-wg`, MTU = underlay MTU − 80 (flannel's overhead: IPv6 header 40 + UDP 8
 *     + WireGuard 32), listen port ListenPort (51820), private key from the key file;
 *   - our lease: BackendType "wireguard", BackendData {"PublicKey":"<base64>"};
 *   - desired state (desired.ts): <subnet>.0/32 on the device, one route for the Network over it,
 *     one WireGuard peer per peer lease (DesiredState.wireguardPeers).
 *
 * Two drivers for the device, chosen once per process like the VXLAN fallback:
 *   - kernel: link kind "wireguard" over rtnetlink, configured over the WireGuard generic netlink
 *     family (kernel.ts, ../../netlink/wireguard.ts);
 *   - user space: wireguard-go, configured over its UAPI socket (wggo.ts, uapi.ts), when the
 *     kernel refuses the link kind (`--wireguard-fallback=auto`, the default) or always (`force`).
 *     `off`: kernel or fail.
 *
 * Peers are applied as a whole (peers.ts): the reconciler hands them over on every full run, and
 * a watch re-reads the device every `watchIntervalMs` (neither the kernel nor wireguard-go
 * notifies peer changes), so a peer removed by hand (`wg set flannel-wg peer K remove`) comes
 * back, and a wireguard-go that stopped answering is replaced.
 *
 * close() leaves the device, its peers and (user space) wireguard-go running: a restarted weftd
 * adopts them, so restarting weftd keeps every session. flannel deletes its device on exit.
 */
import { describeError, WeftError } from '../../errors';
import type { IPFamily, IPNet } from '../../ip';
import type { Lease } from '../../lease/types';
import { silentLogger, type Logger } from '../../log';
import type { LinkInfo } from '../../netlink/types';
import type {
  Backend, BackendSetup, DataPathInfo, DataPathKind, DesiredContext, DesiredState, DesiredWireguardPeer, Underlay,
} from '../backend';
import type { WireguardBackendConfig } from './config';
import { wireguardDesired, type WireguardLeaseData } from './desired';
import { DEFAULT_KEY_FILE, loadOrCreateKey, type KeyPair } from './keys';
import { diffPeers, type PeerPolicy } from './peers';
import type { WgDeviceState, WgPeerConfig, WgSetRequest } from './uapi';
import { WireguardGoDevice, type WgGoNetlink } from './wggo';

/** flannel's overhead (pkg/backend/wireguard/wireguard_network.go): the worst case, IPv6 outside. */
export const WIREGUARD_OVERHEAD = 80;
export const WIREGUARD_DEVICE = 'flannel-wg';
export const WIREGUARD_DEVICE_V6 = 'flannel-wg-v6';

export type WireguardFallback = 'auto' | 'force' | 'off';

/** A way to run a WireGuard device: the kernel's, or wireguard-go's. */
export interface WgDriver {
  readonly kind: 'kernel' | 'userspace';
  /** Make the device exist (not necessarily up); returns it. Throws when it cannot. */
  ensure(name: string): Promise<LinkInfo>;
  get(): Promise<WgDeviceState>;
  set(req: WgSetRequest): Promise<void>;
  /** Why an existing device needs ensure() again, or null. */
  problem(link: LinkInfo): string | null;
  /** Called by the watch when get() fails. */
  markHung?(why: string): void;
  /** For status: wireguard-go's PID and restarts. */
  details?(): Readonly<Record<string, number>>;
}

/** The netlink calls this backend needs (a subset of NetlinkClient). */
export interface WireguardNetlink extends WgGoNetlink {
  setLinkUp(link: number | { readonly index: number; readonly name: string }): Promise<void>;
  setLinkMtu(link: number | { readonly index: number; readonly name: string }, mtu: number): Promise<void>;
}

export interface WireguardBackendOptions {
  readonly nl: WireguardNetlink;
  readonly config: WireguardBackendConfig;
  /** The Network (family 4) or IPv6Network (family 6). */
  readonly network: IPNet;
  /** 6: flannel's `flannel-wg-v6` on ListenPortV6 (Mode separate, dual stack or IPv6-only). Default 4. */
  readonly family?: IPFamily;
  readonly log?: Logger;
  readonly keyFile?: string;
  readonly fallback?: WireguardFallback;
  /** The kernel driver; absent: no kernel path (as if the kernel refused). */
  readonly kernel?: WgDriver;
  /** The user-space driver; default wireguard-go in `runDir`. */
  readonly userspace?: WgDriver;
  /** wireguard-go's socket/PID/log directory (--wireguard-run-dir). */
  readonly runDir?: string;
  /** Period of the peer watch; default 2000 ms; 0 = none (tests). */
  readonly watchIntervalMs?: number;
}

function peerConfigs(peers: readonly DesiredWireguardPeer[], policy: PeerPolicy, keepalive = policy.persistentKeepalive): WgPeerConfig[] {
  return peers.map((p) => ({ publicKey: p.publicKey, endpoint: p.endpoint, allowedIps: p.allowedIps, persistentKeepalive: keepalive, presharedKey: policy.presharedKey }));
}

/**
 * New peers get a handshake at once: turning a peer's persistent keepalive on makes the kernel and
 * wireguard-go send a keepalive right away, which needs (so starts) a handshake. Without it, a
 * peer that still holds a session with a previous incarnation of this device (wireguard-go
 * restarted, a peer removed by hand) keeps sending into a session we no longer have, and nothing
 * flows until its 15 s rekey timeout.
 */
function kick(req: WgSetRequest, added: readonly DesiredWireguardPeer[], policy: PeerPolicy): WgSetRequest {
  if (added.length === 0 || policy.persistentKeepalive > 0) return req;
  const fresh = new Set(added.map((p) => p.publicKey));
  return { ...req, peers: (req.peers ?? []).map((p) => (fresh.has(p.publicKey) ? { ...p, persistentKeepalive: 1 } : p)) };
}

/** The user-space driver over wireguard-go. */
export class WireguardGoDriver implements WgDriver {
  readonly kind = 'userspace' as const;
  constructor(readonly dev: WireguardGoDevice) {}
  ensure(name: string): Promise<LinkInfo> { return this.dev.ensure(name); }
  get(): Promise<WgDeviceState> { return this.dev.uapi().get(); }
  set(req: WgSetRequest): Promise<void> { return this.dev.uapi().set(req); }
  problem(): string | null { return this.dev.problem(); }
  markHung(why: string): void { this.dev.markHung(why); }
  details(): Readonly<Record<string, number>> {
    const pid = this.dev.pid();
    return { wireguard_go_restarts: this.dev.restarts, ...(pid === null ? {} : { wireguard_go_pid: pid }) };
  }
}

export class WireguardBackend implements Backend {
  readonly type = 'wireguard';
  readonly deviceName: string;
  readonly family: IPFamily;
  private readonly nl: WireguardNetlink;
  private readonly config: WireguardBackendConfig;
  private readonly network: IPNet;
  private readonly listenPort: number;
  private readonly log: Logger;
  private readonly keyFile: string;
  private readonly fallback: WireguardFallback;
  private readonly kernel: WgDriver | null;
  private readonly userspaceDriver: WgDriver;
  private readonly watchIntervalMs: number;
  private readonly policy: PeerPolicy;
  private keys: KeyPair | null = null;
  private driver: WgDriver | null = null;
  private reason: string | null = null;
  private mtu = 0;
  private wanted: readonly DesiredWireguardPeer[] | null = null;
  /** Public keys of peers the device held after our last successful apply (repairs are drift from it). */
  private applied: Set<string> | null = null;
  private applying: Promise<void> = Promise.resolve();
  private watchTimer: NodeJS.Timeout | null = null;
  private watchFailing = false;

  constructor(opts: WireguardBackendOptions) {
    this.nl = opts.nl;
    this.config = opts.config;
    this.network = opts.network;
    this.family = opts.family ?? 4;
    this.deviceName = this.family === 4 ? WIREGUARD_DEVICE : WIREGUARD_DEVICE_V6;
    this.listenPort = this.family === 4 ? opts.config.listenPort : opts.config.listenPortV6;
    this.log = (opts.log ?? silentLogger).child({ component: 'wireguard', device: this.deviceName });

    this.keyFile = opts.keyFile ?? DEFAULT_KEY_FILE;
    this.fallback = opts.fallback ?? 'auto';
    this.kernel = opts.kernel ?? null;
    this.userspaceDriver = opts.userspace ?? new WireguardGoDriver(new WireguardGoDevice({
      nl: opts.nl, log: opts.log ?? silentLogger, ...(opts.runDir ? { runDir: opts.runDir } : {}),
    }));
    this.watchIntervalMs = opts.watchIntervalMs ?? 2000;
    this.policy = { persistentKeepalive: opts.config.persistentKeepaliveInterval, presharedKey: opts.config.psk };
  }

  get dataPath(): DataPathKind {
    return this.driver?.kind === 'userspace' ? 'userspace' : 'kernel';
  }

  /** Our public key (null before the first ensureDevice()). */
  get publicKey(): string | null {
    return this.keys?.publicKey ?? null;
  }

  async ensureDevice(underlay: Underlay): Promise<BackendSetup> {
    // flannel's other modes carry both families in one device (flannel-wg, peers with v4 and v6
    // allowed IPs): not done here; "separate" is flannel's default.
    // On an IPv4-only network "auto" and "ipv4" are that same one device.
    if (this.config.mode !== 'separate' && !(this.family === 4 && (this.config.mode === 'ipv4' || this.config.mode === 'auto'))) {
      throw new WeftError('CONFIG_INVALID', `network config: Backend (wireguard): Mode ${JSON.stringify(this.config.mode)} is not supported by this weftd `
        + `${this.family === 6 ? 'with IPv6 enabled' : 'yet'}; use Mode "separate" (the default: flannel-wg for IPv4, flannel-wg-v6 for IPv6)`);
    }
    if (this.keys === null) {
      const { keys, created } = await loadOrCreateKey(this.keyFile);
      this.keys = keys;
      this.log.info(`${created ? 'generated a WireGuard key and wrote it to' : 'using the WireGuard key from'} ${this.keyFile}`, { publicKey: keys.publicKey });
    }
    this.mtu = underlay.mtu - WIREGUARD_OVERHEAD;
    let link = await this.ensureLink();
    if (link.mtu !== this.mtu) await this.nl.setLinkMtu({ index: link.index, name: link.name }, this.mtu);
    // Key and port before up: a device up without a key would answer nobody.
    await this.configureInterface();
    if (!link.up) await this.nl.setLinkUp({ index: link.index, name: link.name });
    link = (await this.nl.getLink(this.deviceName)) ?? link;
    // The peers go back at once on a replaced device (the reconciler also applies them).
    if (this.wanted !== null) await this.applyWireguardPeers(this.wanted);
    this.armWatch();
    const data: WireguardLeaseData = { PublicKey: this.keys.publicKey };
    return { backendType: 'wireguard', backendData: data, mtu: this.mtu };
  }

  /** Pick the driver (once) and make the device exist. */
  private async ensureLink(): Promise<LinkInfo> {
    if (this.driver !== null) return this.driver.ensure(this.deviceName);
    if (this.fallback === 'force' || this.kernel === null) {
      this.driver = this.userspaceDriver;
      this.reason = this.fallback === 'force' ? 'forced (--wireguard-fallback=force)' : 'no kernel WireGuard driver in this build';
      if (this.fallback === 'off') {
        throw new WeftError('CONFIG_INVALID', 'WireGuard: --wireguard-fallback=off but this weftd has no kernel WireGuard driver');
      }
      this.log.info(`using the user-space WireGuard data path (wireguard-go): ${this.reason}`);
      return this.driver.ensure(this.deviceName);
    }
    // A wireguard-go TUN from before this process (weftd restarted): keep the data path it chose,
    // so its peers keep their sessions (the kernel driver would replace the TUN).
    const existing = await this.nl.getLink(this.deviceName);
    if (existing !== null && existing.kind === 'tun' && this.fallback === 'auto') {
      this.driver = this.userspaceDriver;
      this.reason = 'wireguard-go already serves the device (kept from before this weftd; stop it to try the kernel again)';
      return this.driver.ensure(this.deviceName);
    }
    try {
      const link = await this.kernel.ensure(this.deviceName);
      this.driver = this.kernel;
      return link;
    } catch (err) {
      if (this.fallback === 'off') {
        throw new WeftError('NETLINK', `cannot create the kernel WireGuard device ${this.deviceName}: ${describeError(err)} `
          + '(--wireguard-fallback=off; load the wireguard module, or allow the user-space fallback with --wireguard-fallback=auto)', { cause: err });
      }
      this.reason = `kernel WireGuard unavailable: ${describeError(err)}`;
      this.log.warn(`cannot create the kernel WireGuard device ${this.deviceName} (${describeError(err)}); falling back to wireguard-go `
        + '(--wireguard-fallback=auto; docs/wireguard.md). Peers see no difference; this host encrypts at user-space speed.');
      this.driver = this.userspaceDriver;
      return this.driver.ensure(this.deviceName);
    }
  }

  /** Private key and listen port, each only when the device differs (setting the port rebinds). */
  private async configureInterface(): Promise<void> {
    const driver = this.driver!;
    const state = await driver.get();
    const req: { privateKeyHex?: string; listenPort?: number } = {};
    if (state.privateKeyHex !== this.keys!.privateKeyHex()) req.privateKeyHex = this.keys!.privateKeyHex();
    if (state.listenPort !== this.listenPort) req.listenPort = this.listenPort;
    if (Object.keys(req).length > 0) await driver.set(req);
  }

  deviceProblem(link: LinkInfo): string | null {
    if (this.mtu !== 0 && link.mtu !== this.mtu) return `MTU is ${link.mtu}, not ${this.mtu}`;
    return this.driver?.problem(link) ?? null;
  }

  desired(own: Lease, peers: readonly Lease[], ctx: DesiredContext = {}): DesiredState {
    return wireguardDesired(own, peers, {
      network: this.network, family: this.family, listenPort: this.listenPort, ownPublicKey: this.keys?.publicKey ?? null,
    }, ctx);
  }

  /** Serialized: the reconciler and the watch may both call it. */
  applyWireguardPeers(peers: readonly DesiredWireguardPeer[]): Promise<void> {
    this.wanted = peers;
    const run = this.applying.then(() => this.applyNow(peers), () => this.applyNow(peers));
    this.applying = run.catch(() => undefined);
    return run;
  }

  private async applyNow(peers: readonly DesiredWireguardPeer[]): Promise<void> {
    const driver = this.driver;
    if (driver === null) return; // before ensureDevice(): it applies them
    const state = await driver.get();
    const diff = diffPeers(state, peers, this.policy);
    if (diff.request !== null) {
      await driver.set(kick(diff.request, diff.added, this.policy));
      // The kick turned keepalives on for the new peers; back to the configured interval.
      if (diff.added.length > 0 && this.policy.persistentKeepalive === 0) await driver.set({ peers: peerConfigs(diff.added, this.policy) });
      const was = this.applied;
      for (const p of diff.added) {
        const line = `wireguard peer ${p.publicKey} (lease ${p.leaseKey}) endpoint ${p.endpoint} allowed-ips ${p.allowedIps.join(',')}`;
        if (was !== null && was.has(p.publicKey)) this.log.info(`repaired: re-added ${line}`);
        else this.log.info(`added ${line}`);
      }
      for (const c of diff.changed) this.log.info(`updated wireguard peer ${c.peer.publicKey} (lease ${c.peer.leaseKey}): ${c.why}`);
      for (const k of diff.removed) this.log.info(`removed wireguard peer ${k}${was !== null && !was.has(k) ? ' (not ours: added by hand, or a key replaced)' : ''}`);
    }
    this.applied = new Set(peers.map((p) => p.publicKey));
  }

  /** The watch: re-read the device, re-apply the peers, flag a device that stopped answering. */
  private armWatch(): void {
    if (this.watchTimer !== null || this.watchIntervalMs <= 0) return;
    this.watchTimer = setInterval(() => void this.watchOnce(), this.watchIntervalMs);
    this.watchTimer.unref();
  }

  private async watchOnce(): Promise<void> {
    if (this.wanted === null || this.driver === null) return;
    try {
      await this.applyWireguardPeers(this.wanted);
      if (this.watchFailing) this.log.info(`${this.deviceName}: device answers again`);
      this.watchFailing = false;
    } catch (err) {
      // A missing device is the reconciler's (it sees the link go); a hung wireguard-go is ours.
      const link = await this.nl.getLink(this.deviceName).catch(() => null);
      // Twice in a row (4 s), so a device being replaced right now is not taken for a hung one.
      if (link !== null && this.watchFailing && this.driver.markHung) this.driver.markHung(`its UAPI socket does not answer (${describeError(err)})`);
      if (!this.watchFailing) this.log.warn(`${this.deviceName}: cannot read or update the WireGuard peers: ${describeError(err)}`);
      this.watchFailing = true;
    }
  }

  dataPathInfo(): DataPathInfo {
    return {
      kind: this.dataPath,
      device: this.deviceName,
      reason: this.dataPath === 'userspace' ? this.reason : null,
      counters: this.driver?.details?.() ?? null,
      running: this.driver !== null && !this.watchFailing,
    };
  }

  async close(): Promise<void> {
    if (this.watchTimer !== null) clearInterval(this.watchTimer);
    this.watchTimer = null;
    await this.applying;
  }
}
