/**
 * Batches for netlink seams that have only the single-request methods (the in-memory kernel, the
 * scripted kernels of unit tests): each write is issued through its method, all at once, and the
 * outcomes collected in order, so a caller sees the same `applyWrites` contract everywhere.
 * NetlinkClient's own `applyWrites` sends real batches (src/netlink/batch.ts).
 */
import type { KernelWrite, LinkIdentity, RouteSpec, WriteOutcomes } from './types';

/** The single-request write methods (NetlinkClient's, MemoryKernel's, a test kernel's). */
export interface SingleWriteMethods {
  addAddress(link: LinkIdentity, ip: string, prefixLen: number): Promise<void>;
  deleteAddress(link: LinkIdentity, ip: string, prefixLen: number): Promise<void>;
  replaceNeighbour(link: LinkIdentity, ip: string, mac: string): Promise<void>;
  deleteNeighbour(link: LinkIdentity, ip: string): Promise<void>;
  replaceFdb(link: LinkIdentity, mac: string, dst: string): Promise<void>;
  deleteFdb(link: LinkIdentity, mac: string, dst: string | null): Promise<void>;
  replaceRoute(spec: RouteSpec): Promise<void>;
  /**
   * Optional: add a route only where none holds (dst, metric) (NLM_F_EXCL: EEXIST otherwise).
   * The reconciler uses it for every new route, so that a route someone else added since its last
   * dump (the incremental path does not dump) is never replaced: the failure makes the next run a
   * full one, which sees that route and leaves it alone (diffState's conflicts).
   * Absent: a new route is written with replaceRoute.
   */
  addRoute?(spec: RouteSpec): Promise<void>;
  deleteRoute(spec: RouteSpec): Promise<void>;
}

/** Issue one write through its single method. */
export function applyWrite(nl: SingleWriteMethods, w: KernelWrite): Promise<void> {
  switch (w.op) {
    case 'addAddress':
      return nl.addAddress(w.link, w.ip, w.prefixLen);
    case 'deleteAddress':
      return nl.deleteAddress(w.link, w.ip, w.prefixLen);
    case 'replaceNeighbour':
      return nl.replaceNeighbour(w.link, w.ip, w.mac);
    case 'deleteNeighbour':
      return nl.deleteNeighbour(w.link, w.ip);
    case 'replaceFdb':
      return nl.replaceFdb(w.link, w.mac, w.dst);
    case 'deleteFdb':
      return nl.deleteFdb(w.link, w.mac, w.dst);
    case 'addRoute':
      return nl.addRoute ? nl.addRoute(w.spec) : nl.replaceRoute(w.spec);
    case 'replaceRoute':
      return nl.replaceRoute(w.spec);
    case 'deleteRoute':
      return nl.deleteRoute(w.spec);
  }
}

/** `applyWrites` over single methods: all issued at once, each outcome (null or its error) in order. */
export async function applyWritesOneByOne(nl: SingleWriteMethods, writes: readonly KernelWrite[]): Promise<WriteOutcomes> {
  const settled = await Promise.allSettled(
    writes.map((w) => {
      try {
        return applyWrite(nl, w);
      } catch (err) {
        return Promise.reject(err); // a method that throws before returning its promise fails only its write
      }
    }),
  );
  return settled.map((r) => (r.status === 'fulfilled' ? null : r.reason instanceof Error ? r.reason : new Error(String(r.reason))));
}
