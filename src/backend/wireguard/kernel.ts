/**
 * The kernel WireGuard driver: link kind "wireguard" created over rtnetlink, keys, port and peers
 * over the WireGuard generic netlink family (../../netlink/wireguard.ts), translated from and to
 * the same request/state types as the UAPI (uapi.ts), so the backend and peers.ts are shared.
 *
 * UNTESTED on a real kernel module: the machine this was written on has none (docs/wireguard.md);
 * its message encoding is unit-tested against include/uapi/linux/wireguard.h.
 */
import { silentLogger, type Logger } from '../../log';
import type { NetlinkClient } from '../../netlink/client';
import type { LinkInfo } from '../../netlink/types';
import { WireguardGenl, type GenlDeviceState, type GenlPeer, type GenlSetDevice } from '../../netlink/wireguard';
import type { WgDriver } from './wireguard';
import type { WgDeviceState, WgSetRequest } from './uapi';

const ZERO = Buffer.alloc(32);

/** Pure: a UAPI-style request as a generic netlink SET_DEVICE. */
export function toGenlSet(ifname: string, req: WgSetRequest): GenlSetDevice {
  const peers: GenlPeer[] = [];
  for (const k of req.remove ?? []) peers.push({ publicKey: Buffer.from(k, 'base64'), remove: true });
  for (const p of req.peers ?? []) {
    const colon = p.endpoint.lastIndexOf(':');
    // "[fd00::12]:51821" for IPv6.
    const host = p.endpoint.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
    peers.push({
      publicKey: Buffer.from(p.publicKey, 'base64'),
      presharedKey: p.presharedKey === null ? ZERO : Buffer.from(p.presharedKey, 'base64'),
      endpoint: { ip: host, port: Number(p.endpoint.slice(colon + 1)) },
      persistentKeepalive: p.persistentKeepalive,
      replaceAllowedIps: true,
      allowedIps: p.allowedIps.map((a) => {
        const [ip, len] = a.split('/');
        return { ip: ip!, prefixLen: Number(len) };
      }),
    });
  }
  return {
    ifname,
    ...(req.privateKeyHex === undefined ? {} : { privateKey: Buffer.from(req.privateKeyHex, 'hex') }),
    ...(req.listenPort === undefined ? {} : { listenPort: req.listenPort }),
    ...(req.replacePeers ? { replacePeers: true } : {}),
    peers,
  };
}

/** Pure: a GET_DEVICE answer as the UAPI-style state. */
export function fromGenlState(s: GenlDeviceState): WgDeviceState {
  return {
    listenPort: s.listenPort,
    hasPrivateKey: s.privateKey !== null,
    privateKeyHex: s.privateKey === null ? null : s.privateKey.toString('hex'),
    peers: s.peers.map((p) => ({
      publicKey: p.publicKey.toString('base64'),
      presharedKeyHex: p.presharedKey === null ? null : p.presharedKey.toString('hex'),
      endpoint: p.endpoint,
      allowedIps: p.allowedIps,
      persistentKeepalive: p.persistentKeepalive,
      lastHandshake: p.lastHandshake,
      rxBytes: p.rxBytes,
      txBytes: p.txBytes,
    })),
  };
}

export class KernelWireguardDriver implements WgDriver {
  readonly kind = 'kernel' as const;
  private readonly nl: Pick<NetlinkClient, 'getLink' | 'deleteLink'>;
  private readonly log: Logger;
  private readonly genl: WireguardGenl;
  private name = '';

  constructor(opts: { nl: Pick<NetlinkClient, 'getLink' | 'deleteLink'>; log?: Logger; genl?: WireguardGenl }) {
    this.nl = opts.nl;
    this.log = (opts.log ?? silentLogger).child({ component: 'wireguard-kernel' });
    this.genl = opts.genl ?? new WireguardGenl();
  }

  async ensure(name: string): Promise<LinkInfo> {
    this.name = name;
    const link = await this.nl.getLink(name);
    if (link !== null && link.kind === 'wireguard') return link;
    if (link !== null) {
      // flannel recreates a device of its name that is in the way; so do we, saying why.
      this.log.warn(`device ${name} is a ${link.kind ?? 'plain'} device, not a kernel WireGuard device; replacing it`);
      await this.nl.deleteLink({ index: link.index, name });
    }
    await this.genl.createLink(name, 1420);
    const fresh = await this.nl.getLink(name);
    if (fresh === null) throw new Error(`wireguard device ${name} vanished right after creation`);
    return fresh;
  }

  async get(): Promise<WgDeviceState> {
    return fromGenlState(await this.genl.getDevice(this.name));
  }

  async set(req: WgSetRequest): Promise<void> {
    await this.genl.setDevice(toGenlSet(this.name, req));
  }

  problem(link: LinkInfo): string | null {
    return link.kind === 'wireguard' ? null : `device ${link.name} is a ${link.kind ?? 'plain'} device, not a kernel WireGuard device`;
  }
}
