/**
 * weftd's orchestration: lease → backend → subnet.env → sd_notify → reconcile.
 *
 *   resolve underlay ─► wait for <prefix>/config ─► backend.ensureDevice (VtepMAC)
 *        ─► acquire lease ─► write subnet.env ─► first peer snapshot ─► reconcile ─► READY=1
 *        ─► run: peer events / netlink changes / timer ─► reconcile;  lease re-acquired ─► subnet.env
 *
 * Every decision lives in a pure module (config, allocation, desired state, diff); this file
 * only wires adapters together and owns the order of the steps and the shutdown.
 *
 * Shutdown (SIGTERM/SIGINT) stops watching and timers but leaves the device, routes and the etcd
 * lease in place: a restarted weftd re-adopts them, so a restart never cuts traffic.
 *
 * Faults (docs/faults.md): a lost lease is re-acquired in place (a new subnet is announced loudly);
 * etcd outages never touch the kernel state; peers whose key vanished stay programmed for a short
 * grace (departed.ts); a changed network config is reported, not applied (config-watch.ts).
 */
import { EventEmitter } from 'node:events';
import { hasOnLinkPeers, type Backend, type BackendSetup, type DesiredContext, type Underlay } from '../backend/backend';
import { createBackend } from '../backend/registry';
import { Backoff } from '../backoff';
import { parseNetworkConfig } from '../config/network';
import type { DaemonOptions, NetworkConfig } from '../config/types';
import { describeError } from '../errors';
import { formatCidr, formatIPv4, formatIPv4Cidr, hostAddress, parseIPv4Cidr, parseIPv6Cidr, type IPFamily } from '../ip';
import { loadNative } from '../native';
import { flushNativeJoins, nativeJoin } from '../lease/native-join';
import { nativeJoinConfig, nativeJoinInputKey, nativePeerOf, type NativeJoinInput } from './native-join-config';
import { createLeaseRegistry } from '../lease/create-registry';
import { LeaseManager } from '../lease/manager';
import { formatLeaseSubnets, sameLeaseSubnets } from '../lease/family';
import type { LeaseRegistry } from '../lease/registry';
import type { IPv4Net, IPv6Net, Lease } from '../lease/types';
import type { Logger } from '../log';
import { NetlinkClient, type Netlink } from '../netlink/client';
import { resolveUnderlay } from '../netlink/underlay';
import { checkNetworkAgainstUnderlay, connectedNetworks, endpointAddresses } from './underlay-guard';
import type { Notifier } from './notify';
import { ConfigWatch } from './config-watch';
import { DepartedPeers } from './departed';
import { IncrementalDesired, type PeerEdit } from './desired-delta';
import type { DaemonComponent, DaemonView, WeftdEvents, WeftdPhase, WeftdSnapshot } from './components';
import { Reconciler } from './reconciler';
import { formatSubnetEnv, readSubnetEnv, writeSubnetEnvAtomic } from './subnetenv';
import { takeSnapshot } from './snapshot';
import { traceStartup } from './startup-trace';

// The component contract (plain-data snapshot, events) lives in components.ts; re-exported here.
export type { DaemonComponent, WeftdEvents, WeftdPhase, WeftdSnapshot } from './components';

/** One address family's data path: a backend instance, its setup and its reconciler. */
export interface FamilyPath {
  readonly family: IPFamily;
  readonly backend: Backend;
  setup: BackendSetup;
  reconciler: Reconciler | null;
}

/** Adapters, injectable for tests; production defaults talk to etcd and the kernel. */
export interface WeftdDeps {
  readonly log: Logger;
  readonly notifier: Notifier;
  readonly makeRegistry?: (opts: DaemonOptions, log: Logger) => LeaseRegistry;
  readonly makeNetlink?: (log: Logger) => Netlink;
  readonly components?: readonly DaemonComponent[];
  /** How long a departed peer stays programmed (departed.ts); tests use 0. */
  readonly departedGraceMs?: number;
}

export class Weftd extends EventEmitter<WeftdEvents> implements DaemonView {
  private readonly opts: DaemonOptions;
  private readonly log: Logger;
  /** Debug lines are written: only then does a peer event build its debug fields. */
  private readonly debugOn: boolean;
  private readonly notifier: Notifier;
  private readonly makeRegistry: (opts: DaemonOptions, log: Logger) => LeaseRegistry;
  private readonly makeNetlink: (log: Logger) => Netlink;
  private readonly components: readonly DaemonComponent[];
  private readonly startedComponents: DaemonComponent[] = [];

  private phaseValue: WeftdPhase = 'starting';
  private nl: Netlink | null = null;
  private registry: LeaseRegistry | null = null;
  private manager: LeaseManager | null = null;
  private backend: Backend | null = null;
  private reconciler: Reconciler | null = null;
  /** Dual stack's second data path (IPv6); null unless both families are enabled. */
  private ipv6Path: FamilyPath | null = null;
  private unwatchPeers: (() => void) | null = null;

  private underlay: Underlay | null = null;
  private config: NetworkConfig | null = null;
  private setup: BackendSetup | null = null;
  private own: Lease | null = null;
  /** The peers' leases by key (a copy of the lease view's, kept per event). */
  private readonly peerMap = new Map<string, Lease>();
  /**
   * The same leases as a list, kept per event in O(1) (a removal moves the last one into its
   * place): handed to 'peers' listeners, copied only by snapshot().
   */
  private readonly peerList: Lease[] = [];
  private readonly peerIndex = new Map<string, number>();
  /** PublicIPs (both families) of peers on our L2; kept per event, replaced by a full lookup. */
  private onLinkPublicIPs = new Set<string>();
  /** What no lease may route into the overlay (underlay-guard.ts): filled at start-up. */
  private guard: { underlayNetworks: readonly IPv4Net[]; protectedIPs: readonly string[] } = { underlayNetworks: [], protectedIPs: [] };
  /** Serialises desired-state recomputation (DirectRouting needs an async route lookup). */
  private recompute: Promise<void> = Promise.resolve();

