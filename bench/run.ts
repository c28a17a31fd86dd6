#!/usr/bin/env node
/**
 * weft's control-plane benchmark: `npm run bench` (as root; builds first) or
 * `node dist/bench/run.js [--quick] [--out FILE] [--before WEFTD_JS] [--flanneld FLANNELD]`.
 *
 * Builds labs of hosts in network namespaces (the same Lab as the e2e tests), measures, prints
 * every figure beside its target (issue #14: the control plane at flanneld's cost) with the 1-minute
 * load average it was measured at (the machine is shared), and in the same run, paired:
 *   --before DIST_WEFTD_JS  the same figures of another weftd build (the tree before a change);
 *   --flanneld PATH         (or WEFT_FLANNELD=PATH) the same figures of a real flanneld, side by
 *                           side: the same etcd, the same namespaces, the same leases.
 * Pairing: start-ups interleaved start by start on one host; joins in rounds on one lab, every
 * daemon restarted as the other implementation between rounds; idle and burst on the same lab,
 * every daemon restarted. It writes the raw numbers as JSON (default
 * bench/results/control-plane.json). Namespaces are prefixed wb<pid>- and deleted at the end,
 * also on failure.
 *
 *   lab of 10 hosts:  exec → subnet.env, exec → READY=1 (restart and cold), join latency
 *   lab of 30 hosts:  join latency; memory after 40 s idle with 30 peers; idle CPU over 300 s (every periodic job once)
 *   lab of 2 hosts:   a burst of 1000 synthetic peer leases → all programmed; memory after it;
 *                     daemons started with 1000 leases in etcd → all programmed; memory after it
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants as fsConstants, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg as osLoadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { defaultWeftdPath, requireRoot, type Lab } from '../src/lab';
import { sleep } from '../src/lab/run';
import { median, percentile } from './lib/harness';
import {
  AFTER, FLOOR_KINDS, measureBurst, measureEventKinds, measureFloorJoins, measureIdle, measureIsolatedJoins, measureJoins, measureNodeFloor, measureStartWithPeers, measureStartup, measureWakeups, restartAll, withLab,
  type BurstFigures, type EventKindFigures, type FloorFigures, type FloorKind, type IdleFigures, type IsolatedJoinFigures, type JoinFigures, type Progress, type StartWithPeersFigures, type StartupFigures, type Variant, type WakeupFigures,
} from './lib/scenarios';

interface Row {
  readonly figure: string;
  readonly weft: string;
  /** The same figure of the --before build, paired ('' when not measured). */
  readonly before: string;
  /** The same figure of flanneld, side by side ('' when not measured; 'n/a: why' when it cannot be). */
  readonly flanneld: string;
  /** weft's figure ÷ flanneld's (lower is better on every row: > 1× is weft slower or bigger). */
  readonly ratio: string;
  readonly target: string;
  /** 1-minute load average while measured (after / before / flanneld). */
  readonly load: string;
  /** true met, false missed, null no target. */
  readonly met: boolean | null;
  readonly note?: string;
}

/**
 * The idle CPU window: 300 s, the period of weftd's slowest periodic work (the reconciler's full
 * resync, --resync-interval, and the iptables safety net). A window as long as a period holds
 * exactly one run of each job whatever its phase, so the figure is the long-run average: ten
 * probe cycles (30 s ±20 %), thirty watch probes (10 s), one of each 5-min job. The 60 s window
 * of the first seven passes held none of the 5-min jobs (they fire 300 s after a start, the
 * window ended ~100 s after it): it measured the quiet minutes only, ~15 % under the long run
 * (docs/performance.md, eighth pass). `--idle-seconds` shortens it, for a quicker look.
 */
const IDLE_CPU_SECONDS = 300;
const MB = 1024 * 1024;

/** The flanneld binary being compared, as run.ts found it. */
interface FlanneldInfo {
  readonly path: string;
  /** What `flanneld --version` printed ("v0.20.2"; "dev" when built without flannel's ldflags). */
  readonly version: string;
}

