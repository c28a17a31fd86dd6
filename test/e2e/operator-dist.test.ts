/**
 * The files operators install: the systemd unit and Docker drop-in pass `systemd-analyze verify`
 * (Debian's systemd), the Vagrantfile parses (`ruby -c`), the shell scripts parse (`bash -n`).
 *
 * systemd-analyze verify insists that ExecStart= binaries exist. They are the installed paths
 * (/usr/local/bin/weftd, /usr/local/bin/weft), so the check runs in a private mount namespace
 * (unshare) where a scratch directory with stand-ins is bind-mounted on /usr/local/bin: the unit
 * files are verified unmodified and the machine's own /usr/local/bin is never touched.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, describe, test } from 'node:test';
import { findExecutable } from '../../src/lab/prereq';

const ROOT = resolve(__dirname, '..', '..', '..');
const scratch = mkdtempSync(join(tmpdir(), `wt${process.pid}-dist-`));
const INSTALL = 'apt-get install -y systemd ruby util-linux (or scripts/install-deps.sh dev)';

function need(tool: string): string {
  const path = findExecutable(tool, process.env.PATH ?? '');
  assert.ok(path, `${tool} not found: ${INSTALL}`);
  return path;
}

function run(file: string, args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((res) => {
    execFile(file, [...args], { timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1;
      res({ code, stdout, stderr });
    });
  });
}

/** `systemd-analyze verify FILES` with stand-ins for weft and weftd at /usr/local/bin. */
async function verify(files: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const bin = join(scratch, 'bin');
  mkdirSync(bin, { recursive: true });
  for (const name of ['weftd', 'weft']) {
    writeFileSync(join(bin, name), '#!/bin/sh\nexit 0\n');
    chmodSync(join(bin, name), 0o755);
  }
  const script = 'mount --bind "$1" /usr/local/bin && shift && exec systemd-analyze verify "$@"';
  return run(need('unshare'), ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', bin, ...files]);
}

describe('operator files: systemd unit, Docker drop-in, Vagrant', () => {
  after(() => rmSync(scratch, { recursive: true, force: true }));

  test('systemd/weftd.service passes systemd-analyze verify without a warning', async () => {
    need('systemd-analyze');
    const r = await verify([join(ROOT, 'systemd', 'weftd.service')]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr.trim(), '', 'no warnings');
  });

  test('weftd.service is Type=notify, restarts on failure, and orders itself after a local etcd', () => {
    const unit = readFileSync(join(ROOT, 'systemd', 'weftd.service'), 'utf8');
    for (const line of ['Type=notify', 'Restart=on-failure', 'Wants=etcd.service', 'After=etcd.service', 'Before=docker.service containerd.service',
      'ExecStart=/usr/local/bin/weftd $WEFTD_OPTS', 'EnvironmentFile=-/etc/default/weftd', 'WantedBy=multi-user.target']) {
      assert.ok(unit.split('\n').includes(line), `missing "${line}"`);
    }
  });

  test('the Docker drop-in verifies as part of a docker.service and runs docker-opts before dockerd', async () => {
    need('systemd-analyze');
    const dir = join(scratch, 'units');
    mkdirSync(join(dir, 'docker.service.d'), { recursive: true });
    writeFileSync(join(dir, 'docker.service'), '[Unit]\nDescription=Docker (stand-in)\n[Service]\nExecStart=/bin/true\n');
    copyFileSync(join(ROOT, 'systemd', 'docker-weft.conf'), join(dir, 'docker.service.d', 'weft.conf'));
    const r = await verify([join(dir, 'docker.service')]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr.trim(), '', 'no warnings');
    const dropin = readFileSync(join(ROOT, 'systemd', 'docker-weft.conf'), 'utf8').split('\n');
    assert.ok(dropin.includes('After=weftd.service'));
    assert.ok(dropin.includes('Wants=weftd.service'));
    assert.ok(dropin.some((l) => l.startsWith('ExecStartPre=/usr/local/bin/weft docker-opts --daemon-json')));
  });

  test('the Vagrantfile parses (ruby -c) and the scripts parse (bash -n)', async () => {
    const ruby = await run(need('ruby'), ['-c', join(ROOT, 'vagrant', 'Vagrantfile')]);
    assert.equal(ruby.code, 0, ruby.stderr);
    assert.match(ruby.stdout, /Syntax OK/);
    for (const script of ['vagrant/provision.sh', 'scripts/install-deps.sh']) {
      const r = await run(need('bash'), ['-n', join(ROOT, script)]);
      assert.equal(r.code, 0, `${script}: ${r.stderr}`);
    }
  });

  test('what the Vagrant provisioning installs exists in the tree', () => {
    const provision = readFileSync(join(ROOT, 'vagrant', 'provision.sh'), 'utf8');
    for (const m of provision.matchAll(/\$(?:APP|SRC)\/([\w./-]+)/g)) {
      if (m[1]!.startsWith('dist/') || m[1] === '.') continue;
      assert.ok(readFileSync(join(ROOT, m[1]!)), m[1]);
    }
    assert.match(readFileSync(join(ROOT, 'vagrant', 'Vagrantfile'), 'utf8'), /path: "provision\.sh"/);
  });
});