  constructor(opts: DaemonOptions, deps: WeftdDeps) {
    super();
    this.opts = opts;
    this.components = deps.components ?? [];
    this.log = deps.log;
    this.debugOn = this.log.enabled?.('debug') ?? true;
    this.notifier = deps.notifier;
    this.makeRegistry = deps.makeRegistry ?? ((o, log) => createLeaseRegistry(o, log));
    this.makeNetlink = deps.makeNetlink ?? ((log) => new NetlinkClient(log.child({ component: 'netlink' })));
    this.departed = new DepartedPeers(deps.departedGraceMs);
  }

  get phase(): WeftdPhase {
    return this.phaseValue;
  }

  get logger(): Logger {
    return this.log;
  }

  /** Plain data (components.ts): values copied from the live objects, nothing to call or mutate. */
  snapshot(): WeftdSnapshot {
    const primary = this.backend && this.setup
      ? [{ family: this.backend.family ?? 4, backend: this.backend, setup: this.setup, reconciler: this.reconciler }]
      : [];
    return takeSnapshot({
      phase: this.phaseValue,
      underlay: this.underlay,
      config: this.config,
      lease: this.own,
      peers: [...this.peerList],
      manager: this.manager,
      registry: this.registry,
      paths: this.ipv6Path ? [...primary, this.ipv6Path] : primary,
      nativeJoins: this.nativeJoinsTotal,
    });
  }

  /**
   * Bring the host onto the overlay and keep it there until `signal` aborts. Resolves after a
   * clean shutdown; rejects with a WeftError when the daemon cannot go on (bad config, no
   * interface, exhausted pool). Either way nothing in etcd or the kernel is deleted.
   */
  async run(signal: AbortSignal): Promise<void> {
    try {
      await this.start(signal);
      if (!signal.aborted) await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
    } catch (err) {
      if (!signal.aborted) throw err;
      // Aborted while starting (e.g. waiting for etcd): a normal shutdown.
    } finally {
      await this.shutdown();
    }
  }

  private setPhase(phase: WeftdPhase, status?: string): void {
    this.phaseValue = phase;
    if (status !== undefined) this.notifier.status(status);
    this.emit('phase', phase);
  }

