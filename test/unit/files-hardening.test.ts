/**
 * Files written as root (issue #9, finding 8): a symlinked daemon.json stays a symlink and its
 * target gets the change; the lab never writes through symlinks nor into a state dir others control.
 */
import assert from 'node:assert/strict';
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { writeFileAtomicSync } from '../../src/fsutil';
import { initStateDir, loadState, saveState, type LabState } from '../../src/lab/state';

const root = mkdtempSync(join(tmpdir(), 'weft-files-'));
after(() => rmSync(root, { recursive: true, force: true }));

describe('writeFileAtomicSync through a symlink', () => {
  it('writes the link\'s target and leaves the link a link (weft docker-opts --daemon-json)', async () => {
    const dir = join(root, 'docker');
    mkdirSync(join(dir, 'managed'), { recursive: true });
    writeFileSync(join(dir, 'managed', 'daemon.json'), '{}\n');
    symlinkSync('managed/daemon.json', join(dir, 'daemon.json'));
    writeFileAtomicSync(join(dir, 'daemon.json'), '{"mtu":1450}\n', { what: "Docker's daemon.json" });
    assert.ok(lstatSync(join(dir, 'daemon.json')).isSymbolicLink(), 'still a symlink');
    assert.equal(readlinkSync(join(dir, 'daemon.json')), 'managed/daemon.json');
    assert.equal(readFileSync(join(dir, 'managed', 'daemon.json'), 'utf8'), '{"mtu":1450}\n');
  });

  it('creates the target of a dangling link', async () => {
    const dir = join(root, 'dangling');
    mkdirSync(dir);
    symlinkSync('real.env', join(dir, 'subnet.env'));
    writeFileAtomicSync(join(dir, 'subnet.env'), 'X=1\n', { what: 'subnet.env' });
    assert.ok(lstatSync(join(dir, 'subnet.env')).isSymbolicLink());
    assert.equal(readFileSync(join(dir, 'real.env'), 'utf8'), 'X=1\n');
  });
});

describe('lab state dir in a shared place', () => {
  const state = (dir: string): LabState => ({
    version: 1, name: 't', prefix: 'wtx-', stateDir: dir, network: '10.5.0.0/16', backend: 'vxlan', networkConfig: '{}',
    etcdPrefix: '/coreos.com/network', weftdPath: '/bin/true', extraWeftdArgs: [], healthzPort: 0, namespaces: [], processes: [], hosts: [],
  } as unknown as LabState);

  it('refuses a state dir writable by others, or a symlink to one', () => {
    const open = join(root, 'open');
    mkdirSync(open);
    chmodSync(open, 0o777);
    assert.throws(() => initStateDir(open), /writable by group or others/);
    const link = join(root, 'link');
    symlinkSync(open, link);
    assert.throws(() => initStateDir(link), /is a symbolic link/);
  });

  it('never writes or reads through a symlink planted in the state dir', () => {
    const dir = join(root, 'lab');
    initStateDir(dir);
    const victim = join(root, 'victim');
    writeFileSync(victim, 'precious\n');
    symlinkSync(victim, join(dir, 'state.json.tmp'));
    saveState(state(dir));
    assert.equal(readFileSync(victim, 'utf8'), 'precious\n', 'the symlink target is untouched');
    assert.equal(loadState(dir).name, 't');
    rmSync(join(dir, 'state.json'));
    symlinkSync(victim, join(dir, 'state.json'));
    assert.throws(() => loadState(dir));
  });
});
