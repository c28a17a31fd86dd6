/**
 * Deadlines (src/deadline.ts): a one-shot timer on the native addon's libuv timer, whose cancel
 * takes it off the loop. The last test is the reason the module exists: a deadline cancelled from
 * an I/O callback must not wake the process at its old expiry, as a cleared setTimeout does.
 * Wake-ups are counted as the main thread's voluntary context switches (each sleep in epoll_wait
 * is one), in a fresh node process that does nothing else.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { createDeadline, createNodeDeadline, deadlinesAreNative, type Deadline, type DeadlineOptions } from '../../src/deadline';

const DIST_SRC = join(__dirname, '..', '..', 'src');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('deadline', () => {
  it('is native here (the addon is built by npm run build)', () => {
    assert.equal(deadlinesAreNative(), true, 'addon/build/Release/weft_native.node has no Timer: run "npm run build"');
  });

  const kinds: readonly [string, (onExpire: () => void, opts?: DeadlineOptions) => Deadline][] = [
    ['native', createDeadline],
    ['setTimeout fallback', createNodeDeadline],
  ];
  for (const [kind, make] of kinds) {
    describe(kind, () => {
      it('expires once, after its delay', async () => {
        const fired: number[] = [];
        const t0 = Date.now();
        const d = make(() => fired.push(Date.now() - t0));
        d.arm(30);
        assert.equal(d.armed, true);
        await sleep(120);
        assert.equal(fired.length, 1);
        assert.ok(fired[0]! >= 25, `expired after ${fired[0]} ms, armed for 30`);
        assert.equal(d.armed, false);
      });

      it('cancel stops it; arm again replaces the earlier expiry; it can be re-armed from its own callback', async () => {
        let fired = 0;
        const d = make(() => fired++);
        d.arm(20);
        d.cancel();
        assert.equal(d.armed, false);
        await sleep(60);
        assert.equal(fired, 0);

        d.arm(20);
        d.arm(100); // replaces the 20 ms expiry
        await sleep(60);
        assert.equal(fired, 0);
        await sleep(90);
        assert.equal(fired, 1);

        let rounds = 0;
        const again = make(() => {
          if (++rounds < 3) again.arm(5);
        });
        again.arm(5);
        await sleep(100);
        assert.equal(rounds, 3);
      });

      it('close disarms it for good, also from its own callback', async () => {
        let fired = 0;
        const d = make(() => {
          fired++;
          d.close();
          d.arm(5);
        });
        d.arm(5);
        await sleep(60);
        assert.equal(fired, 1);
        assert.equal(d.armed, false);
      });

    });
  }

  it('keeps the process alive while armed, unless told not to', () => {
    const run = (opts: string): number => {
      const t0 = Date.now();
      execFileSync(process.execPath, ['-e', `require(${JSON.stringify(join(DIST_SRC, 'deadline.js'))}).createDeadline(() => {}, ${opts}).arm(400)`]);
      return Date.now() - t0;
    };
    assert.ok(run('{}') >= 400, 'an armed deadline let the process exit');
    assert.ok(run('{ keepsProcessAlive: false }') < 400, 'an unref\'d deadline kept the process alive');
  });

  it('cancelled from an I/O callback, it does not wake the process at its old expiry (a cleared setTimeout does)', () => {
    // An answer (a TCP read) cancels a 300 ms deadline 20 ms in; the process then sleeps until a
    // 700 ms timer. Counted: the main thread's wake-ups from the cancel to that timer, 4 rounds.
    const script = `
      const net = require('node:net');
      const { readFileSync } = require('node:fs');
      const { createDeadline } = require(${JSON.stringify(join(DIST_SRC, 'deadline.js'))});
      const wakeups = () => Number(/^voluntary_ctxt_switches:\\s+(\\d+)/m.exec(readFileSync('/proc/self/task/' + process.pid + '/status', 'utf8'))[1]);
      const kinds = {
        deadline: () => { const d = createDeadline(() => {}); d.arm(300); return () => d.cancel(); },
        setTimeout: () => { const t = setTimeout(() => {}, 300); return () => clearTimeout(t); },
      };
      const server = net.createServer((s) => setTimeout(() => s.end('answer'), 20));
      server.listen(0, '127.0.0.1', async () => {
        const out = {};
        for (const kind of ['deadline', 'setTimeout']) {
          out[kind] = 0;
          for (let round = 0; round < 4; round++) {
            out[kind] += await new Promise((resolve) => {
              const cancel = kinds[kind]();
              const c = net.connect(server.address().port, '127.0.0.1');
              c.once('data', () => {
                cancel();
                const at = wakeups();
                setTimeout(() => { const n = wakeups() - at; c.destroy(); resolve(n); }, 700);
              });
            });
          }
        }
        server.close();
        process.stdout.write(JSON.stringify(out));
      });`;
    const counts = JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' })) as { deadline: number; setTimeout: number };
    // The measurement sees the cleared setTimeout's empty wake-up (one per round, beside the one
    // sleep to the 700 ms timer): without that, the assertion below could not fail.
    assert.ok(counts.setTimeout >= 8, `a cleared setTimeout woke the loop ${counts.setTimeout} times in 4 rounds; expected ≥ 8 (Node changed? src/deadline.ts's reason would be gone)`);
    assert.ok(counts.deadline <= 6, `a cancelled deadline's process woke ${counts.deadline} times in 4 rounds (one sleep each expected): its cancel did not take it off the loop`);
  });
});
