/**
 * daemon/builtin-components.ts: components are loaded and started only on the first lease (right
 * after subnet.env), see that lease as if they had been started first, and the health server
 * starts without a lease when weftd waits (for etcd, for the config).
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';
import { DeferredComponent } from '../../src/daemon/builtin-components';
import type { DaemonComponent, DaemonView, WeftdEvents, WeftdPhase, WeftdSnapshot } from '../../src/daemon/components';
import type { Lease } from '../../src/lease/types';
import { silentLogger, type Logger } from '../../src/log';

class FakeDaemon extends EventEmitter implements DaemonView {
  phase: WeftdPhase = 'starting';
  lease: Lease | null = null;
  snapshot(): WeftdSnapshot {
    return { phase: this.phase, lease: this.lease } as unknown as WeftdSnapshot;
  }
  override on<K extends keyof WeftdEvents>(event: K, listener: (...args: WeftdEvents[K]) => void): this {
    return super.on(event, listener as (...args: unknown[]) => void);
  }
  deliverLease(lease: Lease): void {
    this.lease = lease;
    this.emit('lease', lease);
  }
}

const lease = { key: '10.5.1.0-24', subnet: { ip: 0x0a050100, prefixLen: 24 } } as unknown as Lease;

/** A component that records what it saw, like the iptables manager (acts on 'lease'). */
function recording(log: string[]): DaemonComponent {
  return {
    name: 'rec',
    async start(daemon) {
      log.push('started');
      daemon.on('lease', (l) => log.push(`lease ${l.key} (snapshot ${daemon.snapshot().lease?.key ?? 'none'})`));
    },
    async stop() {
      log.push('stopped');
    },
  };
}

describe('DeferredComponent', () => {
  it('loads nothing before the first lease, then starts and sees that lease once', async () => {
    const daemon = new FakeDaemon();
    const log: string[] = [];
    let loads = 0;
    const c = new DeferredComponent('rec', silentLogger, () => { loads++; return recording(log); });
    await c.start(daemon);
    daemon.emit('phase', 'waiting-config');
    assert.equal(loads, 0);
    assert.equal(c.loaded, null);
    daemon.deliverLease(lease);
    assert.equal(loads, 1);
    assert.deepEqual(log, ['started', 'lease 10.5.1.0-24 (snapshot 10.5.1.0-24)']);
    // A re-acquired lease reaches it once, as any listener.
    daemon.deliverLease(lease);
    assert.equal(loads, 1);
    assert.deepEqual(log.slice(2), ['lease 10.5.1.0-24 (snapshot 10.5.1.0-24)']);
    await c.stop();
    assert.equal(log.at(-1), 'stopped');
  });

  it('starts without a lease after its time limit (the health server while weftd waits), lease events then as usual', async () => {
    const daemon = new FakeDaemon();
    const log: string[] = [];
    const c = new DeferredComponent('rec', silentLogger, () => recording(log), 20);
    await c.start(daemon);
    assert.deepEqual(log, []);
    await new Promise((r) => setTimeout(r, 60));
    assert.deepEqual(log, ['started']);
    daemon.deliverLease(lease);
    assert.deepEqual(log, ['started', 'lease 10.5.1.0-24 (snapshot 10.5.1.0-24)']);
    await c.stop();
  });

  it('a lease before the time limit starts it at once and the timer never fires again', async () => {
    const daemon = new FakeDaemon();
    const log: string[] = [];
    let loads = 0;
    const c = new DeferredComponent('rec', silentLogger, () => { loads++; return recording(log); }, 20);
    await c.start(daemon);
    daemon.deliverLease(lease);
    await new Promise((r) => setTimeout(r, 60));
    assert.equal(loads, 1);
    assert.deepEqual(log, ['started', 'lease 10.5.1.0-24 (snapshot 10.5.1.0-24)']);
    await c.stop();
  });

  it('stopped before any lease: never loaded, its timer cleared', async () => {
    const daemon = new FakeDaemon();
    let loads = 0;
    const c = new DeferredComponent('rec', silentLogger, () => { loads++; return recording([]); }, 20);
    await c.start(daemon);
    await c.stop();
    await new Promise((r) => setTimeout(r, 60));
    daemon.deliverLease(lease);
    assert.equal(loads, 0);
  });

  it('a module that fails to load is logged, not thrown into the daemon', async () => {
    const daemon = new FakeDaemon();
    const errors: string[] = [];
    const log: Logger = { ...silentLogger, error: (msg: string) => { errors.push(msg); }, child: () => log };
    const c = new DeferredComponent('broken', log, () => { throw new Error('Cannot find module ../health/component'); });
    await c.start(daemon);
    daemon.deliverLease(lease);
    assert.equal(errors.length, 1);
    assert.match(errors[0]!, /component broken could not be loaded: .*Cannot find module/);
    await c.stop();
  });
});