/** Check the flanneld binary before building any lab: it exists, runs, and says its version. */
function probeFlanneld(path: string): FlanneldInfo {
  const abs = resolve(path);
  try {
    accessSync(abs, fsConstants.X_OK);
  } catch (err) {
    throw new Error(`--flanneld / WEFT_FLANNELD: ${abs} is not an executable file: build flannel v0.20.2 first (docs/DEVELOPING.md, "Benchmark against flanneld")`, { cause: err });
  }
  const r = spawnSync(abs, ['--version'], { encoding: 'utf8', timeout: 10_000 });
  const version = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n')[0] ?? '';
  if (r.error !== undefined || r.status !== 0 || version === '') {
    throw new Error(`${abs} --version failed (status ${r.status}): is it a flanneld binary for this machine?`, { cause: r.error });
  }
  return { path: abs, version };
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean' },
      out: { type: 'string' },
      'skip-30': { type: 'boolean' },
      only: { type: 'string' },
      before: { type: 'string' },
      'idle-seconds': { type: 'string' },
      'before-node-options': { type: 'string' },
      'before-node-args': { type: 'string' },
      flanneld: { type: 'string' },
      'from-json': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write('usage: node dist/bench/run.js [--quick] [--skip-30] [--only LIST] [--before WEFTD_JS] [--flanneld PATH] [--out FILE]\n'
      + '  --before P    also measure the weftd at P (e.g. another worktree: dist/src/cli/weftd.js), paired\n'
      + '  --before-node-options S  NODE_OPTIONS of the before build (default empty); with --before\n'
      + '                this tree\'s weftd, it pairs V8 flags against the unit\'s\n'
      + '  --before-node-args S  node\'s arguments before the before build (default none: --no-opt came later)\n'
      + '  --flanneld P  also measure the flanneld binary at P side by side (default: $WEFT_FLANNELD)\n'
      + '  --quick       fewer repetitions (a smoke run; figures are noisier)\n'
      + '  --skip-30     skip the 30-host lab\n'
      + '  --only LIST   some of: startup,join10,isolated,floor,join30,idle,bounds,burst\n'
      + '                (bounds: one empty wake-up in C and in Node; the join rows with a Node, a checked Node or a native floor daemon on every host)\n'
      + `  --idle-seconds N  the idle CPU window (default ${IDLE_CPU_SECONDS}: one run of every periodic job;\n`
      + '                shorter misses the 5-min ones and reads low)\n');
    return 0;
  }
  if (values['from-json'] !== undefined) {
    // Print the table of an earlier run again (e.g. after a change of this formatting).
    const saved = JSON.parse(readFileSync(values['from-json'], 'utf8')) as { raw: SavedResults };
    const r = normalize(saved.raw);
    process.stdout.write(`${formatTable(table(r), saved.raw.flanneld ?? null, variantsIn(r))}\n`);
    return 0;
  }
  requireRoot();
  // The after column is this tree's weftd as the lab runs it: the one-file build, unless that is
  // missing or older than the entry (a bare tsc, e.g. npm run test:unit, ran after npm run build);
  // the lab then runs the unbundled entry, ~4 MB more RSS and a slower start than what ships.
  const afterWeftd = defaultWeftdPath();
  if (!afterWeftd.endsWith('weftd.bundle.js')) {
    throw new Error(`the lab would run ${afterWeftd}, not the one-file weftd that ships: dist/src/weftd.bundle.js is missing or older (tsc ran after the last build), so the after column would not be what operators run. Run "npm run build" first.`);
  }
  const quick = values.quick === true;
  const idleSeconds = values['idle-seconds'] === undefined ? (quick ? 10 : IDLE_CPU_SECONDS) : Number(values['idle-seconds']);
  if (!Number.isFinite(idleSeconds) || idleSeconds <= 0) throw new Error(`--idle-seconds ${values['idle-seconds']}: give a number of seconds above 0 (default ${IDLE_CPU_SECONDS})`);
  const flanneldPath = values.flanneld ?? (process.env.WEFT_FLANNELD || undefined);
  const flanneld = flanneldPath !== undefined ? probeFlanneld(flanneldPath) : null;
  // The before build runs as its own lab ran it: with the caller's NODE_EXTRA_CA_CERTS, which
  // this tree's lab and launchers defer (src/lease/etcd-common.ts EXTRA_CA_CERTS_ENV).
  const callerCa: Record<string, string> = process.env.NODE_EXTRA_CA_CERTS ? { NODE_EXTRA_CA_CERTS: process.env.NODE_EXTRA_CA_CERTS } : {};
  const beforeVariant: Variant | null = values.before ? { label: 'before', weftdPath: resolve(values.before), env: { NODE_OPTIONS: values['before-node-options'] ?? '', ...callerCa },
    nodeArgs: (values['before-node-args'] ?? '').split(' ').filter((a) => a !== '') } : null;
  const flanneldVariant: Variant | null = flanneld ? { label: 'flanneld', flanneldPath: flanneld.path } : null;
  const variants: Variant[] = [AFTER, ...(beforeVariant ? [beforeVariant] : []), ...(flanneldVariant ? [flanneldVariant] : [])];
  const only = new Set((values.only ?? 'startup,join10,isolated,floor,join30,idle,bounds,burst').split(',').map((x) => x.trim()));
  if (values['skip-30'] === true) {
    only.delete('join30');
    only.delete('idle');
  }
  const out = resolve(values.out ?? join(__dirname, '..', '..', 'bench', 'results', 'control-plane.json'));
  // Under /run, like /run/flannel/subnet.env in production (a tmpfs on most hosts; not here).
  const scratch = mkdtempSync(join(existsSync('/run') ? '/run' : tmpdir(), `wb${process.pid}-`));
  const progress: Progress = (line: string): void => void process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
  const lab = (tag: string, hosts: number, networkConfig?: Record<string, unknown>) => ({
    name: `wb${process.pid}${tag}`, prefix: `wb${process.pid}${tag}-`, stateDir: join(scratch, tag), hosts, progress,
    ...(networkConfig ? { networkConfig } : {}),
  });
  if (flanneld) progress(`side by side with ${flanneld.path} (${flanneld.version})`);

  const results: Results & { loadavg: { start: number[]; end: number[] }; flanneld: FlanneldInfo | null } = {
    startup: [], join10: [], isolated: [], join30: [], idle: [], bounds: [], burst: [], startWithPeers: [], loadavg: { start: loadavg(), end: [] }, flanneld,
  };
  // Joins: in rounds, every variant once per round, so a load that changes over the run is shared.
  const joinRounds = quick || variants.length === 1 ? 1 : 2;
  const joinsPerVariant = quick ? 10 : 50;
  const started = Date.now();
  try {
    // The latency rows' bounds: the same joins with a floor daemon on every host (after the rows
    // they bound, on the same lab; the lab's weftds are back afterwards).
    const measureBounds = async (l: Lab): Promise<void> => {
      progress(`the join rows' bounds at ${l.hostNames().length} hosts: a floor daemon in place of every weftd`);
      for (const kind of Object.keys(FLOOR_KINDS) as FloorKind[]) results.bounds.push(await measureFloorJoins(l, kind, joinsPerVariant, '10.5.0.0/16', progress));
    };
    // Before any lab: what one wake-up costs a process here, with nothing else running.
    if (only.has('bounds')) results.wakeups = measureWakeups(scratch, progress, quick ? 100 : 300, 10, quick ? 1 : 3);
    if (only.has('startup') || only.has('join10') || only.has('isolated') || only.has('floor') || only.has('bounds')) {
      await withLab(lab('a', 10), async (l) => {
        if (only.has('startup')) {
          progress('start-up: exec → subnet.env and exec → READY=1');
          results.startup.push(...await measureStartup(l, 'h1', quick ? 3 : 10, false, progress, variants));
          results.startup.push(...await measureStartup(l, 'h2', quick ? 2 : 5, true, progress, variants));
        }
        if (only.has('join10')) {
          progress('join latency at 10 hosts');
          results.join10 = await measureJoinRounds(l, variants, joinsPerVariant, joinRounds, progress);
        }
        if (only.has('isolated')) {
          progress('isolated joins at 10 hosts: one join + leave per 12 s');
          for (const [i, v] of variants.entries()) {
            // 20 s: past a restarted weftd's start-up GC (3 s after ready) and V8's memory reducer (8 s after that).
            await restartAll(l, v, progress, [], 20_000);
            results.isolated.push(await measureIsolatedJoins(l, quick ? 2 : 4, 12_000, '10.5.0.0/16', progress, v.label, 200 + 5 * i));
          }
        }
        if (only.has('floor')) {
          // After a restart: the routes of the joins above are gone and no peer is held, so
          // subnets may be used again.
          progress("Node's floor at 10 hosts: a join in a Node process that does nothing else, beside weftd");
          await restartAll(l, AFTER, progress);
          results.floor = await measureNodeFloor(l, quick ? 20 : 60, '10.5.0.0/16', progress);
        }
        if (only.has('bounds')) {
          progress("weftd's CPU per watch event by kind at 10 hosts: where a join's CPU goes");
          results.eventKinds = await measureEventKinds(l, joinsPerVariant, '10.5.0.0/16', progress);
          await measureBounds(l);
        }
      });
    }
    if (only.has('join30') || only.has('idle') || only.has('bounds')) {
      await withLab(lab('b', 30), async (l) => {
        // Idle first: a cluster that came up and sits, before the joins churn it.
        if (only.has('idle')) {
          progress('memory and CPU at idle');
          // 40 s like every restarted daemon below: V8 trims its heap for ~30 s after a start, and
          // with no other variant this is the row's figure (at 10 s it measured the start-up's
          // aftermath: 0.0436 cores, 84 wake-ups a minute).
          results.idle.push(await measureIdle(l, 1, '10.5.0.0/16', quick ? 5 : 40, idleSeconds, progress));
          // The same lab, every daemon restarted as the other build / flanneld; then back to this tree's.
          for (const v of variants.slice(1)) {
            results.idle.push(await measureIdle(l, 1, '10.5.0.0/16', quick ? 10 : 40, idleSeconds, progress, [], v));
          }
          if (variants.length > 1) results.idle.push(await measureIdle(l, 1, '10.5.0.0/16', quick ? 10 : 40, idleSeconds, progress, [], AFTER));
        }
        if (only.has('join30')) {
          progress('join latency at 30 hosts');
          results.join30 = await measureJoinRounds(l, variants, joinsPerVariant, joinRounds, progress);
        }
        if (only.has('idle')) {
          // Restarted daemons settle longer: V8 still trims its heap for ~30 s after a start.
          for (const v of variants) {
            results.idle.push(await measureIdle(l, 0, '10.5.0.0/16', quick ? 10 : 40, idleSeconds, progress, ['--healthz-port=0'], v));
          }
        }
        if (only.has('bounds')) await measureBounds(l);
      });
    }
    if (only.has('burst')) {
      const burstNet = '10.64.0.0/13';
      await withLab(lab('c', 2, { Network: burstNet, SubnetLen: 24, Backend: { Type: 'vxlan' } }), async (l) => {
        progress('burst of 1000 synthetic peer leases');
        // Not flanneld v0.20.2: its etcd watch takes the first event of each response and then
        // watches from "now" (subnet/etcd/registry.go watchSubnets), so it loses most of a burst.
        const weftds = variants.filter((v) => v.flanneldPath === undefined);
        for (const [i, v] of weftds.entries()) {
          // The lab starts with this tree's weftd; the others are restarted in its place.
          if (i > 0) await restartAll(l, v, progress);
          results.burst.push(await measureBurst(l, 1000, burstNet, progress, v));
        }
        progress('daemons started with 1000 peer leases in etcd');
        // flanneld last: the deletes after it would be lost (see above); the lab is deleted instead.
        const ordered = [...weftds, ...variants.filter((v) => v.flanneldPath !== undefined)];
        for (const [i, v] of ordered.entries()) {
          const { removeLeases, ...figures } = await measureStartWithPeers(l, 1000, burstNet, progress, v);
          results.startWithPeers.push(figures);
          if (i < ordered.length - 1) await removeLeases();
        }
      });
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }

  results.loadavg.end = loadavg();
  const rows = table(results);
  const text = formatTable(rows, flanneld, variantsIn(results));
  process.stdout.write(`\nweft control-plane benchmark (${quick ? 'quick' : 'full'} run, ${((Date.now() - started) / 1000).toFixed(0)} s, node ${process.version}, `
    + `${cpus().length} cores, load average ${results.loadavg.start[0]!.toFixed(2)} at the start, ${results.loadavg.end[0]!.toFixed(2)} at the end`
    + `${flanneld ? `; flanneld: ${flanneld.path}, ${flanneld.version}` : ''})\n\n${text}\n`);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), node: process.version, quick, rows, raw: results }, null, 2) + '\n');
  process.stdout.write(`\nraw figures: ${out}\n`);
  return 0;
}

