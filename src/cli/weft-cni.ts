#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS -u NODE_OPTIONS node
/**
 * The weft CNI plugin's executable. Install it into a CNI bin dir as `weft` (and, to keep
 * conflists written for flannel, as `flannel`): `weft cni install`. A symlink to this file is
 * enough — Node resolves it to its real path, so ../cni/plugin is found next to it.
 * Imports only ../cni/plugin (node: built-ins): this process starts once per container.
 * The shebang drops NODE_EXTRA_CA_CERTS (a runtime's environment reaches its plugins: Node would
 * parse the CA bundle at start-up, 120 -> 330 ms measured here, for a plugin that never speaks
 * TLS) and NODE_OPTIONS (no --require hooks of the runtime's user in the plugin).
 */
import { readFileSync, writeSync } from 'node:fs';
import { runPlugin } from '../cni/plugin';

let stdin = '';
try {
  stdin = readFileSync(0, 'utf8');
} catch {
  // VERSION may come without stdin
}
const out = runPlugin(process.env, stdin);
if (out.stderr) writeSync(2, out.stderr);
if (out.stdout) writeSync(1, out.stdout);
process.exitCode = out.code;
