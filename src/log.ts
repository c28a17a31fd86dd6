/**
 * A small structured logger. Why not pino: weftd's start-up budget (exec → subnet.env ≤ 100 ms)
 * and dependency diet; we need only levels, two formats and synchronous writes to stderr so that
 * a line written just before exit is never lost.
 *
 * Format: JSON lines when stderr is not a terminal (systemd/journald, log shippers), readable
 * text on a terminal. `WEFT_LOG_FORMAT=json|text` and `WEFT_LOG_LEVEL=debug|info|warn|error`
 * override.
 */
import { escapeControl } from './text';
import { writeSync } from 'node:fs';
import { describeError } from './errors';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFields = Record<string, unknown>;

const LEVEL_RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every line (e.g. { component: 'lease' }). */
  child(fields: LogFields): Logger;
  /**
   * Whether lines of `level` are written. Optional (a logger without it writes everything): a hot
   * path asks before building a message it would throw away (a join's per-change debug lines).
   */
  enabled?(level: LogLevel): boolean;
}

export interface LoggerOptions {
  level?: LogLevel;
  format?: 'json' | 'text';
  fd?: number;
  base?: LogFields;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const envLevel = process.env.WEFT_LOG_LEVEL as LogLevel | undefined;
  const level: LogLevel = opts.level ?? (envLevel && envLevel in LEVEL_RANK ? envLevel : 'info');
  const fd = opts.fd ?? 2;
  const envFormat = process.env.WEFT_LOG_FORMAT;
  const format = opts.format ?? (envFormat === 'json' || envFormat === 'text' ? envFormat : process.stderr.isTTY ? 'text' : 'json');
  return makeLogger(LEVEL_RANK[level], format, fd, opts.base ?? {});
}

function makeLogger(minRank: number, format: 'json' | 'text', fd: number, base: LogFields): Logger {
  const write = (lvl: LogLevel, msg: string, fields?: LogFields): void => {
    if (LEVEL_RANK[lvl] < minRank) return;
    const all = { ...base, ...fields };
    let line: string;
    if (format === 'json') {
      line = JSON.stringify({ time: new Date().toISOString(), level: lvl, msg, ...all }, jsonReplacer);
    } else {
      const kv = Object.entries(all)
        .map(([k, v]) => `${k}=${typeof v === 'string' && !/\s/.test(v) ? v : JSON.stringify(v, jsonReplacer)}`)
        .join(' ');
      // Messages and values carry etcd data (lease keys): no control character reaches a terminal raw.
      line = escapeControl(`${new Date().toISOString()} ${lvl.toUpperCase().padEnd(5)} ${msg}${kv ? ' ' + kv : ''}`);
    }
    try {
      writeSync(fd, line + '\n');
    } catch {
      // stderr closed (EPIPE) or full (EAGAIN): logging must never take the daemon down.
    }
  };
  return {
    debug: (m, f) => write('debug', m, f),
    info: (m, f) => write('info', m, f),
    warn: (m, f) => write('warn', m, f),
    error: (m, f) => write('error', m, f),
    child: (fields) => makeLogger(minRank, format, fd, { ...base, ...fields }),
    enabled: (lvl) => LEVEL_RANK[lvl] >= minRank,
  };
}

function jsonReplacer(_key: string, value: unknown): unknown {
  // The whole cause chain ("acquire lease: etcd txn: ECONNREFUSED"), not just the outer message:
  // the inner cause is usually what an operator needs to act on.
  if (value instanceof Error) return describeError(value);
  if (typeof value === 'bigint') return value.toString();
  return value;
}

/** A logger that drops everything: the default for library code under test. */
export const silentLogger: Logger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  child: () => silentLogger,
  enabled: () => false,
};
