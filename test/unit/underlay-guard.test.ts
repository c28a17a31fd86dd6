import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkNetworkAgainstUnderlay, connectedNetworks, endpointAddresses } from '../../src/daemon/underlay-guard';
import { parseIPv4Cidr } from '../../src/ip';

const net = (t: string) => parseIPv4Cidr(t)!;

describe('underlay guard: a Network must not capture the underlay or etcd', () => {
  it('refuses a Network overlapping the underlay interface\'s network, naming both and what to do', () => {
    assert.throws(
      () => checkNetworkAgainstUnderlay(net('10.0.0.0/8'), { ifName: 'eth0', networks: [net('10.250.0.0/24')] }, []),
      (e: Error) => /Network 10\.0\.0\.0\/8 overlaps 10\.250\.0\.0\/24, the network of this host's underlay interface eth0: .*weft config set/.test(e.message),
    );
  });

  it('refuses a Network covering an etcd endpoint', () => {
    assert.throws(
      () => checkNetworkAgainstUnderlay(net('10.0.0.0/8'), { ifName: 'eth0', networks: [net('192.168.1.0/24')] }, ['10.9.8.7']),
      /covers the etcd endpoint 10\.9\.8\.7/,
    );
  });

  it('accepts a Network clear of both', () => {
    checkNetworkAgainstUnderlay(net('10.5.0.0/16'), { ifName: 'eth0', networks: [net('10.250.0.0/24')] }, ['10.250.0.2']);
  });

  it('reads connected networks from the interface\'s addresses and endpoint IPs from URLs', async () => {
    const nl = { listAddresses: async () => [{ ifindex: 3, ip: '10.250.0.11', prefixLen: 24 }, { ifindex: 4, ip: '172.17.0.1', prefixLen: 16 }] };
    assert.deepEqual(await connectedNetworks(nl, 3), [net('10.250.0.0/24')]);
    assert.deepEqual(await endpointAddresses(['http://10.250.0.2:2379', 'https://[fd00::1]:2379', 'not a url', 'http://localhost:2379']), ['10.250.0.2', '127.0.0.1']);
  });
});
