import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { after, describe, it } from 'node:test';
import { decodeWireguardConfig } from '../../src/backend/wireguard/config';
import { wireguardDesired } from '../../src/backend/wireguard/desired';
import { fromGenlState, toGenlSet } from '../../src/backend/wireguard/kernel';
import { decodeKey, KeyPair, loadOrCreateKey, publicKeyOf } from '../../src/backend/wireguard/keys';
import { diffPeers } from '../../src/backend/wireguard/peers';
import { encodeSet, parseErrno, parseGet, UapiClient } from '../../src/backend/wireguard/uapi';
import { encodeLeaseAttrs } from '../../src/lease/codec';
import { parseIPv4Cidr } from '../../src/ip';
import type { Lease } from '../../src/lease/types';
import { WeftError } from '../../src/errors';
import {
  decodeGetDevice, encodeGetDevice, encodeSetDevice, nla, NLA_F_NESTED, sockaddrIn,
  WGALLOWEDIP_A_CIDR_MASK, WGALLOWEDIP_A_FAMILY, WGALLOWEDIP_A_IPADDR, WGDEVICE_A_FLAGS, WGDEVICE_A_IFINDEX, WGDEVICE_A_IFNAME,
  WGDEVICE_A_LISTEN_PORT, WGDEVICE_A_PEERS, WGDEVICE_A_PRIVATE_KEY, WGPEER_A_ALLOWEDIPS, WGPEER_A_ENDPOINT, WGPEER_A_FLAGS,
  WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL, WGPEER_A_PRESHARED_KEY, WGPEER_A_PUBLIC_KEY, WGPEER_A_RX_BYTES,
} from '../../src/netlink/wireguard';
import { peerLease } from './helpers/leases';

