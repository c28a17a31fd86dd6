/**
 * The health component: an HTTP server on --healthz-ip:--healthz-port (flannel's flags; off when
 * the port is 0, as in flannel) and the peer prober.
 *
 *   GET  /healthz   200 "ok" while the process runs (flannel's endpoint)             anyone
 *   GET  /readyz    200 "ready", or 503 with the reason (lease, device, peers)        anyone
 *   GET  /metrics   Prometheus text format 0.0.4                                      loopback*
 *   GET  /status    JSON StatusReport (what `weft status` prints)                     loopback*
 *   POST /probe     probe every peer now (?peer=KEY for one), then answer like /status  loopback
 *
 * Who may ask (docs/security.md): the port listens on --healthz-ip (0.0.0.0 by default, as in
 * flannel), so every container of the overlay and every machine on the underlay reaches it.
 * /healthz and /readyz say no more than flannel's "ok". The detailed endpoints give away the
 * cluster map (PublicIPs, lease keys, errors): they answer only clients connected over loopback
 * (`weft status` on the host), unless --healthz-expose-details (*) opens /metrics and /status to
 * everyone (a Prometheus on another machine). POST /probe makes this host send 3 echoes to every
 * peer: it is never served to other machines, and rounds are serialised (callers during a round
 * get that round's report) and rate-limited (a burst of PROBE_BURST, then one per PROBE_REFILL_MS).
 *
 * Hostile clients: a request handler never throws out (every failure is a 4xx/5xx answer), no
 * request body is read (413 and close), header size and count are bounded, a client has
 * HEADERS_TIMEOUT_MS to send its headers (slowloris), and one address holds at most
 * MAX_CONNECTIONS_PER_ADDRESS connections.
 *
 * Started before the core loop (so /healthz answers while weftd waits for etcd); the prober
 * starts once the daemon is ready (probing before routes exist would only report failures).
 * Nothing here can change the kernel or etcd.
 */
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { monotonicMs } from '../clock';
import { createDeadline, type Deadline } from '../deadline';
import type { DaemonComponent, DaemonView } from '../daemon/components';
import { describeError } from '../errors';
import { formatIPv4Cidr, type IPFamily } from '../ip';
import { leaseHalf } from '../lease/family';
import type { Logger } from '../log';
import { renderExposition } from '../metrics/exposition';
import { daemonMetricFamilies, newCounters, type DaemonCounters, type HttpRejectReason } from '../metrics/daemon-metrics';
import type { Pinger } from '../probe/icmp';
import { Prober, type ProbeTarget } from '../probe/prober';
import { weftVersion } from '../version';
import { probeAddress, programmedSubnets, readiness, statusReport, type DeviceState, type Readiness, type StatusReport } from './status';

/** Time a client has to send a request's headers; slow clients (slowloris) are cut off after it. */
export const HEADERS_TIMEOUT_MS = 5000;
/** Whole request, headers included (we never read a body). */
const REQUEST_TIMEOUT_MS = 10_000;
/** Header bytes (Node's default is 16 KiB; our requests are one line and a Host header). */
const MAX_HEADER_BYTES = 8192;
const MAX_HEADERS_COUNT = 64;
/** Connections open at once from one client address, and in total (file descriptors). */
export const MAX_CONNECTIONS_PER_ADDRESS = 32;
const MAX_CONNECTIONS = 512;
/** On-demand probe rounds: a burst of this many, then one per PROBE_REFILL_MS. */
export const PROBE_BURST = 3;
export const PROBE_REFILL_MS = 2000;

export interface HealthOptions {
  /** Address to listen on ("0.0.0.0", "127.0.0.1", "::"). */
  readonly ip: string;
  /** TCP port; 0 asks the kernel for a free one (tests; weftd itself never starts this with 0). */
  readonly port: number;
  readonly log: Logger;
  /** Probe cycle, ms (--probe-interval); 0: no cycle, on-demand rounds (POST /probe) only. */
  readonly probeIntervalMs: number;
  /** Opens the ICMP socket (default: raw-socket, loaded on first use). */
  readonly openPinger?: (family: IPFamily) => Pinger;
  /** Reads the overlay device's state (default: /sys/class/net/<dev>/flags). */
  readonly deviceState?: (name: string) => DeviceState;
  /** How long /readyz tolerates peer changes not yet programmed. Default 5000 ms. */
  readonly readyGraceMs?: number;
  /**
   * --healthz-expose-details: answer /metrics and /status to every client, not only loopback
   * ones. POST /probe stays loopback-only whatever this says.
   */
  readonly exposeDetails?: boolean;
}