  private async start(signal: AbortSignal): Promise<void> {
    const opts = this.opts;
    for (const c of this.components) {
      await c.start(this);
      this.startedComponents.push(c);
    }
    traceStartup('components started');
    const nl = (this.nl = this.makeNetlink(this.log));
    // Before the config is known only the interface is checked (an IPv6-only host may have no
    // IPv4 address); it is resolved again, per the families the config enables, right after.
    await resolveUnderlay(this.underlayOptions(null), nl);
    traceStartup('netlink socket, interface checked');

    // The native join path writes to this process's kernel: only for the real netlink adapter, and
    // for one daemon per process (the addon's configuration is the process's). Before the
    // registry, whose watch streams it decides.
    if (opts.nativeJoin && nl instanceof NetlinkClient && nativeJoin.owner === null) {
      nativeJoin.owner = this;
    }
    const registry = (this.registry = this.makeRegistry(opts, this.log));
    const manager = (this.manager = new LeaseManager({ registry, log: this.log }));

    const waiting = `waiting for network config at ${registry.prefix}/config on ${registry.location}`;
    this.log.info(waiting);
    this.setPhase('waiting-config', waiting);
    const configText = await manager.waitForConfig(signal);
    const config = (this.config = parseNetworkConfig(configText));
    traceStartup('etcd connected, network config read');
    const underlay = (this.underlay = await resolveUnderlay(this.underlayOptions(config), nl));
    traceStartup('underlay resolved');
    this.log.info('using interface', {
      iface: underlay.ifName,
      publicIp: underlay.ipv4,
      ...(config.enableIPv6 ? { publicIpv6: underlay.ipv6 } : {}),
      mtu: underlay.mtu,
    });
    this.log.info('network config', {
      network: config.network === null ? 'none (IPv6-only)' : formatIPv4Cidr(config.network), subnetLen: config.subnetLen,
      ...(config.ipv6Network ? { ipv6Network: formatCidr(config.ipv6Network), ipv6SubnetLen: config.ipv6SubnetLen } : {}),
      backend: config.backend.type,
    });
    // A Network over the underlay or an etcd endpoint would cut this host off: refuse it now.
    this.guard = {
      underlayNetworks: await connectedNetworks(nl, underlay.ifIndex),
      protectedIPs: await endpointAddresses(opts.etcdEndpoints),
    };
    if (config.network !== null) {
      checkNetworkAgainstUnderlay(config.network, { ifName: underlay.ifName, networks: this.guard.underlayNetworks }, this.guard.protectedIPs);
    }

    // The lease we held before (same PublicIP): if the device has to be created again (deleted
    // while weftd was down) it gets the VtepMAC peers still have programmed, not a random one.
    const subnetFromFile = await this.subnetFromFile();
    const ipv6SubnetFromFile = config.enableIPv6 ? await this.subnetFromFile('FLANNEL_IPV6_SUBNET') : null;
    // flannel writes PublicIP only with an IPv4 device: an IPv6-only lease says "0.0.0.0".
    const publicIP = config.enableIPv4 ? underlay.ipv4 : '0.0.0.0';
    const previous = await manager.findOwnLease(publicIP, subnetFromFile, underlay.ipv6 ?? null);
    traceStartup('underlay guard, subnet file, own lease found');
    // One backend instance per enabled family: the first is the primary (`backend`, `setup`,
    // `reconciler`); dual stack's IPv6 one is `ipv6Path`.
    const families: IPFamily[] = [...(config.enableIPv4 ? [4 as const] : []), ...(config.enableIPv6 ? [6 as const] : [])];
    const paths: FamilyPath[] = [];
    for (const family of families) {
      const b = createBackend(config, { nl, log: this.log, previousLease: previous, vxlanFallback: opts.vxlanFallback, family,
        wireguard: { fallback: opts.wireguardFallback ?? 'auto', keyFile: opts.wireguardKeyFile ?? '', runDir: opts.wireguardRunDir ?? '' } });
      const setup = await b.ensureDevice(underlay);
      this.log.info('overlay device ready', { device: b.deviceName, mtu: setup.mtu, backendData: setup.backendData });
      paths.push({ family, backend: b, setup, reconciler: null });
    }
    traceStartup('device ensured');
    const primary = paths[0]!;
    const backend = (this.backend = primary.backend);
    this.setup = primary.setup;
    this.ipv6Path = paths[1] ?? null;
    const v6Setup = paths.find((p) => p.family === 6)?.setup;

    const networks = [config.network, config.ipv6Network].filter((n) => n !== null).map((n) => formatCidr(n)).join(' and ');
    this.setPhase('acquiring', `acquiring a subnet lease in ${networks}`);
    const own = await manager.acquire({
      config,
      publicIP,
      // flannel writes PublicIPv6 only with an IPv6 device (EnableIPv6).
      publicIPv6: config.enableIPv6 ? underlay.ipv6 ?? null : null,
      backendType: this.setup.backendType,
      backendData: primary.family === 4 ? this.setup.backendData : undefined,
      ...(v6Setup ? { backendV6Data: v6Setup.backendData } : {}),
      subnetFromFile,
      ipv6SubnetFromFile,
      ttlSeconds: opts.subnetLeaseTtlSeconds,
      signal,
    });
    traceStartup('lease acquired');
    await this.adoptLease(own);
    manager.on('lost', (err) => {
      this.leaseLost = true;
      this.log.warn('subnet lease lost; re-acquiring (traffic keeps flowing meanwhile)', { error: describeError(err) });
      this.notifier.status(`lease lost (${err.message}); re-acquiring`);
    });
    manager.on('lease', (lease, previous) => {
      void this.adoptLease(lease, previous).catch((err: unknown) =>
        this.log.error('could not apply re-acquired lease', { error: describeError(err) }),
      );
    });

    this.setPhase('programming', `lease ${formatIPv4Cidr(own.subnet)} held; programming routes to peers`);
    this.reconciler = new Reconciler({
      nl,
      backend,
      underlay,
      log: this.log,
      resyncIntervalMs: opts.resyncIntervalSeconds * 1000,
      directRoutingNetwork: this.directRoutingNetwork(primary.family),
      onDeviceSetup: (setup) => this.onDeviceSetup(setup),
      refreshUnderlay: () => resolveUnderlay(this.underlayOptions(config), nl),
      onUnderlayChanged: (u) => {
        this.underlay = u;
      },
      // A peer change not yet handed over (queued recompute, dirty keys) is not in the kernel yet.
      onUpToDate: () => {
        if (!this.recomputeQueued && this.dirtyKeys.size === 0) this.emit('programmed');
        this.syncNativeJoin();
      },
      // A run that reads the kernel must find what the native join path wrote in the books.
      beforeRun: flushNativeJoins,
    });
    if (this.ipv6Path) {
      const path = this.ipv6Path;
      path.reconciler = new Reconciler({
        nl,
        backend: path.backend,
        underlay,
        log: this.log,
        resyncIntervalMs: opts.resyncIntervalSeconds * 1000,
        directRoutingNetwork: this.directRoutingNetwork(6),
        onDeviceSetup: (setup) => this.onDeviceSetup(setup, path),
        refreshUnderlay: () => resolveUnderlay(this.underlayOptions(config), nl),
      });
    }
    await this.firstSnapshot();
    await this.recompute;
    await this.reconcileUntilConverged(signal);
    if (this.ipv6Path?.reconciler) await this.reconcileUntilConverged(signal, this.ipv6Path.reconciler);
    this.reconciler.start();
    this.ipv6Path?.reconciler?.start();
    this.configWatch = new ConfigWatch({
      read: () => registry.getConfig(),
      // Watched on the subnets' etcd watch stream, read when it changes: no poll (docs/performance.md "Idle").
      watch: (onChange) => registry.watchConfig(onChange),
      key: `${registry.prefix}/config`,
      running: config,
      log: this.log,
      notifier: this.notifier,
    });
    this.configWatch.start();

    const dp = backend.dataPath !== undefined && backend.dataPath !== 'kernel' ? `, data path ${backend.dataPath} (${backend.deviceName})` : '';
    const ready = `ready: subnet ${formatIPv4Cidr(own.subnet)}, ${this.peerMap.size} peer(s) programmed${dp}`;
    this.setPhase('ready');
    this.notifier.ready(ready);
    traceStartup('READY=1 sent');
    this.log.info(ready);
    this.syncNativeJoin();
  }

