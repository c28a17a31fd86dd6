/**
 * The health component: an HTTP server on --healthz-ip:--healthz-port (flannel's flags; off when
 * the port is 0, as in flannel) and the peer prober.
 *
 *   GET  /healthz   200 "ok" while the process runs (flannel's endpoint)
 *   GET  /readyz    200 "ready", or 503 with the reason (lease, device, peers)
 *   GET  /metrics   Prometheus text format 0.0.4
 *   GET  /status    JSON StatusReport (what `weft status` prints)
 *   POST /probe     probe every peer now (?peer=KEY for one), then answer like /status
 *
 * Started before the core loop (so /healthz answers while weftd waits for etcd); the prober
 * starts once the daemon is ready (probing before routes exist would only report failures).
 * The server only reads state: nothing here can change the kernel or etcd.
 */
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { DaemonComponent, Weftd } from '../daemon/weftd';
import { describeError } from '../errors';
import type { Logger } from '../log';
import { renderExposition } from '../metrics/exposition';
import { daemonMetricFamilies, newCounters, type DaemonCounters } from '../metrics/daemon-metrics';
import type { Pinger } from '../probe/icmp';
import { Prober, type ProbeTarget } from '../probe/prober';
import { weftVersion } from '../version';
import { overlayGateway, readiness, statusReport, type DeviceState, type Readiness, type StatusReport } from './status';

export interface HealthOptions {
  /** Address to listen on ("0.0.0.0", "127.0.0.1", "::"). */
  readonly ip: string;
  /** TCP port; 0 asks the kernel for a free one (tests; weftd itself never starts this with 0). */
  readonly port: number;
  readonly log: Logger;
  /** Probe cycle, ms (default 30 000); 0 disables probes. */
  readonly probeIntervalMs?: number;
  /** Opens the ICMP socket (default: raw-socket, loaded on first use). */
  readonly openPinger?: () => Pinger;
  /** Reads the overlay device's state (default: /sys/class/net/<dev>/flags). */
  readonly deviceState?: (name: string) => DeviceState;
  /** How long /readyz tolerates peer changes not yet programmed. Default 5000 ms. */
  readonly readyGraceMs?: number;
}

export class HealthComponent implements DaemonComponent {
  readonly name = 'health';
  private readonly opts: HealthOptions;
  private readonly log: Logger;
  private readonly counters: DaemonCounters = newCounters();
  private daemon: Weftd | null = null;
  private server: Server | null = null;
  private prober: Prober | null = null;
  /** Since when the reconciler has been behind (a peer change not programmed yet), or null. */
  private behindSince: number | null = null;
  private pendingTimer: NodeJS.Timeout | null = null;

  constructor(opts: HealthOptions) {
    this.opts = opts;
    this.log = opts.log.child({ component: 'health' });
  }

  /** The port actually bound (differs from the option when it was 0). */
  get port(): number {
    const a = this.server?.address();
    return typeof a === 'object' && a !== null ? a.port : this.opts.port;
  }

  async start(daemon: Weftd): Promise<void> {
    this.daemon = daemon;
    daemon.on('lease', () => {
      if (this.counters.subnetEnvSeconds === null) this.counters.subnetEnvSeconds = performance.now() / 1000;
    });
    daemon.on('phase', (phase) => {
      if (phase === 'ready') {
        if (this.counters.readySeconds === null) this.counters.readySeconds = performance.now() / 1000;
        this.startProber();
      }
    });
    daemon.on('peers', () => {
      this.counters.peerUpdates++;
      this.trackProgramming();
    });

    const server = createServer((req, res) => this.handle(req, res));
    server.keepAliveTimeout = 5000;
    await new Promise<void>((resolve) => {
      server.once('error', (err) => {
        // The overlay matters more than its health endpoint: keep running, say so loudly.
        this.log.error(`health server cannot listen on ${this.opts.ip}:${this.opts.port}: ${describeError(err)}; /healthz, /readyz and /metrics are unavailable`);
        this.server = null;
        resolve();
      });
      server.listen(this.opts.port, this.opts.ip, () => {
        this.server = server;
        this.log.debug('health server listening', { address: this.opts.ip, port: this.port });
        resolve();
      });
    });
  }

