/**
 * WEFT_TRACE_STARTUP=1: weftd prints one line per start-up step to stderr, with the monotonic
 * time since the process began (performance.now(), whose origin is the process's start), so
 * each step's share of exec → subnet.env can be read off a single start (docs/performance.md,
 * "Start-up"), and the process's CPU time so far (user + system, all threads: what a loaded
 * machine does not distort the way it does wall time). Off by default: one comparison per step.
 *
 * Imported first by the entry (src/cli/weftd.ts), so `firstModuleAtMs` is when Node had
 * finished its own start and began loading weft's modules.
 */
const enabled = process.env.WEFT_TRACE_STARTUP === '1';
// `performance` (Node's global) only when tracing: its first use loads ten perf_hooks modules,
// ~1.4 ms of CPU every start would pay for a trace that is off.

function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** When this module was evaluated: Node's start is over, weft's module loading begins. */
const firstModuleAtMs = enabled ? performance.now() : 0;
let lastMs = firstModuleAtMs;
const firstModuleCpuMs = enabled ? cpuMs() : 0;

/** One line: `weftd-startup <ms since process start> +<ms since the previous step> cpu=<ms> <step>`. */
export function traceStartup(step: string): void {
  if (!enabled) return;
  const now = performance.now();
  process.stderr.write(`weftd-startup ${now.toFixed(1)} +${(now - lastMs).toFixed(1)} cpu=${cpuMs().toFixed(1)} ${step}\n`);
  lastMs = now;
}

/**
 * The entry's first trace: Node's own start (up to the first weft module), then module loading,
 * with the code cache the one-file weftd compiled with (`codeCache`: warm, shipped, none, unbundled).
 */
export function traceModulesLoaded(codeCache: string): void {
  if (!enabled) return;
  const nodeReadyMs = performance.nodeTiming.bootstrapComplete;
  process.stderr.write(`weftd-startup ${nodeReadyMs.toFixed(1)} +${nodeReadyMs.toFixed(1)} node bootstrap complete\n`);
  process.stderr.write(`weftd-startup ${firstModuleAtMs.toFixed(1)} +${(firstModuleAtMs - nodeReadyMs).toFixed(1)} cpu=${firstModuleCpuMs.toFixed(1)} first weft module (node's start, entry script read)\n`);
  lastMs = firstModuleAtMs;
  traceStartup(`modules loaded (code cache: ${codeCache})`);
}
