/**
 * A deadline: a one-shot timer that is almost always cancelled before it expires (an answer that
 * came in time), on the native addon's libuv timer instead of setTimeout.
 *
 * Why: Node arms one libuv timer for the earliest of its JavaScript timers and moves it only
 * when a timer callback runs (lib/internal/timers.js, processTimers). A timeout cleared from an
 * I/O callback — which is how a deadline ends when the answer comes — leaves the loop armed for
 * the cleared expiry, and the process wakes then for nothing: an empty loop iteration, with cold
 * caches after seconds of sleep. An idle weftd's etcd watch probe (its answer's deadline, every
 * 10 s) and its peer probes (the replies' deadline, every 30 s) made 8 such wake-ups a minute, a
 * third of all of them (docs/performance.md, "seventh pass"). uv_timer_stop takes the timer off
 * libuv's heap: the loop sleeps until the next real deadline.
 *
 * Where the addon cannot be loaded (a tree built without it: `npm run build:ts` alone), the
 * deadline falls back to setTimeout — the same behaviour, one empty wake-up per cancel.
 */
import { loadNative, type NativeTimer } from './native';

export interface Deadline {
  /** (Re)arm: `onExpire` runs `ms` from now unless cancel() or another arm() comes first. */
  arm(ms: number): void;
  /** Disarm; a no-op when not armed. */
  cancel(): void;
  /** Disarm for good and release the timer (arm() is then a no-op). */
  close(): void;
  /** Armed and not yet expired. */
  readonly armed: boolean;
}

export interface DeadlineOptions {
  /** Keep the process alive while armed, as a plain setTimeout does. Default true. */
  readonly keepsProcessAlive?: boolean;
}

type TimerFactory = (onExpire: () => void) => NativeTimer;

let nativeTimer: TimerFactory | null | undefined;

/** The addon's Timer, or null when the addon (or a Timer in it) is not there. Looked up once. */
function nativeTimerFactory(): TimerFactory | null {
  if (nativeTimer !== undefined) return nativeTimer;
  try {
    const { Timer } = loadNative();
    nativeTimer = typeof Timer === 'function' ? (onExpire) => new Timer(onExpire) : null;
  } catch {
    nativeTimer = null;
  }
  return nativeTimer;
}

/** Whether deadlines use the native timer here (false: the setTimeout fallback). */
export function deadlinesAreNative(): boolean {
  return nativeTimerFactory() !== null;
}

export function createDeadline(onExpire: () => void, opts: DeadlineOptions = {}): Deadline {
  const factory = nativeTimerFactory();
  return factory === null ? createNodeDeadline(onExpire, opts) : new NativeDeadline(factory, onExpire, opts);
}

/** The setTimeout fallback (createDeadline's choice without the addon; exported for its tests). */
export function createNodeDeadline(onExpire: () => void, opts: DeadlineOptions = {}): Deadline {
  return new NodeDeadline(onExpire, opts);
}

class NativeDeadline implements Deadline {
  private readonly timer: NativeTimer;
  private isArmed = false;
  private closed = false;

  constructor(factory: TimerFactory, onExpire: () => void, opts: DeadlineOptions) {
    this.timer = factory(() => {
      this.isArmed = false;
      onExpire();
    });
    if (opts.keepsProcessAlive === false) this.timer.unref();
  }

  get armed(): boolean {
    return this.isArmed;
  }

  arm(ms: number): void {
    if (this.closed) return;
    this.timer.start(ms);
    this.isArmed = true;
  }

  cancel(): void {
    if (!this.isArmed) return;
    this.timer.stop();
    this.isArmed = false;
  }

  close(): void {
    this.closed = true;
    this.isArmed = false;
    this.timer.close();
  }
}

class NodeDeadline implements Deadline {
  private timer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(private readonly onExpire: () => void, private readonly opts: DeadlineOptions) {}

  get armed(): boolean {
    return this.timer !== null;
  }

  arm(ms: number): void {
    if (this.closed) return;
    this.cancel();
    this.timer = setTimeout(() => {
      this.timer = null;
      this.onExpire();
    }, ms);
    if (this.opts.keepsProcessAlive === false) this.timer.unref();
  }

  cancel(): void {
    if (this.timer === null) return;
    clearTimeout(this.timer);
    this.timer = null;
  }

  close(): void {
    this.closed = true;
    this.cancel();
  }
}