/**
 * How long the daemons run before their joins are measured: past weftd's start-up collections
 * (the idle GC 3 s after ready, V8's memory reducer ~8 s after that) and flanneld's iptables
 * bootstrap, which are not a join's work. Until the fifteenth pass the lab's first variant was
 * measured at once and the others 5 s after their restart; a block of joins right after start-up
 * read up to twice the CPU of the next (docs/performance.md, fourteenth and fifteenth passes).
 */
const JOIN_SETTLE_MS = 20_000;
/**
 * Joins each variant makes before its measured ones, and the pause after them (weftd's idle GC
 * runs 3 s after the last peer change). A daemon's first joins after its start compile the join
 * path and fill its caches, once: on a 30-host lab the first 60 joins read 0.417 ms of CPU per
 * daemon per join and every later block 0.207–0.211, a first block 30 s after the last as well
 * (docs/performance.md, fifteenth pass). The floors' rows warm up the same way.
 */
const WARM_UP_JOINS = 10;
const AFTER_WARM_UP_MS = 5000;

/**
 * Join latency of every variant on one lab, in `rounds` rounds: each round restarts every daemon
 * as each variant in turn (the lab starts with this tree's weftd) and measures its share of the
 * joins, each on fresh subnets. Leaves the last variant running (what follows on the lab
 * restarts every daemon anyway: the idle scenario, or the lab's end). One JoinFigures per
 * variant, its rounds merged.
 */
