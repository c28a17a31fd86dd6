#!/usr/bin/env node
/**
 * weft's control-plane benchmark: `npm run bench` (as root; builds first) or
 * `node dist/bench/run.js [--quick] [--out FILE]`.
 *
 * Builds labs of hosts in network namespaces (the same Lab as the e2e tests), measures, prints
 * every figure beside its target (issue #6) and flannel v0.12's figure on this machine, and
 * writes the raw numbers as JSON (default bench/results/control-plane.json). Namespaces are
 * prefixed wb<pid>- and deleted at the end, also on failure.
 *
 *   lab of 10 hosts:  exec → subnet.env, exec → READY=1 (restart and cold), join latency
 *   lab of 30 hosts:  join latency; memory after 10 s idle with 30 peers; idle CPU over 30 s
 *   lab of 2 hosts:   a burst of 1000 synthetic peer leases → all programmed; memory after it
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg as osLoadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { requireRoot } from '../src/lab';
import { median, percentile } from './lib/harness';
import {
  measureBurst, measureIdle, measureJoins, measureStartup, withLab,
  type BurstFigures, type IdleFigures, type JoinFigures, type StartupFigures,
} from './lib/scenarios';

interface Row {
  readonly figure: string;
  readonly weft: string;
  readonly target: string;
  readonly flannel: string;
  /** true met, false missed, null no target. */
  readonly met: boolean | null;
  readonly note?: string;
}

const MB = 1024 * 1024;

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean' },
      out: { type: 'string' },
      'skip-30': { type: 'boolean' },
      only: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write('usage: node dist/bench/run.js [--quick] [--skip-30] [--only LIST] [--out FILE]\n  --quick      fewer repetitions (a smoke run; figures are noisier)\n  --skip-30    skip the 30-host lab\n  --only LIST  some of: startup,join10,join30,idle,burst\n');
    return 0;
  }
  requireRoot();
  const quick = values.quick === true;
  const only = new Set((values.only ?? 'startup,join10,join30,idle,burst').split(',').map((x) => x.trim()));
  if (values['skip-30'] === true) {
    only.delete('join30');
    only.delete('idle');
  }
  const out = resolve(values.out ?? join(__dirname, '..', '..', 'bench', 'results', 'control-plane.json'));
  // Under /run, like /run/flannel/subnet.env in production (a tmpfs on most hosts; not here).
  const scratch = mkdtempSync(join(existsSync('/run') ? '/run' : tmpdir(), `wb${process.pid}-`));
  const progress = (line: string): void => void process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
  const lab = (tag: string, hosts: number, networkConfig?: Record<string, unknown>) => ({
    name: `wb${process.pid}${tag}`, prefix: `wb${process.pid}${tag}-`, stateDir: join(scratch, tag), hosts, progress,
    ...(networkConfig ? { networkConfig } : {}),
  });

  const results: {
    startup: StartupFigures[]; join10: JoinFigures | null; join30: JoinFigures | null; idle: IdleFigures[]; burst: BurstFigures | null;
    loadavg: { start: number[]; end: number[] };
  } = { startup: [], join10: null, join30: null, idle: [], burst: null, loadavg: { start: loadavg(), end: [] } };
  const started = Date.now();
  try {
    if (only.has('startup') || only.has('join10')) {
      await withLab(lab('a', 10), async (l) => {
        if (only.has('startup')) {
          progress('start-up: exec → subnet.env and exec → READY=1');
          results.startup.push(await measureStartup(l, 'h1', quick ? 3 : 10, false, progress));
          results.startup.push(await measureStartup(l, 'h2', quick ? 2 : 5, true, progress));
        }
        if (only.has('join10')) {
          progress('join latency at 10 hosts');
          results.join10 = await measureJoins(l, quick ? 10 : 50, '10.5.0.0/16', progress);
        }
      });
    }
    if (only.has('join30') || only.has('idle')) {
      await withLab(lab('b', 30), async (l) => {
        // Idle first: a cluster that came up and sits, before the joins churn it.
        if (only.has('idle')) {
          progress('memory and CPU at idle');
          results.idle.push(await measureIdle(l, 1, '10.5.0.0/16', quick ? 5 : 10, quick ? 10 : 30, progress));
        }
        if (only.has('join30')) {
          progress('join latency at 30 hosts');
          results.join30 = await measureJoins(l, quick ? 10 : 50, '10.5.0.0/16', progress);
        }
        if (only.has('idle')) {
          // Restarted daemons settle longer: V8 still trims its heap for ~30 s after a start.
          results.idle.push(await measureIdle(l, 0, '10.5.0.0/16', quick ? 10 : 40, quick ? 10 : 30, progress, ['--healthz-port=0']));
        }
      });
    }
    if (only.has('burst')) {
      const burstNet = '10.64.0.0/13';
      await withLab(lab('c', 2, { Network: burstNet, SubnetLen: 24, Backend: { Type: 'vxlan' } }), async (l) => {
        progress('burst of 1000 synthetic peer leases');
        results.burst = await measureBurst(l, 1000, burstNet, progress);
      });
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }

  results.loadavg.end = loadavg();
  const rows = table(results);
  const text = formatTable(rows);
  process.stdout.write(`\nweft control-plane benchmark (${quick ? 'quick' : 'full'} run, ${((Date.now() - started) / 1000).toFixed(0)} s, node ${process.version}, `
    + `${cpus().length} cores, load average ${results.loadavg.start[0]!.toFixed(2)} at the start, ${results.loadavg.end[0]!.toFixed(2)} at the end)\n\n${text}\n`);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), node: process.version, quick, rows, raw: results }, null, 2) + '\n');
  process.stdout.write(`\nraw figures: ${out}\n`);
  return 0;
}

