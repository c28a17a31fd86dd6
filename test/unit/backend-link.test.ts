/** backend/link.ts: the one MAC/MTU/up repair of the kernel VXLAN device and the fallback's TAP/TUN. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { onLinkAmong, repairLink, type LinkRepairNetlink } from '../../src/backend/link';
import { NetlinkError } from '../../src/netlink/errors';
import type { LinkInfo } from '../../src/netlink/types';

const link: LinkInfo = { index: 7, name: 'flannel.1', up: true, mtu: 1450, mac: '02:00:00:00:00:01', kind: 'vxlan', vxlan: null };

function recorder(busy = false): LinkRepairNetlink & { calls: string[] } {
  const calls: string[] = [];
  let down = false;
  return {
    calls,
    setLinkUp: async () => { calls.push('up'); down = false; },
    setLinkDown: async () => { calls.push('down'); down = true; },
    setLinkMtu: async (_l, mtu) => { calls.push(`mtu ${mtu}`); },
    setLinkMac: async (_l, mac) => {
      if (busy && !down) throw new NetlinkError('set mac', 'EBUSY', new Error('Device or resource busy'));
      calls.push(`mac ${mac}`);
    },
  };
}

describe('repairLink', () => {
  it('sends nothing for a link that already matches', async () => {
    const nl = recorder();
    assert.deepEqual(await repairLink(nl, link, { mtu: 1450, mac: '02:00:00:00:00:01' }), link);
    assert.deepEqual(nl.calls, []);
  });

  it('restores the MAC, the MTU and up, in that order, and returns the link as it is now', async () => {
    const nl = recorder();
    const out = await repairLink(nl, { ...link, up: false, mtu: 1500, mac: '02:00:00:00:00:09' }, { mtu: 1450, mac: '02:00:00:00:00:01' });
    assert.deepEqual(nl.calls, ['mac 02:00:00:00:00:01', 'mtu 1450', 'up']);
    assert.deepEqual(out, link);
  });

  it('takes the link down for a MAC change the driver refuses live (EBUSY), and up again', async () => {
    const nl = recorder(true);
    const out = await repairLink(nl, { ...link, mac: '02:00:00:00:00:09' }, { mtu: 1450, mac: '02:00:00:00:00:01' });
    assert.deepEqual(nl.calls, ['down', 'mac 02:00:00:00:00:01', 'up']);
    assert.equal(out.up, true);
  });

  it('leaves the MAC alone when none is wanted (a TUN), and passes other errors on', async () => {
    const nl = recorder();
    await repairLink(nl, { ...link, mac: null, mtu: 1472 }, { mtu: 1472, mac: null });
    assert.deepEqual(nl.calls, []);
    const failing = { ...recorder(), setLinkMtu: async () => { throw new NetlinkError('set mtu', 'EINVAL', new Error('Invalid argument')); } };
    await assert.rejects(repairLink(failing, link, { mtu: 9999, mac: null }), /EINVAL/);
  });

  it('logs repairs only when given a logger (a link just created is set up silently)', async () => {
    const lines: string[] = [];
    const log = { debug() {}, info: (m: string) => lines.push(m), warn: (m: string) => lines.push(m), error() {}, child() { return log; } };
    await repairLink(recorder(), { ...link, mtu: 1500, mac: '02:00:00:00:00:09' }, { mtu: 1450, mac: '02:00:00:00:00:01' }, log);
    assert.deepEqual(lines, [
      'device flannel.1: MAC 02:00:00:00:00:09 is not our VtepMAC 02:00:00:00:00:01; restoring it',
      'device flannel.1: MTU 1500 → 1450',
    ]);
  });
});

describe('onLinkAmong', () => {
  it('looks each distinct address up once through the underlay and keeps the on-link ones; a failed lookup is reported and left out', async () => {
    const asked: string[] = [];
    const nl = {
      isOnLink: async (ip: string, via?: number) => {
        asked.push(`${ip} via ${via}`);
        if (ip === '10.250.0.14') throw new Error('ETIMEDOUT');
        return ip !== '10.250.0.13';
      },
    };
    const failed: string[] = [];
    const out = await onLinkAmong(nl, ['10.250.0.12', '10.250.0.13', '10.250.0.12', '10.250.0.14'], 2, (ip) => failed.push(ip));
    assert.deepEqual([...out], ['10.250.0.12']);
    assert.deepEqual(asked.sort(), ['10.250.0.12 via 2', '10.250.0.13 via 2', '10.250.0.14 via 2']);
    assert.deepEqual(failed, ['10.250.0.14']);
  });
});
