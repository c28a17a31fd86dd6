/**
 * The floor of a peer join in Node on this machine (bench/run.ts, "Node's floor" row; issue #14).
 *
 * What any control plane written for Node pays per join, and nothing more: the watch message read
 * off etcd's JSON gateway (a plain socket read straight into one buffer), JSON.parse of it and of
 * the lease, base64, the neighbour + FDB entry + route encoded by weft's own encoder and sent in
 * one sendmsg on weft's native netlink socket, its one ACK read. No screening, no desired state,
 * no reconciler, no monitor, no health port, no timers. A leave deletes the three again.
 *
 * Not a daemon anyone should run: it trusts its input (the bench writes the leases) and handles
 * only the vxlan lease of the bench's joins.
 *
 *   node --no-opt floor-daemon.js <etcd http://host:port> <etcd prefix> <vxlan ifindex>
 *
 * Prints "ready" once etcd has created the watch, "error <text>" for a write the kernel refused.
 */
import { connect } from 'node:net';
import { parseIPv4Cidr } from '../../src/ip';
import { prefixEnd } from '../../src/lease/etcd-common';
import { openNetlinkSocket } from '../../src/netlink/transport';
import type { KernelWrite } from '../../src/netlink/types';
import { encodeWrites, forEachAck, stampBatchRequest } from '../../src/netlink/wire';

interface Peer {
  readonly subnet: string;
  readonly mac: string;
  readonly publicIp: string;
}

function main(): void {
  const [endpoint, prefix, ifindexText] = process.argv.slice(2);
  const ifindex = Number(ifindexText);
  if (endpoint === undefined || prefix === undefined || !Number.isInteger(ifindex) || ifindex <= 0) {
    process.stderr.write('usage: floor-daemon <etcd http://host:port> <etcd prefix> <vxlan ifindex>\n');
    process.exit(2);
  }
  const url = new URL(endpoint);
  const subnets = `${prefix}/subnets/`;
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

  const onEvent = (event: { type?: string; kv: { key: string; value?: string } }): void => {
    const key = Buffer.from(event.kv.key, 'base64').toString('utf8');
    if (!key.startsWith(subnets)) return;
    const subnet = key.slice(subnets.length).replace('-', '/');
    const net = parseIPv4Cidr(subnet);
    if (net === null) return;
    const gateway = subnet.slice(0, subnet.indexOf('/'));
    const route = { dst: net, gateway, oif: ifindex, onlink: true };
    if (event.type === 'DELETE') {
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
    const lease = JSON.parse(Buffer.from(event.kv.value ?? '', 'base64').toString('utf8')) as { PublicIP: string; BackendData: { VtepMAC: string } };
    const peer: Peer = { subnet, mac: lease.BackendData.VtepMAC, publicIp: lease.PublicIP };
    peers.set(key, peer);
    write([
      { op: 'replaceNeighbour', link: ifindex, ip: gateway, mac: peer.mac },
      { op: 'replaceFdb', link: ifindex, mac: peer.mac, dst: peer.publicIp },
      { op: 'replaceRoute', spec: route },
    ]);
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
          const msg = JSON.parse(line) as { result?: { created?: boolean; events?: { type?: string; kv: { key: string; value?: string } }[] } };
          if (msg.result?.created) process.stdout.write('ready\n');
          for (const event of msg.result?.events ?? []) onEvent(event);
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