  /**
   * The native join path (addon/src/fastjoin.cc, issue #14): the addon reads the etcd watch and
   * writes a new peer's neighbour, FDB entry and route itself when the lease alone decides them —
   * the objects this daemon's reconciler would write, in its encoding (a template made here by
   * wire.ts, patched per join) — and hands the message to the books later, in batches, flagged;
   * the reconciler then takes those objects as in the kernel (noteNativeWrite). Only for IPv4
   * vxlan on the kernel's data path without DirectRouting (one engine); anything else, and any
   * lease that is not a plain new peer, takes the ordinary path. Kept in step with the daemon's
   * state after every reconcile run: a new own lease, VtepMAC or device reconfigures it, a
   * fallback data path turns it off.
   */
  private nativeJoinOn = false;
  /** Joins the native join path wrote (as the books took them in): weft_native_joins_total. */
  private nativeJoinsTotal = 0;
  private nativeJoinSignature = '';
  private syncNativeJoin(): void {
    const input = this.nativeJoinInput();
    const signature = input === null ? '' : nativeJoinInputKey(input);
    if (signature === this.nativeJoinSignature) return;
    this.nativeJoinSignature = signature;
    const cfg = input === null ? null : nativeJoinConfig(input);
    const native = loadNative();
    if (cfg === null) {
      if (this.nativeJoinOn) native.fastJoinConfigure(null);
      this.nativeJoinOn = false;
      nativeJoin.applied = null;
      return;
    }
    const port = native.fastJoinConfigure(cfg);
    this.nativeJoinOn = port !== 0;
    if (!this.nativeJoinOn) {
      this.log.warn('native join path unavailable (no netlink socket for it): joins take the ordinary path');
      return;
    }
    for (const lease of this.peerMap.values()) this.knowNative(lease);
    for (const lease of this.departed.heldLeases()) this.knowNative(lease);
    const reconciler = this.engines[0]!.reconciler;
    nativeJoin.applied = (rec) => {
      this.nativeJoinsTotal++;
      const gw = formatIPv4(rec.subnetIp);
      reconciler.noteNativeWrite({
        neighbours: [{ ip: gw, mac: rec.mac }], fdb: [{ mac: rec.mac, dst: formatIPv4(rec.publicIp) }],
        routes: [{ dst: { ip: rec.subnetIp, prefixLen: rec.prefixLen }, gateway: gw, onlink: true, via: 'overlay' }],
      });
    };
    if (this.debugOn) this.log.debug('native join path configured', { ifindex: cfg.ifindex, port });
  }

  /**
   * Where the native join path may run now, what it needs to know; null where it must not: not
   * ready or stopping, not this process's owner of the path, not IPv4 vxlan on the kernel's data
   * path with one engine and no DirectRouting (host-gw, udp, WireGuard, dual stack, the
   * user-space fallback), or no overlay device known.
   */
  private nativeJoinInput(): NativeJoinInput | null {
    const own = this.own;
    const config = this.config;
    if (this.phaseValue !== 'ready' || nativeJoin.owner !== this || own === null || config === null || config.network === null) return null;
    if (config.backend.type !== 'vxlan' || this.setup === null || this.ipv6Path !== null || this.engines.length !== 1 || this.onLinkCanMatter()) return null;
    const e = this.engines[0]!;
    const index = e.reconciler.overlayIfIndex;
    if (e.dataPath !== 'kernel' || (e.backend.dataPath ?? 'kernel') !== 'kernel' || index === null) return null;
    return {
      subnetsPrefix: `${this.registry!.prefix}/subnets/`, own, network: config.network, subnetLen: config.subnetLen,
      backendData: this.setup.backendData, device: { index, name: e.backend.deviceName },
      underlayNetworks: this.guard.underlayNetworks, protectedIPs: this.guard.protectedIPs,
    };
  }

  /** Tell the native join path of a lease this host knows (any lease: it only ever blocks a join). */
  private knowNative(lease: Lease): void {
    loadNative().fastJoinKnow(lease.key, ...nativePeerOf(lease));
  }

  /** Resolve once the lease manager has delivered the first full list of peers. */
  private firstSnapshot(): Promise<void> {
    const manager = this.manager!;
    return new Promise<void>((resolve) => {
      let first = true;
      this.unwatchPeers = manager.watchPeers((peers, change) => {
        // One change costs O(1) here: the peer set, the departed-peer holds and the keys to judge
        // again are kept per key (a snapshot, after start or a compaction, rebuilds them all).
        if (change.type === 'snapshot') {
          const before = [...this.peerList];
          this.peerMap.clear();
          this.peerList.length = 0;
          this.peerIndex.clear();
          for (const [k, l] of peers) this.setPeer(k, l);
          this.departed.update(before, this.peerList);
          this.wholeDirty = true;
          this.log.info('peer snapshot', { peers: this.peerMap.size });
        } else if (change.type === 'added') {
          const previous = this.peerMap.get(change.lease.key);
          this.setPeer(change.lease.key, change.lease);
          this.departed.added(change.lease, previous);
          this.dirtyKeys.add(change.lease.key);
          if (this.debugOn) this.log.debug('peer lease added or changed', { key: change.lease.key, publicIp: change.lease.attrs.PublicIP });
        } else {
          const previous = this.peerMap.get(change.key);
          if (previous !== undefined) {
            this.deletePeer(change.key);
            this.departed.removed(previous);
          }
          this.dirtyKeys.add(change.key);
          if (this.debugOn) this.log.debug('peer lease removed', { key: change.key });
        }
        if (first && change.type === 'snapshot') {
          first = false;
          resolve();
        }
      }, () => {
        // The changes of one watch message (or a snapshot) are all in: one recompute for them,
        // in this pass (scheduleRecompute).
        this.emit('peers', this.peerList);
        this.scheduleRecompute(true);
      });
    });
  }

