/**
 * Terminal injection (issue #9, finding 9): text from etcd or weftd printed by the CLI never
 * reaches the terminal with control characters in it, and a newline in a value never forges a row.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { safeLine } from '../../src/cli/io';
import { runLeasesCommand } from '../../src/cli/leases';
import { formatStatus } from '../../src/cli/status';
import type { StatusReport } from '../../src/health/status';
import { formatTable } from '../../src/lab/report';
import { MemoryLeaseRegistry } from '../../src/lease/memory-registry';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../../src/log';
import { escapeControl } from '../../src/text';

// ESC ] 0 ; title BEL (retitles the window), CSI 2 J (clears the screen), a forged row, DEL, C1 CSI, RLO.
const EVIL = '\u001b]0;pwned\u0007x\u001b[2J\nFAKE 10.9.9.0/24\u007f\u009b31m\u202e';
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e]/;

class KeptRegistry extends MemoryLeaseRegistry {
  override async close(): Promise<void> {}
}

describe('terminal injection: one escaping function for every CLI output', () => {
  it('escapes C0, C1, ESC, DEL and bidi overrides as \\u00XX (valid inside JSON too)', () => {
    assert.equal(escapeControl('a\u001b[31mb\u007f\u0085\u202ec'), 'a\\u001b[31mb\\u007f\\u0085\\u202ec');
    assert.equal(escapeControl('x\ny\tz', '\n\t'), 'x\ny\tz');
    assert.equal(JSON.parse(`"${escapeControl('\u001b\u009b')}"`), '\u001b\u009b');
    assert.equal(safeLine('warning: skipping \u001b[2Jkey'), 'warning: skipping \\u001b[2Jkey\n');
  });

  it('weft leases prints a hostile BackendType as inert text on its own row', async () => {
    const reg = new KeptRegistry({ now: () => 0 });
    reg.setConfig('{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}');
    const hl = await reg.grantHostLease(3600);
    await reg.createSubnet('10.5.3.0-24', { PublicIP: '10.250.0.11', PublicIPv6: null, BackendType: EVIL, BackendData: undefined }, hl);
    const out: string[] = [];
    const io = { out: (t: string) => void out.push(t), err: (t: string) => void out.push(t) };
    assert.equal(await runLeasesCommand([], io, { makeRegistry: () => reg, env: {}, now: () => 0 }), 0);
    const text = out.join('\n');
    assert.doesNotMatch(text, CONTROL);
    assert.equal(text.split('\n').length, 2, `header and one row:\n${text}`);
    assert.match(text, /\\u001b\]0;pwned\\u0007x\\u001b\[2J\\u000aFAKE/);
  });

  it('weft status and the lab tables escape every cell', () => {
    const report: StatusReport = {
      version: '0', pid: 1, uptimeSeconds: 1, phase: 'ready', ready: true, reason: 'ready', lease: null,
      dataPath: { backend: 'vxlan', device: 'flannel.1', deviceState: 'up', mode: 'kernel', mtu: 1450, underlay: 'eth0', publicIp: '10.250.0.1' },
      reconcile: null, probes: { enabled: true, error: null },
      peers: [{ key: '10.5.2.0-24', subnet: '10.5.2.0/24', publicIp: EVIL, backendType: 'vxlan', programmed: true, probe: null }],
    };
    const status = formatStatus(report, 0);
    assert.doesNotMatch(status, CONTROL);
    assert.ok(!status.split('\n').some((l) => l.startsWith('FAKE')), 'no forged row');
    const lab = formatTable(['KEY', 'BACKEND'], [['10.5.2.0-24', EVIL]]);
    assert.doesNotMatch(lab, CONTROL);
    assert.equal(lab.split('\n').length, 2);
  });

  it('weftd\'s text log escapes lease keys and values too', () => {
    const dir = mkdtempSync(join(tmpdir(), 'weft-log-'));
    try {
      const fd = openSync(join(dir, 'log'), 'w');
      createLogger({ format: 'text', fd }).warn(`skipping malformed lease ${EVIL}`, { key: EVIL });
      closeSync(fd);
      const text = readFileSync(join(dir, 'log'), 'utf8');
      assert.doesNotMatch(text.slice(0, -1), /[\u0000-\u001f\u007f-\u009f]/);
      assert.equal(text.split('\n').length, 2, 'one line');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
