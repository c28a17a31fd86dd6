/**
 * A stand-in for weftd's kernel half, driven by the vxlan e2e test over stdin/stdout (JSON lines).
 * It must run INSIDE the network namespace it manages (`ip netns exec NS node vxlan-agent.js
 * agent`): netlink sockets belong to the namespace of the process that opens them.
 *
 * Requests:  {"id":1,"cmd":"init","args":{...}}   Replies: {"id":1,"ok":true,"result":...}
 * Logs go to stderr as JSON lines.
 *
 * Without the "agent" argument it exits at once: `node --test dist/test/e2e/` picks up every
 * file under a `test` directory, helpers included.
 */
import * as net from 'node:net';
import * as readline from 'node:readline';
import { VxlanBackend } from '../../../src/backend/vxlan';
import type { Underlay } from '../../../src/backend/backend';
import { Reconciler } from '../../../src/daemon/reconciler';
import { describeError } from '../../../src/errors';
import { parseIPv4Cidr } from '../../../src/ip';
import type { Lease } from '../../../src/lease/types';
import { createLogger } from '../../../src/log';
import { NetlinkClient, resolveUnderlay } from '../../../src/netlink';

export interface InitArgs {
  readonly iface: string;
  readonly vni: number;
  readonly ownSubnet: string; // "10.5.1.0/24"
  readonly resyncIntervalMs?: number;
  readonly directRouting?: boolean;
  readonly network?: string; // "10.5.0.0/16", for DirectRouting ownership
}

export interface PeerSpec {
  readonly subnet: string;
  readonly publicIp: string;
  readonly mac: string;
  readonly backendType?: string;
  readonly vni?: number;
}

function lease(subnet: string, publicIp: string, backendType: string, data: unknown): Lease {
  const net = parseIPv4Cidr(subnet);
  if (!net) throw new Error(`bad subnet ${subnet}`);
  return {
    key: subnet.replace('/', '-'),
    subnet: net,
    ipv6Subnet: null,
    attrs: { PublicIP: publicIp, PublicIPv6: null, BackendType: backendType, BackendData: data },
    expiration: null,
    etcdLeaseId: '1',
    modRevision: '1',
  };
}

async function main(): Promise<void> {
  const log = createLogger({ format: 'json', level: 'debug' });
  const nl = new NetlinkClient(log);
  let backend: VxlanBackend | null = null;
  let underlay: Underlay | null = null;
  let reconciler: Reconciler | null = null;
  let own: Lease | null = null;
  const servers: net.Server[] = [];

  const handlers: Record<string, (args: Record<string, unknown>) => Promise<unknown>> = {
    async init(raw) {
      const args = raw as unknown as InitArgs;
      underlay = await resolveUnderlay({ iface: [args.iface], ifaceRegex: [], publicIp: null }, nl);
      backend = new VxlanBackend({
        nl,
        log,
        config: { vni: args.vni, port: 0, gbp: false, learning: false, directRouting: args.directRouting ?? false, mtu: null },
      });
      const setup = await backend.ensureDevice(underlay);
      own = lease(args.ownSubnet, underlay.ipv4, 'vxlan', setup.backendData);
      reconciler = new Reconciler({
        nl,
        backend,
        underlay,
        log,
        resyncIntervalMs: args.resyncIntervalMs ?? 10_000,
        directRoutingNetwork: args.directRouting && args.network ? parseIPv4Cidr(args.network) : null,
      });
      return { setup, underlay };
    },
    async peers(raw) {
      if (!backend || !reconciler || !own || !underlay) throw new Error('init first');
      const specs = raw.peers as PeerSpec[];
      const leases = specs.map((p) => lease(p.subnet, p.publicIp, p.backendType ?? 'vxlan', { VNI: p.vni ?? 1, VtepMAC: p.mac }));
      const onLink = await backend.onLinkPeers(leases, underlay);
      const desired = backend.desired(own, leases, { onLinkPublicIPs: onLink });
      reconciler.setDesired(desired);
      reconciler.start();
      const result = await reconciler.reconcile();
      return { result, skipped: desired.skipped ?? [], onLink: [...onLink] };
    },
    async reconcile() {
      if (!reconciler) throw new Error('init first');
      return reconciler.reconcile();
    },
    async ensureDevice() {
      if (!backend || !underlay) throw new Error('init first');
      return backend.ensureDevice(underlay);
    },
    async stats() {
      if (!reconciler) throw new Error('init first');
      return { repairs: reconciler.repairCounts, converged: reconciler.isConverged };
    },
    async listen(raw) {
      const server = net.createServer((sock) => {
        sock.on('data', (d) => sock.end(`pong:${d.toString()}`));
        sock.on('error', () => undefined);
      });
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(Number(raw.port), String(raw.host), () => resolve());
      });
      return { listening: true };
    },
    async connect(raw) {
      return await new Promise((resolve, reject) => {
        const sock = net.connect({ host: String(raw.host), port: Number(raw.port) });
        const timer = setTimeout(() => {
          sock.destroy();
          reject(new Error(`connect ${String(raw.host)}:${String(raw.port)}: no answer within 3 s`));
        }, 3000);
        let data = '';
        let local: string | undefined;
        sock.on('connect', () => {
          local = sock.localAddress;
          sock.write('ping');
        });
        sock.on('data', (d) => (data += d.toString()));
        sock.on('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
        sock.on('close', () => {
          clearTimeout(timer);
          resolve({ reply: data, local });
        });
      });
    },
    async exit() {
      await reconciler?.stop();
      for (const s of servers) s.close();
      nl.close();
      setImmediate(() => process.exit(0));
      return { bye: true };
    },
  };

  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    let req: { id: number; cmd: string; args?: Record<string, unknown> };
    try {
      req = JSON.parse(line) as typeof req;
    } catch {
      return;
    }
    const h = handlers[req.cmd];
    const reply = (body: Record<string, unknown>): void => {
      process.stdout.write(JSON.stringify({ id: req.id, ...body }) + '\n');
    };
    if (!h) {
      reply({ ok: false, error: `unknown command ${req.cmd}` });
      return;
    }
    h(req.args ?? {}).then(
      (result) => reply({ ok: true, result }),
      (err: unknown) => reply({ ok: false, error: describeError(err) }),
    );
  });
  rl.on('close', () => {
    void reconciler?.stop().finally(() => {
      nl.close();
      process.exit(0);
    });
    if (!reconciler) {
      nl.close();
      process.exit(0);
    }
  });
}

if (require.main === module && process.argv[2] === 'agent') {
  main().catch((err: unknown) => {
    process.stderr.write(`vxlan-agent: ${describeError(err)}\n`);
    process.exit(1);
  });
}
