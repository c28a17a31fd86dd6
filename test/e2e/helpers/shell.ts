/**
 * The e2e files' one `waitUntil` and one `sh()` (they had a copy each).
 *
 * `sh(lab, host, ...argv)` runs a command in a lab host's namespaces and returns its stdout; a
 * non-zero exit fails the test with the command and its output. `shScript` is the same for a
 * shell script (`sh -c`), with a longer timeout for scripts that wait themselves.
 */
import assert from 'node:assert/strict';
import type { Lab } from '../../../src/lab';
import { waitUntil as pollUntil } from '../../../src/lab/run';

/** Poll `check` every `intervalMs`; fail the test naming `what` when it is not true within `timeoutMs`. */
export async function waitUntil(
  check: () => boolean | Promise<boolean>, timeoutMs: number, what = 'condition', intervalMs = 50,
): Promise<void> {
  assert.ok(await pollUntil(check, timeoutMs, intervalMs), `timed out after ${timeoutMs} ms waiting for ${what}`);
}

export async function sh(lab: Lab, host: string, ...cmd: string[]): Promise<string> {
  const r = await lab.exec(host, cmd);
  assert.equal(r.code, 0, `${host}: ${cmd.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

export async function shScript(lab: Lab, host: string, script: string, timeoutMs = 20_000): Promise<string> {
  const r = await lab.exec(host, ['sh', '-c', script], { timeoutMs });
  assert.equal(r.code, 0, `${host}: ${script}\n${r.stdout}${r.stderr}`);
  return r.stdout;
}
