/**
 * Replace a file so that readers see the old version or the new one, never a part of either:
 * write a temporary file in the same directory (rename is atomic only within one filesystem),
 * fsync it, give it the target's mode and owner (or `mode` for a new file, or always `mode` with
 * `keepExisting: false`), rename it over the target, fsync the directory so the rename survives a
 * crash. Used for files other programs read while we write them: the daemon's subnet.env, the
 * CLI's Docker daemon.json and options file. The temporary file is removed on failure.
 *
 * A symlink is written through, not replaced: /etc/docker/daemon.json is often a link into a
 * configuration-management tree, and renaming over the link would silently turn it into a
 * regular file (the link's target then never sees the change). The link is resolved (every
 * level, dangling or not) and the temporary file goes beside the target.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { WeftError } from './errors';

export interface AtomicWriteOptions {
  /** Mode of a file that does not exist yet; an existing file keeps its own. Default 0644. */
  readonly mode?: number;
  /**
   * Keep an existing file's mode and owner (default true). false: always `mode`, whatever the
   * file had (subnet.env is 0644 by contract).
   */
  readonly keepExisting?: boolean;
  /** What the file is, for messages ("Docker's daemon.json"). */
  readonly what: string;
}

/** The file a path finally names, following symlinks (also a dangling one's target); at most 40 levels, like the kernel. */
export async function resolveLinkTarget(filePath: string): Promise<string> {
  let p = path.resolve(filePath);
  for (let i = 0; i < 40; i++) {
    const st = await fsp.lstat(p).catch(() => null);
    if (st === null || !st.isSymbolicLink()) return p;
    p = path.resolve(path.dirname(p), await fsp.readlink(p));
  }
  throw new WeftError('CONFIG_INVALID', `${filePath}: too many levels of symbolic links`);
}

/**
 * Distinguishes this process's temporary files. Not random: the file is created with O_EXCL
 * ('wx'), so a clash fails loudly instead of overwriting, and `node:crypto` stays unloaded
 * (OpenSSL's initialisation costs every weftd ~0.7 MB private and ~1.4 MB RSS; docs/performance.md).
 */
let tmpSerial = 0;

export async function writeFileAtomic(linkPath: string, text: string, opts: AtomicWriteOptions): Promise<void> {
  const filePath = await resolveLinkTarget(linkPath);
  const dir = path.dirname(filePath);
  const tmp = path.join(dir, `.${path.basename(filePath)}.${process.pid}.${Date.now().toString(36)}.${++tmpSerial}.tmp`);
  let step = `create directory ${dir}`;
  try {
    await fsp.mkdir(dir, { recursive: true, mode: 0o755 });
    const existing = opts.keepExisting === false ? null : await fsp.stat(filePath).catch(() => null);
    const mode = existing ? existing.mode & 0o7777 : (opts.mode ?? 0o644);
    step = `create temporary file ${tmp}`;
    const fh = await fsp.open(tmp, 'wx', mode);
    try {
      step = `write temporary file ${tmp}`;
      await fh.writeFile(text, 'utf8');
      await fh.chmod(mode);
      // Keep the owner of an existing file (root-owned in practice; best effort otherwise).
      if (existing) await fh.chown(existing.uid, existing.gid).catch(() => undefined);
      step = `fsync temporary file ${tmp}`;
      await fh.sync();
    } finally {
      await fh.close();
    }
    step = `rename ${tmp} to ${filePath}`;
    await fsp.rename(tmp, filePath);
  } catch (err) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw new WeftError('INTERNAL', `write ${opts.what} ${filePath}: ${step}: ${(err as Error).message}`, { cause: err });
  }
  // Durability of the rename; failing here does not undo a write readers can already see.
  const dh = await fsp.open(dir, 'r').catch(() => null);
  if (dh !== null) {
    await dh.sync().catch(() => undefined);
    await dh.close().catch(() => undefined);
  }
}