const scratch = mkdtempSync(join(tmpdir(), 'weft-wg-unit-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

// RFC 7748 §6.1: Alice's X25519 key pair.
const ALICE_PRIV = Buffer.from('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a', 'hex');
const ALICE_PUB = Buffer.from('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a', 'hex').toString('base64');
const K1 = Buffer.alloc(32, 1).toString('base64');
const K2 = Buffer.alloc(32, 2).toString('base64');
const K3 = Buffer.alloc(32, 3).toString('base64');
const PSK = Buffer.alloc(32, 9).toString('base64');

function cfg(raw: Record<string, unknown>) {
  return decodeWireguardConfig({ type: 'wireguard', raw: { Type: 'wireguard', ...raw } });
}

const lease = (subnet: string, publicIp: string, data: unknown, backendType = 'wireguard'): Lease =>
  peerLease(subnet, publicIp, { backendType, data, etcdLeaseId: '1' });

describe('wireguard backend config (flannel\'s defaults and messages)', () => {
  it('defaults to ListenPort 51820, ListenPortV6 51821, no PSK, keepalive 0, Mode separate', () => {
    assert.deepEqual(cfg({}), { listenPort: 51820, listenPortV6: 51821, psk: null, persistentKeepaliveInterval: 0, mode: 'separate' });
  });

  it('matches field names case-insensitively like encoding/json and takes every field', () => {
    assert.deepEqual(cfg({ listenport: 4000, LISTENPORTV6: 4001, psk: PSK, persistentKeepaliveInterval: 25, mode: 'ipv4' }),
      { listenPort: 4000, listenPortV6: 4001, psk: PSK, persistentKeepaliveInterval: 25, mode: 'ipv4' });
  });

  it('rejects an unknown Mode with flannel\'s "No valid Mode configured" (case-sensitive, as flannel compares)', () => {
    assert.throws(() => cfg({ Mode: 'Auto' }), /No valid Mode configured/);
    assert.throws(() => cfg({ Mode: 'both' }), /No valid Mode configured/);
  });

  it('reports a value of the wrong JSON type as flannel\'s decoding error', () => {
    assert.throws(() => cfg({ ListenPort: '51820' }), /error decoding backend config: json: cannot unmarshal string into Go struct field \.ListenPort of type int/);
    assert.throws(() => cfg({ PersistentKeepaliveInterval: 1.5 }), /cannot unmarshal number into Go struct field \.PersistentKeepaliveInterval of type time\.Duration/);
    assert.throws(() => cfg({ PSK: 5 }), /cannot unmarshal number into Go struct field \.PSK of type string/);
  });

  it('rejects a PSK that is not a base64 32-byte key without quoting it', () => {
    const secret = 'c2VjcmV0LXNlY3JldA==';
    assert.throws(() => cfg({ PSK: secret }), (err: unknown) => err instanceof WeftError && /could not parse psk: incorrect key size: 13/.test(err.message) && !err.message.includes(secret));
    assert.throws(() => cfg({ PSK: 'not base64!' }), /could not parse psk: failed to parse base64-encoded key/);
  });

  it('refuses ports and keepalives a device cannot use (weft is stricter than flannel here)', () => {
    assert.throws(() => cfg({ ListenPort: 0 }), /ListenPort must be a UDP port from 1 to 65535, got 0/);
    assert.throws(() => cfg({ ListenPortV6: 70000 }), /ListenPortV6 must be a UDP port/);
    assert.throws(() => cfg({ PersistentKeepaliveInterval: -1 }), /PersistentKeepaliveInterval must be from 0/);
  });
});

describe('wireguard keys', () => {
  it('derives the X25519 public key of RFC 7748\'s test vector', () => {
    assert.equal(publicKeyOf(ALICE_PRIV), ALICE_PUB);
  });

  it('parses keys as wgtypes.ParseKey does: canonical base64 of exactly 32 bytes', () => {
    assert.equal(decodeKey(ALICE_PUB).error, null);
    assert.match(decodeKey('AAAA').error!, /incorrect key size: 3/);
    assert.match(decodeKey(`${ALICE_PUB.slice(0, -1)}`).error!, /illegal base64/);
    assert.match(decodeKey('not a key').error!, /illegal base64/);
  });

  it('creates the key file once (mode 0600) and reuses it: same public key on the next start', async () => {
    const file = join(scratch, 'run', 'flannel', 'wgkey');
    const first = await loadOrCreateKey(file);
    assert.equal(first.created, true);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(readFileSync(file, 'utf8').length, 44, 'base64 without newline, like flannel');
    const second = await loadOrCreateKey(file);
    assert.equal(second.created, false);
    assert.equal(second.keys.publicKey, first.keys.publicKey);
  });

  it('reads a key file written by `wg genkey` (trailing newline) and never overwrites a broken one', async () => {
    const file = join(scratch, 'genkey');
    writeFileSync(file, `${ALICE_PRIV.toString('base64')}\n`, { mode: 0o600 });
    assert.equal((await loadOrCreateKey(file)).keys.publicKey, ALICE_PUB);
    const broken = join(scratch, 'broken');
    writeFileSync(broken, 'garbage');
    await assert.rejects(loadOrCreateKey(broken), /does not hold a base64 32-byte key/);
    assert.equal(readFileSync(broken, 'utf8'), 'garbage');
  });

  it('a KeyPair shows only its public key when logged, inspected or serialised', () => {
    const kp = new KeyPair(ALICE_PRIV);
    const priv = ALICE_PRIV.toString('base64');
    const hex = ALICE_PRIV.toString('hex');
    for (const text of [inspect(kp), JSON.stringify(kp), JSON.stringify({ kp }), String(Object.keys(kp))]) {
      assert.ok(!text.includes(priv) && !text.includes(hex), text);
    }
    assert.equal(kp.privateKeyHex(), hex);
  });
});

describe('wireguard lease and desired state', () => {
  const own = lease('10.5.1.0/24', '10.250.0.11', { PublicKey: K1 });
  const params = { network: parseIPv4Cidr('10.5.0.0/16')!, listenPort: 51820, ownPublicKey: K1 };

  it('writes flannel\'s lease value byte for byte', () => {
    assert.equal(encodeLeaseAttrs({ PublicIP: '10.250.0.11', PublicIPv6: null, BackendType: 'wireguard', BackendData: { PublicKey: ALICE_PUB } }),
      `{"PublicIP":"10.250.0.11","PublicIPv6":null,"BackendType":"wireguard","BackendData":{"PublicKey":"${ALICE_PUB}"}}`);
  });

  it('wants .0/32 on the device, one route for the whole Network, and one peer per lease (endpoint PublicIP:ListenPort, allowed IPs = subnet)', () => {
    const d = wireguardDesired(own, [own, lease('10.5.2.0/24', '10.250.0.12', { PublicKey: K2 })], params);
    assert.deepEqual(d.addresses, [{ ip: parseIPv4Cidr('10.5.1.0/24')!.ip, prefixLen: 32 }]);
    assert.deepEqual(d.routes, [{ dst: params.network, gateway: null, onlink: false, via: 'overlay' }]);
    assert.deepEqual(d.wireguardPeers, [{ publicKey: K2, endpoint: '10.250.0.12:51820', allowedIps: ['10.5.2.0/24'], leaseKey: '10.5.2.0-24' }]);
    assert.deepEqual(d.skipped, []);
  });

  it('skips, with a reason, a malformed or missing PublicKey, our own key, a key used twice and other backend types', () => {
    const peers = [
      lease('10.5.2.0/24', '10.250.0.12', { PublicKey: 'not-a-key' }),
      lease('10.5.3.0/24', '10.250.0.13', {}),
      lease('10.5.4.0/24', '10.250.0.14', { PublicKey: K1 }),
      lease('10.5.5.0/24', '10.250.0.15', { PublicKey: K3 }),
      lease('10.5.6.0/24', '10.250.0.16', { PublicKey: K3 }),
      lease('10.5.7.0/24', '10.250.0.17', { VNI: 1, VtepMAC: '02:00:00:00:00:01' }, 'vxlan'),
      lease('10.5.8.0/24', '10.250.0.18', { PublicKey: Buffer.alloc(32).toString('base64') }),
    ];
    const d = wireguardDesired(own, peers, params);
    assert.deepEqual(d.wireguardPeers!.map((p) => p.leaseKey), ['10.5.5.0-24']);
    const why = Object.fromEntries(d.skipped!.map((s) => [s.key, s.reason]));
    assert.match(why['10.5.2.0-24']!, /"not-a-key" is not a WireGuard public key/);
    assert.match(why['10.5.3.0-24']!, /no PublicKey/);
    assert.match(why['10.5.4.0-24']!, /our own public key/);
    assert.match(why['10.5.6.0-24']!, /already used by lease 10\.5\.5\.0-24/);
    assert.match(why['10.5.7.0-24']!, /BackendType "vxlan" is not wireguard/);
    assert.match(why['10.5.8.0-24']!, /not a WireGuard public key/);
  });

  it('runs the shared peer screen: a lease outside the Network is skipped', () => {
    const d = wireguardDesired(own, [lease('10.6.2.0/24', '10.250.0.12', { PublicKey: K2 })], params);
    assert.equal(d.wireguardPeers!.length, 0);
    assert.match(d.skipped![0]!.reason, /outside the Network/);
  });
});

describe('wireguard peer diff', () => {
  const policy = { persistentKeepalive: 0, presharedKey: null };
  const want = [{ publicKey: K2, endpoint: '10.250.0.12:51820', allowedIps: ['10.5.2.0/24'], leaseKey: '10.5.2.0-24' }];
  const peer = (key: string, endpoint: string, ips: string[]) => ({
    publicKey: key, presharedKeyHex: null, endpoint, allowedIps: ips, persistentKeepalive: 0, lastHandshake: 0, rxBytes: 0, txBytes: 0,
  });
  const device = (peers: ReturnType<typeof peer>[]) => ({ listenPort: 51820, hasPrivateKey: true, privateKeyHex: 'aa', peers });

  it('sends nothing when the device already holds exactly the wanted peers', () => {
    assert.equal(diffPeers(device([peer(K2, '10.250.0.12:51820', ['10.5.2.0/24'])]), want, policy).request, null);
  });

  it('adds a missing peer (removed by hand) and removes a peer nobody wants', () => {
    const d = diffPeers(device([peer(K3, '10.250.0.13:51820', ['10.5.3.0/24'])]), want, policy);
    assert.deepEqual(d.added.map((p) => p.publicKey), [K2]);
    assert.deepEqual(d.removed, [K3]);
  });

  it('replaces a re-keyed peer: the old key (same endpoint, same subnet) goes, the new one comes', () => {
    const d = diffPeers(device([peer(K3, '10.250.0.12:51820', ['10.5.2.0/24'])]), want, policy);
    assert.deepEqual(d.removed, [K3]);
    assert.deepEqual(d.added.map((p) => p.publicKey), [K2]);
    // Removal first in the UAPI text, so the subnet is free for the new key.
    const text = encodeSet(d.request!);
    assert.ok(text.indexOf('remove=true') < text.indexOf(`public_key=${Buffer.from(K2, 'base64').toString('hex')}`));
  });

  it('updates a peer whose endpoint, allowed IPs, keepalive or PSK changed', () => {
    assert.match(diffPeers(device([peer(K2, '10.250.0.99:51820', ['10.5.2.0/24'])]), want, policy).changed[0]!.why, /endpoint 10\.250\.0\.99:51820 → 10\.250\.0\.12:51820/);
    assert.match(diffPeers(device([peer(K2, '10.250.0.12:51820', ['10.5.9.0/24'])]), want, policy).changed[0]!.why, /allowed IPs/);
    assert.match(diffPeers(device([peer(K2, '10.250.0.12:51820', ['10.5.2.0/24'])]), want, { persistentKeepalive: 25, presharedKey: null }).changed[0]!.why, /keepalive 0 → 25/);
    assert.equal(diffPeers(device([peer(K2, '10.250.0.12:51820', ['10.5.2.0/24'])]), want, { persistentKeepalive: 0, presharedKey: PSK }).changed[0]!.why, 'preshared key differs');
  });
});

describe('WireGuard UAPI protocol (wireguard.com/xplatform)', () => {
  const hex = (k: string): string => Buffer.from(k, 'base64').toString('hex');

  it('encodes a set request: device keys, removals, then each peer with replace_allowed_ips, ending in an empty line', () => {
    const text = encodeSet({
      privateKeyHex: 'ab'.repeat(32), listenPort: 51820, remove: [K3],
      peers: [{ publicKey: K2, endpoint: '10.250.0.12:51820', allowedIps: ['10.5.2.0/24'], persistentKeepalive: 25, presharedKey: PSK }],
    });
    assert.equal(text, [
      'set=1', `private_key=${'ab'.repeat(32)}`, 'listen_port=51820',
      `public_key=${hex(K3)}`, 'remove=true',
      `public_key=${hex(K2)}`, `preshared_key=${hex(PSK)}`, 'endpoint=10.250.0.12:51820', 'persistent_keepalive_interval=25',
      'replace_allowed_ips=true', 'allowed_ip=10.5.2.0/24', '', '',
    ].join('\n'));
  });

  it('clears a PSK with the all-zero key', () => {
    assert.match(encodeSet({ peers: [{ publicKey: K2, endpoint: '1.2.3.4:1', allowedIps: [], persistentKeepalive: 0, presharedKey: null }] }),
      new RegExp(`preshared_key=${'0'.repeat(64)}\n`));
  });

  it('parses a get answer: port, private key presence, peers with endpoint, allowed IPs, keepalive and counters', () => {
    const st = parseGet([
      `private_key=${'cd'.repeat(32)}`, 'listen_port=51820', 'fwmark=0',
      `public_key=${hex(K2)}`, `preshared_key=${'0'.repeat(64)}`, 'protocol_version=1', 'endpoint=10.250.0.12:51820',
      'last_handshake_time_sec=1700000000', 'last_handshake_time_nsec=5', 'tx_bytes=100', 'rx_bytes=200',
      'persistent_keepalive_interval=25', 'allowed_ip=10.5.2.0/24', 'allowed_ip=10.5.3.0/24',
      `public_key=${hex(K3)}`, 'allowed_ip=10.5.4.0/24', 'errno=0', '', '',
    ].join('\n'));
    assert.equal(st.listenPort, 51820);
    assert.equal(st.privateKeyHex, 'cd'.repeat(32));
    assert.deepEqual(st.peers[0], {
      publicKey: K2, presharedKeyHex: null, endpoint: '10.250.0.12:51820', allowedIps: ['10.5.2.0/24', '10.5.3.0/24'],
      persistentKeepalive: 25, lastHandshake: 1700000000, rxBytes: 200, txBytes: 100,
    });
    assert.equal(st.peers[1]!.endpoint, null);
    assert.deepEqual(st.peers[1]!.allowedIps, ['10.5.4.0/24']);
  });

  it('reports a non-zero errno', () => {
    assert.equal(parseErrno('errno=-22\n\n'), -22);
    assert.throws(() => parseGet('errno=19\n\n'), /errno=19/);
  });

  it('the client sends one request per connection and reads up to errno and the empty line', async () => {
    const sock = join(scratch, 'fake.sock');
    const seen: string[] = [];
    const server = net.createServer((c) => {
      let buf = '';
      c.on('data', (d) => {
        buf += d.toString();
        if (!buf.endsWith('\n\n')) return;
        seen.push(buf);
        c.end(buf.startsWith('get=1') ? `listen_port=7\npublic_key=${hex(K2)}\nerrno=0\n\n` : 'errno=0\n\n');
      });
    });
    await new Promise<void>((r) => server.listen(sock, r));
    try {
      const client = new UapiClient(sock);
      assert.equal((await client.get()).listenPort, 7);
      await client.set({ listenPort: 9 });
      assert.deepEqual(seen, ['get=1\n\n', 'set=1\nlisten_port=9\n\n']);
      assert.equal(await new UapiClient(join(scratch, 'nobody.sock')).alive(), false);
    } finally {
      server.close();
    }
  });
});

describe('WireGuard generic netlink messages (include/uapi/linux/wireguard.h)', () => {
  const u16 = (v: number) => { const b = Buffer.alloc(2); b.writeUInt16LE(v); return b; };
  const u32 = (v: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(v); return b; };

  it('uses the attribute numbers of wireguard.h', () => {
    assert.deepEqual([WGDEVICE_A_IFINDEX, WGDEVICE_A_IFNAME, WGDEVICE_A_PRIVATE_KEY, WGDEVICE_A_FLAGS, WGDEVICE_A_LISTEN_PORT, WGDEVICE_A_PEERS], [1, 2, 3, 5, 6, 8]);
    assert.deepEqual([WGPEER_A_PUBLIC_KEY, WGPEER_A_PRESHARED_KEY, WGPEER_A_FLAGS, WGPEER_A_ENDPOINT, WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL, WGPEER_A_RX_BYTES, WGPEER_A_ALLOWEDIPS], [1, 2, 3, 4, 5, 7, 9]);
    assert.deepEqual([WGALLOWEDIP_A_FAMILY, WGALLOWEDIP_A_IPADDR, WGALLOWEDIP_A_CIDR_MASK], [1, 2, 3]);
  });

  it('pads attributes to 4 bytes with the length excluding padding', () => {
    assert.deepEqual([...nla(2, Buffer.from('wg0\0'))], [8, 0, 2, 0, 0x77, 0x67, 0x30, 0]);
    assert.deepEqual([...nla(6, u16(51820))], [6, 0, 6, 0, 0x6c, 0xca, 0, 0]);
  });

  it('encodes an endpoint as struct sockaddr_in: AF_INET host order, port and address network order, 8 zero bytes', () => {
    assert.deepEqual([...sockaddrIn('10.250.0.12', 51820)], [2, 0, 0xca, 0x6c, 10, 250, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0]);
  });

  it('encodes SET_DEVICE: ifname, private key, port, REPLACE_PEERS, nested peers with nested allowed IPs', () => {
    const priv = Buffer.alloc(32, 0xab);
    const pub = Buffer.alloc(32, 0x02);
    const msg = encodeSetDevice({
      ifname: 'flannel-wg', privateKey: priv, listenPort: 51820, replacePeers: true,
      peers: [{ publicKey: pub, endpoint: { ip: '10.250.0.12', port: 51820 }, persistentKeepalive: 25, replaceAllowedIps: true,
        presharedKey: Buffer.alloc(32), allowedIps: [{ ip: '10.5.2.0', prefixLen: 24 }] }],
    });
    const allowed = nla(0 | NLA_F_NESTED, Buffer.concat([nla(WGALLOWEDIP_A_FAMILY, u16(2)), nla(WGALLOWEDIP_A_IPADDR, Buffer.from([10, 5, 2, 0])), nla(WGALLOWEDIP_A_CIDR_MASK, Buffer.from([24]))]));
    const peer = nla(0 | NLA_F_NESTED, Buffer.concat([
      nla(WGPEER_A_PUBLIC_KEY, pub), nla(WGPEER_A_FLAGS, u32(2)), nla(WGPEER_A_PRESHARED_KEY, Buffer.alloc(32)),
      nla(WGPEER_A_ENDPOINT, sockaddrIn('10.250.0.12', 51820)), nla(WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL, u16(25)),
      nla(WGPEER_A_ALLOWEDIPS | NLA_F_NESTED, allowed),
    ]));
    const expected = Buffer.concat([
      nla(WGDEVICE_A_IFNAME, Buffer.from('flannel-wg\0')), nla(WGDEVICE_A_PRIVATE_KEY, priv), nla(WGDEVICE_A_LISTEN_PORT, u16(51820)),
      nla(WGDEVICE_A_FLAGS, u32(1)), nla(WGDEVICE_A_PEERS | NLA_F_NESTED, peer),
    ]);
    assert.deepEqual(msg, expected);
    // Spot-check raw bytes so the helper above cannot hide a shared mistake: the peers attribute
    // type is 8 with NLA_F_NESTED (0x8008), little-endian.
    const off = expected.length - nla(WGDEVICE_A_PEERS | NLA_F_NESTED, peer).length;
    assert.deepEqual([...msg.subarray(off + 2, off + 4)], [0x08, 0x80]);
  });

  it('encodes a removal as the public key and WGPEER_F_REMOVE_ME only', () => {
    const msg = encodeSetDevice({ ifname: 'x', peers: [{ publicKey: Buffer.alloc(32, 3), remove: true }] });
    const peer = nla(NLA_F_NESTED, Buffer.concat([nla(WGPEER_A_PUBLIC_KEY, Buffer.alloc(32, 3)), nla(WGPEER_A_FLAGS, u32(1))]));
    assert.deepEqual(msg, Buffer.concat([nla(WGDEVICE_A_IFNAME, Buffer.from('x\0')), nla(WGDEVICE_A_PEERS | NLA_F_NESTED, peer)]));
    assert.deepEqual(encodeGetDevice('x'), nla(WGDEVICE_A_IFNAME, Buffer.from('x\0')));
  });

  it('decodes a GET_DEVICE dump, merging a peer split across two messages', () => {
    const allowed = (ip: number[], mask: number) => nla(NLA_F_NESTED, Buffer.concat([nla(1, u16(2)), nla(2, Buffer.from(ip)), nla(3, Buffer.from([mask]))]));
    const rx = Buffer.alloc(8); rx.writeBigUInt64LE(1234n);
    const peerA1 = nla(NLA_F_NESTED, Buffer.concat([nla(1, Buffer.alloc(32, 2)), nla(4, sockaddrIn('10.250.0.12', 51820)), nla(5, u16(25)), nla(7, rx), nla(9 | NLA_F_NESTED, allowed([10, 5, 2, 0], 24))]));
    const peerA2 = nla(NLA_F_NESTED, Buffer.concat([nla(1, Buffer.alloc(32, 2)), nla(9 | NLA_F_NESTED, allowed([10, 5, 3, 0], 24))]));
    const head = Buffer.concat([nla(1, u32(7)), nla(2, Buffer.from('flannel-wg\0')), nla(3, Buffer.alloc(32, 0xab)), nla(6, u16(51820))]);
    const st = decodeGetDevice([Buffer.concat([head, nla(8 | NLA_F_NESTED, peerA1)]), Buffer.concat([head, nla(8 | NLA_F_NESTED, peerA2)])]);
    assert.equal(st.ifindex, 7);
    assert.equal(st.listenPort, 51820);
    assert.equal(st.peers.length, 1);
    assert.deepEqual(st.peers[0]!.allowedIps, ['10.5.2.0/24', '10.5.3.0/24']);
    assert.equal(st.peers[0]!.endpoint, '10.250.0.12:51820');
    assert.equal(st.peers[0]!.rxBytes, 1234);
    const ui = fromGenlState(st);
    assert.equal(ui.peers[0]!.publicKey, Buffer.alloc(32, 2).toString('base64'));
    assert.equal(ui.privateKeyHex, 'ab'.repeat(32));
  });

  it('translates a UAPI-style request to SET_DEVICE (removals first, PSK zero when none)', () => {
    const g = toGenlSet('flannel-wg', {
      listenPort: 51820, remove: [K3],
      peers: [{ publicKey: K2, endpoint: '10.250.0.12:51820', allowedIps: ['10.5.2.0/24'], persistentKeepalive: 0, presharedKey: null }],
    });
    assert.equal(g.listenPort, 51820);
    assert.deepEqual(g.peers!.map((p) => [p.publicKey.toString('base64'), p.remove ?? false]), [[K3, true], [K2, false]]);
    assert.deepEqual(g.peers![1]!.endpoint, { ip: '10.250.0.12', port: 51820 });
    assert.deepEqual(g.peers![1]!.allowedIps, [{ ip: '10.5.2.0', prefixLen: 24 }]);
    assert.ok(g.peers![1]!.presharedKey!.equals(Buffer.alloc(32)));
  });
});

describe('weft cleanup and the wireguard device', () => {
  it('removes flannel-wg whether it is a kernel WireGuard device or wireguard-go\'s TUN, and nothing else of that kind', async () => {
    const { overlayDevices } = await import('../../src/cli/cleanup');
    const link = (index: number, name: string, kind: string | null) => ({ index, name, kind, up: true, mtu: 1420, mac: null, vxlan: null });
    const links = [link(1, 'flannel-wg', 'tun'), link(2, 'flannel-wg-v6', 'wireguard'), link(3, 'wg0', 'wireguard'), link(4, 'flannel-wgx', 'tun'), link(5, 'eth0', null)];
    assert.deepEqual(overlayDevices(links, null).map((l) => l.name), ['flannel-wg', 'flannel-wg-v6']);
  });
});

describe('WireguardBackend: driver choice, interface config, peers', async () => {
  const { WireguardBackend } = await import('../../src/backend/wireguard/wireguard');
  type WgDriver = import('../../src/backend/wireguard/wireguard').WgDriver;
  type WgDeviceState = import('../../src/backend/wireguard/uapi').WgDeviceState;
  type WgSetRequest = import('../../src/backend/wireguard/uapi').WgSetRequest;
  type Link = { index: number; name: string; kind: string | null; up: boolean; mtu: number; mac: null; vxlan: null };
  const underlay = { ifName: 'eth0', ifIndex: 2, ipv4: '10.250.0.11', mtu: 1500 };
  const network = parseIPv4Cidr('10.5.0.0/16')!;

  function world(existing: Link | null) {
    const links = new Map<string, Link>(existing ? [[existing.name, existing]] : []);
    const calls: string[] = [];
    const nl = {
      getLink: async (name: string) => links.get(name) ?? null,
      deleteLink: async () => { calls.push('deleteLink'); },
      setLinkUp: async () => { calls.push('up'); },
      setLinkMtu: async (_l: unknown, mtu: number) => { calls.push(`mtu ${mtu}`); },
    };
    const driver = (kind: 'kernel' | 'userspace', fail: Error | null): { sets: WgSetRequest[]; d: WgDriver } => {
      const sets: WgSetRequest[] = [];
      let state: WgDeviceState = { listenPort: 0, hasPrivateKey: false, privateKeyHex: null, peers: [] };
      const d: WgDriver = {
        kind,
        ensure: async (name: string) => {
          calls.push(`${kind}.ensure`);
          if (fail) throw fail;
          const l: Link = { index: 9, name, kind: kind === 'kernel' ? 'wireguard' : 'tun', up: false, mtu: 1420, mac: null, vxlan: null };
          links.set(name, l);
          return l;
        },
        get: async () => state,
        set: async (req: WgSetRequest) => {
          sets.push(req);
          const upd = req.peers ?? [];
          state = {
            ...state,
            ...(req.privateKeyHex ? { privateKeyHex: req.privateKeyHex, hasPrivateKey: true } : {}),
            ...(req.listenPort ? { listenPort: req.listenPort } : {}),
            peers: [...state.peers.filter((p) => !upd.some((q) => q.publicKey === p.publicKey)),
              ...upd.map((p) => ({ publicKey: p.publicKey, endpoint: p.endpoint, allowedIps: p.allowedIps, persistentKeepalive: p.persistentKeepalive,
                presharedKeyHex: null, lastHandshake: 0, rxBytes: 0, txBytes: 0 }))],
          };
        },
        problem: () => null,
      };
      return { sets, d };
    };
    return { nl, calls, driver };
  }
  const config = { listenPort: 51820, listenPortV6: 51821, psk: null, persistentKeepaliveInterval: 0, mode: 'separate' as const };

  it('auto: the kernel device when the kernel has WireGuard; key and port set before up; flannel\'s lease data and MTU', async () => {
    const w = world(null);
    const k = w.driver('kernel', null);
    const u = w.driver('userspace', null);
    const b = new WireguardBackend({ nl: w.nl, config, network, keyFile: join(scratch, 'k1'), kernel: k.d, userspace: u.d, watchIntervalMs: 0 });
    const setup = await b.ensureDevice(underlay);
    assert.equal(b.dataPath, 'kernel');
    assert.deepEqual(setup, { backendType: 'wireguard', backendData: { PublicKey: b.publicKey }, mtu: 1420 });
    assert.deepEqual(w.calls, ['kernel.ensure', 'up']);
    assert.equal(k.sets[0]!.listenPort, 51820);
    assert.equal(u.sets.length, 0);
  });

  it('auto: wireguard-go when the kernel refuses the link kind, and says why', async () => {
    const w = world(null);
    const b = new WireguardBackend({ nl: w.nl, config, network, keyFile: join(scratch, 'k2'),
      kernel: w.driver('kernel', new Error('ENOTSUP')).d, userspace: w.driver('userspace', null).d, watchIntervalMs: 0 });
    await b.ensureDevice(underlay);
    assert.equal(b.dataPath, 'userspace');
    assert.match(b.dataPathInfo().reason!, /kernel WireGuard unavailable: ENOTSUP/);
    assert.deepEqual(w.calls.slice(0, 2), ['kernel.ensure', 'userspace.ensure']);
  });

  it('auto: a wireguard-go TUN from before the restart is kept (the kernel is not tried: it would replace the TUN)', async () => {
    const w = world({ index: 9, name: 'flannel-wg', kind: 'tun', up: true, mtu: 1420, mac: null, vxlan: null });
    const b = new WireguardBackend({ nl: w.nl, config, network, keyFile: join(scratch, 'k3'),
      kernel: w.driver('kernel', null).d, userspace: w.driver('userspace', null).d, watchIntervalMs: 0 });
    await b.ensureDevice(underlay);
    assert.equal(b.dataPath, 'userspace');
    assert.ok(!w.calls.includes('kernel.ensure'));
  });

  it('off: fails naming the fix when the kernel refuses; force: never tries the kernel', async () => {
    const w = world(null);
    const off = new WireguardBackend({ nl: w.nl, config, network, keyFile: join(scratch, 'k4'), fallback: 'off',
      kernel: w.driver('kernel', new Error('ENOTSUP')).d, userspace: w.driver('userspace', null).d, watchIntervalMs: 0 });
    await assert.rejects(off.ensureDevice(underlay), /cannot create the kernel WireGuard device flannel-wg: ENOTSUP \(--wireguard-fallback=off; load the wireguard module/);
    const w2 = world(null);
    const force = new WireguardBackend({ nl: w2.nl, config, network, keyFile: join(scratch, 'k4'), fallback: 'force',
      kernel: w2.driver('kernel', null).d, userspace: w2.driver('userspace', null).d, watchIntervalMs: 0 });
    await force.ensureDevice(underlay);
    assert.equal(force.dataPath, 'userspace');
    assert.ok(!w2.calls.includes('kernel.ensure'));
  });

  it('a new peer gets a handshake kick (keepalive 1, then the configured 0); an unchanged peer set sends nothing', async () => {
    const w = world(null);
    const k = w.driver('kernel', null);
    const b = new WireguardBackend({ nl: w.nl, config, network, keyFile: join(scratch, 'k5'), kernel: k.d, watchIntervalMs: 0 });
    await b.ensureDevice(underlay);
    const before = k.sets.length;
    const peers = [{ publicKey: K2, endpoint: '10.250.0.12:51820', allowedIps: ['10.5.2.0/24'], leaseKey: '10.5.2.0-24' }];
    await b.applyWireguardPeers(peers);
    assert.deepEqual(k.sets.slice(before).map((s) => (s.peers ?? []).map((p) => p.persistentKeepalive)), [[1], [0]]);
    await b.applyWireguardPeers(peers);
    assert.equal(k.sets.length, before + 2);
    await b.close();
  });
});

describe('wireguard over IPv6 (flannel-wg-v6, Mode separate)', () => {
  const v6lease = (v4: string, v6: string, pub4: string, pub6: string, key: string | null): Lease => {
    const base = lease(v4, '10.250.0.12', key === null ? undefined : { PublicKey: key });
    const [ip, len] = v6.split('/');
    return { ...base, key: `${base.key}&${ip}-${len}`, ipv6Subnet: { ip: ip!, prefixLen: Number(len) },
      attrs: { ...base.attrs, PublicIP: pub4, PublicIPv6: pub6, BackendV6Data: key === null ? undefined : { PublicKey: key } } };
  };

  it('takes the IPv6 half of each lease: BackendV6Data key, [PublicIPv6]:ListenPortV6, the IPv6 subnet; ::/128 on the device, the IPv6Network routed', () => {
    const own = v6lease('10.5.1.0/24', 'fd00:5:0:1::/64', '10.250.0.11', 'fd00:250::11', K1);
    const peer = v6lease('10.5.2.0/24', 'fd00:5:0:2::/64', '10.250.0.12', 'fd00:250:0:0::12', K2);
    const net6 = { ip: 'fd00:5::', prefixLen: 48 };
    const d = wireguardDesired(own, [own, peer], { network: net6, family: 6, listenPort: 51821, ownPublicKey: K1 });
    assert.deepEqual(d.wireguardPeers, [{ publicKey: K2, endpoint: '[fd00:250::12]:51821', allowedIps: ['fd00:5:0:2::/64'], leaseKey: peer.key }]);
    assert.deepEqual(d.addresses, [{ ip: 'fd00:5:0:1::', prefixLen: 128 }]);
    assert.deepEqual(d.routes, [{ dst: net6, gateway: null, onlink: false, via: 'overlay' }]);
  });

  it('encodes an IPv6 endpoint as struct sockaddr_in6 and IPv6 allowed IPs with AF_INET6', () => {
    const sa = sockaddrIn('fd00:250::12', 51821);
    assert.equal(sa.length, 28);
    assert.deepEqual([...sa.subarray(0, 8)], [10, 0, 0xca, 0x6d, 0, 0, 0, 0]);
    assert.equal(sa.subarray(8, 24).toString('hex'), 'fd000250000000000000000000000012');
    const msg = encodeSetDevice({ ifname: 'flannel-wg-v6', peers: [{ publicKey: Buffer.alloc(32, 2), allowedIps: [{ ip: 'fd00:5:0:2::', prefixLen: 64 }] }] });
    const st = decodeGetDevice([Buffer.concat([msg, nla(WGDEVICE_A_LISTEN_PORT, Buffer.from([0x6d, 0xca]))])]);
    assert.deepEqual(st.peers[0]!.allowedIps, ['fd00:5:0:2::/64']);
    const g = toGenlSet('flannel-wg-v6', { peers: [{ publicKey: K2, endpoint: '[fd00:250::12]:51821', allowedIps: [], persistentKeepalive: 0, presharedKey: null }] });
    assert.deepEqual(g.peers![0]!.endpoint, { ip: 'fd00:250::12', port: 51821 });
  });
});
