/**
 * The floor of a peer join in Node on this machine (bench/run.ts, "Node's floor" row; issue #14).
 *
 * What any control plane written for Node pays per join, and nothing more: the watch message read
 * off etcd's JSON gateway (a plain socket read straight into one buffer), JSON.parse of it and of
 * the lease, base64, the neighbour + FDB entry + route encoded by weft's own encoder and sent in
 * one sendmsg on weft's native netlink socket, its one ACK read. No screening, no desired state,
 * no reconciler, no monitor, no health port, no timers. A leave deletes the three again.
 *
 * With `--checked NETWORK OWN_SUBNET`, the same join after weft's own checks of hostile input, the
 * functions weftd runs on the way to its write: decodeWatchMessage (every field read is checked),
 * decodeSubnetKv (the strict lease codec), screenPeerAlone (the peer against the network, our own
 * subnet, the underlay) and the vxlan backend's per-peer rules (VNI, VtepMAC). What a join path
 * that keeps weft's checks and drops everything else would cost (bench/run.ts, the "checked
 * floor" bound).
 *
 * Not a daemon anyone should run: it keeps no state beyond the peers to delete, and handles only
 * the vxlan lease of the bench's joins.
 *
 *   node --no-opt floor-daemon.js <etcd http://host:port> <etcd prefix> <vxlan ifindex> [--checked NETWORK OWN_SUBNET]
 *
 * Prints "ready" once etcd has created the watch, "error <text>" for a write the kernel refused
 * (or, checked, a lease the checks refused).
 */
import { connect } from 'node:net';
import type { DesiredContext, PeerRules } from '../../src/backend/backend';
import { screenPeerAlone } from '../../src/backend/screen';
import { vxlanPeerRules } from '../../src/backend/vxlan/desired';
import { parseIPv4Cidr } from '../../src/ip';
import { decodeLease } from '../../src/lease/codec';
import { decodeSubnetKv, prefixEnd } from '../../src/lease/etcd-common';
import { decodeWatchMessage } from '../../src/lease/etcd-http-wire';
import type { Lease } from '../../src/lease/types';
import { openNetlinkSocket } from '../../src/netlink/transport';
import type { KernelWrite } from '../../src/netlink/types';
import { encodeWrites, forEachAck, stampBatchRequest } from '../../src/netlink/wire';

interface Peer {
  readonly subnet: string;
  readonly mac: string;
  readonly publicIp: string;
}

/** --checked: our own lease, what screening judges a peer against, and the vxlan rules, as weftd's would be. */
interface Checks {
  readonly own: Lease;
  readonly ctx: DesiredContext;
  readonly rules: PeerRules;
}

function checksOf(subnets: string, network: string | undefined, ownSubnet: string | undefined): Checks | null {
  const net = network === undefined ? null : parseIPv4Cidr(network);
  const ownNet = ownSubnet === undefined ? null : parseIPv4Cidr(ownSubnet);
  if (net === null || ownSubnet === undefined || ownNet === null) return null;
  const own = decodeLease(`${subnets}${ownSubnet.replace('/', '-')}`, JSON.stringify({ PublicIP: '10.99.0.1', BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: '0e:00:00:00:00:01' } }),
    { etcdLeaseId: null, modRevision: '1', expiration: null });
  const ctx: DesiredContext = { onLinkPublicIPs: new Set(), network: net, subnetLen: ownNet.prefixLen, underlayNetworks: [], protectedIPs: [] };
  return { own, ctx, rules: vxlanPeerRules(own, { vni: 1, directRouting: false }, ctx) };
}

