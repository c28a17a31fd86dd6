/**
 * Random bytes from the kernel's CSPRNG (/dev/urandom) without `node:crypto`: loading that module
 * initialises OpenSSL and ~15 of Node's crypto modules (~0.7 MB private memory and ~1.4 MB RSS per
 * weftd, measured) for the few bytes weftd ever draws: a new VXLAN device's MAC (6), a probe
 * socket's reply cookie (16). /dev/urandom is the kernel's CSPRNG, the one getrandom(2) draws
 * from, seeded long before a network daemon starts. Where it cannot be opened (a sandbox without
 * /dev), `node:crypto` is the fallback.
 */
import { closeSync, openSync, readSync } from 'node:fs';

export function randomBytes(n: number): Buffer {
  const out = Buffer.alloc(n);
  let fd: number;
  try {
    fd = openSync('/dev/urandom', 'r');
  } catch {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return (require('node:crypto') as typeof import('node:crypto')).randomBytes(n);
  }
  try {
    for (let got = 0; got < n;) {
      const read = readSync(fd, out, got, n - got, null);
      if (read <= 0) throw new Error(`/dev/urandom gave ${got} of ${n} bytes`);
      got += read;
    }
  } finally {
    closeSync(fd);
  }
  return out;
}
