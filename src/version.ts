/** weft's version, read once from package.json (dist/src/version.js → ../../package.json). */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';

let cached: string | undefined;

export function weftVersion(): string {
  if (cached === undefined) {
    try {
      const pkg = JSON.parse(readFileSync(path.resolve(__dirname, '..', '..', 'package.json'), 'utf8')) as { version?: string };
      cached = pkg.version ?? 'unknown';
    } catch {
      cached = 'unknown';
    }
  }
  return cached;
}
