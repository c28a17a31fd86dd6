/**
 * etcd credentials in clear (issue #9, finding 7): TLS files with http:// endpoints are refused
 * (flannel's clientv3 drops them silently), a password to a remote http:// endpoint is warned about.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { checkEtcdTransport } from '../../src/lease/etcd-common';
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
});