async function measureJoinRounds(l: Lab, variants: readonly Variant[], joinsPerVariant: number, rounds: number, progress: Progress): Promise<JoinFigures[]> {
  const perRound = Math.ceil(joinsPerVariant / rounds);
  const parts: JoinFigures[] = [];
  let running: Variant = AFTER;
  let skip = 0;
  for (let r = 0; r < rounds; r++) {
    for (const v of variants) {
      // Every variant's joins start JOIN_SETTLE_MS after its daemons did, the lab's first ones too,
      // and after WARM_UP_JOINS of its own (not counted) and the collections they leave.
      if (v !== running) await restartAll(l, v, progress, [], JOIN_SETTLE_MS);
      else if (r === 0) await sleep(JOIN_SETTLE_MS);
      running = v;
      await measureJoins(l, WARM_UP_JOINS, '10.5.0.0/16', () => undefined, v.label, skip);
      skip += WARM_UP_JOINS;
      await sleep(AFTER_WARM_UP_MS);
      if (rounds > 1) progress(`  round ${r + 1}/${rounds}: ${v.label}`);
      parts.push(await measureJoins(l, perRound, '10.5.0.0/16', progress, v.label, skip));
      skip += perRound;
    }
  }
  return variants.map((v) => mergeJoins(parts.filter((p) => p.variant === v.label)));
}

function mergeJoins(parts: readonly JoinFigures[]): JoinFigures {
  const joins = parts.reduce((a, p) => a + p.joins, 0);
  const all = <K extends 'allHostsMs' | 'perHostMs' | 'fromSendMs' | 'etcdCommitMs' | 'fromCommitMs'>(k: K): number[] => parts.flatMap((p) => p[k]);
  const loads = parts.flatMap((p) => p.load);
  return {
    variant: parts[0]!.variant, hosts: parts[0]!.hosts, joins,
    allHostsMs: all('allHostsMs'), perHostMs: all('perHostMs'), fromSendMs: all('fromSendMs'), etcdCommitMs: all('etcdCommitMs'), fromCommitMs: all('fromCommitMs'),
    cpuPerDaemonPerJoinMs: parts.reduce((a, p) => a + p.cpuPerDaemonPerJoinMs * p.joins, 0) / joins,
    ...(parts.every((p) => p.etcdCpuPerJoinMs !== undefined) ? { etcdCpuPerJoinMs: parts.reduce((a, p) => a + p.etcdCpuPerJoinMs! * p.joins, 0) / joins } : {}),
    missed: parts.reduce((a, p) => a + p.missed, 0),
    load: [Math.min(...loads), Math.max(...loads)],
  };
}

const ms = (v: number): string => `${v.toFixed(1)} ms`;
const mb = (v: number): string => `${(v / MB).toFixed(1)} MB`;

function loadavg(): number[] {
  return osLoadavg();
}

type Results = {
  startup: StartupFigures[]; join10: JoinFigures[]; isolated: IsolatedJoinFigures[]; join30: JoinFigures[]; idle: IdleFigures[]; burst: BurstFigures[]; startWithPeers: StartWithPeersFigures[];
  /** Node's floor beside weftd on the same joins (measureNodeFloor); absent in runs saved before it. */
  floor?: FloorFigures;
  /** The join rows with a floor daemon on every host (measureFloorJoins: variant = a FLOOR_KINDS label). */
  bounds: JoinFigures[];
  /** CPU per empty wake-up, C and Node (measureWakeups); absent in runs saved before it. */
  wakeups?: WakeupFigures;
  /** weftd's CPU per watch event by kind (measureEventKinds); absent in runs saved before it. */
  eventKinds?: EventKindFigures;
};

/** A saved run: before the flanneld column, join10/join30/burst were one figure each (this tree's). */
type SavedResults = Omit<Results, 'join10' | 'join30' | 'burst' | 'startWithPeers' | 'isolated' | 'bounds'> & {
  isolated?: IsolatedJoinFigures[];
  bounds?: JoinFigures[];
  join10: JoinFigures | JoinFigures[] | null; join30: JoinFigures | JoinFigures[] | null; burst: BurstFigures | BurstFigures[] | null; startWithPeers?: StartWithPeersFigures[];
  loadavg: { start: number[]; end: number[] }; flanneld?: FlanneldInfo | null;
};

function normalize(raw: SavedResults): Results {
  const list = <T extends { variant?: string }>(v: T | T[] | null): T[] => (v === null ? [] : Array.isArray(v) ? v : [{ ...v, variant: v.variant ?? 'after' }]);
  // Saved before weftd's own start-up CPU was read (9a562ff): none.
  const startup = raw.startup.map((s) => ({ ...s, subnetEnvCpuMs: (s as Partial<StartupFigures>).subnetEnvCpuMs ?? [] }));
  return { ...raw, startup, join10: list(raw.join10), isolated: raw.isolated ?? [], join30: list(raw.join30), bounds: raw.bounds ?? [], burst: list(raw.burst), startWithPeers: raw.startWithPeers ?? [] };
}

/** The variants a run measured, in column order (the load column's order). */
function variantsIn(r: Results): string[] {
  const seen = new Set([...r.startup, ...r.join10, ...r.isolated, ...r.join30, ...r.burst, ...r.idle, ...r.startWithPeers].map((x) => x.variant));
  return ['after', 'before', 'flanneld'].filter((v) => seen.has(v));
}

