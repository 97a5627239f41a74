/**
 * Victim choice of the TierStack's eviction (kept out of tier-stack.ts). `canLeave(e)` says whether e may go now;
 * for DRAM it queues e's copy to the next tier when one is due, and says no when that tier's queue is full (an
 * acknowledged save would be lost): the next candidate is tried, and with none the eviction fails (PUT DROPPED).
 */
import { firstUnpinned, type EvictionPolicy, type HeatState, type TierOrder } from './policy.js';
import type { BlockTable } from './block-table.js';
import type { BlockEntry } from './tier-types.js';
import type { RecencyList } from './recency.js';

/** Blocks an ordering policy's eviction looks at for one that can leave now. */
const VICTIM_SCAN = 256;

/** An ordering policy's victim: its first unpinned block that can leave (of at most VICTIM_SCAN). */
export function orderVictim(order: TierOrder, canLeave: (e: BlockEntry) => boolean): BlockEntry | undefined {
  const first = firstUnpinned(order) as BlockEntry | undefined;
  if (!first || canLeave(first)) return first;
  let scanned = 0;
  for (const p of order.victims()) {
    const e = p as BlockEntry; // the stack's orders hand back its own views (TierStack constructor)
    if (++scanned > VICTIM_SCAN) break;
    if (e.pins === 0 && !e.same(first) && canLeave(e)) return e;
  }
  return undefined;
}

/** The window policies' victim (lru, heat): the policy's pick among the `window` least recently used unpinned. */
export function windowVictim(lru: RecencyList, rows: BlockTable, policy: EvictionPolicy, now: number, canLeave: (e: BlockEntry) => boolean): BlockEntry | undefined {
  // The policy compares heat only: candidates are ids and their heat, and only a chosen one becomes a view (a view
  // builds its key string; `heat` compares 256 candidates per eviction).
  const ids: number[] = [];
  const heat: HeatState[] = [];
  const pinned: number[] = [];
  for (const id of lru.ids()) {
    if (rows.pins[id] === 0) { ids.push(id); heat.push({ heat: rows.heatOf(id), heatAt: rows.heatAtOf(id) }); }
    else pinned.push(id);
    if (ids.length >= policy.window) break;
  }
  // Pinned blocks passed on the way move to the recent end, so later evictions do not scan them again.
  for (const id of pinned) lru.touch(id);
  while (ids.length) {
    let i = policy.pick(heat, now);
    if (!(i >= 0 && i < ids.length)) i = 0;
    const victim = rows.view(ids[i]!);
    if (canLeave(victim)) return victim;
    ids.splice(i, 1);
    heat.splice(i, 1);
  }
  return undefined;
}
