/**
 * Helpers for the user-space data path e2e tests: a checksummed TCP transfer between two lab
 * namespaces, hand-made datagrams (VXLAN or raw IP) sent from any namespace, a device's kernel
 * counters, and the pump's drop reports from weftd's log.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import type { Lab } from '../../../src/lab';

/** Fail (never skip) when a tool the test needs is missing, saying how to install it. */
export function requireTool(name: string, pkg = name): void {
  try {
    execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' });
  } catch {
    assert.fail(`${name} is not installed: apt-get install -y ${pkg}`);
  }
}

// Node one-liners run inside namespaces with the test's own node binary.
const RECEIVER = `
const net = require('net'), crypto = require('crypto');
const srv = net.createServer((s) => { const h = crypto.createHash('sha256'); let n = 0;
  s.on('data', (d) => { n += d.length; h.update(d); });
  s.on('end', () => { process.stdout.write(n + ' ' + h.digest('hex') + '\\n'); srv.close(); }); });
srv.listen(Number(process.argv[1]), () => process.stderr.write('listening\\n'));
setTimeout(() => { process.stderr.write('receiver timed out\\n'); process.exit(3); }, Number(process.argv[2])).unref();`;

const SENDER = `
const net = require('net'), crypto = require('crypto');
const [host, port, mb] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
const h = crypto.createHash('sha256'); let sent = 0, i = 0;
const s = net.connect(port, host, () => {
  const write = () => { while (i < mb) {
    const buf = crypto.randomBytes(1 << 20); i++; h.update(buf); sent += buf.length;
    if (!s.write(buf)) { s.once('drain', write); return; } }
    s.end(() => process.stdout.write(sent + ' ' + h.digest('hex') + '\\n')); };
  write(); });
s.on('error', (e) => { process.stderr.write(String(e) + '\\n'); process.exit(2); });`;

/**
 * Send `mb` MiB of random bytes over TCP from namespace `from` to `toAddr` (listening in
 * namespace `to`); resolves to both sides' "<bytes> <sha256>" lines.
 */
export async function tcpTransfer(lab: Lab, from: string, to: string, toAddr: string, mb: number, port = 7100): Promise<{ sent: string; received: string; ms: number }> {
  const receiving = lab.exec(to, [process.execPath, '-e', RECEIVER, String(port), '120000'], { timeoutMs: 125_000 });
  await new Promise((r) => setTimeout(r, 400));
  const started = Date.now();
  const sent = await lab.exec(from, [process.execPath, '-e', SENDER, toAddr, String(port), String(mb)], { timeoutMs: 120_000 });
  const received = await receiving;
  const ms = Date.now() - started;
  assert.equal(sent.code, 0, `sender in ${from}: ${sent.stderr}`);
  assert.equal(received.code, 0, `receiver in ${to}: ${received.stderr}`);
  return { sent: sent.stdout.trim(), received: received.stdout.trim(), ms };
}

function ipv4Checksum(b: Buffer): number {
  let sum = 0;
  for (let i = 0; i < b.length; i += 2) sum += (b[i]! << 8) | (b[i + 1] ?? 0);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return ~sum & 0xffff;
}

/** An IPv4 ICMP echo request from `src` to `dst`. */
export function icmpEcho(src: string, dst: string, id = 0x4242): Buffer {
  const icmp = Buffer.alloc(16);
  icmp[0] = 8;
  icmp.writeUInt16BE(id, 4);
  icmp.writeUInt16BE(1, 6);
  icmp.write('weft-e2e', 8);
  icmp.writeUInt16BE(ipv4Checksum(icmp), 2);
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + icmp.length, 2);
  ip[8] = 64;
  ip[9] = 1;
  Buffer.from(src.split('.').map(Number)).copy(ip, 12);
  Buffer.from(dst.split('.').map(Number)).copy(ip, 16);
  ip.writeUInt16BE(ipv4Checksum(ip), 10);
  return Buffer.concat([ip, icmp]);
}

/** A VXLAN datagram (VNI `vni`) carrying `ipPacket` in an Ethernet frame to `dstMac`. */
export function vxlanDatagram(vni: number, dstMac: string, ipPacket: Buffer): Buffer {
  const vx = Buffer.alloc(8);
  vx[0] = 0x08;
  vx.writeUIntBE(vni, 4, 3);
  const eth = Buffer.alloc(14);
  Buffer.from(dstMac.split(':').map((h) => parseInt(h, 16))).copy(eth, 0);
  Buffer.from([0x02, 0xee, 0, 0, 0, 0x01]).copy(eth, 6);
  eth.writeUInt16BE(0x0800, 12);
  return Buffer.concat([vx, eth, ipPacket]);
}

/** Send `payload` `count` times as UDP datagrams from namespace `from` to `addr:port`. */
export async function sendDatagrams(lab: Lab, from: string, addr: string, port: number, payload: Buffer, count: number): Promise<void> {
  const script = `
const s = require('dgram').createSocket('udp4'); const b = Buffer.from(process.argv[1], 'hex'); let n = Number(process.argv[4]);
const next = () => { if (n-- <= 0) { s.close(); return; } s.send(b, Number(process.argv[3]), process.argv[2], (e) => { if (e) { console.error(String(e)); process.exit(2); } setTimeout(next, 2); }); };
next();`;
  const r = await lab.exec(from, [process.execPath, '-e', script, payload.toString('hex'), addr, String(port), String(count)], { timeoutMs: 30_000 });
  assert.equal(r.code, 0, `sending datagrams from ${from}: ${r.stderr}`);
}

/** A kernel counter of a device in a namespace (/sys/class/net/<dev>/statistics/<name>). */
export async function deviceCounter(lab: Lab, host: string, dev: string, name: string): Promise<number> {
  const r = await lab.exec(host, ['cat', `/sys/class/net/${dev}/statistics/${name}`]);
  assert.equal(r.code, 0, r.stderr);
  return Number(r.stdout.trim());
}

export interface DropReport {
  readonly increase: Record<string, number>;
  readonly totals: Record<string, number>;
  readonly lastNotPeer?: string | null;
}

/** The pump's drop reports ("user-space data path dropped packets") in a host's weftd log. */
export function dropReports(lab: Lab, host: string): DropReport[] {
  const out: DropReport[] = [];
  for (const line of lab.daemonLog(host).split('\n')) {
    if (!line.includes('user-space data path dropped packets')) continue;
    try {
      out.push(JSON.parse(line) as DropReport);
    } catch {
      // a text-format line: not produced by the lab's daemons
    }
  }
  return out;
}

/** The container address (".2") of a lab host. */
export function containerAddr(lab: Lab, host: string): string {
  const env = lab.subnetEnv(host);
  assert.ok(env, `no subnet.env on ${host}`);
  return env.containerAddress.split('/')[0]!;
}

/** The overlay device address ("<subnet>.0") of a lab host. */
export function overlayAddr(lab: Lab, host: string): string {
  const env = lab.subnetEnv(host);
  assert.ok(env, `no subnet.env on ${host}`);
  return env.subnetNetwork.split('/')[0]!;
}
