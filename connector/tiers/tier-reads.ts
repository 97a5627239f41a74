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
 * Start the loads of a GET's lower-tier blocks: per tier, the blocks whose fastest copy is there. A driver with
 * `readInto` reads them into pooled buffers (read-pool.ts) in one batch — the segment log reads a chain's
 * consecutive blocks with one preadv — each verified, then promoted into DRAM without a copy; other drivers get one
 * getMany for two or more blocks. Each load is registered in `loading` (a later reader of the same block waits for
 * it); a block the batch did not deliver goes on to the next tier as load() would. Returns the loads started here:
 * their pooled buffers carry the GET caller's hold (TierStack.release gives it back).
 */
export function startLoads(s: TierStack, es: BlockEntry[]): Map<BlockEntry, Promise<Buffer | undefined>> {
  const started = new Map<BlockEntry, Promise<Buffer | undefined>>();
  const avail = s.availableMask();
  const byTier = new Map<number, BlockEntry[]>();
  const seen = new Set<number>();
  for (const e of es) {
    if (s.loading.has(e.key) || seen.has(e.id)) continue; // being loaded already, or asked twice (row ids: views differ)
    seen.add(e.id);
    const w = e.where & avail & ~1;
    if (w === 0) continue;
    const ti = 31 - Math.clz32(w & -w);
    let g = byTier.get(ti);
    if (!g) byTier.set(ti, (g = []));
    g.push(e);
  }
  for (const [ti, group] of byTier) {
    const t = s.tiers[ti]!;
    if (t.driver.readInto) readIntoPool(s, t, group, started);
    else if (group.length > 1) getManyBatch(s, t, group);
  }
  return started;
}

function register(s: TierStack, e: BlockEntry, p: Promise<Buffer | undefined>): Promise<Buffer | undefined> {
  const q = p.finally(() => s.loading.delete(e.key));
  s.loading.set(e.key, q);
  return q;
}

/**
 * Reads of one GET are cut into sub-batches of at least this many bytes (a chain's consecutive blocks stay
 * together), all issued at once: the first ones are verified and promoted while the later ones are still read.
 */
const SUB_BATCH_BYTES = 1 << 20;

/** readInto for the group in sub-batches, into pooled buffers; each block verified and promoted as it lands. */
function readIntoPool(s: TierStack, t: Tier, group: BlockEntry[], started: Map<BlockEntry, Promise<Buffer | undefined>>): void {
  for (let i = 0; i < group.length;) {
    let j = i;
    let bytes = 0;
    while (j < group.length && bytes < SUB_BATCH_BYTES) bytes += group[j++]!.size;
    readIntoBatch(s, t, group.slice(i, j), started);
    i = j;
  }
}

function readIntoBatch(s: TierStack, t: Tier, group: BlockEntry[], started: Map<BlockEntry, Promise<Buffer | undefined>>): void {
  const bufs = group.map((e) => s.pool.acquire(e.size));
  const t0 = performance.now();
  const batch = t.driver.readInto!(group.map((e, j) => ({ key: e.key, into: bufs[j]! }))).catch(() => undefined);
  group.forEach((e, j) => {
    const buf = bufs[j]!;
    started.set(e, register(s, e, batch.then(async (res) => {
      const r = res?.[j] ?? 'failed';
      if (typeof r === 'object') {
        const v = acceptInto(s, t, e, buf, r.size, r.meta.checksum, t0);
        if (v) return v;
      } else {
        s.pool.release(buf); // never served: back to the pool
        if (r === 'missing') missIn(s, t, e);
        else {
          // A failing tier still holds the block (index kept); the next tier is tried, not this one again.
          t.c.readErrors++;
          return loadFromTiers(s, e, t.index);
        }
      }
      return loadFromTiers(s, e);
    })));
  });
}

/** One driver getMany for blocks held by a tier without readInto. */
function getManyBatch(s: TierStack, t: Tier, group: BlockEntry[]): void {
  const t0 = performance.now();
  const batch = t.driver.getMany(group.map((e) => e.key)).catch(() => undefined);
  group.forEach((e, j) => {
    void register(s, e, batch.then(async (vals) => {
      const got = vals?.[j];
      if (vals === undefined) t.c.readErrors++;
      const v = got ? accept(s, t, e, got, t0) : undefined;
      if (v) return v;
      if (vals !== undefined && !got) missIn(s, t, e);
      return loadFromTiers(s, e);
    }));
  });
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

async function loadFromTiers(s: TierStack, e: BlockEntry, skip = -1): Promise<Buffer | undefined> {
  const avail = s.availableMask() & ~(skip >= 0 ? 1 << skip : 0);
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
  if (s.index.holds(e) && e.where & (1 << t.index)) s.forget(t, e);
}

/** Verify a lower-tier read and promote it; undefined (copy quarantined, tier forgotten) when it fails. */
function accept(s: TierStack, t: Tier, e: BlockEntry, got: StoredValue, t0: number): Buffer | undefined {
  if (!verified(s, t, e, got.value, got.value.length, got.meta.checksum)) return undefined;
  hit(t, e, t0);
  if (s.opts.promoteOnHit && s.index.holds(e) && !(e.where & 1) && s.promotes(e)) {
    if (s.insertDram(e, got.value)) t.c.promotions++;
  }
  return got.value;
}

/**
 * accept() for a block read into the pooled buffer `buf`: a copy that fails goes back to the pool unserved. Heap
 * DRAM keeps `buf` itself as the block's memory (one more hold on it); a copying DRAM store (the arena) copies it
 * into its slot at once. Either way the caller is served `buf`, with the reader's hold.
 */
function acceptInto(s: TierStack, t: Tier, e: BlockEntry, buf: Buffer, size: number, sum: string, t0: number): Buffer | undefined {
  if (!verified(s, t, e, buf, size, sum)) {
    s.pool.release(buf);
    return undefined;
  }
  hit(t, e, t0);
  if (s.opts.promoteOnHit && s.index.holds(e) && !(e.where & 1) && s.promotes(e) && s.insertDram(e, buf)) {
    t.c.promotions++;
    if (s.dram.keepsValues) s.pool.keptByDram(buf);
  }
  return buf;
}

/** The bytes are the block's: right size, xxh64 and the driver's meta agree with the index. Else counted, quarantined. */
function verified(s: TierStack, t: Tier, e: BlockEntry, bytes: Buffer, size: number, sum: string): boolean {
  if (size === e.size && bytes.length === e.size && sum === e.checksum && computeChecksum(bytes) === e.checksum) return true;
  t.c.checksumFailures++;
  s.emit('corrupt', { key: e.key, tier: t.name });
  const q = t.driver.quarantine ? t.driver.quarantine(e.key) : t.driver.delete(e.key).then(() => undefined);
  t.writes.track(q);
  s.forget(t, e);
  return false;
}

function hit(t: Tier, e: BlockEntry, t0: number): void {
  const secs = Math.max((performance.now() - t0) / 1000, 1e-6);
  t.readBps = 0.8 * t.readBps + 0.2 * (e.size / secs);
  t.c.hits++;
}
