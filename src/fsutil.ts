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
import {
  closeSync,
  fchmodSync,
  fchownSync,
  fsyncSync,
  lstatSync,
  mkdirSync,
  openSync,
  readlinkSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  type Stats,
} from 'node:fs';
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
export function resolveLinkTarget(filePath: string): string {
  let p = path.resolve(filePath);
  for (let i = 0; i < 40; i++) {
    let st: Stats | null = null;
    try {
      st = lstatSync(p);
    } catch {
      // Missing (or unreadable): this is the file to write.
    }
    if (st === null || !st.isSymbolicLink()) return p;
    p = path.resolve(path.dirname(p), readlinkSync(p));
  }
  throw new WeftError('CONFIG_INVALID', `${filePath}: too many levels of symbolic links`);
}

/**
 * Distinguishes this process's temporary files. Not random: the file is created with O_EXCL
 * ('wx'), so a clash fails loudly instead of overwriting, and `node:crypto` stays unloaded
 * (OpenSSL's initialisation costs every weftd ~0.7 MB private and ~1.4 MB RSS; docs/performance.md).
 */
let tmpSerial = 0;

/**
 * Synchronous on purpose: the files are small and written rarely, and weftd writes subnet.env on
 * its start-up path, where the asynchronous version's eleven thread-pool round trips (mkdir, stat,
 * open, write, chmod, chown, fsync, close, rename, open, fsync) cost 10–24 ms of wall time under
 * load (docs/performance.md, "Start-up") for nothing: the daemon has nothing else to do meanwhile.
 * The fsyncs block the event loop for what they take: nothing on tmpfs (/run), a few ms on a disk.
 */
export function writeFileAtomicSync(linkPath: string, text: string, opts: AtomicWriteOptions): void {
  const filePath = resolveLinkTarget(linkPath);
  const dir = path.dirname(filePath);
  const tmp = path.join(dir, `.${path.basename(filePath)}.${process.pid}.${Date.now().toString(36)}.${++tmpSerial}.tmp`);
  let step = `create directory ${dir}`;
  try {
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    let existing: Stats | null = null;
    if (opts.keepExisting !== false) {
      try {
        existing = statSync(filePath);
      } catch {
        // A new file.
      }
    }
    const mode = existing ? existing.mode & 0o7777 : (opts.mode ?? 0o644);
    step = `create temporary file ${tmp}`;
    const fd = openSync(tmp, 'wx', mode);
    try {
      step = `write temporary file ${tmp}`;
      writeFileSync(fd, text, 'utf8');
      fchmodSync(fd, mode);
      // Keep the owner of an existing file (root-owned in practice; best effort otherwise).
      if (existing) {
        try {
          fchownSync(fd, existing.uid, existing.gid);
        } catch {
          // Best effort.
        }
      }
      step = `fsync temporary file ${tmp}`;
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    step = `rename ${tmp} to ${filePath}`;
    renameSync(tmp, filePath);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw new WeftError('INTERNAL', `write ${opts.what} ${filePath}: ${step}: ${(err as Error).message}`, { cause: err });
  }
  // Durability of the rename; failing here does not undo a write readers can already see.
  try {
    const dfd = openSync(dir, 'r');
    try {
      fsyncSync(dfd);
    } finally {
      closeSync(dfd);
    }
  } catch {
    // Best effort (see above).
  }
}
