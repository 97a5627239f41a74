/**
 * Control-plane primitives of the TierStack (gRPC Evict / Clear / Move), kept out of tier-stack.ts; they work on
 * StackInternals (tier-types.ts), so this file does not import tier-stack.ts (no cycle).
 * They use the stack's internal paths (promotion, direct writes, removal) so budgets, events and pins hold.
 */
import { checksum as computeChecksum } from '../checksum.js';
import type { BlockEntry, StackInternals, Tier, TierStats } from './tier-types.js';

/** Drop a block's copy in tier `tier` (in every tier when undefined) without demoting it. Pinned blocks stay. */
export function evictFrom(s: StackInternals, key: string, tier?: number): 'evicted' | 'pinned' | 'missing' {
  const e = s.index.get(key);
  if (!e || e.where === 0 || (tier !== undefined && !(e.where & (1 << tier)))) return 'missing';
  if (e.pins > 0) return 'pinned';
  for (const t of s.tiers) if ((tier === undefined || t.index === tier) && e.where & (1 << t.index)) t.c.evictions++;
  if (tier === undefined) s.delete([key]);
  else s.removeFrom(s.tiers[tier]!, e);
  return 'evicted';
}

/**
 * Delete from every tier each block among `keys` (the whole index when absent) that passes `pred`.
 * Pinned blocks are kept unless `includePinned`; their pins go with them.
 */
export function clearBlocks(s: StackInternals, pred: (key: string, e: BlockEntry) => boolean, opts: { keys?: Iterable<string>; includePinned?: boolean } = {}): { removed: number; pinnedSkipped: number } {
  let pinnedSkipped = 0;
  const doomed: string[] = [];
  for (const k of opts.keys ?? [...s.index.keys()]) {
    const e = s.index.get(k);
    if (!e || !pred(k, e)) continue;
    if (e.pins > 0 && !opts.includePinned) { pinnedSkipped++; continue; }
    e.pins = 0;
    doomed.push(k);
  }
  return { removed: s.delete(doomed), pinnedSkipped };
}

/**
 * Warm or demote one block: copy it into tier `to` (DRAM through the promotion path, a lower tier by a direct
 * write of checksum-verified bytes), and when demoting drop its copies in the tiers above `to`.
 * Pinned blocks are not demoted.
 */
export async function moveBlock(s: StackInternals, key: string, to: number): Promise<'moved' | 'present' | 'missing' | 'pinned' | 'failed'> {
  const t = s.tiers[to];
  if (!t) throw new RangeError(`no tier ${to}`);
  const e = s.index.get(key);
  if (!e || e.where === 0) return 'missing';
  const bit = 1 << to;
  if (e.where & (bit - 1) && e.pins > 0) return 'pinned';
  if (e.where & bit && !(e.where & (bit - 1))) return 'present';
  if (!(e.where & bit)) {
    if (e.pending & bit) return 'failed';
    const got = e.where & 1 ? s.dram.getSync(key)?.value : to === 0 ? await s.load(e) : await readVerified(s, e);
    if (!s.index.holds(e)) return 'missing';
    if (!got) return 'failed';
    const value = s.escape(got); // kept by a tier or a queued write: not the read pool's to reuse
    if (to === 0) {
      if (!(e.where & 1) && !s.insertDram(e, value)) return 'failed';
      return 'moved';
    }
    e.pending |= bit;
    try {
      if (!e.checksum) e.checksum = computeChecksum(value);
      await t.driver.put(key, value, { checksum: e.checksum });
      t.c.bytesWritten += e.size;
      if (!s.index.holds(e)) {
        await t.driver.delete(key).catch(() => undefined);
        return 'missing';
      }
      s.addTo(t, e);
      s.enforceBudget(t);
    } catch {
      t.c.writeErrors++;
      return 'failed';
    } finally {
      e.pending &= ~bit;
    }
    if (!(e.where & bit)) return 'failed';
  }
  for (const u of s.tiers.slice(0, to)) {
    if (!(e.where & (1 << u.index))) continue;
    u.c.demotions++;
    s.removeFrom(u, e);
  }
  return 'moved';
}

/** Read a block from the fastest lower tier whose copy passes its checksum, without promoting it. */
async function readVerified(s: StackInternals, e: BlockEntry): Promise<Buffer | undefined> {
  for (const t of s.tiers.slice(1)) {
    if (!(e.where & (1 << t.index))) continue;
    const got = await t.driver.get(e.key).catch(() => undefined);
    if (got && got.value.length === e.size && computeChecksum(got.value) === e.checksum) return got.value;
  }
  return undefined;
}

/** Per-tier counters for stats and metrics. */
export function tierStats(tiers: Tier[], availableMask: number): TierStats[] {
  return tiers.map((t) => ({
    name: t.name, medium: t.medium, bytes: t.used, blocks: t.blocks, budgetBytes: t.budgetBytes,
    hits: t.c.hits, misses: t.c.misses, evictions: t.c.evictions, queueDepth: t.writes.depth, droppedSaves: t.writes.dropped,
    checksumFailures: t.c.checksumFailures, promotions: t.c.promotions, demotions: t.c.demotions,
    writeErrors: t.c.writeErrors, bytesWritten: t.c.bytesWritten, readBps: Math.round(t.readBps),
    readErrors: t.c.readErrors, available: (availableMask & (1 << t.index)) !== 0,
    ...(t.writeFault !== undefined ? { degraded: t.writeFault } : {}),
  }));
}
