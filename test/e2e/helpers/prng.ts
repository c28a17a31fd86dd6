/**
 * mulberry32: a small seeded PRNG for the fuzz suites. The same seed gives the same cases, so a
 * failing run is replayed from the seed it prints (and lease-fuzz's `del` finds the keys `put` wrote).
 */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