  private setPeer(key: string, lease: Lease): void {
    this.peerMap.set(key, lease);
    if (this.nativeJoinOn) this.knowNative(lease);
    const i = this.peerIndex.get(key);
    if (i !== undefined) {
      this.peerList[i] = lease;
      return;
    }
    this.peerIndex.set(key, this.peerList.length);
    this.peerList.push(lease);
  }

  private deletePeer(key: string): void {
    this.peerMap.delete(key);
    const i = this.peerIndex.get(key);
    if (i === undefined) return;
    this.peerIndex.delete(key);
    const last = this.peerList.pop()!;
    if (last.key !== key) {
      this.peerList[i] = last;
      this.peerIndex.set(last.key, i);
    }
  }

  /**
   * Recompute the desired kernel state from (own lease, peers) and hand it to the reconciler.
   * With per-peer rules (Backend.peerRules) an event judges only the changed leases and hands
   * the reconciler the delta (desired-delta.ts); otherwise desired() runs over all peers.
   * DirectRouting needs to know which peers are on our L2: looked up for the changed peers.
   */
  private scheduleRecompute(peerSetChanged: boolean): void {
    // Coalesced: a burst of lease events (hundreds in one watch response) costs one recompute
    // step, whose work is proportional to the keys that changed.
    this.peerSetDirty ||= peerSetChanged;
    if (this.recomputeQueued) return;
    // Nothing to look up (vxlan without DirectRouting) and no step under way: the step runs in
    // the caller's pass — for a join, the watch message's, which then sends the netlink batch
    // (issue #14: no promise step between the lease event and the kernel write).
    if (!this.recomputeBusy && !this.mayLookUpOnLink()) {
      try {
        void this.recomputeStep();
      } catch (err) {
        this.log.error('computing desired state failed', { error: describeError(err) });
      }
      return;
    }
    this.recomputeQueued = true;
    this.recompute = this.recompute.then(async () => {
      this.recomputeBusy = true;
      try {
        await this.recomputeStep();
      } finally {
        this.recomputeBusy = false;
      }
    }).catch((err: unknown) => this.log.error('computing desired state failed', { error: describeError(err) }));
  }

  /** Whether a recompute may have to look peers up on our L2 (an await): DirectRouting, host-gw. */
  private mayLookUpOnLink(): boolean {
    const backend = this.backend;
    return backend !== null && hasOnLinkPeers(backend) && this.onLinkCanMatter() && this.underlay !== null;
  }

  /**
   * One recompute step: take the changed keys, look up what must be looked up (a promise then:
   * the step finishes after it), judge, hand each reconciler its state (and delta). Without a
   * lookup it runs to the end within the call and returns undefined.
   */
  private recomputeStep(): Promise<void> | undefined {
    this.recomputeQueued = false;
    const backend = this.backend;
    const own = this.own;
    if (!backend || !own || !this.reconciler) return undefined;
    const peerSetChanged = this.peerSetDirty;
    this.peerSetDirty = false;
    let whole = this.wholeDirty;
    this.wholeDirty = false;
    // The two sets alternate: the keys of this step, while events of a later one may arrive.
    const dirty = this.dirtyKeys;
    this.dirtyKeys = this.spareDirtyKeys;
    this.spareDirtyKeys = dirty;
    // Peers whose key just vanished stay programmed for a grace period (departed.ts): the keys
    // whose hold began or ended are changed keys too.
    this.departed.expire();
    for (const k of this.departed.takeChanges()) dirty.add(k);
    // A key gone for good (its grace over) is new to the native join path again.
    if (this.nativeJoinOn) for (const k of dirty) if (!this.peerMap.has(k) && this.departed.heldLease(k) === undefined) loadNative().fastJoinForget(k);
    // A switch of data path (the VXLAN fallback) changes what the rules can describe.
    for (const e of this.engines) if (e.dataPath !== (e.backend.dataPath ?? 'kernel')) whole = true;
    // DirectRouting and host-gw route only to peers on our L2 (vxlan without it answers an empty set).
    if ((peerSetChanged || whole) && this.mayLookUpOnLink()) return this.lookUpThenJudge(backend, own, whole, dirty);
    this.judge(backend, own, whole, dirty, null);
    return undefined;
  }

  /**
   * The lookups before judging. One peer list for them and the whole recompute: a peer that
   * arrives during the lookups is judged by the step its event queued (its key is dirty), not
   * here without a lookup (a false "not on our L2").
   */
  private async lookUpThenJudge(backend: Backend, own: Lease, whole: boolean, dirty: Set<string>): Promise<void> {
    const v6 = this.ipv6Path;
    const current = [...this.peerList];
    if (!whole && this.engines.length > 0) {
      // One peer is judged again: look only its address up. Should another peer share an
      // address whose answer changed, everyone is looked up again (a whole recompute).
      const flipped = await this.lookUpOnLink(backend, v6?.backend, [...dirty].map((k) => this.peerMap.get(k)).filter((l) => l !== undefined));
      for (const ip of flipped) {
        for (const e of this.engines) for (const k of e.engine.keysWithPublicIP(ip)) if (!dirty.has(k)) whole = true;
      }
    }
    if (whole || this.engines.length === 0) await this.lookUpAllOnLink(backend, v6?.backend, current);
    this.judge(backend, own, whole, dirty, current);
  }