/** The load average over a measurement: "7.5" or "7.2–8.1" (min–max). */
const la = (...v: number[]): string => {
  const xs = v.filter((x) => Number.isFinite(x));
  if (xs.length === 0) return '';
  const lo = Math.min(...xs).toFixed(1);
  const hi = Math.max(...xs).toFixed(1);
  return lo === hi ? lo : `${lo}–${hi}`;
};
/** The loads of every variant measured, in column order: "after / before / flanneld" (absent ones left out). */
const loads = (...v: (readonly number[] | undefined)[]): string => v.filter((x): x is readonly number[] => x !== undefined).map((x) => la(...x)).join(' / ');
/** A figure's cell: empty where the column has no such figure (a variant not run, a saved run from before it). */
const msOrEmpty = (v: number | undefined): string => (v === undefined ? '' : ms(v));
const mbOrDash = (v: number | null | undefined): string => (v === null || v === undefined || !Number.isFinite(v) ? '—' : mb(v));
const medianOf = (v: readonly (number | null)[]): number | null => {
  const xs = v.filter((x): x is number => x !== null);
  return xs.length ? median(xs) : null;
};
/** weft ÷ flanneld of one figure: "3.2×" ('' without both). */
const times = (weft: number, flanneld: number | undefined): string => {
  if (flanneld === undefined || !Number.isFinite(weft) || !Number.isFinite(flanneld)) return '';
  if (flanneld <= 0) return weft <= 0 ? '1.0×' : '∞';
  const r = weft / flanneld;
  return `${r >= 10 ? r.toFixed(0) : r >= 0.1 ? r.toFixed(1) : r.toFixed(2)}×`;
};
const ratios = (...pairs: [number, number | undefined][]): string => pairs.map(([w, f]) => times(w, f)).filter((x) => x !== '').join(' / ');

/** Issue #14's join → route targets, p50 and p99 (ms): 10 hosts, or 30. */
const joinTargetsMs = (hosts: number): readonly [number, number] => (hosts <= 10 ? [2, 10] : [5, 20]);