export class HealthComponent implements DaemonComponent {
  readonly name = 'health';
  private readonly opts: HealthOptions;
  private readonly log: Logger;
  private readonly counters: DaemonCounters = newCounters();
  private daemon: DaemonView | null = null;
  private server: Server | null = null;
  private prober: Prober | null = null;
  /** Since when the reconciler has been behind (a peer change not programmed yet), or null. */
  private behindSince: number | null = null;
  /** monotonicMs() at behindSince: the programming histogram's start. */
  private behindStarted: number | null = null;
  /** The on-demand probe round running now: later callers wait for it instead of starting one. */
  private probeRound: Promise<StatusReport> | null = null;
  /** Token bucket of on-demand rounds. */
  private probeTokens = PROBE_BURST;
  private probeTokensAt = monotonicMs();
  private readonly connectionsByAddress = new Map<string, number>();

  constructor(opts: HealthOptions) {
    this.opts = opts;
    this.log = opts.log.child({ component: 'health' });
  }

  /** The port actually bound (differs from the option when it was 0). */
  get port(): number {
    const a = this.server?.address();
    return typeof a === 'object' && a !== null ? a.port : this.opts.port;
  }

  async start(daemon: DaemonView): Promise<void> {
    this.daemon = daemon;
    daemon.on('lease', () => {
      if (this.counters.subnetEnvSeconds === null) this.counters.subnetEnvSeconds = monotonicMs() / 1000;
    });
    daemon.on('phase', (phase) => {
      if (phase === 'ready') {
        if (this.counters.readySeconds === null) this.counters.readySeconds = monotonicMs() / 1000;
        this.startProber();
      }
    });
    daemon.on('peers', () => {
      this.counters.peerUpdates++;
      this.changeSeen();
    });
    daemon.on('programmed', () => this.changeProgrammed());

    const server = createServer({
      headersTimeout: HEADERS_TIMEOUT_MS,
      requestTimeout: REQUEST_TIMEOUT_MS,
      // Node enforces the two timeouts above by a sweep, a setInterval that runs even with no
      // connection open (at 1 s it was an idle daemon's most frequent wake-up). The headers
      // deadline is ours instead, per connection (admit()); the sweep is only the backstop.
      connectionsCheckingInterval: 2 ** 31 - 1,
      maxHeaderSize: MAX_HEADER_BYTES,
      keepAliveTimeout: 5000,
    }, (req, res) => {
      this.headersReceived(req.socket, res);
      try {
        this.handle(req, res);
      } catch (err) {
        // handle() answers every failure itself; this is the last net (a bug), never a crash.
        this.log.error('health request handler failed', { error: describeError(err) });
        res.destroy();
      }
    });
    server.maxHeadersCount = MAX_HEADERS_COUNT;
    server.maxConnections = MAX_CONNECTIONS;
    server.on('connection', (socket) => this.admit(socket));
    await new Promise<void>((resolve) => {
      const onListenError = (err: Error): void => {
        // The overlay matters more than its health endpoint: keep running, say so loudly.
        this.log.error(`health server cannot listen on ${this.opts.ip}:${this.opts.port}: ${describeError(err)}; /healthz, /readyz and /metrics are unavailable`);
        this.server = null;
        resolve();
      };
      server.once('error', onListenError);
      server.listen(this.opts.port, this.opts.ip, () => {
        server.off('error', onListenError);
        // Once listening, the server still emits 'error' when accept() fails (EMFILE under a
        // connection flood): an event without a listener would throw and take weftd down.
        server.on('error', (err) => this.onServerError(err));
        this.server = server;
        this.log.debug('health server listening', { address: this.opts.ip, port: this.port });
        resolve();
      });
    });
  }

