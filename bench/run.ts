#!/usr/bin/env node
/**
 * weft's control-plane benchmark: `npm run bench` (as root; builds first) or
 * `node dist/bench/run.js [--quick] [--out FILE]`.
 *
 * Builds labs of hosts in network namespaces (the same Lab as the e2e tests), measures, prints
 * every figure beside its target (issue #14: the control plane at flanneld's cost) with the 1-minute
 * load average it was measured at (the machine is shared), and with `--before DIST_WEFTD_JS` the
 * same figures of another build (the tree before a change) measured in the same run, paired:
 * start-ups interleaved, idle daemons restarted on the same lab. It
 * writes the raw numbers as JSON (default bench/results/control-plane.json). Namespaces are
 * prefixed wb<pid>- and deleted at the end, also on failure.
 *
 *   lab of 10 hosts:  exec → subnet.env, exec → READY=1 (restart and cold), join latency
 *   lab of 30 hosts:  join latency; memory after 10 s idle with 30 peers; idle CPU over 30 s
 *   lab of 2 hosts:   a burst of 1000 synthetic peer leases → all programmed; memory after it
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg as osLoadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { requireRoot } from '../src/lab';
import { median, percentile } from './lib/harness';
import {
  measureBurst, measureIdle, measureJoins, measureStartup, withLab,
  type BurstFigures, type IdleFigures, type JoinFigures, type StartupFigures, type Variant,
} from './lib/scenarios';

interface Row {
  readonly figure: string;
  readonly weft: string;
  /** The same figure of the --before build, paired ('' when not measured). */
  readonly before: string;
  readonly target: string;
  /** 1-minute load average while measured. */
  readonly load: string;
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
      before: { type: 'string' },
      'from-json': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write('usage: node dist/bench/run.js [--quick] [--skip-30] [--only LIST] [--before WEFTD_JS] [--out FILE]\n  --before P   also measure the weftd at P (e.g. another worktree: dist/src/cli/weftd.js), paired\n  --quick      fewer repetitions (a smoke run; figures are noisier)\n  --skip-30    skip the 30-host lab\n  --only LIST  some of: startup,join10,join30,idle,burst\n');
    return 0;
  }
  if (values['from-json'] !== undefined) {
    // Print the table of an earlier run again (e.g. after a change of this formatting).
    const saved = JSON.parse(readFileSync(values['from-json'], 'utf8')) as { raw: Results & { loadavg: { start: number[]; end: number[] } } };
    process.stdout.write(`${formatTable(table(saved.raw))}\n`);
    return 0;
  }
  requireRoot();
  const quick = values.quick === true;
  const variants: Variant[] = [{ label: 'after' }, ...(values.before ? [{ label: 'before', weftdPath: resolve(values.before), env: { NODE_OPTIONS: '' } }] : [])];
  const beforeVariant = variants[1] ?? null;
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
          results.startup.push(...await measureStartup(l, 'h1', quick ? 3 : 10, false, progress, variants));
          results.startup.push(...await measureStartup(l, 'h2', quick ? 2 : 5, true, progress, variants));
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
          if (beforeVariant !== null) {
            // The same lab, every daemon restarted on the other build; then back to this tree's.
            results.idle.push(await measureIdle(l, 1, '10.5.0.0/16', quick ? 10 : 40, quick ? 10 : 30, progress, [], beforeVariant));
            results.idle.push(await measureIdle(l, 1, '10.5.0.0/16', quick ? 10 : 40, quick ? 10 : 30, progress, [], variants[0]!));
          }
        }
        if (only.has('join30')) {
          progress('join latency at 30 hosts');
          results.join30 = await measureJoins(l, quick ? 10 : 50, '10.5.0.0/16', progress);
        }
        if (only.has('idle')) {
          // Restarted daemons settle longer: V8 still trims its heap for ~30 s after a start.
          results.idle.push(await measureIdle(l, 0, '10.5.0.0/16', quick ? 10 : 40, quick ? 10 : 30, progress, ['--healthz-port=0'], variants[0]!));
          if (beforeVariant !== null) results.idle.push(await measureIdle(l, 0, '10.5.0.0/16', quick ? 10 : 40, quick ? 10 : 30, progress, ['--healthz-port=0'], beforeVariant));
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

type Results = {
  startup: StartupFigures[]; join10: JoinFigures | null; join30: JoinFigures | null; idle: IdleFigures[]; burst: BurstFigures | null;
};

/** The load average over a measurement: "7.5" or "7.2–8.1" (min–max). */
const la = (...v: number[]): string => {
  const xs = v.filter((x) => Number.isFinite(x));
  if (xs.length === 0) return '';
  const lo = Math.min(...xs).toFixed(1);
  const hi = Math.max(...xs).toFixed(1);
  return lo === hi ? lo : `${lo}–${hi}`;
};
/** "after's load / before's load" when both were measured. */
const both = (a: readonly number[], b: readonly number[] | undefined): string => (b ? `${la(...a)} / ${la(...b)}` : la(...a));
const mbOrDash = (v: number | null | undefined): string => (v === null || v === undefined || !Number.isFinite(v) ? '—' : mb(v));
const medianOf = (v: readonly (number | null)[]): number | null => {
  const xs = v.filter((x): x is number => x !== null);
  return xs.length ? median(xs) : null;
};

/** Every row of issue #14's target table (and the figures around them), after beside before. */
function table(r: Results): Row[] {
  const rows: Row[] = [];
  const startup = (variant: string, cold: boolean): StartupFigures | undefined => r.startup.find((s) => s.variant === variant && s.mode.startsWith('cold') === cold);
  for (const cold of [false, true]) {
    const a = startup('after', cold);
    if (!a) continue;
    const b = startup('before', cold);
    const env = median(a.subnetEnvMs);
    const kind = cold ? 'cold (device deleted)' : 'lease reused (restart)';
    rows.push({ figure: `exec → subnet.env, ${kind}, median of ${a.runs}; max`, weft: `${ms(env)}; ${ms(Math.max(...a.subnetEnvMs))}`,
      before: b ? `${ms(median(b.subnetEnvMs))}; ${ms(Math.max(...b.subnetEnvMs))}` : '', target: cold ? '—' : '≤ 80 ms', load: both(a.load, b?.load), met: cold ? null : env <= 80 });
    rows.push({ figure: `exec → READY=1, ${kind}, median; max`, weft: `${ms(median(a.readyMs))}; ${ms(Math.max(...a.readyMs))}`,
      before: b ? `${ms(median(b.readyMs))}; ${ms(Math.max(...b.readyMs))}` : '', target: '—', load: both(a.load, b?.load), met: null });
  }
  for (const [label, j, p50t, p99t] of [['10', r.join10, 2, 10], ['30', r.join30, 5, 20]] as const) {
    if (j === null) continue;
    const p50 = median(j.fromCommitMs);
    const p99 = percentile(j.fromCommitMs, 99);
    rows.push({ figure: `CPU per daemon per peer join (${label} hosts, ${j.joins} joins)`, weft: ms(j.cpuPerDaemonPerJoinMs), before: '', target: '≤ 0.3 ms', load: la(...j.load), met: j.cpuPerDaemonPerJoinMs <= 0.3 });
    rows.push({ figure: `join (etcd's answer to the put) → route on every host, ${label} hosts, p50 / p99`, weft: `${ms(p50)} / ${ms(p99)}`, before: '', target: `≤ ${p50t} ms / ≤ ${p99t} ms`, load: la(...j.load), met: p50 <= p50t && p99 <= p99t,
      note: `the same from the moment a watch beside etcd saw the put: p50 ${ms(median(j.allHostsMs))}, p99 ${ms(percentile(j.allHostsMs, 99))}; from the put sent: p50 ${ms(median(j.fromSendMs))} (etcd's commit p50 ${ms(median(j.etcdCommitMs))})` });
    rows.push({ figure: `join → route on one host, ${label} hosts, p50 / p99 (from the watch)`, weft: `${ms(median(j.perHostMs))} / ${ms(percentile(j.perHostMs, 99))}`, before: '', target: '—', load: la(...j.load), met: null });
  }
  if (r.burst !== null) {
    const all = Math.max(...r.burst.afterLastWriteMs);
    rows.push({ figure: `${r.burst.peers} peer leases written (etcd's answer to the last) → all programmed (${r.burst.hosts} hosts; slowest)`, weft: ms(all), before: '', target: '≤ 250 ms', load: la(r.burst.load), met: all <= 250,
      note: `from the first write sent: ${ms(Math.max(...r.burst.programmedMs))}; etcd took the ten transactions in ${ms(r.burst.writeMs)}` });
    const rss = Math.max(...r.burst.memory.map((m) => m.rss));
    const anon = Math.max(...r.burst.memory.map((m) => m.anon));
    rows.push({ figure: `RSS / private after ${r.burst.peers} peers (max)`, weft: `${mb(rss)} / ${mb(anon)}`, before: '', target: '≤ 70 MB / ≤ 30 MB', load: la(r.burst.load), met: rss <= 70 * MB && anon <= 30 * MB });
    rows.push(heapRow(`V8 heap used / total / external after ${r.burst.peers} peers (max)`, r.burst.heap.map((h) => h), null, la(r.burst.load), 'max'));
  }
  const idle = (variant: string, flannelDefaults: boolean): IdleFigures | undefined =>
    [...r.idle].reverse().find((i) => i.variant === variant && i.config.includes('--healthz-port=0') === flannelDefaults);
  for (const flannelDefaults of [false, true]) {
    const a = idle('after', flannelDefaults);
    if (!a) continue;
    const b = idle('before', flannelDefaults);
    const tag = flannelDefaults ? 'no health port (flannel\'s defaults)' : 'health port + probes';
    if (!flannelDefaults) {
      const rss = median(a.memory.map((m) => m.rss));
      const anon = median(a.memory.map((m) => m.anon));
      rows.push({ figure: `RSS / private, idle ${a.settleSeconds} s, ${a.peersEach} peers (median of ${a.hosts})`, weft: `${mb(rss)} / ${mb(anon)}`,
        before: b ? `${mb(median(b.memory.map((m) => m.rss)))} / ${mb(median(b.memory.map((m) => m.anon)))}` : '', target: '≤ 50 MB / ≤ 10 MB', load: both(a.load, b?.load), met: rss <= 50 * MB && anon <= 10 * MB });
      rows.push(heapRow('V8 heap used / total / external, same (median)', a.heap, b?.heap ?? null, la(...a.load), 'median'));
    }
    rows.push({ figure: `idle CPU, ${a.hosts} daemons together (${tag})`, weft: `${a.cpuCores.toFixed(4)} cores`, before: b ? `${b.cpuCores.toFixed(4)} cores` : '',
      target: '≤ 0.005 cores', load: both(a.load, b?.load), met: a.cpuCores <= 0.005 });
    rows.push({ figure: `idle wake-ups per daemon per minute (context switches, median; ${tag})`, weft: median(a.wakeupsPerMinute).toFixed(0), before: b ? median(b.wakeupsPerMinute).toFixed(0) : '',
      target: '—', load: both(a.load, b?.load), met: null });
  }
  return rows;
}

function heapRow(figure: string, heap: readonly { heapUsed: number | null; heapTotal: number | null; external: number | null }[], before: typeof heap | null, load: string, how: 'median' | 'max'): Row {
  const agg = (v: (number | null)[]): number | null => {
    if (how === 'median') return medianOf(v);
    const xs = v.filter((x): x is number => x !== null);
    return xs.length ? Math.max(...xs) : null;
  };
  const fmt = (h: typeof heap): string => `${mbOrDash(agg(h.map((x) => x.heapUsed)))} / ${mbOrDash(agg(h.map((x) => x.heapTotal)))} / ${mbOrDash(agg(h.map((x) => x.external)))}`;
  return { figure, weft: heap.length ? fmt(heap) : '—', before: before && before.length ? fmt(before) : '', target: '—', load, met: null };
}

function formatTable(rows: readonly Row[]): string {
  const head = ['figure', 'after', 'before', 'target', 'load', ''];
  const cells = rows.map((r) => [r.figure, r.weft, r.before, r.target, r.load, r.met === null ? '' : r.met ? 'met' : 'MISSED']);
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
