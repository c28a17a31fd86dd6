/**
 * Start-up's one read (LeaseRegistry.readNetwork: the config and the subnets in one read-only
 * transaction) under the etcd access control docs/security.md recommends: a role that may read
 * `<prefix>/config` and read-write `<prefix>/subnets/`, nothing more. etcd checks each range of
 * the transaction on its own, so that role is served — a single range over all of `<prefix>/`
 * would be refused (asserted too, so the test shows why the read is a transaction). Then a whole
 * acquisition as that user. Both wires; a real etcd with authentication, stopped by PID.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createEtcdRegistry } from '../../src/lease/create-registry';
import { parseNetworkConfig } from '../../src/config/network';
import { silentLogger } from '../../src/log';
import { LeaseManager } from '../../src/lease/manager';
import { startEtcd, type EtcdInstance } from './helpers/etcd';

const PREFIX = '/weft-rbac/network';
const CONFIG = '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}';
const PEER = '{"PublicIP":"192.168.0.9","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:09"}}';

describe('start-up reads with the host role docs/security.md recommends (real etcd with auth)', { timeout: 60_000 }, () => {
  let etcd: EtcdInstance;

  before(async () => {
    etcd = await startEtcd();
    await etcd.etcdctl('put', `${PREFIX}/config`, CONFIG);
    await etcd.etcdctl('put', `${PREFIX}/subnets/10.5.9.0-24`, PEER);
    await etcd.etcdctl('put', `${PREFIX}/not-for-hosts`, 'x');
    for (const args of [
      ['user', 'add', 'root:rootpw'], ['role', 'add', 'root'], ['user', 'grant-role', 'root', 'root'],
      ['role', 'add', 'host'], ['role', 'grant-permission', 'host', 'read', `${PREFIX}/config`],
      ['role', 'grant-permission', 'host', 'readwrite', `${PREFIX}/subnets/`, '--prefix=true'],
      ['user', 'add', 'host:hostpw'], ['user', 'grant-role', 'host', 'host'], ['auth', 'enable'],
    ]) await etcd.etcdctl(...args);
  });

  after(async () => {
    await etcd?.stop();
  });

  for (const kind of ['http', 'grpc'] as const) {
    it(`${kind}: readNetwork() is served, a range over all of the prefix is not; a restart acquires as that user`, async () => {
      const reg = createEtcdRegistry({ endpoints: [etcd.endpoint], prefix: PREFIX, username: 'host', password: 'hostpw', callTimeoutMs: 2000 }, kind);
      try {
        const snapshot = await reg.readNetwork();
        assert.equal(snapshot.config, CONFIG);
        assert.ok(snapshot.listing.leases.some((l) => l.key === '10.5.9.0-24' && l.attrs.PublicIP === '192.168.0.9'));
        await assert.rejects(etcd.etcdctl('--user', 'host:hostpw', 'get', '--prefix', `${PREFIX}/`), /permission denied/);

        const m = new LeaseManager({ registry: reg, log: silentLogger, random: () => 0, retryMinMs: 20, retryMaxMs: 200 });
        try {
          const text = await m.waitForConfig();
          const lease = await m.acquire({
            config: parseNetworkConfig(text), publicIP: kind === 'http' ? '192.168.0.10' : '192.168.0.11', publicIPv6: null,
            backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: '02:00:00:00:00:10' }, subnetFromFile: null, ttlSeconds: 60,
            signal: AbortSignal.timeout(10_000),
          });
          assert.notEqual(lease.key, '10.5.9.0-24');
        } finally {
          await m.close();
        }
      } finally {
        await reg.close();
      }
    });
  }
});
