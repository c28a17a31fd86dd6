/**
 * `weft status [--json] [--probe] [--healthz-ip=IP] [--healthz-port=PORT]`: ask the local weftd
 * (its health port) how this host is doing and print its lease and expiry, the data path and
 * every peer with its state, last probe RTT and loss.
 *
 * Exit codes: 0 the daemon is ready and every probed peer is reachable; 1 it answered but is not
 * ready or some peer is unreachable over the overlay; 1 also when it does not answer (the message
 * says how to turn the health port on); 2 usage.
 */
import { request } from 'node:http';
import { parseArgs } from 'node:util';
import { WeftError, describeError } from '../errors';
import type { PeerStatus, StatusReport } from '../health/status';
import type { CliIO } from './io';
import { escapeControl } from '../text';

export const DEFAULT_STATUS_PORT = 8471;

const HELP = `usage: weft status [--json] [--probe] [--healthz-ip=IP] [--healthz-port=PORT]

Ask the local weftd, on its health port, for this host's lease and expiry, the data path and each
peer's state (route programmed, overlay probe, RTT, loss).

  --json              print the daemon's report as JSON
  --probe             probe every peer now (3 ICMP echoes each through the overlay) before printing
  --peer=KEY          with --probe: only this peer (lease key, e.g. 10.5.52.0-24); repeatable
  --healthz-ip=IP     where weftd listens (default 127.0.0.1; env WEFT_HEALTHZ_IP, FLANNELD_HEALTHZ_IP)
  --healthz-port=N    weftd's --healthz-port (default ${DEFAULT_STATUS_PORT}; env WEFT_HEALTHZ_PORT, FLANNELD_HEALTHZ_PORT)
  --timeout=MS        give up after this long (default 10000)

Exit status: 0 ready and no peer unreachable; 1 not ready, a peer unreachable, or no answer.`;

export async function runStatusCommand(argv: readonly string[], io: CliIO, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        json: { type: 'boolean' },
        probe: { type: 'boolean' },
        peer: { type: 'string', multiple: true },
        'healthz-ip': { type: 'string' },
        'healthz-port': { type: 'string' },
        timeout: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new WeftError('CONFIG_INVALID', `${describeError(err)}\n\n${HELP}`);
  }
  if (values.help) {
    io.out(HELP);
    return 0;
  }
  const portText = values['healthz-port'] ?? nonEmpty(env.WEFT_HEALTHZ_PORT) ?? nonEmpty(env.FLANNELD_HEALTHZ_PORT) ?? String(DEFAULT_STATUS_PORT);
  const port = Number(portText);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new WeftError('CONFIG_INVALID', `--healthz-port ${JSON.stringify(portText)}: expected a port from 1 to 65535`);
  let host = values['healthz-ip'] ?? nonEmpty(env.WEFT_HEALTHZ_IP) ?? nonEmpty(env.FLANNELD_HEALTHZ_IP) ?? '127.0.0.1';
  if (host === '0.0.0.0') host = '127.0.0.1';
  if (host === '::') host = '::1';
  const timeoutMs = Number(values.timeout ?? 10_000);
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new WeftError('CONFIG_INVALID', `--timeout ${JSON.stringify(values.timeout)}: expected milliseconds`);

  const peers = values.peer ?? [];
  const path = values.probe ? `/probe${peers.length ? '?' + peers.map((p) => `peer=${encodeURIComponent(p)}`).join('&') : ''}` : '/status';
  let body: string;
  try {
    body = await httpText(host, port, values.probe ? 'POST' : 'GET', path, timeoutMs);
  } catch (err) {
    const why = describeError(err);
    // An HTTP answer means something listens there: the port hint would mislead (403: not a local client, 429: probe rate limit).
    const hint = /^HTTP \d{3}:/.test(why)
      ? (why.startsWith('HTTP 403') ? 'Run weft status on the host weftd runs on (its detailed endpoints answer local clients only).' : '')
      : `Is weftd running with --healthz-port=${port}? (the health port is off unless set, as in flannel)`;
    io.err(`weft status: ${/^HTTP \d{3}:/.test(why) ? 'weftd' : 'cannot reach weftd'} at ${host}:${port}: ${why}` + (hint ? `\n${hint}` : ''));
    return 1;
  }
  let report: StatusReport;
  try {
    report = JSON.parse(body) as StatusReport;
  } catch (err) {
    io.err(`weft status: weftd at ${host}:${port} answered something that is not a status report: ${describeError(err)}`);
    return 1;
  }
  io.out(values.json ? JSON.stringify(report, null, 2) : formatStatus(report, Date.now()));
  const unreachable = report.peers.some((p) => p.probe?.state === 'unreachable' || p.probeV6?.state === 'unreachable');
  return report.ready && !unreachable ? 0 : 1;
}

function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v.trim() === '' ? undefined : v.trim();
}

/**
 * Whatever listens on the port answers (weftd, or anything that took the port while weftd was
 * down): the answer is bounded in size and in total time, not only per idle gap.
 */
const MAX_ANSWER_BYTES = 64 * 1024 * 1024;

