/**
 * The LOOKUP count of a chain (TierStack.lookup / lookupRaw): leading blocks present in some tier that can serve
 * now, split by the fastest tier holding each, the estimated load time per tier at its measured bandwidth, and
 * the depth each tier reaches with only faster tiers (load-or-recompute: protocol/README.md LOOKUP `depth`).
 */
import type { LookupResult, Tier } from './tier-types.js';

/** `find(i)` gives a handle (an index entry or a FastIndex slot) or -1; `queued(h)`: its lower-tier write is queued
 * (readable from that buffer, counted as DRAM); `onLower(h)`: a hit held only below DRAM (prefetch). */
export function countPrefix<H>(tiers: Tier[], avail: number, n: number, find: (i: number) => H | -1, where: (h: H) => number,
  size: (h: H) => number, queued: (h: H) => boolean, onLower: ((h: H) => void) | undefined): LookupResult {
  const count = new Array<number>(tiers.length).fill(0);
  const bytes = new Array<number>(tiers.length).fill(0);
  const depthAt = new Array<number>(tiers.length).fill(0);
  let slowest = 0;
  let hit = 0;
  for (; hit < n; hit++) {
    const h = find(hit);
    let w = h === -1 ? 0 : where(h) & avail; // copies in a tier that cannot serve now do not count
    if (w === 0 && h !== -1 && queued(h)) w = 1;
    if (w === 0) break;
    const ti = 31 - Math.clz32(w & -w);
    for (; slowest < ti; slowest++) depthAt[slowest] = hit; // the first block tier `slowest` alone cannot reach
    count[ti]!++;
    bytes[ti]! += size(h as H);
    if (onLower && ti > 0) onLower(h as H);
  }
  const byTier: Record<string, number> = {};
  const loadMs: Record<string, number> = {};
  const depth: Record<string, number> = {};
  for (const t of tiers) {
    byTier[t.name] = count[t.index]!;
    loadMs[t.name] = (bytes[t.index]! / t.readBps) * 1000;
    depth[t.name] = t.index < slowest ? depthAt[t.index]! : hit;
  }
  return { hit, tiers: byTier, loadMs, depth };
}
