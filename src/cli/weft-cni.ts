#!/usr/bin/env node
/**
 * The weft CNI plugin's executable. Install it into a CNI bin dir as `weft` (and, to keep
 * conflists written for flannel, as `flannel`): `weft cni install`. A symlink to this file is
 * enough — Node resolves it to its real path, so ../cni/plugin is found next to it.
 * Imports only ../cni/plugin (node: built-ins): this process starts once per container.
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
