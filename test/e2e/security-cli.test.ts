/**
 * Issue #9, findings 7, 8 and 9 through the shipped binaries (the unit tests cover the functions;
 * these run `weft` and `weftd` as an operator does): a real etcd on loopback, real files.
 * - 7: TLS files with an http:// endpoint are refused, not silently ignored (credentials in clear).
 * - 8: `weft docker-opts --daemon-json` writes through a symlinked daemon.json, keeping the link.
 * - 9: control characters that someone wrote into etcd never reach the terminal raw.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { lstatSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startEtcd, type EtcdInstance } from './helpers/etcd';

const WEFT = resolve(__dirname, '..', '..', 'src', 'cli', 'weft.js');
const WEFTD = resolve(__dirname, '..', '..', 'src', 'cli', 'weftd.js');
const scratch = mkdtempSync(join(tmpdir(), `wt${process.pid}-seccli-`));

interface Run { readonly code: number; readonly stdout: string; readonly stderr: string }

function run(script: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((done) => {
    execFile(process.execPath, [script, ...args], { timeout: 30_000, env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
      done({ code, stdout, stderr });
    });
  });
}

/** Any C0 control other than newline/tab, ESC's CSI/OSC introducers, DEL, or a C1 control. */
// eslint-disable-next-line no-control-regex
const RAW_CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;

describe('hostile input through the weft and weftd binaries (issue #9: findings 7, 8, 9)', { timeout: 120_000 }, () => {
  let etcd: EtcdInstance;
  const prefix = `/wt${process.pid}-seccli/network`;

  before(async () => {
    etcd = await startEtcd();
    await etcd.etcdctl('put', `${prefix}/config`, '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}');
  });

  after(async () => {
    await etcd?.stop();
    rmSync(scratch, { recursive: true, force: true });
  });

  test('finding 7: weftd and weft refuse --etcd-cafile with an http:// endpoint instead of talking in clear', async () => {
    const ca = join(scratch, 'ca.pem');
    writeFileSync(ca, '-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n');
    const flags = [`--etcd-endpoints=${etcd.endpoint}`, `--etcd-prefix=${prefix}`, `--etcd-cafile=${ca}`];
    const cli = await run(WEFT, ['leases', ...flags]);
    assert.notEqual(cli.code, 0, `weft leases accepted TLS files with http://: ${cli.stdout}`);
    assert.match(cli.stderr, /https:\/\//, cli.stderr);
    const daemon = await run(WEFTD, [...flags, `--subnet-file=${join(scratch, 'subnet.env')}`], { WEFT_ETCD_PASSWORD: 'not-in-any-output' });
    assert.notEqual(daemon.code, 0, 'weftd started with TLS files and an http:// endpoint');
    assert.match(daemon.stderr, /https:\/\//, daemon.stderr);
    assert.doesNotMatch(daemon.stdout + daemon.stderr, /not-in-any-output/, 'the password appeared in the output');
  });

  test('finding 8: weft docker-opts --daemon-json writes through a symlinked daemon.json and keeps the link', async () => {
    const env = join(scratch, 'subnet.env');
    writeFileSync(env, 'FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n');
    const target = join(scratch, 'real-daemon.json');
    writeFileSync(target, '{"log-level":"warn"}\n');
    const link = join(scratch, 'daemon.json');
    symlinkSync(target, link);
    const r = await run(WEFT, ['docker-opts', '-f', env, '--daemon-json', link]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(lstatSync(link).isSymbolicLink(), 'daemon.json was replaced by a regular file');
    assert.equal(readlinkSync(link), target);
    const written = JSON.parse(readFileSync(target, 'utf8')) as Record<string, unknown>;
    assert.equal(written.bip, '10.5.7.1/24');
    assert.equal(written.mtu, 1450);
    assert.equal(written['log-level'], 'warn', 'other keys are kept');
  });

  test('finding 9: weft leases prints escape sequences and control characters from etcd escaped, never raw', async () => {
    const evilType = '\u001b]0;owned\u0007\u001b[2J\u009b31mudp\r\nFAKE 10.5.99.0/24';
    await etcd.etcdctl('put', `${prefix}/subnets/10.5.3.0-24`, JSON.stringify({ PublicIP: '10.250.0.3', BackendType: evilType }));
    await etcd.etcdctl('put', `${prefix}/subnets/\u001b[31mgarbage\u0007`, 'x');
    for (const format of ['table', 'wide', 'json']) {
      const r = await run(WEFT, ['leases', `--etcd-endpoints=${etcd.endpoint}`, `--etcd-prefix=${prefix}`, '-o', format]);
      assert.equal(r.code, 0, r.stderr);
      const out = r.stdout + r.stderr;
      assert.doesNotMatch(out, RAW_CONTROL, `raw control characters in -o ${format}: ${JSON.stringify(out)}`);
      assert.match(r.stdout, /10\.5\.3\.0\/24/, `the lease is still listed (-o ${format})`);
      if (format !== 'json') {
        assert.doesNotMatch(r.stdout, /^FAKE /m, `a newline in a value forged a table row (-o ${format})`);
      }
    }
  });
});
