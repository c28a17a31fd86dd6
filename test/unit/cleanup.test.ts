import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { directRoutes, overlayDevices, weftdInThisNetns } from '../../src/cli/cleanup';
import { parseCidr, parseIPv4Cidr } from '../../src/ip';
import { genIdOf } from '../../src/netlink/nft-generation';
import type { LinkInfo, RouteEntry } from '../../src/netlink/types';

function link(index: number, name: string, kind: string | null): LinkInfo {
  return { index, name, up: true, mtu: 1500, mac: null, kind, vxlan: null };
}

function route(dst: string, gateway: string | null, oif: number, protocol = 3): RouteEntry {
  return { dst: parseIPv4Cidr(dst)!, gateway, oif, onlink: false, table: 254, priority: 0, protocol, type: 1 };
}

describe('weft cleanup: what is weft\'s', () => {
  const links = [link(1, 'lo', null), link(2, 'eth0', null), link(3, 'flannel.1', 'vxlan'), link(4, 'flannel.7', 'vxlan'),
    link(5, 'vxlan0', 'vxlan'), link(6, 'flannel.x', 'vxlan'), link(7, 'docker0', 'bridge')];

  it('every vxlan device named flannel.<number>, or only the one named', () => {
    assert.deepEqual(overlayDevices(links, null).map((l) => l.name), ['flannel.1', 'flannel.7']);
    assert.deepEqual(overlayDevices(links, 'vxlan0').map((l) => l.name), ['vxlan0']);
    assert.deepEqual(overlayDevices(links, 'nope'), []);
  });

  it('the IPv6 device flannel-v6.<number> too (dual stack, IPv6-only)', () => {
    const v6 = [...links, link(8, 'flannel-v6.1', 'vxlan'), link(9, 'flannel-v6.x', 'vxlan')];
    assert.deepEqual(overlayDevices(v6, null).map((l) => l.name), ['flannel.1', 'flannel.7', 'flannel-v6.1']);
  });

  it('DirectRouting routes: via a gateway, strictly inside the Network, not on a device being deleted', () => {
    const net = parseIPv4Cidr('10.5.0.0/16')!;
    const routes = [
      route('10.5.4.0/24', '10.250.0.12', 2),          // DirectRouting peer: ours
      route('10.5.7.0/24', '10.5.7.0', 3),             // on flannel.1: goes with the device
      route('10.5.9.0/24', null, 7, 2),                // docker0's own (kernel) route
      route('10.5.0.0/16', '10.250.0.1', 2),           // the whole Network: not a peer route
      route('0.0.0.0/0', '10.250.0.1', 2),             // default route
      route('192.168.1.0/24', '10.250.0.1', 2),        // elsewhere
    ];
    assert.deepEqual(directRoutes(routes, net, new Set([3])).map((r) => r.gateway), ['10.250.0.12']);
  });

  it('IPv6 DirectRouting and host-gw routes strictly inside the IPv6Network, never a route of the other family', () => {
    const v6 = (dst: string, gateway: string | null, oif: number, protocol = 3): RouteEntry => ({ ...route('0.0.0.0/0', gateway, oif, protocol), dst: parseCidr(dst)! });
    const routes = [
      v6('fd00:5:0:22::/64', 'fd00:250::12', 2),     // DirectRouting peer over IPv6: ours
      v6('fd00:5:0:23::/64', 'fd00:5:0:23::', 8),    // on flannel-v6.1: goes with the device
      v6('fd00:5::/48', 'fd00:250::1', 2),           // the whole IPv6Network
      v6('fd00:6::/64', 'fd00:250::1', 2),           // elsewhere
      v6('fd00:5:0:24::/64', null, 2, 2),            // the kernel's own
      route('10.5.4.0/24', '10.250.0.12', 2),        // IPv4: not in an IPv6 Network
    ];
    assert.deepEqual(directRoutes(routes, parseCidr('fd00:5::/48')!, new Set([8])).map((r) => r.gateway), ['fd00:250::12']);
    assert.deepEqual(directRoutes(routes, parseIPv4Cidr('10.5.0.0/16')!, new Set([8])).map((r) => r.gateway), ['10.250.0.12']);
  });
});

describe('nf_tables generation', () => {
  it('is read from NFTA_GEN_ID in a NEWGEN payload', () => {
    // nfgenmsg, NFTA_GEN_ID (len 8, type 1) = 5, NFTA_GEN_PROC_PID, NFTA_GEN_PROC_NAME "node"
    const data = Buffer.from([0, 0, 0, 5, 8, 0, 1, 0, 0, 0, 0, 5, 8, 0, 2, 0, 0, 0, 120, 116, 9, 0, 3, 0, 110, 111, 100, 101, 0, 0, 0, 0]);
    assert.equal(genIdOf(data), 5);
    assert.equal(genIdOf(Buffer.from([0, 0, 0, 0])), null);
  });
});

describe('weft cleanup: a running weftd in this namespace', () => {
  it('is found by its script, also behind node\'s own options (the shebang runs node --no-opt weftd)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'weft-cleanup-'));
    const script = join(dir, 'weftd.bundle.js');
    writeFileSync(script, 'setTimeout(() => {}, 30_000);\n');
    const children = [spawn(process.execPath, ['--no-opt', script, '--iface=eth0']), spawn(process.execPath, [script])];
    try {
      await new Promise((r) => setTimeout(r, 300));
      const found = weftdInThisNetns();
      for (const c of children) assert.ok(found.includes(c.pid!), `pid ${c.pid} (${c.spawnargs.join(' ')}) among ${found.join(', ')}`);
    } finally {
      for (const c of children) c.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
