/**
 * The one routine that brings an existing overlay link to the MAC, MTU and up state a backend
 * wants: the kernel VXLAN device (VxlanBackend) and the fallback's TAP/TUN (PumpDevice) both heal
 * through it. Creating, replacing and judging compatibility stay with each device's owner.
 */
import { silentLogger, type Logger } from '../log';
import type { LinkRef } from '../netlink/client';
import { isErrno } from '../netlink/errors';
import type { LinkInfo } from '../netlink/types';

/** The netlink calls a link repair needs (a subset of NetlinkClient). */
export interface LinkRepairNetlink {
  setLinkUp(link: LinkRef): Promise<void>;
  setLinkDown(link: LinkRef): Promise<void>;
  setLinkMtu(link: LinkRef, mtu: number): Promise<void>;
  setLinkMac(link: LinkRef, mac: string): Promise<void>;
}

export interface LinkWant {
  readonly mtu: number;
  /** The MAC the link must have (our VtepMAC); null: keep whatever it has (a TUN has none). */
  readonly mac: string | null;
}

/**
 * Set `link`'s MAC (when `want.mac` is given and differs), MTU, and bring it up; only what
 * differs is sent. A driver that refuses a live MAC change (EBUSY) gets it while down. Returns
 * the link as it is now. With `log`, each change to an existing link is logged (a repair);
 * without, silently (setting up a link just created).
 */
export async function repairLink(nl: LinkRepairNetlink, link: LinkInfo, want: LinkWant, log: Logger = silentLogger): Promise<LinkInfo> {
  const ref = { index: link.index, name: link.name };
  let out = link;
  if (want.mac !== null && link.mac !== want.mac) {
    log.warn(`device ${link.name}: MAC ${link.mac ?? 'none'} is not our VtepMAC ${want.mac}; restoring it`);
    try {
      await nl.setLinkMac(ref, want.mac);
    } catch (err) {
      if (!isErrno(err, 'EBUSY')) throw err;
      // Drivers without live MAC change want the device down for it.
      await nl.setLinkDown(ref);
      await nl.setLinkMac(ref, want.mac);
      out = { ...out, up: false };
    }
    out = { ...out, mac: want.mac };
  }
  if (out.mtu !== want.mtu) {
    log.info(`device ${link.name}: MTU ${out.mtu} → ${want.mtu}`);
    await nl.setLinkMtu(ref, want.mtu);
    out = { ...out, mtu: want.mtu };
  }
  if (!out.up) {
    await nl.setLinkUp(ref);
    out = { ...out, up: true };
  }
  return out;
}

/**
 * Which of `ips` the kernel reaches without a gateway through the underlay (vxlan DirectRouting,
 * host-gw: Backend.onLinkPeers). One route lookup per address, in parallel; a failed lookup
 * leaves that address out and is reported to `onFailure`.
 */
export async function onLinkAmong(
  nl: { isOnLink(ip: string, viaIndex?: number): Promise<boolean> },
  ips: Iterable<string>,
  underlayIndex: number,
  onFailure: (ip: string, err: unknown) => void,
): Promise<Set<string>> {
  const out = new Set<string>();
  await Promise.all(
    [...new Set(ips)].map(async (ip) => {
      try {
        if (await nl.isOnLink(ip, underlayIndex)) out.add(ip);
      } catch (err) {
        onFailure(ip, err);
      }
    }),
  );
  return out;
}