  /**
   * Judge the changed keys (or everyone: `whole`, or no per-peer engines) and hand each family's
   * reconciler its state — with the delta, which the reconciler may write within this call.
   * `current`: the peer list the lookups saw (null: copied here, only if a whole recompute needs
   * it — a per-peer step needs no list, and an O(peers) copy per join would undo O(change)).
   */
  private judge(backend: Backend, own: Lease, whole: boolean, dirty: Set<string>, current: Lease[] | null): void {
    const v6 = this.ipv6Path;
    const reconciler = this.reconciler!;
    const leaseOf = (key: string): Lease | null => this.peerMap.get(key) ?? this.departed.heldLease(key) ?? null;
    // Dual stack's engines are rebuilt together (a mix is never kept: see below).
    const peersNow = (): Lease[] => [...(current ?? this.peerList), ...this.departed.heldLeases()];
    const skippedNow = whole || this.engines.length === 0 ? new Set<string>() : null;
    if (whole || this.engines.length === 0) {
      const paths: { family: IPFamily; backend: Backend; reconciler: Reconciler; suffix: string }[] = [
        { family: backend.family ?? 4, backend, reconciler, suffix: '' },
        ...(v6?.reconciler ? [{ family: 6 as const, backend: v6.backend, reconciler: v6.reconciler, suffix: ' (IPv6)' }] : []),
      ];
      this.engines = [];
      for (const p of paths) {
        const ctx = this.ctxOf(p.family);
        const rules = IncrementalDesired.supports(ctx) ? p.backend.peerRules?.(own, ctx) ?? null : null;
        const engine = rules === null ? null : new IncrementalDesired(rules, own, ctx, peersNow());
        const desired = engine === null ? p.backend.desired(own, peersNow(), ctx) : engine.state;
        if (engine !== null) this.engines.push({ engine, backend: p.backend, reconciler: p.reconciler, dataPath: p.backend.dataPath ?? 'kernel', suffix: p.suffix });
        for (const s of desired.skipped ?? []) this.warnSkippedOnce(`${s.key}${p.suffix}`, s.reason, skippedNow!);
        p.reconciler.setDesired(desired);
      }
      // A mix (one family per peer, the other whole) is not kept: every event would then be O(peers) anyway.
      if (this.engines.length !== paths.length) this.engines = [];
    } else if (dirty.size > 0) {
      const edits: PeerEdit[] = [];
      for (const key of dirty) edits.push({ key, lease: leaseOf(key) });
      for (const e of this.engines) {
        const { state, delta } = e.engine.apply(edits);
        // With a delta and an idle reconciler, the kernel write leaves within this call.
        e.reconciler.setDesired(state, delta ?? undefined);
        if (delta === null) {
          // Conflicting leases made the engine judge everyone again: warnings as for a whole recompute.
          const seen = new Set<string>();
          for (const s of state.skipped ?? []) this.warnSkippedOnce(`${s.key}${e.suffix}`, s.reason, seen);
          for (const k of this.skippedWarned.keys()) if (k.endsWith(e.suffix) && (e.suffix !== '' || !k.endsWith(' (IPv6)')) && !seen.has(k)) this.skippedWarned.delete(k);
          continue;
        }
        for (const key of dirty) {
          const why = e.engine.skipReason(key);
          if (why !== null) this.warnSkippedOnce(`${key}${e.suffix}`, why);
          else if (this.skippedWarned.size > 0) this.skippedWarned.delete(`${key}${e.suffix}`);
        }
      }
    }
    this.armDepartedTimer();
    // Forget leases no longer skipped (deleted or fixed): the map never outgrows the current
    // set, however many hostile keys come and go.
    if (skippedNow !== null) for (const k of this.skippedWarned.keys()) if (!skippedNow.has(k)) this.skippedWarned.delete(k);
    dirty.clear();
  }

  /**
   * Network and SubnetLen: leases outside them (hostile or stale data) are never programmed.
   * The underlay's networks and etcd's addresses: no lease may capture them (backend/screen.ts).
   * onLinkPublicIPs is the live set: per-peer rules read it when they judge a peer.
   */
  private ctxOf(family: IPFamily): DesiredContext {
    return {
      onLinkPublicIPs: this.onLinkPublicIPs,
      network: (family === 4 ? this.config?.network : this.config?.ipv6Network) ?? null,
      subnetLen: family === 4 ? this.config?.subnetLen : this.config?.ipv6SubnetLen,
      underlayNetworks: family === 4 ? this.guard.underlayNetworks : [],
      protectedIPs: this.guard.protectedIPs,
    };
  }

  /**
   * False when the backend's on-link answer is empty by definition: vxlan without DirectRouting
   * (vxlanOnLinkPeers). Then a join skips the lookup step (a copy of the peer list and two async
   * hops). Anything else — host-gw, DirectRouting in any spelling the parser accepts — looks up.
   */
  private onLinkCanMatter(): boolean {
    const b = this.config?.backend;
    if (b === undefined || b.type !== 'vxlan') return true;
    const dr = b.raw.DirectRouting;
    return dr !== undefined && dr !== false;
  }

