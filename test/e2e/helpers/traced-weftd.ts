/**
 * weftd under `strace -f` (it and every program it runs: iptables, wireguard-go), for the lab:
 * used as LabOptions.weftdPath. Writes the trace to $WEFT_TRACE_DIR/trace-<wrapper pid>.txt and
 * strace's process group to $WEFT_TRACE_DIR/groups (for clean-up), forwards SIGTERM/SIGINT and
 * exits with weftd's status.
 */
import { spawn } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

const WEFTD = resolve(__dirname, '..', '..', '..', 'src', 'cli', 'weftd.js');
const out = join(process.env.WEFT_TRACE_DIR ?? '/tmp', `trace-${process.pid}.txt`);
// Its own process group: strace blocks fatal signals while it traces (-o FILE PROG), so a
// signal goes to the whole group, where weftd takes it and strace follows it out.
const child = spawn('strace', ['-f', '-qq', '-o', out, '--', process.execPath, WEFTD, ...process.argv.slice(2)], { stdio: 'inherit', detached: true });
if (process.env.WEFT_TRACE_DIR && child.pid !== undefined) appendFileSync(join(process.env.WEFT_TRACE_DIR, 'groups'), `${child.pid}\n`);
for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.on(sig, () => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, sig);
    } catch {
      // already gone
    }
  });
}
child.on('error', (err) => {
  process.stderr.write(`traced-weftd: strace: ${err.message} (apt-get install -y strace)\n`);
  process.exit(1);
});
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 128 : 1)));