function main(): void {
  const [endpoint, prefix, ifindexText, mode, network, ownSubnet] = process.argv.slice(2);
  const ifindex = Number(ifindexText);
  const subnets = `${prefix}/subnets/`;
  const checks = mode === '--checked' ? checksOf(subnets, network, ownSubnet) : null;
  if (endpoint === undefined || prefix === undefined || !Number.isInteger(ifindex) || ifindex <= 0 || (mode !== undefined && checks === null)) {
    process.stderr.write('usage: floor-daemon <etcd http://host:port> <etcd prefix> <vxlan ifindex> [--checked NETWORK OWN_SUBNET]\n');
    process.exit(2);
  }
  const url = new URL(endpoint);
  const peers = new Map<string, Peer>();
  const netlink = openNetlinkSocket(0, { recvBufferBytes: 1 << 20, ref: true });
  netlink.on('message', (msg) => forEachAck(msg, (_seq, errno) => {
    if (errno !== 0) process.stdout.write(`error errno ${errno}\n`);
  }));
  netlink.on('error', (err) => process.stdout.write(`error ${err.message}\n`));
  let seq = 1;

  const write = (writes: readonly KernelWrite[]): void => {
    const batch = encodeWrites(writes, (_i, err) => process.stdout.write(`error ${err.message}\n`));
    const count = batch.offsets.length - 1;
    // One ACK, on the last request (errors are answered anyway), as weft's batches ask.
    for (let i = 0; i < count; i++) stampBatchRequest(batch.buffer, seq++, 0, batch.offsets[i]!, i === count - 1);
    netlink.send(batch.buffer.subarray(0, batch.offsets[count]!));
  };

  /** Program (lease) or remove (null) the peer at `key`, the full etcd key. */
  const program = (key: string, lease: { readonly publicIp: string; readonly mac: string } | null): void => {
    const subnet = key.slice(subnets.length).replace('-', '/');
    const net = parseIPv4Cidr(subnet);
    if (net === null) return;
    const gateway = subnet.slice(0, subnet.indexOf('/'));
    const route = { dst: net, gateway, oif: ifindex, onlink: true };
    if (lease === null) {
      const peer = peers.get(key);
      if (peer === undefined) return;
      peers.delete(key);
      write([
        { op: 'deleteRoute', spec: route },
        { op: 'deleteFdb', link: ifindex, mac: peer.mac, dst: peer.publicIp },
        { op: 'deleteNeighbour', link: ifindex, ip: gateway },
      ]);
      return;
    }
    const peer: Peer = { subnet, mac: lease.mac, publicIp: lease.publicIp };
    peers.set(key, peer);
    write([
      { op: 'replaceNeighbour', link: ifindex, ip: gateway, mac: peer.mac },
      { op: 'replaceFdb', link: ifindex, mac: peer.mac, dst: peer.publicIp },
      { op: 'replaceRoute', spec: route },
    ]);
  };

  /** One watch message, trusted: JSON.parse of it and of the lease. */
  const onLine = (line: string): void => {
    const msg = JSON.parse(line) as { result?: { created?: boolean; events?: { type?: string; kv: { key: string; value?: string } }[] } };
    if (msg.result?.created) process.stdout.write('ready\n');
    for (const event of msg.result?.events ?? []) {
      const key = Buffer.from(event.kv.key, 'base64').toString('utf8');
      if (!key.startsWith(subnets)) continue;
      if (event.type === 'DELETE') {
        program(key, null);
        continue;
      }
      const lease = JSON.parse(Buffer.from(event.kv.value ?? '', 'base64').toString('utf8')) as { PublicIP: string; BackendData: { VtepMAC: string } };
      program(key, { publicIp: lease.PublicIP, mac: lease.BackendData.VtepMAC });
    }
  };

  /** One watch message through weft's own checks, as weftd reads it on the way to its write. */
  const onCheckedLine = (line: string, { own, ctx, rules }: Checks): void => {
    const msg = decodeWatchMessage(Buffer.from(line, 'utf8'));
    if (msg === null || msg.error !== undefined) return;
    if (msg.created) process.stdout.write('ready\n');
    for (const event of msg.events ?? []) {
      if (!event.kv.key.startsWith(subnets)) continue;
      if (event.deleted) {
        program(event.kv.key, null);
        continue;
      }
      const decoded = decodeSubnetKv(prefix, event.kv, null);
      if (decoded === null) continue;
      if (decoded.error !== undefined) {
        process.stdout.write(`error ${decoded.error.message}\n`);
        continue;
      }
      // The common screen, then the vxlan backend's own judgement (VNI, VtepMAC): weftd's verdict.
      const { reason } = screenPeerAlone(decoded.lease, own, ctx);
      const verdict = reason === null ? rules.peer(decoded.lease) : { skip: reason };
      const fdb = 'skip' in verdict ? undefined : verdict.objects.fdb[0];
      if (fdb === undefined) {
        process.stdout.write(`error ${decoded.key}: ${'skip' in verdict ? verdict.skip : 'no FDB entry'}\n`);
        continue;
      }
      program(event.kv.key, { publicIp: fdb.dst, mac: fdb.mac });
    }
  };

  // The watch: a chunked response of newline-delimited JSON. Chunk-size lines are skipped (they
  // never start with "{"); a message split across reads is joined from its copied start.
  let carry = '';
  const socket = connect({
    host: url.hostname,
    port: Number(url.port),
    noDelay: true,
    onread: {
      buffer: Buffer.allocUnsafeSlow(64 * 1024),
      callback: (bytes: number, buffer: Uint8Array): boolean => {
        const lines = (carry + Buffer.from(buffer.buffer, buffer.byteOffset, bytes).toString('utf8')).split('\n');
        carry = lines.pop()!;
        for (const line of lines) {
          if (!line.startsWith('{')) continue;
          if (checks === null) onLine(line);
          else onCheckedLine(line, checks);
        }
        return true;
      },
    },
  });
  const body = JSON.stringify({ create_request: { key: Buffer.from(subnets).toString('base64'), range_end: prefixEnd(subnets).toString('base64') } });
  socket.write(`POST /v3/watch HTTP/1.1\r\nHost: ${url.host}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n`
    + `${Buffer.byteLength(body).toString(16)}\r\n${body}\r\n`);
  socket.on('error', (err) => {
    process.stderr.write(`floor-daemon: etcd: ${err.message}\n`);
    process.exit(1);
  });
  socket.on('end', () => process.exit(1));
  process.on('SIGTERM', () => process.exit(0));
}

main();
