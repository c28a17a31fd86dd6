/**
 * One empty wake-up, in Node: a timer every INTERVAL_MS that does nothing, COUNT times; prints the
 * process's CPU (process.cpuUsage: user + system) per wake-up in microseconds, the first 20 not
 * counted (they compile the timers' code). Run as weftd is
 * (weftd's NODE_OPTIONS, --no-opt: bench/lib/scenarios.ts, measureWakeups), beside its C twin
 * wakeup.c: what the runtime adds to every event weftd wakes for, before any of weft's code.
 *
 *   node --no-opt wakeup.js COUNT INTERVAL_MS
 */
const [count, interval] = process.argv.slice(2).map(Number);
if (!Number.isInteger(count) || !Number.isInteger(interval) || count! <= 0 || interval! <= 0) {
  process.stderr.write('usage: node wakeup.js COUNT INTERVAL_MS\n');
  process.exit(2);
}
/** Wake-ups not counted: the first ones compile the timers' code (and this file's). */
const WARMUP = 20;
let before = process.cpuUsage();
let n = 0;
const tick = (): void => {
  if (++n === WARMUP) before = process.cpuUsage();
  if (n < WARMUP + count!) {
    setTimeout(tick, interval);
    return;
  }
  const used = process.cpuUsage(before);
  process.stdout.write(`${((used.user + used.system) / count!).toFixed(2)}\n`);
};
setTimeout(tick, interval);
