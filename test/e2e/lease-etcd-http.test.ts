/**
 * The lease store's contract tests (helpers/registry-contract.ts, also run by lease-etcd.test.ts
 * for etcd3 over gRPC) against the etcd registry over its JSON gateway wire, the lean client
 * that weftd uses by default, plus what only this client promises (watch stats, the host lease's
 * expiry). A real etcd started by the test on loopback, stopped by PID; one key prefix per test.
 * Then TLS (the wire's own HTTP/1.1 over node:tls, src/lease/http1.ts): an etcd serving https with
 * client-certificate auth, certificates made by openssl for the test; calls and a watch with the
 * right files, a transport failure (never an answer) without the client certificate or with
 * the wrong CA.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { createEtcdRegistry } from '../../src/lease/create-registry';
import { EXTRA_CA_CERTS_ENV } from '../../src/lease/etcd-common';
import { EtcdHttpWire } from '../../src/lease/etcd-http-wire';
import { ETCD_MISSING } from './helpers/etcd';
import { registryContract } from './helpers/registry-contract';

registryContract('etcd lease registry over the JSON gateway, and the manager on it (real etcd)', (opts) => createEtcdRegistry(opts, 'http'), {
  // Every event of a multi-key revision arrived; the client's watch stats show it.
  afterMultiKeyRevision: (reg) => {
    const st = reg.stats();
    assert.ok(st.watchResponses >= 2, JSON.stringify(st));
    assert.equal(st.watchRevisionLag, 0);
    assert.ok(st.lastWatchResponseAt !== null);
  },
  specific: ({ registry, newPrefix, cleanups }) => {
    it('reports the host lease\'s expiry and moves it on with each keepalive', async () => {
      const reg = registry(newPrefix());
      const hl = await reg.grantHostLease(3);
      cleanups.push(async () => hl.release());
      const first = hl.expiresAt!.getTime();
      assert.ok(first > Date.now() + 2000 && first <= Date.now() + 3100, `expires in ~3 s: ${first - Date.now()}`);
      await new Promise((r) => setTimeout(r, 1500));
      assert.ok(hl.expiresAt!.getTime() > first, 'renewed');
    });
  },
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => resolve(typeof addr === 'object' && addr !== null ? addr.port : 0));
    });
  });
}

describe('the JSON gateway wire over TLS (real etcd with client-certificate auth)', { timeout: 60_000 }, () => {
  it('calls and watches with the CA and client certificate; without them the connection fails as unreachable', async () => {
    const dir = mkdtempSync(join(tmpdir(), `weft-etcd-tls-${process.pid}-`));
    const f = (name: string): string => join(dir, name);
    const openssl = (...args: string[]): void => {
      try {
        execFileSync('openssl', args, { stdio: 'pipe' });
      } catch (err) {
        throw new Error(`openssl ${args[0]} failed (install it: apt-get install -y openssl)`, { cause: err });
      }
    };
    let etcdPid: number | undefined;
    try {
      const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
      openssl('req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '1', '-subj', '/CN=weft-test-ca');
      // etcd's gateway dials its own gRPC port with the server certificate: it is a client's too.
      for (const [who, ext] of [['server', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n'], ['client', 'extendedKeyUsage=clientAuth\n']] as const) {
        writeFileSync(f(`${who}.ext`), ext);
        openssl('req', ...ec, '-keyout', f(`${who}.key`), '-out', f(`${who}.csr`), '-subj', `/CN=${who}`);
        openssl('x509', '-req', '-in', f(`${who}.csr`), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f(`${who}.pem`), '-days', '1', '-extfile', f(`${who}.ext`));
      }
      const [clientPort, peerPort] = [await freePort(), await freePort()];
      const endpoint = `https://127.0.0.1:${clientPort}`;
      const peer = `http://127.0.0.1:${peerPort}`;
      const etcd = spawn('etcd', [
        '--name', 'tls', '--data-dir', f('data'), '--listen-client-urls', endpoint, '--advertise-client-urls', endpoint,
        '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer, '--initial-cluster', `tls=${peer}`, '--log-level', 'warn',
        '--cert-file', f('server.pem'), '--key-file', f('server.key'), '--trusted-ca-file', f('ca.pem'), '--client-cert-auth',
      ], { stdio: 'ignore' });
      const spawnError = new Promise<Error>((resolve) => etcd.on('error', resolve));
      etcdPid = etcd.pid;
      assert.ok(etcdPid !== undefined, ETCD_MISSING);

      const wire = new EtcdHttpWire({ endpoints: [endpoint], caFile: f('ca.pem'), certFile: f('client.pem'), keyFile: f('client.key'), callTimeoutMs: 2000 });
      try {
        // Until etcd serves (or failed to start).
        const deadline = Date.now() + 15_000;
        for (;;) {
          const up = await Promise.race([wire.range('/tls/', true).then(() => true, () => false), spawnError.then((e) => { throw new Error(`${ETCD_MISSING} (${e.message})`); })]);
          if (up) break;
          assert.ok(Date.now() < deadline, `etcd with TLS did not come up on ${endpoint}`);
          await new Promise((r) => setTimeout(r, 200));
        }
        const seen = new Promise<string>((resolve, reject) => {
          wire.watchPrefix('/tls/subnets/', {
            resumeRevision: () => '0',
            response: (r) => {
              if (r.events.length > 0) resolve(r.events.map((e) => `${e.kv.key}=${e.kv.value.toString()}`).join(','));
            },
            disconnected: (err) => reject(err instanceof Error ? err : new Error(String(err))),
            canceled: (why) => reject(new Error(why)),
          });
        });
        await new Promise((r) => setTimeout(r, 300)); // the watch is created
        await wire.txn([], [{ put: { key: '/tls/subnets/10.5.1.0-24', value: '{"PublicIP":"10.0.0.1"}' } }]);
        assert.equal(await seen, '/tls/subnets/10.5.1.0-24={"PublicIP":"10.0.0.1"}');
        assert.equal((await wire.range('/tls/subnets/', true)).kvs.length, 1);
      } finally {
        wire.close();
      }

      // No --etcd-cafile: the CA as NODE_EXTRA_CA_CERTS, which weftd's launchers hand over as
      // WEFT_EXTRA_CA_CERTS (src/lease/etcd-common.ts): trusted as Node would have trusted it.
      const saved = process.env[EXTRA_CA_CERTS_ENV];
      try {
        for (const [extra, works] of [[f('ca.pem'), true], [undefined, false]] as const) {
          if (extra === undefined) delete process.env[EXTRA_CA_CERTS_ENV];
          else process.env[EXTRA_CA_CERTS_ENV] = extra;
          const viaEnv = new EtcdHttpWire({ endpoints: [endpoint], certFile: f('client.pem'), keyFile: f('client.key'), callTimeoutMs: 2000 });
          try {
            const err = await viaEnv.range('/tls/subnets/', true).then((r) => { assert.equal(r.kvs.length, 1); return null; }, (e: unknown) => e);
            if (works) assert.equal(err, null, `the CA from NODE_EXTRA_CA_CERTS is trusted: ${String(err)}`);
            else assert.ok(err instanceof Error && viaEnv.classify(err) === 'unreachable', `without it the test CA is not trusted: ${String(err)}`);
          } finally {
            viaEnv.close();
          }
        }
      } finally {
        if (saved === undefined) delete process.env[EXTRA_CA_CERTS_ENV];
        else process.env[EXTRA_CA_CERTS_ENV] = saved;
      }

      for (const [what, files] of [
        ['no client certificate', { caFile: f('ca.pem') }],
        ['the wrong CA', { caFile: f('client.pem'), certFile: f('client.pem'), keyFile: f('client.key') }],
      ] as const) {
        const bad = new EtcdHttpWire({ endpoints: [endpoint], callTimeoutMs: 2000, ...files });
        try {
          const err = await bad.range('/tls/', true).then(() => null, (e: unknown) => e);
          assert.ok(err instanceof Error, `${what}: refused`);
          assert.equal(bad.classify(err), 'unreachable', `${what}: ${err.message}`);
        } finally {
          bad.close();
        }
      }
    } finally {
      if (etcdPid !== undefined) {
        try {
          process.kill(etcdPid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
