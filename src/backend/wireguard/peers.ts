/**
 * Pure: the UAPI/genl request that turns the peers a device reports into the peers we want, or
 * null when they already match. Only what differs is sent (a peer whose endpoint, allowed IPs,
 * keepalive and PSK already match is not touched, so its session and counters stay as they are);
 * a peer the device has but we do not want is removed — that covers a lease that left and a peer
 * that re-keyed (its old key is no longer wanted: flannel's cleanupEndpointPeers).
 */
import type { DesiredWireguardPeer } from '../backend';
import { keyToHex } from './keys';
import type { WgDeviceState, WgPeerConfig, WgPeerState, WgSetRequest } from './uapi';

export interface PeerPolicy {
  readonly persistentKeepalive: number;
  /** base64, or null. */
  readonly presharedKey: string | null;
}

export interface PeerDiff {
  readonly request: WgSetRequest | null;
  /** For log lines: what changed, by public key (never a secret). */
  readonly added: readonly DesiredWireguardPeer[];
  readonly changed: readonly { readonly peer: DesiredWireguardPeer; readonly why: string }[];
  readonly removed: readonly string[];
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  const s = new Set(a);
  return b.every((x) => s.has(x));
}

/** Why the device's `have` differs from `want`, or null when it matches. */
function mismatch(have: WgPeerState, want: DesiredWireguardPeer, policy: PeerPolicy): string | null {
  if (have.endpoint !== want.endpoint) return `endpoint ${have.endpoint ?? 'none'} → ${want.endpoint}`;
  if (!sameSet(have.allowedIps, want.allowedIps)) return `allowed IPs ${have.allowedIps.join(',') || 'none'} → ${want.allowedIps.join(',')}`;
  if (have.persistentKeepalive !== policy.persistentKeepalive) return `keepalive ${have.persistentKeepalive} → ${policy.persistentKeepalive}`;
  const psk = policy.presharedKey === null ? null : keyToHex(policy.presharedKey);
  if (have.presharedKeyHex !== psk) return 'preshared key differs';
  return null;
}

export function diffPeers(device: WgDeviceState, want: readonly DesiredWireguardPeer[], policy: PeerPolicy): PeerDiff {
  const have = new Map(device.peers.map((p) => [p.publicKey, p]));
  const wanted = new Set(want.map((p) => p.publicKey));
  const added: DesiredWireguardPeer[] = [];
  const changed: { peer: DesiredWireguardPeer; why: string }[] = [];
  const configs: WgPeerConfig[] = [];
  for (const w of want) {
    const h = have.get(w.publicKey);
    const why = h === undefined ? null : mismatch(h, w, policy);
    if (h !== undefined && why === null) continue;
    if (h === undefined) added.push(w);
    else changed.push({ peer: w, why: why! });
    configs.push({
      publicKey: w.publicKey, endpoint: w.endpoint, allowedIps: w.allowedIps,
      persistentKeepalive: policy.persistentKeepalive, presharedKey: policy.presharedKey,
    });
  }
  const removed = device.peers.map((p) => p.publicKey).filter((k) => !wanted.has(k)).sort();
  const request = configs.length === 0 && removed.length === 0 ? null : { remove: removed, peers: configs };
  return { request, added, changed, removed };
}