/** Every row of issue #14's target table (and the figures around them): after, before, flanneld. */
function table(r: Results): Row[] {
  const rows: Row[] = [];
  const flanneldRan = [...r.startup, ...r.join10, ...r.join30, ...r.burst, ...r.idle, ...r.startWithPeers].some((x) => x.variant === 'flanneld');
  /** A row without a flanneld figure, when flanneld was measured at all: a short cell (the why goes in the row's note). */
  const na = (short: string): string => (flanneldRan ? `n/a: ${short}` : '');
  const naNote = (why: string): { note?: string } => (flanneldRan ? { note: `flanneld: ${why}` } : {});
  const startup = (variant: string, cold: boolean): StartupFigures | undefined => r.startup.find((s) => s.variant === variant && s.mode.startsWith('cold') === cold);
  for (const cold of [false, true]) {
    const a = startup('after', cold);
    if (!a) continue;
    const b = startup('before', cold);
    const f = startup('flanneld', cold);
    const env = median(a.subnetEnvMs);
    const kind = cold ? 'cold (device deleted)' : 'lease reused (restart)';
    const envOf = (x: StartupFigures | undefined): string => (x ? `${ms(median(x.subnetEnvMs))}; ${ms(Math.max(...x.subnetEnvMs))}` : '');
    const readyOf = (x: StartupFigures | undefined): string => (x ? `${ms(median(x.readyMs))}; ${ms(Math.max(...x.readyMs))}` : '');
    rows.push({ figure: `exec → subnet.env, ${kind}, median of ${a.runs}; max`, weft: envOf(a), before: envOf(b), flanneld: envOf(f),
      ratio: times(env, f ? median(f.subnetEnvMs) : undefined), target: cold ? '—' : '≤ 80 ms', load: loads(a.load, b?.load, f?.load), met: cold ? null : env <= 80 });
    rows.push({ figure: `exec → READY=1, ${kind}, median; max`, weft: readyOf(a), before: readyOf(b), flanneld: readyOf(f),
      ratio: times(median(a.readyMs), f ? median(f.readyMs) : undefined), target: '—', load: loads(a.load, b?.load, f?.load), met: null });
    // weftd's own CPU to subnet.env (WEFT_TRACE_STARTUP): what load does not inflate as it does the wall time.
    const cpuOf = (x: StartupFigures | undefined): string => (x && x.subnetEnvCpuMs.length > 0 ? ms(median(x.subnetEnvCpuMs)) : '');
    if (a.subnetEnvCpuMs.length > 0) {
      rows.push({ figure: `weftd's CPU, exec → subnet.env, ${kind}, median`, weft: cpuOf(a), before: cpuOf(b), flanneld: '',
        ratio: '', target: '—', load: loads(a.load, b?.load, f?.load), met: null });
    }
  }
  for (const [label, js] of [['10', r.join10], ['30', r.join30]] as const) {
    const [p50t, p99t] = joinTargetsMs(Number(label));
    const a = js.find((j) => j.variant === 'after');
    if (a === undefined) continue;
    const b = js.find((j) => j.variant === 'before');
    const f = js.find((j) => j.variant === 'flanneld');
    const p50 = median(a.fromCommitMs);
    const p99 = percentile(a.fromCommitMs, 99);
    const cpuOf = (j: JoinFigures | undefined): string => (j ? ms(j.cpuPerDaemonPerJoinMs) : '');
    const latOf = (j: JoinFigures | undefined): string => (j ? `${ms(median(j.fromCommitMs))} / ${ms(percentile(j.fromCommitMs, 99))}` : '');
    const oneOf = (j: JoinFigures | undefined): string => (j ? `${ms(median(j.perHostMs))} / ${ms(percentile(j.perHostMs, 99))}` : '');
    const load = loads(a.load, b?.load, f?.load);
    const joins = [a, b, f].filter((j) => j !== undefined).length > 1 ? `${a.joins} joins each` : `${a.joins} joins`;
    rows.push({ figure: `CPU per daemon per peer join (${label} hosts, ${joins})`, weft: cpuOf(a), before: cpuOf(b), flanneld: cpuOf(f),
      ratio: times(a.cpuPerDaemonPerJoinMs, f?.cpuPerDaemonPerJoinMs), target: '≤ 0.3 ms', load, met: a.cpuPerDaemonPerJoinMs <= 0.3 });
    if (a.etcdCpuPerJoinMs !== undefined) {
      // The cluster's side of a join: etcd serves the put and every host's watch on the same
      // cores as the daemons, so it is on the latency rows' path too.
      const clusterOf = (j: JoinFigures | undefined): number | undefined => (j?.etcdCpuPerJoinMs !== undefined ? j.cpuPerDaemonPerJoinMs * j.hosts + j.etcdCpuPerJoinMs : undefined);
      rows.push({ figure: `etcd's CPU per peer join (${label} hosts: the put and every host's watch)`, weft: msOrEmpty(a.etcdCpuPerJoinMs), before: msOrEmpty(b?.etcdCpuPerJoinMs), flanneld: msOrEmpty(f?.etcdCpuPerJoinMs),
        ratio: times(a.etcdCpuPerJoinMs, f?.etcdCpuPerJoinMs), target: '—', load, met: null });
      rows.push({ figure: `control plane's CPU per peer join, ${label} hosts (every daemon + etcd)`, weft: msOrEmpty(clusterOf(a)), before: msOrEmpty(clusterOf(b)), flanneld: msOrEmpty(clusterOf(f)),
        ratio: times(clusterOf(a)!, clusterOf(f)), target: '—', load, met: null });
    }
    const noteOf = (j: JoinFigures): string => `${j.missed ? `${j.missed} of ${j.joins} joins MISSED (never on every host within 10 s; left out); ` : ''}from the moment a watch beside etcd saw the put: p50 ${ms(median(j.allHostsMs))}, p99 ${ms(percentile(j.allHostsMs, 99))}; from the put sent: p50 ${ms(median(j.fromSendMs))} (etcd's commit p50 ${ms(median(j.etcdCommitMs))})`;
    rows.push({ figure: `join (etcd's answer to the put) → route on every host, ${label} hosts, p50 / p99`, weft: latOf(a), before: latOf(b), flanneld: latOf(f),
      ratio: f ? ratios([p50, median(f.fromCommitMs)], [p99, percentile(f.fromCommitMs, 99)]) : '', target: `≤ ${p50t} ms / ≤ ${p99t} ms`, load, met: p50 <= p50t && p99 <= p99t,
      note: `${noteOf(a)}${b ? `; before: ${noteOf(b)}` : ''}${f ? `; flanneld: ${noteOf(f)}` : ''}` });
    rows.push({ figure: `join → route on one host, ${label} hosts, p50 / p99 (from the watch)`, weft: oneOf(a), before: oneOf(b), flanneld: oneOf(f),
      ratio: f ? ratios([median(a.perHostMs), median(f.perHostMs)], [percentile(a.perHostMs, 99), percentile(f.perHostMs, 99)]) : '', target: '—', load, met: null });
  }
  if (r.floor !== undefined) {
    const f: FloorFigures = r.floor;
    const ms2 = (v: number): string => `${v.toFixed(2)} ms`;
    rows.push({ figure: `Node's floor: CPU per join of a Node process that does only the join, ${f.hosts} hosts, ${f.joins} joins (weftd on the same joins)`,
      weft: `${ms2(f.floorCpuPerJoinMs)} (weftd ${ms2(f.weftdCpuPerJoinMs)})`, before: '', flanneld: '', ratio: '', target: '—', load: loads(f.load), met: null,
      note: "bench/lib/floor-daemon.ts in place of one host's weftd, run as weftd is (NODE_OPTIONS, --no-opt): the watch message in, the neighbour, FDB entry and route out in one sendmsg, its ACK in, nothing else. "
        + "What the runtime and the kernel cost whatever the code; weftd's figure minus it is weft's own (the CPU-per-join target, ≤ 0.3 ms, is measured against it)" });
  }
  if (r.wakeups !== undefined) {
    const w = r.wakeups;
    rows.push({ figure: 'bound: CPU of one empty wake-up of a process here, C · Node run as weftd is',
      weft: `${(w.cUs / 1000).toFixed(3)} · ${(w.nodeUs / 1000).toFixed(3)} ms`, before: '', flanneld: '', ratio: '', target: '(row ≤ 0.3 ms per join)', load: la(...w.load), met: null,
      note: `bench/lib/wakeup.c and wakeup.ts: a timer every ${w.intervalMs} ms that does nothing, ${w.wakeups} times after 20 not counted, median of ${w.runs} runs each. `
        + 'A join wakes every daemon once: this much of the CPU-per-join row is paid before any code runs, and every extra wake-up a join causes adds at least as much' });
  }
  if (r.eventKinds !== undefined) {
    const { cpuMs: c, hosts, events, settleMs } = r.eventKinds;
    const f3 = (v: number): string => v.toFixed(3);
    rows.push({ figure: `where a join's CPU goes: weftd's CPU per daemon per watch event, ${hosts} hosts, a key it ignores · a lease put again unchanged · a join`,
      weft: `${f3(c.ignored)} · ${f3(c.unchanged)} · ${f3(c.join)} ms`, before: '', flanneld: '', ratio: '', target: '(row ≤ 0.3 ms per join)', load: la(...r.eventKinds.load), met: null,
      note: `${events} events of each kind, the kinds taking turns, every daemon restarted as this tree's weftd and left ${settleMs / 1000} s for its start-up's collections; the median per event, with the join rows' pause after it (the pause alone: ${f3(c.pause)} ms). Each kind does the one before it and more: `
        + `the wake-up, the read and the watch message (${f3(c.ignored)} ms); the lease decoded, screened, judged and booked (+${f3(c.unchanged - c.ignored)}); `
        + `the three kernel writes, their ACK and echoes (+${f3(c.join - c.unchanged)}). From /proc, not a profiler` });
  }
  for (const j of r.bounds) {
    const [p50t, p99t] = joinTargetsMs(j.hosts);
    const floor = Object.values(FLOOR_KINDS).find((k) => k.label === j.variant);
    rows.push({ figure: `bound: join → route on every host with the ${j.variant} daemon on every host, ${j.hosts} hosts, p50 / p99 (CPU per daemon per join)`,
      weft: `${ms(median(j.fromCommitMs))} / ${ms(percentile(j.fromCommitMs, 99))} (${j.cpuPerDaemonPerJoinMs.toFixed(2)} ms)`, before: '', flanneld: '', ratio: '',
      target: `(rows' ≤ ${p50t} ms / ≤ ${p99t} ms)`, load: la(...j.load), met: null,
      note: `${floor?.runs ?? j.variant} in place of every weftd, measured as the join rows are (${j.joins} joins${j.missed ? `, ${j.missed} missed` : ''}): `
        + `what those rows would read if every daemon cost ${floor?.means ?? 'what that daemon costs'}; `
        + `etcd's CPU per join ${j.etcdCpuPerJoinMs !== undefined ? ms(j.etcdCpuPerJoinMs) : 'not measured'}` });
  }
  const isoA = r.isolated.find((x) => x.variant === 'after');
  if (isoA !== undefined) {
    const isoOf = (x: IsolatedJoinFigures): number => median(x.cyclePerDaemonMs.map((c) => c - x.quietPerDaemonMs));
    // Only a figure above the daemon's own quiet CPU over a cycle is told apart from it (flanneld's
    // is not: an iptables check every few seconds outweighs a join).
    const clear = (x: IsolatedJoinFigures): boolean => isoOf(x) > x.quietPerDaemonMs;
    const fmt = (x: IsolatedJoinFigures | undefined): string => (x ? (clear(x) ? ms(isoOf(x)) : `within its idle noise (${ms(x.quietPerDaemonMs)} per ${x.cycleMs / 1000} s quiet)`) : '');
    const b = r.isolated.find((x) => x.variant === 'before');
    const f = r.isolated.find((x) => x.variant === 'flanneld');
    const detail = (x: IsolatedJoinFigures): string => `${x.variant}: cycles ${x.cyclePerDaemonMs.map((c) => c.toFixed(1)).join(' / ')} ms, quiet ${x.quietPerDaemonMs.toFixed(1)} ms`;
    rows.push({ figure: `CPU per daemon per isolated join + leave (${isoA.hosts} hosts, one per ${isoA.cycleMs / 1000} s, quiet subtracted; median of ${isoA.cyclePerDaemonMs.length})`,
      weft: fmt(isoA), before: fmt(b), flanneld: fmt(f), ratio: f && clear(f) ? times(isoOf(isoA), isoOf(f)) : '', target: '—', load: loads(isoA.load, b?.load, f?.load), met: null,
      note: [isoA, b, f].filter((x): x is IsolatedJoinFigures => x !== undefined).map(detail).join('; ') });
  }
  const burstA = r.burst.find((x) => x.variant === 'after');
  if (burstA !== undefined) {
    const a = burstA;
    const b = r.burst.find((x) => x.variant === 'before');
    const f = r.burst.find((x) => x.variant === 'flanneld');
    const slowest = (x: BurstFigures): number => Math.max(...x.afterLastWriteMs);
    const all = slowest(a);
    const load = loads([a.load], b ? [b.load] : undefined, f ? [f.load] : undefined);
    const noteOf = (x: BurstFigures): string => `from the first write sent: ${ms(Math.max(...x.programmedMs))}; etcd took the ten transactions in ${ms(x.writeMs)}`;
    const fNa = na('loses events');
    rows.push({ figure: `${a.peers} peer leases written (etcd's answer to the last) → all programmed (${a.hosts} hosts; slowest)`, weft: ms(all), before: b ? ms(slowest(b)) : '', flanneld: f ? ms(slowest(f)) : fNa,
      ratio: times(all, f ? slowest(f) : undefined), target: '≤ 250 ms', load, met: all <= 250,
      note: `${noteOf(a)}${b ? `; before: ${noteOf(b)}` : ''}${f ? `; flanneld: ${noteOf(f)}` : flanneldRan
        ? '; flanneld: not measured: v0.20.2 takes only the first event of each etcd watch response and then watches again from "now" (subnet/etcd/registry.go, watchSubnets), so it programs only a few of a burst\'s 1000 leases; see "started with 1000 leases" for its figures with 1000 peers' : ''}` });
    const rssOf = (x: BurstFigures): number => Math.max(...x.memory.map((m) => m.rss));
    const anonOf = (x: BurstFigures): number => Math.max(...x.memory.map((m) => m.anon));
    const memOf = (x: BurstFigures | undefined): string => (x ? `${mb(rssOf(x))} / ${mb(anonOf(x))}` : '');
    rows.push({ figure: `RSS / private after ${a.peers} peers (max)`, weft: memOf(a), before: memOf(b), flanneld: f ? memOf(f) : na('see below'),
      ratio: f ? ratios([rssOf(a), rssOf(f)], [anonOf(a), anonOf(f)]) : '', target: '≤ 70 MB / ≤ 30 MB', load, met: rssOf(a) <= 70 * MB && anonOf(a) <= 30 * MB,
      ...naNote('after 1000 peers: the "RSS / private after a start with 1000 peers" row (it cannot take the burst)') });
    rows.push(heapRow(`V8 heap used / total / external after ${a.peers} peers (max)`, a.heap, b?.heap ?? null, na('Go'), la(a.load), 'max'));
  }
  const swpA = r.startWithPeers.find((x) => x.variant === 'after');
  if (swpA !== undefined) {
    const a = swpA;
    const b = r.startWithPeers.find((x) => x.variant === 'before');
    const f = r.startWithPeers.find((x) => x.variant === 'flanneld');
    const load = loads([a.load], b ? [b.load] : undefined, f ? [f.load] : undefined);
    const slowest = (x: StartWithPeersFigures): number => Math.max(...x.programmedMs);
    const rssOf = (x: StartWithPeersFigures): number => Math.max(...x.memory.map((m) => m.rss));
    const anonOf = (x: StartWithPeersFigures): number => Math.max(...x.memory.map((m) => m.anon));
    const memOf = (x: StartWithPeersFigures | undefined): string => (x ? `${mb(rssOf(x))} / ${mb(anonOf(x))}` : '');
    rows.push({ figure: `exec → all ${a.peers} peers programmed, started with ${a.peers} leases in etcd (${a.hosts} hosts; slowest)`, weft: ms(slowest(a)), before: b ? ms(slowest(b)) : '', flanneld: f ? ms(slowest(f)) : '',
      ratio: times(slowest(a), f ? slowest(f) : undefined), target: '—', load, met: null });
    rows.push({ figure: `RSS / private after a start with ${a.peers} peers (max)`, weft: memOf(a), before: memOf(b), flanneld: memOf(f),
      ratio: f ? ratios([rssOf(a), rssOf(f)], [anonOf(a), anonOf(f)]) : '', target: '≤ 70 MB / ≤ 30 MB', load, met: rssOf(a) <= 70 * MB && anonOf(a) <= 30 * MB });
  }
  const idle = (variant: string, flannelDefaults: boolean): IdleFigures | undefined =>
    [...r.idle].reverse().find((i) => i.variant === variant && i.config.includes('--healthz-port=0') === flannelDefaults);
  for (const flannelDefaults of [false, true]) {
    const a = idle('after', flannelDefaults);
    if (!a) continue;
    const b = idle('before', flannelDefaults);
    const f = idle('flanneld', flannelDefaults);
    const tag = flannelDefaults ? 'no health port (flannel\'s defaults)' : 'health port + probes; flanneld: health port only, it has no probes';
    const load = loads(a.load, b?.load, f?.load);
    // Memory in both configurations, like the CPU: the health port loads Node's http server.
    const rssOf = (x: IdleFigures): number => median(x.memory.map((m) => m.rss));
    const anonOf = (x: IdleFigures): number => median(x.memory.map((m) => m.anon));
    const memOf = (x: IdleFigures | undefined): string => (x ? `${mb(rssOf(x))} / ${mb(anonOf(x))}` : '');
    rows.push({ figure: `RSS / private, idle ${a.settleSeconds} s, ${a.peersEach} peers (median of ${a.hosts}; ${tag})`, weft: memOf(a), before: memOf(b), flanneld: memOf(f),
      ratio: f ? ratios([rssOf(a), rssOf(f)], [anonOf(a), anonOf(f)]) : '', target: '≤ 50 MB / ≤ 10 MB', load, met: rssOf(a) <= 50 * MB && anonOf(a) <= 10 * MB,
      ...(f || b ? { note: `restarted daemons idle ${[b, f].filter((x) => x !== undefined).map((x) => `${x.settleSeconds} s (${x.variant})`).join(', ')} before they are measured` } : {}) });
    if (!flannelDefaults) rows.push(heapRow('V8 heap used / total / external, same (median)', a.heap, b?.heap ?? null, na('Go'), la(...a.load), 'median'));
    rows.push({ figure: `idle CPU, ${a.hosts} daemons together, over ${Math.round(a.windowSeconds ?? 60)} s (${tag})`, weft: `${a.cpuCores.toFixed(4)} cores`, before: b ? `${b.cpuCores.toFixed(4)} cores` : '', flanneld: f ? `${f.cpuCores.toFixed(4)} cores` : '',
      ratio: times(a.cpuCores, f?.cpuCores), target: '≤ 0.005 cores', load, met: a.cpuCores <= 0.005 });
    rows.push({ figure: `idle wake-ups per daemon per minute (context switches, median; ${flannelDefaults ? 'no health port' : 'health port'})`, weft: median(a.wakeupsPerMinute).toFixed(0), before: b ? median(b.wakeupsPerMinute).toFixed(0) : '',
      flanneld: f ? median(f.wakeupsPerMinute).toFixed(0) : '', ratio: times(median(a.wakeupsPerMinute), f ? median(f.wakeupsPerMinute) : undefined), target: '—', load, met: null });
  }
  return rows;
}

