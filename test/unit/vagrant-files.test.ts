/**
 * What CI can check of the Vagrant cluster and the release scripts without booting a VM (the full
 * run took 29 min under emulation on a busy 2-core host: docs/operators.md, "Vagrant"): every
 * shell script in vagrant/ and scripts/ parses (`bash -n`) and passes shellcheck, and the Vagrantfile parses
 * (`ruby -c`) and, evaluated with a stand-in for Vagrant's API, takes the box and the libvirt
 * driver from the environment (or kvm only where the CPU shows vmx/svm) and sets no `lv.serial`
 * (vagrant-libvirt 0.11.2 fails on it).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { accessSync, constants, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { describe, it } from 'node:test';

const ROOT = join(__dirname, '..', '..', '..');

function shellScripts(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (name === '.vagrant') continue;
    if (statSync(p).isDirectory()) out.push(...shellScripts(p));
    else if (name.endsWith('.sh')) out.push(p);
  }
  return out.sort();
}

const SCRIPTS = [...shellScripts(join(ROOT, 'vagrant')), ...shellScripts(join(ROOT, 'scripts'))];

function need(tool: string, pkg: string): void {
  const r = spawnSync('sh', ['-c', `command -v ${tool}`]);
  assert.equal(r.status, 0, `${tool} is not installed: apt-get install -y ${pkg} (or scripts/install-deps.sh dev)`);
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): { status: number | null; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env, cwd: ROOT });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

describe('vagrant/ and scripts/ shell scripts', () => {
  it('finds the scripts it is meant to check', () => {
    const names = SCRIPTS.map((p) => relative(ROOT, p));
    for (const want of ['vagrant/provision.sh', 'vagrant/check.sh', 'vagrant/box/build-box.sh', 'scripts/install-deps.sh', 'scripts/release.sh', 'scripts/release-install.sh']) {
      assert.ok(names.includes(want), `${want} missing from ${names.join(', ')}`);
    }
  });

  it('bash -n rejects a broken script (the check below can fail)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'weft-vagrant-'));
    try {
      writeFileSync(join(dir, 'bad.sh'), 'if true; then echo x\n');
      assert.notEqual(run('bash', ['-n', join(dir, 'bad.sh')]).status, 0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  for (const script of SCRIPTS) {
    it(`${relative(ROOT, script)}: bash -n and shellcheck`, () => {
      const syntax = run('bash', ['-n', script]);
      assert.equal(syntax.status, 0, syntax.out);
      need('shellcheck', 'shellcheck');
      const lint = run('shellcheck', ['-x', script]);
      assert.equal(lint.status, 0, lint.out);
    });
  }
});

/** Evaluates the Vagrantfile with a recorder in place of Vagrant: every `x.y = v` it makes. */
const RECORDER = `
class Rec
  def initialize(log, path) @log = log; @path = path end
  def method_missing(name, *args, **kw, &blk)
    n = name.to_s
    if n.end_with?("=") then @log << "#{@path}#{n[0..-2]}=#{args[0]}"; return args[0] end
    child = Rec.new(@log, "#{@path}#{n}.")
    @log << "#{@path}#{n}(#{args.map(&:to_s).join(",")})" unless args.empty?
    blk.call(child) if blk
    child
  end
  def respond_to_missing?(*) true end
end
module Vagrant
  def self.configure(_v) log = []; yield Rec.new(log, ""); puts log end
end
load ARGV[0]
`;

describe('vagrant/Vagrantfile', () => {
  const file = join(ROOT, 'vagrant', 'Vagrantfile');

  it('parses (ruby -c)', () => {
    need('ruby', 'ruby');
    const r = run('ruby', ['-c', file]);
    assert.equal(r.status, 0, r.out);
  });

  it('takes the box and the libvirt driver from the environment, and sets no serial console', () => {
    need('ruby', 'ruby');
    const env = { ...process.env, WEFT_BOX: 'test/box', WEFT_LIBVIRT_DRIVER: 'qemu' };
    const r = run('ruby', ['-e', RECORDER, file], env);
    assert.equal(r.status, 0, r.out);
    const lines = r.out.split('\n');
    assert.ok(lines.includes('vm.box=test/box'), r.out);
    assert.ok(lines.includes('vm.provider(libvirt)'), r.out);
    assert.ok(lines.includes('vm.provider.driver=qemu'), r.out);
    assert.ok(!lines.some((l) => /serial/.test(l)), r.out);
    const kvm = run('ruby', ['-e', RECORDER, file], { ...env, WEFT_LIBVIRT_DRIVER: 'kvm' });
    assert.ok(kvm.out.split('\n').includes('vm.provider.driver=kvm'), kvm.out);
  });

  it('installs a WEFT_APT_CONF host file (a proxy, a mirror) only when one is given', () => {
    need('ruby', 'ruby');
    const dir = mkdtempSync(join(tmpdir(), 'weft-vagrant-'));
    try {
      const conf = join(dir, 'apt.conf');
      writeFileSync(conf, 'Acquire::http::Proxy "http://proxy.example:3128";\n');
      const env: NodeJS.ProcessEnv = { ...process.env, WEFT_LIBVIRT_DRIVER: 'qemu' };
      delete env.WEFT_APT_CONF;
      const without = run('ruby', ['-e', RECORDER, file], env);
      assert.equal(without.status, 0, without.out);
      assert.ok(!without.out.includes('apt-conf'), without.out);
      const withConf = run('ruby', ['-e', RECORDER, file], { ...env, WEFT_APT_CONF: conf });
      assert.equal(withConf.status, 0, withConf.out);
      const lines = withConf.out.split('\n');
      assert.ok(lines.includes('vm.provision(apt-conf)') && lines.includes('vm.provision(apt-conf-install)'), withConf.out);
      // Before the per-VM provisioning that runs apt-get.
      assert.ok(lines.indexOf('vm.provision(apt-conf-install)') < lines.findIndex((l) => l.endsWith('vm.provision(weft)')), withConf.out);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('without WEFT_LIBVIRT_DRIVER picks kvm only for a usable /dev/kvm and vmx/svm in the CPU flags', () => {
    need('ruby', 'ruby');
    // A nested host may offer /dev/kvm with no vmx/svm flag; its KVM hangs in GRUB's real-mode
    // stage, so such a host must get qemu (docs/operators.md, "Vagrant").
    let kvmDevice = false;
    try {
      accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
      kvmDevice = true;
    } catch {
      kvmDevice = false;
    }
    const flags = /^flags\s*:.*$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[0] ?? '';
    const want = kvmDevice && /\b(vmx|svm)\b/.test(flags) ? 'kvm' : 'qemu';
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env.WEFT_LIBVIRT_DRIVER;
    const r = run('ruby', ['-e', RECORDER, file], env);
    assert.equal(r.status, 0, r.out);
    assert.ok(r.out.split('\n').includes(`vm.provider.driver=${want}`), `expected ${want} (/dev/kvm usable: ${kvmDevice}, flags: ${flags.slice(0, 80)}...)\n${r.out}`);
  });
});
