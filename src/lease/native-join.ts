/**
 * The native join path's seam between the etcd wire and the daemon. addon/src/fastjoin.cc reads
 * the watch stream; a message it applied to the kernel reaches the wire later, flagged, with a
 * 16-byte record of what it wrote: subnet (4, network order), prefix length (1), VtepMAC (6), a
 * pad byte, PublicIP (4, network order). The wire hands each record to `applied` before the
 * message itself, so that the daemon's reconciler takes those objects as in the kernel already
 * when the message's delta comes.
 *
 * Why (issue #14; docs/performance.md, "The native join path"): on a host's shared cores a
 * join's latency follows the CPU every daemon spends on it, and a JavaScript wake-up per join
 * alone cost a quarter of the budget. In the addon a join costs a C wake-up and three writes;
 * the books follow once a second for all the joins of that second.
 */
import { macAt } from '../netlink/codec';

export interface NativeJoinRecord {
  readonly subnetIp: number;
  readonly prefixLen: number;
  readonly mac: string;
  readonly publicIp: number;
}

/** A watch stream the addon reads (http1.ts): flush() hands JavaScript what it holds, now. */
export interface HeldMessages {
  flush(): void;
}

/**
 * How long the addon holds applied messages, on average, before JavaScript takes them in: each
 * time costs a JavaScript wake-up and a recompute (~0.3 ms here), spread over the joins held.
 * `WEFT_NATIVE_JOIN_DRAIN_MS` overrides it (measurements: docs/performance.md, fifteenth pass).
 */
export const DEFAULT_DRAIN_MS = 1000;

export const nativeJoin: {
  /** How long the addon holds an applied message before JavaScript takes it in (spread ±50 %). */
  drainMs: number;
  applied: ((rec: NativeJoinRecord) => void) | null;
  /** The streams the addon reads now. */
  readonly streams: Set<HeldMessages>;
  /**
   * The daemon that configures the addon (one per process, with --native-join); null: none, and
   * watch streams stay on Node's sockets.
   */
  owner: object | null;
} = {
  owner: null,
  drainMs: Number(process.env.WEFT_NATIVE_JOIN_DRAIN_MS ?? DEFAULT_DRAIN_MS),
  applied: null,
  streams: new Set(),
};

/**
 * Take in every message the addon holds, in this call: before anything reads the kernel to
 * compare it with the books (a full reconcile), the books must hold what the addon wrote.
 */
export function flushNativeJoins(): void {
  for (const s of [...nativeJoin.streams]) s.flush();
}

/** The size of one record (addon/src/fastjoin.cc kRecordBytes). */
export const NATIVE_RECORD_BYTES = 16;

export function readRecord(records: Buffer, at: number): NativeJoinRecord {
  return { subnetIp: records.readUInt32BE(at), prefixLen: records[at + 4]!, mac: macAt(records, at + 5, at + 11)!, publicIp: records.readUInt32BE(at + 12) };
}
