/**
 * The TierStack's lower-tier read path, kept out of tiers.ts: read (one block, or a driver getMany for a chain's
 * blocks held by one tier), verify against the indexed checksum, promote into DRAM. A copy that fails its checksum
 * is quarantined (or deleted) and counted; the next tier is tried. Every value is verified before it is served.
 */
import { checksum as computeChecksum } from '../checksum.js';
import type { StoredValue } from '../storage/driver.js';
import type { BlockEntry, Tier } from './tier-types.js';
import type { TierStack } from './tier-stack.js';

/**
 * Start loads of several blocks, one driver getMany per tier for the blocks whose fastest copy is there (a driver
 * with a native batch read, like the segment log, reads a chain's consecutive blocks in one go). Each block's
 * load is registered in `loading`; a block the batch did not deliver goes on to the next tier as load() would.
 */
export function loadBatch(s: TierStack, es: BlockEntry[]): void {
  const avail = s.availableMask();
  const byTier = new Map<number, BlockEntry[]>();
  for (const e of es) {
    if (s.loading.has(e.key)) continue;
    const w = e.where & avail & ~1;
    if (w === 0) continue;
    const ti = 31 - Math.clz32(w & -w);
    let g = byTier.get(ti);
    if (!g) byTier.set(ti, (g = []));
    g.push(e);
  }
  for (const [ti, group] of byTier) {
    if (group.length < 2) continue;
    const t = s.tiers[ti]!;
    const t0 = performance.now();
    const batch = t.driver.getMany(group.map((e) => e.key)).catch(() => undefined);
    group.forEach((e, j) => {
      const p = batch.then(async (vals) => {
        const got = vals?.[j];
        if (vals === undefined) t.c.readErrors++;
        const v = got ? accept(s, t, e, got, t0) : undefined;
        if (v) return v;
        if (vals !== undefined && !got) missIn(s, t, e);
        return loadFromTiers(s, e);
      }).finally(() => s.loading.delete(e.key));
      s.loading.set(e.key, p);
    });
  }
}

/** Read one block from the lower tiers (deduplicated), verify it, promote it. */
export function load(s: TierStack, e: BlockEntry): Promise<Buffer | undefined> {
  let p = s.loading.get(e.key);
  if (!p) {
    p = loadFromTiers(s, e).finally(() => s.loading.delete(e.key));
    s.loading.set(e.key, p);
  }
  return p;
}

async function loadFromTiers(s: TierStack, e: BlockEntry): Promise<Buffer | undefined> {
  const avail = s.availableMask();
  for (const t of s.tiers.slice(1)) {
    if (!(e.where & avail & (1 << t.index))) continue;
    const t0 = performance.now();
    let got: StoredValue | undefined;
    try {
      got = await t.driver.get(e.key);
    } catch {
      // A failing tier (timeout, server down) still holds the block: try the next tier, keep the index entry.
      t.c.readErrors++;
      continue;
    }
    if (!got) {
      missIn(s, t, e);
      continue;
    }
    const v = accept(s, t, e, got, t0);
    if (v) return v;
  }
  s.tiers[0]!.c.misses++;
  return undefined;
}

function missIn(s: TierStack, t: Tier, e: BlockEntry): void {
  t.c.misses++;
  if (s.index.get(e.key) === e && e.where & (1 << t.index)) s.forget(t, e);
}

/** Verify a lower-tier read and promote it; undefined (copy quarantined, tier forgotten) when it fails. */
function accept(s: TierStack, t: Tier, e: BlockEntry, got: StoredValue, t0: number): Buffer | undefined {
  if (got.value.length !== e.size || computeChecksum(got.value) !== e.checksum || got.meta.checksum !== e.checksum) {
    t.c.checksumFailures++;
    s.emit('corrupt', { key: e.key, tier: t.name });
    const q = t.driver.quarantine ? t.driver.quarantine(e.key) : t.driver.delete(e.key).then(() => undefined);
    t.writes.track(q);
    s.forget(t, e);
    return undefined;
  }
  const secs = Math.max((performance.now() - t0) / 1000, 1e-6);
  t.readBps = 0.8 * t.readBps + 0.2 * (got.value.length / secs);
  t.c.hits++;
  if (s.opts.promoteOnHit && s.index.get(e.key) === e && !(e.where & 1) && s.promotes(e)) {
    if (s.insertDram(e, got.value)) t.c.promotions++;
  }
  return got.value;
}