  async stop(): Promise<void> {
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
    const paths = this.daemon?.snapshot().dataPaths ?? [];
    const name = paths[0]?.device;
    if (name === undefined) return 'unknown';
    const state = (this.opts.deviceState ?? sysfsDeviceState)(name);
    // Dual stack: flannel-v6.<VNI> counts too (the worse of the two is reported).
    const v6 = paths[1]?.device;
    if (v6 === undefined || state !== 'up') return state;
    return (this.opts.deviceState ?? sysfsDeviceState)(v6);
  }

  readiness(): Readiness {
    const snapshot = this.daemon!.snapshot();
    if (snapshot.dataPaths[0]?.reconcile?.upToDate === true) {
      this.behindSince = null;
      this.behindStarted = null;
    }
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
      probeIntervalSeconds: this.opts.probeIntervalMs / 1000,
      version: weftVersion(),
      pid: process.pid,
      uptimeSeconds: Math.round(monotonicMs()) / 1000,
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
   * Time from a peer change to the reconciler having applied it: from the first 'peers' event
   * not yet programmed to the daemon's 'programmed' event (event-driven: it polled a whole
   * snapshot every 2 ms per change before, ~9 % of a join's CPU with the health port on).
   */
  private changeSeen(): void {
    if (this.behindSince === null) {
      this.behindSince = Date.now();
      this.behindStarted = monotonicMs();
    }
  }

  private changeProgrammed(): void {
    if (this.behindStarted === null) return;
    this.counters.programming.observe((monotonicMs() - this.behindStarted) / 1000);
    this.behindSince = null;
    this.behindStarted = null;
  }

  private startProber(): void {
    if (this.prober !== null) return;
    const daemon = this.daemon!;
    this.prober = new Prober({
      log: this.log,
      intervalMs: this.opts.probeIntervalMs,
      openPinger: this.opts.openPinger ?? defaultPinger,
      targets: () => probeTargets(daemon),
      onReply: (rttMs) => this.counters.probeRtt.observe(rttMs / 1000),
    });
    // --probe-interval=0: the prober answers POST /probe (weft status --probe) and sends nothing else.
    if (this.opts.probeIntervalMs > 0) this.prober.start();
  }

  // ---- HTTP ----------------------------------------------------------------------------------

  private lastServerError = 0;

  /** Accept errors: logged at most once a minute, the server keeps listening. */
  private onServerError(err: Error): void {
    const now = monotonicMs();
    if (now - this.lastServerError < 60_000) return;
    this.lastServerError = now;
    this.log.warn(`health server: ${describeError(err)} (e.g. out of file descriptors under a connection flood); still listening`);
  }

  /** Per-address connection cap: one client cannot hold every slot (slowloris from one container). */
  private admit(socket: Socket): void {
    const address = socket.remoteAddress ?? '?';
    const n = (this.connectionsByAddress.get(address) ?? 0) + 1;
    if (n > MAX_CONNECTIONS_PER_ADDRESS) {
      this.rejected('too_many_connections');
      socket.destroy();
      return;
    }
    this.connectionsByAddress.set(address, n);
    this.armHeadersDeadline(socket);
    socket.once('close', () => {
      this.deadlines.get(socket)?.close();
      this.deadlines.delete(socket);
      const left = (this.connectionsByAddress.get(address) ?? 1) - 1;
      if (left <= 0) this.connectionsByAddress.delete(address);
      else this.connectionsByAddress.set(address, left);
    });
  }

  /**
   * A connection must send a request's headers within HEADERS_TIMEOUT_MS (slowloris). One
   * Deadline per connection (src/deadline.ts): a scrape's headers nearly always come in time, and
   * a cleared setTimeout would still wake the loop at its expiry, once per scrape.
   */
  private readonly deadlines = new Map<Socket, Deadline>();

  private armHeadersDeadline(socket: Socket): void {
    let deadline = this.deadlines.get(socket);
    if (deadline === undefined) {
      deadline = createDeadline(() => socket.destroy(), { keepsProcessAlive: false });
      this.deadlines.set(socket, deadline);
    }
    deadline.arm(HEADERS_TIMEOUT_MS);
  }

  /** Headers in: no deadline while we answer; the next request on a kept-alive connection gets a new one. */
  private headersReceived(socket: Socket, res: ServerResponse): void {
    this.deadlines.get(socket)?.cancel();
    res.once('finish', () => {
      if (!socket.destroyed) this.armHeadersDeadline(socket);
    });
  }

  private rejected(reason: HttpRejectReason): void {
    this.counters.httpRejected.set(reason, (this.counters.httpRejected.get(reason) ?? 0) + 1);
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const send = (code: number, type: string, body: string, headers: Record<string, string> = {}): void => {
      if (res.headersSent || res.destroyed) return;
      res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store', ...headers });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    const refuse = (reason: HttpRejectReason, code: number, body: string, headers: Record<string, string> = {}): void => {
      this.rejected(reason);
      send(code, 'text/plain', body, headers);
    };
    let path = '?';
    try {
      const target = parseTarget(req.url);
      if (target === null) return refuse('bad_target', 400, 'bad request target: expected an absolute path such as /healthz\n', { connection: 'close' });
      path = target.path;
      // Only known paths become label values: a scanner must not grow the label set.
      if (KNOWN_PATHS.has(path)) this.counters.httpRequests.set(path, (this.counters.httpRequests.get(path) ?? 0) + 1);
      // No endpoint takes a body; reading (or draining) one would let a client make us work.
      if (hasBody(req)) return refuse('body', 413, 'no request body expected\n', { connection: 'close' });
      const method = req.method ?? 'GET';
      const local = isLocalClient(req.socket.remoteAddress, req.socket.localAddress);
      if (path === '/probe') {
        if (method !== 'POST') return send(405, 'text/plain', 'use POST\n');
        if (!local) return refuse('forbidden', 403, 'POST /probe is served to local clients only (weft status --probe on the host)\n');
        this.probeNow(target.query.getAll('peer')).then(
          (report) => (report === null
            ? refuse('rate_limited', 429, `too many probe rounds: try again in ${Math.ceil(PROBE_REFILL_MS / 1000)} s\n`, { 'retry-after': String(Math.ceil(PROBE_REFILL_MS / 1000)) })
            : send(200, 'application/json', JSON.stringify(report, null, 2) + '\n')),
          (err: unknown) => {
            this.log.error('on-demand probe failed', { error: describeError(err) });
            send(500, 'text/plain', `probe failed: ${describeError(err)}\n`);
          },
        );
        return;
      }
      if (method !== 'GET' && method !== 'HEAD') return send(405, 'text/plain', 'use GET\n');
      switch (path) {
        case '/healthz':
          return send(200, 'text/plain', 'ok\n');
        case '/readyz': {
          const r = this.readiness();
          if (r.ready) return send(200, 'text/plain', 'ready\n');
          // The reason can name subnets, peers and kernel errors: local clients only.
          const detail = local || (this.opts.exposeDetails ?? false);
          return send(503, 'text/plain', detail ? `not ready: ${r.reason}\n` : 'not ready\n');
        }
        case '/metrics':
        case '/status':
          if (!local && !(this.opts.exposeDetails ?? false)) {
            return refuse('forbidden', 403, `${path} is served to local clients only (weftd --healthz-expose-details serves it to everyone)\n`);
          }
          return path === '/metrics'
            ? send(200, 'text/plain; version=0.0.4; charset=utf-8', this.metrics())
            : send(200, 'application/json', JSON.stringify(this.status(), null, 2) + '\n');
        default:
          return send(404, 'text/plain', 'not found: try /healthz, /readyz, /metrics, /status, POST /probe\n');
      }
    } catch (err) {
      this.log.error('health request failed', { path, error: describeError(err) });
      send(500, 'text/plain', 'internal error (see weftd\'s log)\n');
    }
  }

  /**
   * One on-demand round at a time: a caller arriving during a round gets that round's report
   * (its ?peer= selection is then ignored: the report covers every peer anyway). A new round
   * takes a token; none left → null (the caller answers 429).
   */
  private probeNow(keys: readonly string[]): Promise<StatusReport | null> {
    if (this.probeRound !== null) return this.probeRound;
    const now = monotonicMs();
    this.probeTokens = Math.min(PROBE_BURST, this.probeTokens + (now - this.probeTokensAt) / PROBE_REFILL_MS);
    this.probeTokensAt = now;
    if (this.probeTokens < 1) return Promise.resolve(null);
    this.probeTokens -= 1;
    const round = (async (): Promise<StatusReport> => {
      if (this.daemon?.phase === 'ready') this.startProber();
      if (this.prober !== null) await this.prober.probeNow(keys.length === 0 ? undefined : keys);
      return this.status();
    })();
    this.probeRound = round;
    const clear = (): void => {
      if (this.probeRound === round) this.probeRound = null;
    };
    round.then(clear, clear);
    return round;
  }
}

const KNOWN_PATHS = new Set(['/healthz', '/readyz', '/metrics', '/status', '/probe']);

/**
 * The path and query of a request target, or null unless it is origin-form ("/path?query",
 * RFC 9112 §3.2.1). Not `new URL(target, base)`: "//x:abc/" is a valid scheme-relative
 * reference to host "x" with port "abc", and URL throws on it.
 */
export function parseTarget(target: string | undefined): { path: string; query: URLSearchParams } | null {
  if (target === undefined || !target.startsWith('/')) return null;
  const q = target.indexOf('?');
  const path = q < 0 ? target : target.slice(0, q);
  return { path, query: new URLSearchParams(q < 0 ? '' : target.slice(q + 1)) };
}

function hasBody(req: IncomingMessage): boolean {
  const len = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (len !== undefined && len !== '0');
}

/**
 * A process on this host (in this network namespace): connected over loopback, or to one of our
 * own addresses from that same address (what the kernel picks when `weft status` talks to a
 * --healthz-ip that is not loopback). A packet from elsewhere cannot carry a loopback source (the
 * kernel drops it as a martian), and a forged source equal to ours never completes the TCP
 * handshake (our SYN-ACK goes to ourselves), so neither can be spoofed by a container.
 */
export function isLocalClient(remote: string | undefined, local: string | undefined): boolean {
  return isLoopback(remote) || (remote !== undefined && remote === local);
}

/** 127.0.0.0/8, ::1 and their IPv4-mapped forms. */
export function isLoopback(address: string | undefined): boolean {
  if (address === undefined) return false;
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
  return v4.startsWith('127.') || address === '::1';
}

/**
 * Peers to probe, per data path (dual stack: IPv4's and IPv6's, each with its own family): those
 * the backend accepted and the kernel has a route for in that family (the path's last applied
 * desired state), with a lease of the path's backend type. Not every key in etcd: a lease the
 * backend refused (outside the Network, overlapping, undecodable) would otherwise make this host
 * send ICMP wherever an etcd writer points it. The address is status.ts's probeAddress().
 */
export function probeTargets(daemon: Pick<DaemonView, 'snapshot'>): ProbeTarget[] {
  const s = daemon.snapshot();
  if (s.lease === null) return [];
  const out: ProbeTarget[] = [];
  for (const path of s.dataPaths) {
    const type = path.backend;
    if (!PROBED_BACKENDS.has(type)) continue;
    const programmed = programmedSubnets(path.reconcile?.applied ?? null);
    for (const p of s.peers) {
      const subnet = leaseHalf(p, path.family).subnet;
      if (p.attrs.BackendType !== type || subnet === null || !programmed.has(formatIPv4Cidr(subnet))) continue;
      out.push({ key: p.key, address: probeAddress(type, subnet), family: path.family });
    }
  }
  return out;
}

/** Backends whose peers have an address the probe can reach (udp's do too, but its pump is probed by its own counters). */
const PROBED_BACKENDS = new Set(['vxlan', 'wireguard', 'host-gw']);

function defaultPinger(family: IPFamily): Pinger {
  // Loaded here, not at the top: the raw-socket addon is needed only once probes start.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { IcmpPinger } = require('../probe/icmp') as typeof import('../probe/icmp');
  return new IcmpPinger({ family });
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