function httpText(host: string, port: number, method: string, path: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, method, path, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      let bytes = 0;
      res.on('data', (c: Buffer) => {
        bytes += c.length;
        if (bytes > MAX_ANSWER_BYTES) req.destroy(new Error(`answer larger than ${MAX_ANSWER_BYTES} bytes: not weftd's status report`));
        else chunks.push(c);
      });
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode !== 200) reject(new Error(`HTTP ${res.statusCode}: ${text.trim()}`));
        else resolve(text);
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    const deadline = setTimeout(() => req.destroy(new Error(`no complete answer within ${timeoutMs} ms`)), timeoutMs);
    req.on('close', () => clearTimeout(deadline));
    req.on('error', reject);
    req.end();
  });
}

/** The text `weft status` prints. Pure (now: ms since the epoch), for tests. */
export function formatStatus(r: StatusReport, now: number): string {
  const lines: string[] = [];
  lines.push(`weftd ${r.version} (pid ${r.pid}, up ${duration(r.uptimeSeconds)}): ${r.ready ? 'ready' : `NOT READY: ${r.reason}`}`);
  if (r.lease === null) {
    lines.push(`lease      none yet (${r.phase})`);
  } else {
    const l = r.lease;
    const exp = l.expiresAt === null
      ? (l.etcdLeaseId === null ? 'a reservation (never expires)' : 'expiry unknown')
      : `expires ${l.expiresAt} (in ${duration((Date.parse(l.expiresAt) - now) / 1000)})`;
    lines.push(`lease      ${l.subnet} (key ${l.key}), public IP ${l.publicIp}, ${l.state}, ${exp}`);
  }
  const d = r.dataPath;
  lines.push(`data path  ${d.backend ?? '?'} ${d.mode}, device ${d.device ?? '?'} ${d.deviceState}, MTU ${d.mtu ?? '?'}, underlay ${d.underlay ?? '?'} ${d.publicIp ?? ''}`.trimEnd());
  if (r.reconcile !== null) {
    const rep = Object.entries(r.reconcile.repairs).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`).join(', ') || 'none';
    lines.push(`reconcile  ${r.reconcile.runs} runs, ${r.reconcile.failed} failed, repairs: ${rep}${r.reconcile.lastError ? `, last error: ${r.reconcile.lastError}` : ''}`);
  }
  if (!r.probes.enabled) lines.push(`probes     ${r.probes.error ? `disabled: ${r.probes.error}` : 'not started yet'}`);
  else if (r.probes.error) lines.push(`probes     failing: ${r.probes.error}`);
  else if (r.probes.intervalSeconds === 0) lines.push('probes     on demand only (--probe-interval=0): weft status --probe');
  const programmed = r.peers.filter((p) => p.programmed).length;
  // A dual-stack peer counts once: unreachable when either family's probe is.
  const peerState = (p: PeerStatus): string | undefined => (p.probeV6?.state === 'unreachable' ? 'unreachable' : p.probe?.state ?? p.probeV6?.state);
  const count = (s: string): number => r.peers.filter((p) => peerState(p) === s).length;
  lines.push('');
  lines.push(`peers: ${r.peers.length} known, ${programmed} programmed, ${count('reachable')} reachable, ${count('unreachable')} unreachable, ${count('unknown') + r.peers.filter((p) => p.probe === null).length} not probed yet`);
  if (r.peers.length > 0) {
    // Cells come from weftd's report (etcd data): escaped whole, a newline would forge a row.
    // Dual stack: a second row for the peer's IPv6 half and its ICMPv6 probe.
    const halves = r.peers.flatMap((p) => (p.probeV6 != null && p.ipv6Subnet != null ? [p, { ...p, subnet: p.ipv6Subnet, publicIp: '', probe: p.probeV6 }] : [p]));
    const rows = halves.map((p) => peerRow(p, now).map((c) => escapeControl(c)));
    const head = ['SUBNET', 'PUBLIC IP', 'ROUTE', 'PROBE', 'RTT', 'LOSS', 'LAST PROBE'];
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
    const fmt = (cols: readonly string[]): string => cols.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
    lines.push(fmt(head));
    for (const row of rows) lines.push(fmt(row));
  }
  return lines.join('\n');
}

function peerRow(p: PeerStatus, now: number): string[] {
  const pr = p.probe;
  const state = pr === null ? '-' : pr.state === 'unreachable' ? `UNREACHABLE${pr.lastError ? ` (${pr.lastError})` : ''}` : pr.state;
  return [
    p.subnet,
    p.publicIp,
    p.programmed ? 'yes' : 'NO',
    state,
    pr?.lastRttMs == null ? '-' : `${pr.lastRttMs.toFixed(3)} ms`,
    pr?.loss == null ? '-' : `${Math.round(pr.loss * 100)}%`,
    pr?.lastProbeAt == null ? '-' : `${duration((now - Date.parse(pr.lastProbeAt)) / 1000)} ago`,
  ];
}

function duration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  return `${Math.floor(s / 86400)}d${String(Math.floor((s % 86400) / 3600)).padStart(2, '0')}h`;
}