  async stop(): Promise<void> {
    if (this.pendingTimer !== null) clearTimeout(this.pendingTimer);
    this.pendingTimer = null;
    await this.prober?.stop();
    const server = this.server;
    this.server = null;
    if (server !== null) {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  }

  // ---- state ---------------------------------------------------------------------------------

  private deviceState(): DeviceState {
    const name = this.daemon?.snapshot().backend?.deviceName;
    if (name === undefined) return 'unknown';
    return (this.opts.deviceState ?? sysfsDeviceState)(name);
  }

  readiness(): Readiness {
    const snapshot = this.daemon!.snapshot();
    const r = snapshot.reconciler;
    if (r !== null && r.isUpToDate) this.behindSince = null;
    const behindMs = this.behindSince === null ? 0 : Date.now() - this.behindSince;
    return readiness({ snapshot, device: this.deviceState(), behindMs, graceMs: this.opts.readyGraceMs ?? 5000 });
  }

  status(): StatusReport {
    const snapshot = this.daemon!.snapshot();
    return statusReport({
      snapshot,
      readiness: this.readiness(),
      device: this.deviceState(),
      probes: this.prober?.results() ?? [],
      probesEnabled: this.prober !== null,
      probeError: this.prober?.socketError ?? null,
      version: weftVersion(),
      pid: process.pid,
      uptimeSeconds: Math.round(performance.now()) / 1000,
    });
  }

  metrics(): string {
    return renderExposition(daemonMetricFamilies({
      snapshot: () => this.daemon!.snapshot(),
      readiness: () => this.readiness(),
      probes: () => this.prober?.results() ?? [],
      probeTotals: () => this.prober?.totals ?? null,
      counters: this.counters,
      version: weftVersion(),
    }));
  }

  /**
   * Time from a peer change to the reconciler having applied it. The reconciler has no
   * completion event; while a change is pending this polls its cheap `isUpToDate` every 2 ms
   * (for at most 10 s), and nothing runs when no change is pending.
   */
  private trackProgramming(): void {
    if (this.behindSince === null) this.behindSince = Date.now();
    if (this.pendingTimer !== null) return;
    const started = performance.now();
    const check = (): void => {
      this.pendingTimer = null;
      const s = this.daemon?.snapshot();
      if (!s || s.phase === 'stopping' || s.phase === 'stopped') return;
      const elapsed = performance.now() - started;
      // The daemon hands the new desired state to the reconciler in a microtask, which has run
      // by the first check (a timer): from then on "up to date" means this change is in the kernel.
      if (s.reconciler !== null && s.reconciler.isUpToDate) {
        this.counters.programming.observe(elapsed / 1000);
        this.behindSince = null;
        return;
      }
      if (elapsed > 10_000) return;
      this.pendingTimer = setTimeout(check, 2);
      this.pendingTimer.unref();
    };
    this.pendingTimer = setTimeout(check, 1);
    this.pendingTimer.unref();
  }

  private startProber(): void {
    if (this.prober !== null || (this.opts.probeIntervalMs ?? 30_000) <= 0) return;
    const daemon = this.daemon!;
    this.prober = new Prober({
      log: this.log,
      intervalMs: this.opts.probeIntervalMs ?? 30_000,
      openPinger: this.opts.openPinger ?? defaultPinger,
      targets: () => probeTargets(daemon),
      onReply: (rttMs) => this.counters.probeRtt.observe(rttMs / 1000),
    });
    this.prober.start();
  }

  // ---- HTTP ----------------------------------------------------------------------------------

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://weftd');
    const path = url.pathname;
    // Only known paths become label values: a scanner must not grow the label set.
    if (KNOWN_PATHS.has(path)) this.counters.httpRequests.set(path, (this.counters.httpRequests.get(path) ?? 0) + 1);
    const send = (code: number, type: string, body: string): void => {
      res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    try {
      const method = req.method ?? 'GET';
      if (path === '/probe') {
        if (method !== 'POST') return send(405, 'text/plain', 'use POST\n');
        void this.probeNow(url.searchParams.getAll('peer')).then(
          (report) => send(200, 'application/json', JSON.stringify(report, null, 2) + '\n'),
          (err: unknown) => send(500, 'text/plain', `probe failed: ${describeError(err)}\n`),
        );
        return;
      }
      if (method !== 'GET' && method !== 'HEAD') return send(405, 'text/plain', 'use GET\n');
      switch (path) {
        case '/healthz':
          return send(200, 'text/plain', 'ok\n');
        case '/readyz': {
          const r = this.readiness();
          return send(r.ready ? 200 : 503, 'text/plain', r.ready ? 'ready\n' : `not ready: ${r.reason}\n`);
        }
        case '/metrics':
          return send(200, 'text/plain; version=0.0.4; charset=utf-8', this.metrics());
        case '/status':
          return send(200, 'application/json', JSON.stringify(this.status(), null, 2) + '\n');
        default:
          return send(404, 'text/plain', 'not found: try /healthz, /readyz, /metrics, /status, POST /probe\n');
      }
    } catch (err) {
      this.log.error('health request failed', { path, error: describeError(err) });
      if (!res.headersSent) send(500, 'text/plain', `internal error: ${describeError(err)}\n`);
    }
  }

  private async probeNow(keys: readonly string[]): Promise<StatusReport> {
    if (this.daemon?.phase === 'ready') this.startProber();
    if (this.prober !== null) {
      await this.prober.probeNow(keys.length === 0 ? undefined : keys);
    }
    return this.status();
  }
}

const KNOWN_PATHS = new Set(['/healthz', '/readyz', '/metrics', '/status', '/probe']);

/** Peers reachable through our VXLAN device: those with a vxlan lease (their gateway is on flannel.<VNI>). */
function probeTargets(daemon: Weftd): ProbeTarget[] {
  const s = daemon.snapshot();
  if (s.backend?.type !== 'vxlan' || s.lease === null) return [];
  return s.peers.filter((p) => p.attrs.BackendType === 'vxlan').map((p) => ({ key: p.key, address: overlayGateway(p) }));
}

function defaultPinger(): Pinger {
  // Loaded here, not at the top: the raw-socket addon is needed only once probes start.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { IcmpPinger } = require('../probe/icmp') as typeof import('../probe/icmp');
  return new IcmpPinger();
}

/** IFF_UP from /sys/class/net/<dev>/flags (weftd runs in the network namespace it programs). */
export function sysfsDeviceState(name: string): DeviceState {
  try {
    const flags = parseInt(readFileSync(`/sys/class/net/${name}/flags`, 'utf8').trim(), 16);
    if (Number.isNaN(flags)) return 'unknown';
    return (flags & 0x1) !== 0 ? 'up' : 'down';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'missing' : 'unknown';
  }
}
