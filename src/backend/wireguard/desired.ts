/**
 * What the wireguard backend wants (flannel v0.20+ backend/wireguard, IPv4, Mode "separate"), as
 * a pure function of our lease and the peers' leases:
 *   address  <our subnet>.0/32 on flannel-wg
 *   route    <Network> dev flannel-wg              (flannel: one link-scope route for the whole Network)
 *   peer     per peer lease: public key = BackendData.PublicKey, endpoint = PublicIP:ListenPort
 *            (our own ListenPort, as flannel does), allowed IPs = the peer's subnet
 * Unlike flannel, which programs whatever a lease says, every lease goes through the shared peer
 * screen (../screen.ts), then wireguard's own checks: BackendType "wireguard", a BackendData
 * whose PublicKey is a canonical base64 32-byte key, not ours, not one an earlier lease (by key
 * order) already uses. A failing lease is skipped (the daemon warns naming the key), the others
 * are programmed as usual.
 *
 * A peer that re-keys (same lease, new PublicKey) simply has another key here: the peer table is
 * applied as a whole (WireguardBackend.applyWireguardPeers), so its old entry is removed —
 * what flannel's cleanupEndpointPeers does by endpoint.
 */
import { formatCidr, formatIPv6, parseIPv6, type IPFamily, type IPNet } from '../../ip';
import { leaseHalf } from '../../lease/family';
import type { Lease } from '../../lease/types';
import type { DesiredContext, DesiredState, DesiredWireguardPeer } from '../backend';
import { screenPeers } from '../screen';
import { isValidPublicKey } from './keys';

export interface WireguardLeaseData {
  readonly PublicKey: string;
}

export interface WireguardDesiredParams {
  /** The Network (IPv4) or IPv6Network of this instance's family. */
  readonly network: IPNet;
  /** 6: the flannel-wg-v6 instance (Mode separate): IPv6 halves of the leases (BackendV6Data, PublicIPv6). */
  readonly family?: IPFamily;
  readonly listenPort: number;
  /** Our own public key: a lease announcing it is not a peer (a copied key file, or hostile). */
  readonly ownPublicKey: string | null;
  readonly ifaceIPv4?: string;
}

/** The PublicKey of a wireguard lease's BackendData, or why there is none. */
export function decodeWireguardData(data: unknown): { readonly key: string | null; readonly error: string | null } {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) return { key: null, error: 'BackendData is not an object' };
  // encoding/json matches field names case-insensitively; the last match wins.
  let key: unknown = undefined;
  for (const [k, v] of Object.entries(data)) if (k.toLowerCase() === 'publickey') key = v;
  if (key === undefined) return { key: null, error: 'BackendData has no PublicKey' };
  if (!isValidPublicKey(key)) {
    const shown = typeof key === 'string' ? JSON.stringify(key.length > 60 ? `${key.slice(0, 60)}…` : key) : typeof key;
    return { key: null, error: `BackendData.PublicKey ${shown} is not a WireGuard public key (base64 of 32 bytes)` };
  }
  return { key, error: null };
}

/** "10.250.0.12:51820" or "[fd00::12]:51821" (the form wireguard-go and wg print). */
function endpoint(publicIP: string, port: number, family: IPFamily): string {
  if (family === 4) return `${publicIP}:${port}`;
  const n = parseIPv6(publicIP);
  return `[${n === null ? publicIP : formatIPv6(n)}]:${port}`;
}

export function wireguardDesired(own: Lease, peers: readonly Lease[], params: WireguardDesiredParams, ctx: DesiredContext = {}): DesiredState {
  const family = params.family ?? 4;
  const keyOwner = new Map<string, string>(); // public key → lease key
  const keys = new Map<string, string>();     // lease key → public key
  const check = (peer: Lease): string | null => {
    if (peer.attrs.BackendType !== 'wireguard') return `BackendType ${JSON.stringify(peer.attrs.BackendType)} is not wireguard`;
    const { key, error } = decodeWireguardData(leaseHalf(peer, family).backendData);
    if (key === null) return error;
    if (key === params.ownPublicKey) return `BackendData.PublicKey is our own public key`;
    const owner = keyOwner.get(key);
    if (owner !== undefined) return `BackendData.PublicKey is already used by lease ${owner}`;
    keyOwner.set(key, peer.key);
    keys.set(peer.key, key);
    return null;
  };
  const { accepted, skipped } = screenPeers(own, peers, { network: params.network, ...ctx }, check, params.ifaceIPv4, family);
  const wireguardPeers: DesiredWireguardPeer[] = accepted.map((p) => {
    const half = leaseHalf(p, family);
    return {
      publicKey: keys.get(p.key)!,
      endpoint: endpoint(half.publicIP!, params.listenPort, family),
      allowedIps: [formatCidr(half.subnet!)],
      leaseKey: p.key,
    };
  });
  const mine = leaseHalf(own, family).subnet;
  return {
    // flannel: the subnet's own (network) address, /32 or /128.
    addresses: mine === null ? [] : [{ ...mine, prefixLen: family === 4 ? 32 : 128 } as IPNet],
    neighbours: [],
    fdb: [],
    routes: [{ dst: ctx.network ?? params.network, gateway: null, onlink: false, via: 'overlay' }],
    wireguardPeers,
    skipped,
  };
}
