import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WeftError } from '../../src/errors';
import { BinaryIptablesRunner, type Exec } from '../../src/iptables/runner';

function fakeExec(version = 'iptables v1.8.9 (nf_tables)', fail: { code: number; stderr: string } | null = null) {
  const calls: { file: string; args: readonly string[]; input: string | null }[] = [];
  const exec: Exec = async (file, args, input) => {
    calls.push({ file, args, input });
    if (args[0] === '--version') return { code: 0, stdout: `${version}\n`, stderr: '' };
    if (fail) return { code: fail.code, stdout: '', stderr: fail.stderr };
    return { code: 0, stdout: '*nat\nCOMMIT\n', stderr: '' };
  };
  return { exec, calls };
}

describe('BinaryIptablesRunner', () => {
  it('dumps one table with -t, several in one process', async () => {
    const f = fakeExec();
    const r = new BinaryIptablesRunner(f.exec);
    await r.save(['nat']);
    await r.save(['nat', 'filter']);
    assert.deepEqual(f.calls.map((c) => [c.file, ...c.args]), [['iptables-save', '-t', 'nat'], ['iptables-save']]);
  });

  it('restores with --noflush, waiting for the xtables lock, input on stdin; the version is asked once', async () => {
    const f = fakeExec();
    const r = new BinaryIptablesRunner(f.exec);
    await r.restore('*nat\nCOMMIT\n');
    await r.restore('*filter\nCOMMIT\n');
    assert.deepEqual(f.calls.map((c) => [c.file, ...c.args]), [
      ['iptables', '--version'], ['iptables-restore', '-w', '5', '--noflush'], ['iptables-restore', '-w', '5', '--noflush'],
    ]);
    assert.equal(f.calls[1]!.input, '*nat\nCOMMIT\n');
  });

  it('does not pass -w to iptables older than 1.6.2', async () => {
    const f = fakeExec('iptables v1.4.21');
    await new BinaryIptablesRunner(f.exec).restore('x');
    assert.deepEqual(f.calls[1]!.args, ['--noflush']);
  });

  it('a failure names the command and quotes iptables\' error', async () => {
    const f = fakeExec(undefined, { code: 4, stderr: 'iptables-restore: line 3 failed\n' });
    await assert.rejects(new BinaryIptablesRunner(f.exec).restore('x'), (e: unknown) =>
      e instanceof WeftError && /iptables-restore -w 5 --noflush exited 4: iptables-restore: line 3 failed/.test(e.message));
  });

  it('a missing binary says how to install it', async () => {
    const exec: Exec = async () => { throw Object.assign(new Error('spawn iptables ENOENT'), { code: 'ENOENT' }); };
    await assert.rejects(new BinaryIptablesRunner(exec).version(), /apt-get install -y iptables/);
  });
});
