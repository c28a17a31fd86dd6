#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS WEFT_EXTRA_CA_CERTS=${NODE_EXTRA_CA_CERTS} node
/**
 * weftd: the per-host daemon. Exit codes: 0 clean shutdown (SIGTERM/SIGINT), 1 cannot go on
 * (the log's last line says why and what to do), 2 bad flags, 70 an uncaught exception (a bug;
 * logged with its cause chain, kernel state left in place, systemd restarts weftd — see
 * src/daemon/last-resort.ts).
 * The shebang moves NODE_EXTRA_CA_CERTS out of Node's way: Node would parse it with its whole
 * root store before weftd runs (~50 ms CPU, ~2 MB); weftd reads it only when it reaches an
 * https:// etcd without --etcd-cafile (src/lease/etcd-common.ts EXTRA_CA_CERTS_ENV). No V8 flag
 * on node's command line: --no-opt is set once the modules are loaded (src/daemon/v8-flags.ts).
 */
// First: its load time marks the end of Node's own start (WEFT_TRACE_STARTUP=1).
import { traceModulesLoaded, traceStartup } from '../daemon/startup-trace';
import { saveWarmCodeCache, warmCodeCacheHook, type WarmCodeCacheOutcome } from '../daemon/code-cache';
import { applyRuntimeV8Flags, withDefaultV8Flags } from '../daemon/v8-flags';
import { parseDaemonOptions } from '../config/options';
import { createComponents } from '../daemon/builtin-components';
import { installLastResort } from '../daemon/last-resort';
import { createNotifier } from '../daemon/notify';
import { startWatchdog } from '../daemon/watchdog';
import { Weftd } from '../daemon/weftd';
import { describeError, WeftError } from '../errors';
import { createLogger, type Logger } from '../log';
import { weftVersion } from '../version';

async function main(): Promise<number> {
  traceModulesLoaded(warmCodeCacheHook()?.used ?? 'unbundled');
  let parsed;
  try {
    parsed = parseDaemonOptions(process.argv.slice(2), process.env);
  } catch (err) {
    process.stderr.write(`weftd: ${describeError(err)}\n`);
    return 2;
  }
  traceStartup('flags parsed');
  if (parsed.kind === 'help') {
    process.stdout.write(parsed.text.endsWith('\n') ? parsed.text : parsed.text + '\n');
    return 0;
  }
  if (parsed.kind === 'version') {
    process.stdout.write(`weftd ${weftVersion()}\n`);
    return 0;
  }

  const log = createLogger({ base: {} });
  // Every module is loaded (with Node's cache of its own, under V8's default flags): no TurboFan
  // from here on (src/daemon/v8-flags.ts).
  const flagsFailed = applyRuntimeV8Flags();
  if (flagsFailed !== null) log.warn(`could not turn V8's optimizing compiler off (${flagsFailed}); weftd works the same, with a few MB more memory`);
  if (typeof process.geteuid === 'function' && process.geteuid() !== 0) {
    log.error('weftd needs root (CAP_NET_ADMIN) to program the overlay device and routes: run it as root or from its systemd unit');
    return 1;
  }

  const notifier = createNotifier(log);
  installLastResort(process, { log, exit: (code) => process.exit(code), status: (text) => notifier.status(text) });
  const stopWatchdog = startWatchdog({ log });
  const daemon = new Weftd(parsed.options, { log, notifier, components: createComponents(parsed.options, log) });
  const stop = new AbortController();
  const onSignal = (sig: NodeJS.Signals): void => {
    if (stop.signal.aborted) return;
    log.info('shutting down; the overlay device, routes and lease stay in place', { signal: sig });
    stop.abort();
    // Never hang on shutdown: systemd would SIGKILL us after TimeoutStopSec anyway.
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  // After READY=1 (sent in the same turn as the 'ready' phase): this host's code cache, once,
  // made under V8's default flags (the next start compiles under them).
  let cacheSaved = false;
  daemon.on('phase', (phase) => {
    if (phase !== 'ready' || cacheSaved) return;
    cacheSaved = true;
    setImmediate(() => logWarmCodeCache(log, withDefaultV8Flags(() => saveWarmCodeCache())));
  });

  log.info('weftd starting', { version: weftVersion(), pid: process.pid, codeCache: warmCodeCacheHook()?.used ?? 'unbundled' });
  try {
    await daemon.run(stop.signal);
    stopWatchdog();
    return 0;
  } catch (err) {
    const code = err instanceof WeftError ? err.code : 'INTERNAL';
    log.error(describeError(err), { code });
    return 1;
  }
}

function logWarmCodeCache(log: Logger, outcome: WarmCodeCacheOutcome): void {
  if (outcome.kind === 'written') {
    log.info("wrote this host's V8 code cache: the next start compiles none of the start path again", { file: outcome.file, compiledWith: outcome.compiledWith });
  } else if (outcome.kind === 'failed') {
    log.warn("could not write this host's V8 code cache; weftd starts without it (~40 ms more CPU per start): " +
      'make its directory writable by root (systemd: CacheDirectory=weft) or point WEFT_CACHE_DIR elsewhere', { file: outcome.file, error: describeError(outcome.error) });
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`weftd: unexpected failure: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