const ms = (v: number): string => `${v.toFixed(1)} ms`;
const mb = (v: number): string => `${(v / MB).toFixed(1)} MB`;

function loadavg(): number[] {
  return osLoadavg();
}

function table(r: {
  startup: StartupFigures[]; join10: JoinFigures | null; join30: JoinFigures | null; idle: IdleFigures[]; burst: BurstFigures | null;
}): Row[] {
  const rows: Row[] = [];
  for (const s of r.startup) {
    const kind = s.mode.startsWith('cold') ? 'cold' : 'restart';
    const env = median(s.subnetEnvMs);
    rows.push({ figure: `exec → subnet.env, ${kind} (median of ${s.runs}; max)`, weft: `${ms(env)}; ${ms(Math.max(...s.subnetEnvMs))}`, target: '≤ 100 ms', flannel: '40–55 ms', met: env <= 100 });
    rows.push({ figure: `exec → READY=1, ${kind} (median; max)`, weft: `${ms(median(s.readyMs))}; ${ms(Math.max(...s.readyMs))}`, target: '—', flannel: 'before routes', met: null });
  }
  for (const [label, j, targeted] of [['10', r.join10, false], ['30', r.join30, true]] as const) {
    if (j === null) continue;
    const p50 = median(j.allHostsMs);
    const p99 = percentile(j.allHostsMs, 99);
    rows.push({ figure: `join (lease visible in etcd) → route on every host, ${label} hosts, p50 (${j.joins} joins)`, weft: ms(p50), target: targeted ? '≤ 5 ms' : '—', flannel: '~7 ms', met: targeted ? p50 <= 5 : null });
    rows.push({ figure: `join → route on every host, ${label} hosts, p99`, weft: ms(p99), target: targeted ? '≤ 20 ms' : '—', flannel: '', met: targeted ? p99 <= 20 : null });
    rows.push({ figure: `join → route on one host, ${label} hosts, p50 / p99`, weft: `${ms(median(j.perHostMs))} / ${ms(percentile(j.perHostMs, 99))}`, target: '—', flannel: '', met: null });
    rows.push({ figure: `put sent → route on every host, ${label} hosts, p50 / p99`, weft: `${ms(median(j.fromSendMs))} / ${ms(percentile(j.fromSendMs, 99))}`, target: '—', flannel: '', met: null,
      note: `includes etcd's commit (put sent → visible: p50 ${ms(median(j.etcdCommitMs))}, p99 ${ms(percentile(j.etcdCommitMs, 99))})` });
  }
  if (r.burst !== null) {
    const all = Math.max(...r.burst.programmedMs);
    rows.push({ figure: `${r.burst.peers} synthetic peer leases written → all programmed (${r.burst.hosts} hosts; slowest)`, weft: ms(all), target: '≤ 1000 ms', flannel: '', met: all <= 1000,
      note: `etcd took the ten transactions in ${ms(r.burst.writeMs)}; last write acknowledged → all programmed: ${ms(Math.max(...r.burst.afterLastWriteMs))}` });
    const maxRss = Math.max(...r.burst.memory.map((m) => m.rss));
    const maxAnon = Math.max(...r.burst.memory.map((m) => m.anon));
    rows.push({ figure: `RSS / private after the ${r.burst.peers}-peer burst (max)`, weft: `${mb(maxRss)} / ${mb(maxAnon)}`, target: '—', flannel: '', met: null });
  }
  r.idle.forEach((idle, i) => {
    const tag = i === 0 ? 'health port + probes' : 'no health port (flannel defaults)';
    if (i === 0) {
      const rss = median(idle.memory.map((m) => m.rss));
      const anon = median(idle.memory.map((m) => m.anon));
      rows.push({ figure: `RSS after ${idle.settleSeconds} s idle, ${idle.peersEach} peers (median of ${idle.hosts}; max)`, weft: `${mb(rss)}; ${mb(Math.max(...idle.memory.map((m) => m.rss)))}`, target: '≤ 60 MB', flannel: '~31 MB', met: rss <= 60 * MB });
      rows.push({ figure: 'private (anonymous) memory, same (median; max)', weft: `${mb(anon)}; ${mb(Math.max(...idle.memory.map((m) => m.anon)))}`, target: '≤ 20 MB', flannel: '~9 MB', met: anon <= 20 * MB });
    }
    rows.push({ figure: `idle CPU, ${idle.hosts} daemons together, ${idle.cpuSeconds.toFixed(2)} CPU-s over the window, ${tag}`, weft: `${idle.cpuCores.toFixed(4)} cores`, target: '≤ 0.01 cores', flannel: '~0.02 cores', met: idle.cpuCores <= 0.01 });
  });
  return rows;
}

function formatTable(rows: readonly Row[]): string {
  const head = ['figure', 'weft', 'target', 'flannel v0.12', ''];
  const cells = rows.map((r) => [r.figure, r.weft, r.target, r.flannel, r.met === null ? '' : r.met ? 'met' : 'MISSED']);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: readonly string[]): string => c.map((x, i) => x.padEnd(widths[i]!)).join('  ').trimEnd();
  const notes = rows.filter((r) => r.note).map((r) => `  note: ${r.figure}: ${r.note}`);
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line), ...(notes.length ? ['', ...notes] : [])].join('\n');
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