  /** Every current peer's address looked up (a new set: the engines are rebuilt after it). */
  private async lookUpAllOnLink(backend: Backend, v6: Backend | undefined, current: readonly Lease[]): Promise<void> {
    const onLink = new Set(hasOnLinkPeers(backend) ? await backend.onLinkPeers(current, this.underlay!) : []);
    // Dual stack: the IPv6 peers' PublicIPv6 too (addresses of both families in one set).
    if (hasOnLinkPeers(v6)) for (const ip of await v6.onLinkPeers(current, this.underlay!)) onLink.add(ip);
    this.onLinkPublicIPs = onLink;
  }

  /** Look up only `leases`' addresses; update the live set in place; the addresses whose answer changed. */
  private async lookUpOnLink(backend: Backend, v6: Backend | undefined, leases: readonly Lease[]): Promise<string[]> {
    if (leases.length === 0) return [];
    const found = new Set(hasOnLinkPeers(backend) ? await backend.onLinkPeers(leases, this.underlay!) : []);
    if (hasOnLinkPeers(v6)) for (const ip of await v6.onLinkPeers(leases, this.underlay!)) found.add(ip);
    const flipped: string[] = [];
    for (const l of leases) {
      for (const ip of [l.attrs.PublicIP, l.attrs.PublicIPv6]) {
        if (typeof ip !== 'string' || found.has(ip) === this.onLinkPublicIPs.has(ip)) continue;
        if (found.has(ip)) this.onLinkPublicIPs.add(ip);
        else this.onLinkPublicIPs.delete(ip);
        flipped.push(ip);
      }
    }
    return flipped;
  }

  private recomputeQueued = false;
  private peerSetDirty = false;
  /** The next recompute rebuilds everything (start, snapshot, our lease changed). */
  private wholeDirty = true;
  /** Peer keys changed since the last recompute. */
  private dirtyKeys = new Set<string>();
  /** The other of the two sets recomputeStep alternates (emptied once its step has judged them). */
  private spareDirtyKeys = new Set<string>();
  /** A recompute step is between its start and its end (awaiting on-link lookups). */
  private recomputeBusy = false;
  /** Per-peer desired states, one per family path (primary first); empty: desired() as a whole. */
  private engines: { engine: IncrementalDesired; backend: Backend; reconciler: Reconciler; dataPath: string; suffix: string }[] = [];
  private readonly departed: DepartedPeers;
  private departedTimer: NodeJS.Timeout | null = null;

  /** Recompute when the next held peer's grace ends, so its routes go then. */
  private armDepartedTimer(): void {
    const next = this.departed.nextExpiryMs();
    if (this.departedTimer !== null) clearTimeout(this.departedTimer);
    this.departedTimer = null;
    if (next === null || this.phaseValue === 'stopping' || this.phaseValue === 'stopped') return;
    this.departedTimer = setTimeout(() => {
      this.departedTimer = null;
      this.scheduleRecompute(false);
    }, next + 10);
  }

  private readonly skippedWarned = new Map<string, string>();
  /** Between the manager's 'lost' and the next 'lease': tells a re-acquire from a rewrite. */
  private leaseLost = false;
  private configWatch: ConfigWatch | null = null;
  private warnSkippedOnce(key: string, reason: string, seen?: Set<string>): void {
    seen?.add(key);
    if (this.skippedWarned.get(key) === reason) return;
    this.skippedWarned.set(key, reason);
    this.log.warn('peer lease skipped', { key, reason });
  }

