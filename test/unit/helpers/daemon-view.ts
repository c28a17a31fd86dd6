/**
 * The daemon as a component sees it (daemon/components.ts: DaemonView), driven by a test: set
 * `phase` and `state`, emit the events. Snapshots are plain data, so no cast is needed.
 */
import { EventEmitter } from 'node:events';
import type { DaemonView, WeftdEvents, WeftdPhase, WeftdSnapshot } from '../../../src/daemon/components';

/** What a daemon that has just started knows: nothing yet. */
export function startingSnapshot(over: Partial<WeftdSnapshot> = {}): WeftdSnapshot {
  return {
    phase: 'starting', underlay: null, config: null, lease: null, leaseState: 'idle', leaseExpiresAtMs: null,
    peers: [], dataPaths: [], registry: null,
    ...over,
  };
}

export class FakeDaemon extends EventEmitter<WeftdEvents> implements DaemonView {
  phase: WeftdPhase = 'starting';
  state: WeftdSnapshot;

  constructor(over: Partial<WeftdSnapshot> = {}) {
    super();
    this.state = startingSnapshot(over);
  }

  snapshot(): WeftdSnapshot {
    return { ...this.state, phase: this.phase };
  }
}