function heapRow(figure: string, heap: readonly { heapUsed: number | null; heapTotal: number | null; external: number | null }[], before: typeof heap | null, flanneld: string, load: string, how: 'median' | 'max'): Row {
  const agg = (v: (number | null)[]): number | null => {
    if (how === 'median') return medianOf(v);
    const xs = v.filter((x): x is number => x !== null);
    return xs.length ? Math.max(...xs) : null;
  };
  const fmt = (h: typeof heap): string => `${mbOrDash(agg(h.map((x) => x.heapUsed)))} / ${mbOrDash(agg(h.map((x) => x.heapTotal)))} / ${mbOrDash(agg(h.map((x) => x.external)))}`;
  return { figure, weft: heap.length ? fmt(heap) : '—', before: before && before.length ? fmt(before) : '', flanneld, ratio: '', target: '—', load, met: null };
}

function formatTable(rows: readonly Row[], flanneld: FlanneldInfo | null, measured: readonly string[]): string {
  const head = ['figure', 'after', 'before', flanneld ? `flanneld ${flanneld.version}` : 'flanneld', 'after ÷ flanneld', 'target', measured.length > 0 ? `load (${measured.join(' / ')})` : 'load', ''];
  const cells = rows.map((r) => [r.figure, r.weft, r.before, r.flanneld, r.ratio, r.target, r.load, r.met === null ? '' : r.met ? 'met' : 'MISSED']);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: readonly string[]): string => c.map((x, i) => x.padEnd(widths[i]!)).join('  ').trimEnd();
  const notes = rows.filter((r) => r.note).map((r) => `  note: ${r.figure}: ${r.note}`);
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line), ...(notes.length ? ['', ...notes] : [])].join('\n');
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? err.stack : String(err)}\n`);
    let cause = err instanceof Error ? err.cause : undefined;
    while (cause !== undefined) {
      process.stderr.write(`  caused by: ${cause instanceof Error ? cause.message : String(cause)}\n`);
      cause = cause instanceof Error ? cause.cause : undefined;
    }
    process.exit(1);
  },
);
