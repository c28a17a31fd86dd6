/**
 * etcd credentials in clear (issue #9, finding 7): TLS files with http:// endpoints are refused
 * (flannel's clientv3 drops them silently), a password to a remote http:// endpoint is warned about.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { rootCertificates } from 'node:tls';
import { EXTRA_CA_CERTS_ENV, checkEtcdTransport, deferExtraCaCerts, readTlsFiles } from '../../src/lease/etcd-common';
import { createEtcdRegistry } from '../../src/lease/create-registry';
import { silentLogger, type Logger } from '../../src/log';

const dir = mkdtempSync(join(tmpdir(), 'weft-tls-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const ca = join(dir, 'ca.pem');
writeFileSync(ca, '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');

describe('etcd transport security', () => {
  for (const kind of ['http', 'grpc'] as const) {
    it(`refuses --etcd-cafile with http:// endpoints instead of ignoring it (${kind === 'http' ? 'the default client' : 'the gRPC client too'})`, () => {
      assert.throws(
        () => createEtcdRegistry({ endpoints: ['http://10.250.0.2:2379'], caFile: ca }, kind),
        (e: Error & { code?: string }) => e.code === 'CONFIG_INVALID' && /--etcd-cafile given but .*http:\/\/.*use https:\/\//.test(e.message),
      );
    });
  }

  it('warns loudly when a password goes to a remote http:// endpoint, not for loopback or https', () => {
    const lines: string[] = [];
    const log: Logger = { ...silentLogger, warn: (m: string) => void lines.push(m) };
    const w = checkEtcdTransport({ endpoints: ['http://10.250.0.2:2379'], username: 'root', password: 's3cret', log });
    assert.match(w ?? '', /etcd credentials IN CLEAR: user "root"/);
    assert.ok(!(w ?? '').includes('s3cret'), 'the warning never contains the password');
    assert.deepEqual(lines, [w]);
    assert.equal(checkEtcdTransport({ endpoints: ['http://127.0.0.1:2379'], username: 'root', password: 'x' }), null);
    assert.equal(checkEtcdTransport({ endpoints: ['https://10.250.0.2:2379'], username: 'root', password: 'x', caFile: ca }), null);
  });

  it('defers NODE_EXTRA_CA_CERTS: a weftd child gets it as WEFT_EXTRA_CA_CERTS, nothing else changes', () => {
    assert.deepEqual(deferExtraCaCerts({ PATH: '/bin', NODE_EXTRA_CA_CERTS: '/etc/x.pem' }), { PATH: '/bin', [EXTRA_CA_CERTS_ENV]: '/etc/x.pem' });
    assert.deepEqual(deferExtraCaCerts({ PATH: '/bin' }), { PATH: '/bin' });
    // The shebang's expansion of an unset variable: empty, i.e. none.
    assert.deepEqual(deferExtraCaCerts({ PATH: '/bin', NODE_EXTRA_CA_CERTS: '' }), { PATH: '/bin' });
  });

  it('trusts the deferred NODE_EXTRA_CA_CERTS beside Node\'s roots only for https:// without --etcd-cafile', () => {
    const extra = join(dir, 'extra.pem');
    writeFileSync(extra, '-----BEGIN CERTIFICATE-----\nEXTRA\n-----END CERTIFICATE-----\n');
    const env = { [EXTRA_CA_CERTS_ENV]: extra };
    const https = readTlsFiles({ endpoints: ['https://10.250.0.2:2379'] }, true, env).ca?.toString() ?? '';
    assert.ok(https.endsWith('EXTRA\n-----END CERTIFICATE-----\n'), 'the extra file is trusted');
    assert.ok(https.includes(rootCertificates[0]!), 'and Node\'s own roots with it, as Node would have');
    assert.equal(readTlsFiles({ endpoints: ['http://10.250.0.2:2379'] }, false, env).ca, undefined, 'plain http: not even read');
    assert.equal(readTlsFiles({ endpoints: ['https://10.250.0.2:2379'], caFile: ca }, true, env).ca?.toString(), '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n', '--etcd-cafile wins');
    assert.equal(readTlsFiles({ endpoints: ['https://10.250.0.2:2379'] }, true, {}).ca, undefined, 'none set: Node\'s default roots');
    assert.throws(() => readTlsFiles({ endpoints: ['https://10.250.0.2:2379'] }, true, { [EXTRA_CA_CERTS_ENV]: join(dir, 'missing.pem') }),
      (e: Error & { code?: string }) => e.code === 'CONFIG_INVALID' && /NODE_EXTRA_CA_CERTS.*missing\.pem/.test(e.message));
  });
});
