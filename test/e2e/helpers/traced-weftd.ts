/**
 * weftd under `strace -f` (it and every program it runs: iptables, wireguard-go), for the lab:
 * used as LabOptions.weftdPath. Writes the trace to $WEFT_TRACE_DIR/trace-<wrapper pid>.txt,
 * forwards SIGTERM/SIGINT and exits with weftd's status.
 */
import { spawn } from 'node:child_process';
import { join, resolve } from 'node:path';

const WEFTD = resolve(__dirname, '..', '..', '..', 'src', 'cli', 'weftd.js');
const out = join(process.env.WEFT_TRACE_DIR ?? '/tmp', `trace-${process.pid}.txt`);
const child = spawn('strace', ['-f', '-qq', '-o', out, '--', process.execPath, WEFTD, ...process.argv.slice(2)], { stdio: 'inherit' });
for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => child.kill(sig));
child.on('error', (err) => {
  process.stderr.write(`traced-weftd: strace: ${err.message} (apt-get install -y strace)\n`);
  process.exit(1);
});
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 128 : 1)));
