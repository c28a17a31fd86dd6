/**
 * Shared by the real-runtime e2e tests (runtime-docker, runtime-podman): TCP between two
 * containers' network namespaces, reporting the source address the receiver saw.
 */
import { spawn } from 'node:child_process';
import { netContains, parseIPv4, parseIPv4Cidr } from '../../../src/ip';
import type { Lab } from '../../../src/lab';
import { mountsUnder, processesUnder } from '../../../src/lab/runtime';
import { run } from '../../../src/lab/run';

/** Receiver: counts bytes until the sender closes its side, answers {from, bytes}, exits. */
const SERVER = `
const net = require('net');
const srv = net.createServer((s) => {
  let n = 0;
  s.on('data', (b) => { n += b.length; });
  s.on('end', () => { s.end(JSON.stringify({ from: s.remoteAddress.replace(/^::ffff:/, ''), bytes: n })); srv.close(); });
});
srv.listen(Number(process.argv[1]), () => console.log('listening'));
setTimeout(() => process.exit(2), 30000).unref();
`;

/** Sender: writes N bytes, half-closes, prints the receiver's answer. */
const CLIENT = `
const net = require('net');
const [host, port, n] = process.argv.slice(1);
const s = net.connect(Number(port), host, () => { s.end(Buffer.alloc(Number(n), 120)); });
let reply = '';
s.on('data', (b) => { reply += b; });
s.on('close', () => console.log(reply));
s.on('error', (e) => { console.error(e.message); process.exit(1); });
`;

export interface Transfer {
  readonly from: string;
  readonly bytes: number;
}

/** Send `bytes` over TCP from container `from` to container `to` (their netns), both ends in Node. */
export function tcpTransfer(lab: Lab, from: string, to: string, toAddress: string, bytes: number, port = 5201): Promise<Transfer> {
  return tcpTransferNs(lab.tools.ip, lab.nsName(from), lab.nsName(to), toAddress, bytes, port);
}

/** tcpTransfer between two named network namespaces (/run/netns/NAME). */
export async function tcpTransferNs(ipPath: string, fromNs: string, toNs: string, toAddress: string, bytes: number, port = 5201): Promise<Transfer> {
  const to = toNs;
  const from = fromNs;
  const server = spawn(ipPath, ['netns', 'exec', toNs, process.execPath, '-e', SERVER, String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    await new Promise<void>((resolve, reject) => {
      let err = '';
      server.stderr.on('data', (b: Buffer) => { err += b.toString(); });
      server.stdout.on('data', (b: Buffer) => { if (b.toString().includes('listening')) resolve(); });
      server.on('exit', (code) => reject(new Error(`receiver in ${to} exited (${code}): ${err}`)));
    });
    const r = await run(ipPath, ['netns', 'exec', fromNs, process.execPath, '-e', CLIENT, toAddress, String(port), String(bytes)], { timeoutMs: 30000 });
    if (r.code !== 0) throw new Error(`sender in ${from}: exit ${r.code}: ${r.stderr}`);
    return JSON.parse(r.stdout.trim()) as Transfer;
  } finally {
    if (server.exitCode === null) server.kill('SIGKILL');
  }
}

/** What a lab's runtimes may have left: processes naming the state dir, mounts under it. */
export function leftovers(stateDir: string): { pids: number[]; mounts: string[] } {
  return { pids: processesUnder(stateDir).map((p) => p.pid), mounts: mountsUnder(stateDir) };
}

/** 10.5.72.2(/24) inside 10.5.72.0/24. */
export function inSubnet(address: string, subnetNetwork: string): boolean {
  const net = parseIPv4Cidr(subnetNetwork, true);
  const ip = parseIPv4(address.split('/')[0] ?? '');
  return net !== null && ip !== null && netContains(net, ip);
}