  /**
   * The first reconcile must succeed before READY=1. A failure is retried with a bounded
   * backoff (the reconciler logs which change failed).
   */
  private async reconcileUntilConverged(signal: AbortSignal, reconciler: Reconciler = this.reconciler!): Promise<void> {
    const backoff = new Backoff({ initialMs: 100, maxMs: 5000 });
    for (;;) {
      try {
        await reconciler.reconcile();
        return;
      } catch (err) {
        if (signal.aborted) throw err;
        const delay = backoff.next();
        this.log.warn('programming peers failed; retrying', { error: describeError(err), retryInMs: delay });
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  /** Take `lease` as ours: rewrite subnet.env and recompute desired state. */
  private async adoptLease(lease: Lease, previous?: Lease): Promise<void> {
    this.own = lease;
    const wasLost = this.leaseLost;
    this.leaseLost = false;
    await this.writeSubnetFile(lease);
    this.emit('lease', lease);
    // Both halves: a dual-stack lease can come back with only its IPv6 subnet changed.
    if (previous && !sameLeaseSubnets(previous, lease)) {
      const msg = `subnet changed from ${formatLeaseSubnets(previous)} to ${formatLeaseSubnets(lease)}: ` +
        `another host took our subnet while our lease was lost; containers must be restarted with the new ${this.opts.subnetFile}`;
      this.log.error(msg);
      this.notifier.status(msg);
    } else if (previous && wasLost) {
      this.log.info('subnet lease re-acquired', { subnet: formatIPv4Cidr(lease.subnet) });
      this.notifier.status(`lease ${formatIPv4Cidr(lease.subnet)} re-acquired`);
    } else if (previous) {
      this.log.info('subnet lease rewritten', { subnet: formatIPv4Cidr(lease.subnet), backendData: lease.attrs.BackendData });
    } else {
      this.log.info('subnet lease acquired', { subnet: formatIPv4Cidr(lease.subnet), key: lease.key });
    }
    // Our lease is an input of every peer's verdict: judge them all again.
    this.wholeDirty = true;
    this.scheduleRecompute(false);
  }

  private async writeSubnetFile(lease: Lease): Promise<void> {
    const config = this.config!;
    const v4 = config.enableIPv4 && config.network !== null;
    const v6 = config.enableIPv6 && config.ipv6Network !== null && lease.ipv6Subnet !== null;
    const text = formatSubnetEnv({
      network: v4 ? formatIPv4Cidr(config.network!) : null,
      subnet: v4 ? `${formatIPv4(lease.subnet.ip + 1)}/${lease.subnet.prefixLen}` : null,
      // flanneld: FLANNEL_IPV6_SUBNET is the subnet's first address, "fc00:0:0:22::1/64".
      ipv6Network: v6 ? formatCidr(config.ipv6Network!) : null,
      ipv6Subnet: v6 ? `${hostAddress(lease.ipv6Subnet!, 1)}/${lease.ipv6Subnet!.prefixLen}` : null,
      // The primary device's MTU: the IPv4 device's (flannel's), or on an IPv6-only network the
      // IPv6 device's (underlay - 70, where flanneld writes underlay - 50 and overfills it).
      mtu: this.setup!.mtu,
      ipMasq: this.opts.ipMasq,
    });
    writeSubnetEnvAtomic(this.opts.subnetFile, text);
    traceStartup('subnet.env written');
    this.log.info('wrote subnet file', { path: this.opts.subnetFile });
  }

  /** FLANNEL_SUBNET (or FLANNEL_IPV6_SUBNET) of an existing subnet file: flannel prefers it when allocating. */
  private async subnetFromFile(): Promise<IPv4Net | null>;
  private async subnetFromFile(name: 'FLANNEL_IPV6_SUBNET'): Promise<IPv6Net | null>;
  private async subnetFromFile(name: 'FLANNEL_SUBNET' | 'FLANNEL_IPV6_SUBNET' = 'FLANNEL_SUBNET'): Promise<IPv4Net | IPv6Net | null> {
    try {
      const vars = await readSubnetEnv(this.opts.subnetFile);
      const value = vars?.[name];
      if (!value) return null;
      return name === 'FLANNEL_SUBNET' ? parseIPv4Cidr(value, false) : parseIPv6Cidr(value, false);
    } catch (err) {
      this.log.warn('ignoring unreadable subnet file', { path: this.opts.subnetFile, error: describeError(err) });
      return null;
    }
  }

  /** The device was recreated (deleted by hand?): a new MAC or MTU must reach our lease and subnet.env. */
  private onDeviceSetup(setup: BackendSetup, path?: FamilyPath): void {
    const before = path ? path.setup : this.setup;
    if (path) path.setup = setup;
    else this.setup = setup;
    const family = path?.family ?? this.backend?.family ?? 4;
    if (before && JSON.stringify(before.backendData) === JSON.stringify(setup.backendData) && before.mtu === setup.mtu) return;
    this.log.warn('overlay device parameters changed; updating lease and subnet file', { backendData: setup.backendData, mtu: setup.mtu });
    if (this.own) void this.writeSubnetFile(this.own).catch((err: unknown) => this.log.error('rewriting subnet file failed', { error: describeError(err) }));
    if (before && JSON.stringify(before.backendData) !== JSON.stringify(setup.backendData)) {
      // Peers must learn the new VtepMAC from our lease, or they keep sending to the old one.
      void this.manager?.setBackendData(setup.backendData, family).catch((err: unknown) =>
        this.log.error('rewriting our lease with the new VtepMAC failed; the next re-acquire writes it', { error: describeError(err) }),
      );
    }
  }

  private directRoutingNetwork(family: IPFamily = 4): IPv4Net | IPv6Net | null {
    const cfg = this.config;
    if (!cfg) return null;
    const network = family === 4 ? cfg.network : cfg.ipv6Network;
    // host-gw routes every peer out of the underlay, as DirectRouting does for peers on our L2.
    if (cfg.backend.type === 'host-gw') return network;
    if (cfg.backend.type !== 'vxlan' || cfg.backend.raw.DirectRouting !== true) return null;
    return network;
  }

  /** --iface & co. and, once the config is known, which families the interface must have. */
  private underlayOptions(config: NetworkConfig | null): Parameters<typeof resolveUnderlay>[0] {
    const o = this.opts;
    return {
      iface: o.iface, ifaceRegex: o.ifaceRegex, publicIp: o.publicIp, publicIpv6: o.publicIpv6, ifaceCanReach: o.ifaceCanReach,
      ipv4: config === null ? false : config.enableIPv4,
      ipv6: config === null ? false : config.enableIPv6,
    };
  }

  private async shutdown(): Promise<void> {
    this.setPhase('stopping');
    this.syncNativeJoin(); // off: no join is written past this point
    if (nativeJoin.owner === this) nativeJoin.owner = null;
    this.notifier.stopping();
    this.unwatchPeers?.();
    await this.configWatch?.stop().catch(() => undefined);
    if (this.departedTimer !== null) clearTimeout(this.departedTimer);
    this.departedTimer = null;
    await this.reconciler?.stop().catch(() => undefined);
    await this.ipv6Path?.reconciler?.stop().catch(() => undefined);
    await this.ipv6Path?.backend.close().catch(() => undefined);
    await this.manager?.close().catch(() => undefined);
    await this.registry?.close().catch(() => undefined);
    await this.backend?.close().catch(() => undefined);
    this.nl?.close();
    for (const c of this.startedComponents.reverse()) {
      await c.stop().catch((err: unknown) => this.log.warn('stopping component failed', { component: c.name, error: describeError(err) }));
    }
    this.setPhase('stopped');
  }
}

