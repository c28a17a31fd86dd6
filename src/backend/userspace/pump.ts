/**
 * The seam between the user-space backends and the native pump (addon/src/pump.h), plus the
 * pure pieces around it: turning desired state into the pump's peer table, and telling which
 * counters moved.
 *
 * The pump is opened through a `PumpFactory` constructor argument (production default: the
 * native addon) so the backends' device logic is tested with a fake in-process pump.
 */
import { formatIPv4 } from '../../ip';
import { loadNative, type NativePump, type NativePumpCounters, type NativePumpEntry, type NativePumpOptions } from '../../native';
import type { DesiredPumpEntry, DesiredState } from '../backend';

export type { NativePump, NativePumpCounters, NativePumpEntry, NativePumpOptions } from '../../native';

/** Opens a pump (see NativePumpOptions for what that does to the system). Throws on failure. */
export type PumpFactory = (opts: NativePumpOptions) => NativePump;

export const nativePumpFactory: PumpFactory = (opts) => {
  const { Pump } = loadNative();
  return new Pump(opts);
};

/** The pump's table for these desired entries (the native side sorts and indexes it). */
export function pumpEntries(entries: readonly DesiredPumpEntry[]): NativePumpEntry[] {
  return entries.map((e) =>
    e.kind === 'mac'
      ? { mac: e.mac.toLowerCase(), dst: e.dst }
      : { subnet: formatIPv4(e.subnet.ip), prefixLen: e.subnet.prefixLen, dst: e.dst },
  );
}

/**
 * Kernel VXLAN's desired state, for the fallback: the same addresses, neighbours and routes, but
 * each FDB entry (VtepMAC → PublicIP) goes to the pump instead of the kernel.
 */
export function fdbToPump(d: DesiredState): DesiredState {
  return { ...d, fdb: [], pump: d.fdb.map((f) => ({ kind: 'mac' as const, mac: f.mac.toLowerCase(), dst: f.dst })) };
}

/** Counters that mean a packet was lost, other than broadcasts (never flooded, by design). */
export const DROP_COUNTERS = [
  'dropNoPeer', 'dropMalformed', 'dropSendError', 'dropNotPeer', 'dropBadVni', 'dropBadPacket',
  'dropBadChecksum', 'dropWriteError', 'dropTtl',
] as const satisfies readonly (keyof NativePumpCounters)[];

export type DropCounter = (typeof DROP_COUNTERS)[number];

/** The drop counters that grew from `before` to `after`, with how much; empty when none did. */
export function dropIncreases(before: NativePumpCounters | null, after: NativePumpCounters): Partial<Record<DropCounter, number>> {
  const out: Partial<Record<DropCounter, number>> = {};
  for (const k of DROP_COUNTERS) {
    const d = after[k] - (before?.[k] ?? 0);
    if (d > 0) out[k] = d;
  }
  return out;
}
