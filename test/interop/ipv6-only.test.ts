/**
 * Interop, IPv6-only (`EnableIPv4: false`): why there is no mixed IPv6-only cluster, and what
 * weft does about it. flanneld v0.20.2 in etcd mode has PublicIP 0.0.0.0 on every host, so it
 * "finds the lease for current IP (0.0.0.0)" of whichever host came first and rewrites it with
 * its own PublicIPv6. Lab: h1 weftd, then h2 flanneld (namespaces helperE2-<pid>o-*).
 * docs/flannel-compat.md, "Tested against a real flanneld".
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { sh, waitUntil } from '../e2e/helpers/shell';
import { useMixedLab } from './helpers/mixed-lab';

describe('IPv6-only: a flanneld v0.20.2 joining a weftd host', { timeout: 180_000 }, () => {
  // No lab-wide convergence: flanneld programs no peer in this mode (below); since the lab's check
  // covers IPv6-only labs and both directions, it would wait for what cannot come.
  const lab = useMixedLab({ id: 'o', kinds: ['weftd', 'flanneld'], ipv6: 'only', converge: false });

  test('flanneld takes the weftd host\'s key; weftd sees it taken over and moves to a subnet of its own', async () => {
    const m = lab();
    assert.match(m.lab.daemonLog('h2'), /Found lease \(ip: 0\.0\.0\.0\/0 ipv6: fd00:5:[0-9a-f:]+\/64\) for current IP \(0\.0\.0\.0\), reusing/,
      'flanneld v0.20.2 reuses the first lease of "current IP 0.0.0.0" (if this fails, flannel changed: revisit docs/flannel-compat.md)');
    await waitUntil(() => m.lab.daemonLog('h1').includes('was taken over by fd00:250::12'), 10_000, 'weftd on h1 to see its key taken over');
    await waitUntil(() => m.ipv6SubnetOf('h1') !== m.ipv6SubnetOf('h2'), 10_000, 'weftd on h1 to write a subnet of its own');
    const values = await m.leaseValues();
    const byHost = new Map([...values].map(([k, v]) => [(JSON.parse(v) as { PublicIPv6: string }).PublicIPv6, k]));
    assert.equal(values.size, 2, [...values].join('\n'));
    assert.equal(byHost.get('fd00:250::11'), `0.0.0.0-0&${m.ipv6SubnetOf('h1').replace('/', '-')}`);
    assert.equal(byHost.get('fd00:250::12'), `0.0.0.0-0&${m.ipv6SubnetOf('h2').replace('/', '-')}`);
    // Docker would be restarted on the new FLANNEL_IPV6_SUBNET: the lab's stand-in re-addressed
    // (IPv6 addresses are added, not replaced, so the old ones go first).
    await sh(m.lab, 'h1', 'ip', '-6', 'addr', 'flush', 'dev', 'weft0', 'scope', 'global');
    await sh(m.lab, 'h1-c1', 'ip', '-6', 'addr', 'flush', 'dev', 'eth0', 'scope', 'global');
    await m.lab.setupContainer('h1');
    // weftd programs the flanneld host like any peer (flanneld programs no peer at all in this
    // mode: its etcd registry marks every lease EnableIPv4 and its IPv4 device is nil).
    await m.settle('weftd h1 → flanneld h2 (IPv6 vxlan state)', () => m.vxlanPeerProblems('h1', 'h2', 6));
  });
});
