/**
 * weftd with only the capabilities systemd/weftd.service leaves it (CapabilityBoundingSet=
 * CAP_NET_ADMIN CAP_NET_RAW, NoNewPrivileges=yes), for the lab: used as LabOptions.weftdPath.
 * Runs the real weftd under `setpriv` (still uid 0, as under systemd), forwards SIGTERM/SIGINT,
 * exits with its status, and writes the real weftd's PID to $WEFT_CAPPED_PIDFILE so a test can
 * read its capability sets and kill it if this wrapper dies first.
 */
import { spawn } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import { resolve } from 'node:path';

const WEFTD = resolve(__dirname, '..', '..', '..', 'src', 'cli', 'weftd.js');
export const CAPS = '-all,+net_admin,+net_raw';

const child = spawn('setpriv', [`--bounding-set=${CAPS}`, '--inh-caps=-all', '--no-new-privs', '--', process.execPath, WEFTD, ...process.argv.slice(2)], { stdio: 'inherit' });
if (process.env.WEFT_CAPPED_PIDFILE && child.pid !== undefined) appendFileSync(process.env.WEFT_CAPPED_PIDFILE, `${child.pid}\n`);
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(sig, () => child.kill(sig));
child.on('error', (err) => {
  process.stderr.write(`capped-weftd: setpriv: ${err.message} (apt-get install -y util-linux)\n`);
  process.exit(1);
});
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 128 : 1)));
