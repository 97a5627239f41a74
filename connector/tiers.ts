/**
 * TierStack — the block index plus the stack of tiers (tier 0 is DRAM, then file / NFS / S3 …).
 *
 * Rules:
 * - The index is keyed by storage key `<ns>/<hash hex>` and knows, per block, which tiers hold it, its size,
 *   checksum, decayed heat, access count and pins. Longest-prefix lookups read only the index.
 * - Budgets are per tier, in bytes, enforced here (drivers are plain stores). A full tier evicts by the
 *   configured EvictionPolicy among unpinned blocks; pinned blocks are never evicted.
 * - DRAM evictions are demoted to the next tier (through its bounded write-behind queue) unless a lower tier
 *   already holds the block; hits in a lower tier are promoted to DRAM.
 * - Writes to lower tiers go through each tier's WriteQueue: when full the save is dropped and counted; reads
 *   never wait for writes.
 * - Every value read from a lower tier is verified against its checksum; a mismatch is a miss, the copy is
 *   quarantined and counted, and the next tier is tried.
 * - Emits 'stored' and 'removed' ({ key, tier, medium }) and 'cleared' for tier-aware KV events.
 */
import { EventEmitter } from 'node:events';
import { checksum as computeChecksum } from './checksum.js';
import { bumpHeat, type EvictionPolicy, type HeatState } from './policy.js';
import type { StorageDriver, StoredValue } from './storage/driver.js';
import type { MemoryDriver } from './storage/memory.js';
import { WriteQueue, type WriteQueueOptions } from './write-queue.js';
import { PutResult } from '../protocol/wire.js';

export interface TierSpec {
  /** Tier name used in LOOKUP replies and stats: "dram", "file", "nfs", "s3", … */
  name: string;
  /** Medium announced in KV events: "CPU", "DISK", "NFS", "S3", … */
  medium: string;
  driver: StorageDriver;
  budgetBytes: number;
  /** through: every admitted block is written here; back: only when evicted from the tier above. */
  writeMode: 'through' | 'back';
  /** Accesses a block needs before this tier admits it (1 = admit everything). */
  admitAfter: number;
  queue: WriteQueueOptions;
  /** Read bandwidth assumed before any measurement, bytes/s. */
  initialReadBps: number;
}

export interface TierStackOptions {
  tiers: TierSpec[];
  policy: EvictionPolicy;
  halfLifeMs: number;
  promoteOnHit: boolean;
}

export interface BlockEntry extends HeatState {
  key: string;
  size: number;
  checksum: string;
  /** Bit i set: tier i holds a complete copy. */
  where: number;
  /** Bit i set: a write to tier i is queued or running. */
  pending: number;
  seen: number;
  pins: number;
}

interface Tier extends TierSpec {
  index: number;
  lru: Map<string, BlockEntry>;
  used: number;
  writes: WriteQueue;
  readBps: number;
  c: { hits: number; misses: number; evictions: number; checksumFailures: number; promotions: number; demotions: number; writeErrors: number; bytesWritten: number };
}

export interface TierStats {
  name: string; medium: string; bytes: number; blocks: number; budgetBytes: number; hits: number; misses: number;
  evictions: number; queueDepth: number; droppedSaves: number; checksumFailures: number; promotions: number;
  demotions: number; writeErrors: number; bytesWritten: number; readBps: number;
}

export interface LookupResult {
  hit: number;
  tiers: Record<string, number>;
  loadMs: Record<string, number>;
}

export class TierStack extends EventEmitter {
  readonly index = new Map<string, BlockEntry>();
  readonly tiers: Tier[];
  private readonly dram: MemoryDriver;
  private readonly loading = new Map<string, Promise<Buffer | undefined>>();
  private closed = false;

  constructor(private readonly opts: TierStackOptions) {
    super();
    if (opts.tiers.length === 0 || opts.tiers[0]!.driver.name !== 'memory') throw new Error('tier 0 must be the memory driver');
    this.tiers = opts.tiers.map((t, index) => ({
      ...t, index, lru: new Map(), used: 0, writes: new WriteQueue(t.queue), readBps: t.initialReadBps,
      c: { hits: 0, misses: 0, evictions: 0, checksumFailures: 0, promotions: 0, demotions: 0, writeErrors: 0, bytesWritten: 0 },
    }));
    this.dram = opts.tiers[0]!.driver as MemoryDriver;
  }

  /** Open every driver and rebuild the index from what the lower tiers hold. */
  async open(): Promise<{ rebuilt: number }> {
    let rebuilt = 0;
    for (const t of this.tiers) await t.driver.open();
    for (const t of this.tiers.slice(1)) {
      for await (const item of t.driver.list()) {
        let e = this.index.get(item.key);
        if (!e) {
          e = { key: item.key, size: item.size, checksum: item.meta.checksum, where: 0, pending: 0, seen: 1, pins: 0, heat: 0, heatAt: 0 };
          this.index.set(item.key, e);
          rebuilt++;
        }
        if (e.where & (1 << t.index)) continue;
        this.addTo(t, e, false);
      }
      this.enforceBudget(t);
    }
    return { rebuilt };
  }

  private addTo(t: Tier, e: BlockEntry, emit = true): void {
    e.where |= 1 << t.index;
    t.lru.set(e.key, e);
    t.used += e.size;
    if (emit) this.emit('stored', { key: e.key, tier: t.name, medium: t.medium });
  }

  private removeFrom(t: Tier, e: BlockEntry): void {
    if (!(e.where & (1 << t.index))) return;
    e.where &= ~(1 << t.index);
    t.lru.delete(e.key);
    t.used -= e.size;
    if (t.index === 0) this.dram.deleteSync(e.key);
    else t.driver.delete(e.key).catch(() => undefined);
    this.emit('removed', { key: e.key, tier: t.name, medium: t.medium });
    if (e.where === 0 && e.pending === 0 && this.index.get(e.key) === e) this.index.delete(e.key);
  }

  private touch(e: BlockEntry, now: number): void {
    bumpHeat(e, now, this.opts.halfLifeMs);
    e.seen++;
    for (const t of this.tiers) {
      if (e.where & (1 << t.index)) {
        t.lru.delete(e.key);
        t.lru.set(e.key, e);
      }
    }
  }

  /** Longest present prefix of `keys`, split by the fastest tier holding each block. Does not change heat. */
  lookup(keys: string[], prefetch = false): LookupResult {
    const tiers: Record<string, number> = {};
    const bytes = new Array<number>(this.tiers.length).fill(0);
    for (const t of this.tiers) tiers[t.name] = 0;
    let hit = 0;
    for (; hit < keys.length; hit++) {
      const e = this.index.get(keys[hit]!);
      if (!e || e.where === 0) break;
      const ti = 31 - Math.clz32(e.where & -e.where);
      tiers[this.tiers[ti]!.name]!++;
      bytes[ti]! += e.size;
      if (prefetch && ti > 0) void this.load(e);
    }
    const loadMs: Record<string, number> = {};
    for (const t of this.tiers) loadMs[t.name] = (bytes[t.index]! / t.readBps) * 1000;
    return { hit, tiers, loadMs };
  }

  exists(keys: string[]): boolean[] {
    return keys.map((k) => (this.index.get(k)?.where ?? 0) !== 0);
  }

  /** Store a block. The buffer is kept as is (not copied): callers hand over ownership. */
  put(key: string, value: Buffer, sum?: string): PutResult {
    const now = Date.now();
    const existing = this.index.get(key);
    if (existing && existing.where !== 0) {
      this.touchChain([existing], now);
      return PutResult.PRESENT;
    }
    const e: BlockEntry = existing ?? {
      key, size: value.length, checksum: sum ?? computeChecksum(value), where: 0, pending: 0, seen: 0, pins: 0, heat: 0, heatAt: now,
    };
    if (!existing) this.index.set(key, e);
    bumpHeat(e, now, this.opts.halfLifeMs);
    e.seen++;
    const stored = this.insertDram(e, value);
    let queued = false;
    for (const t of this.tiers.slice(1)) {
      if (t.writeMode === 'through' && e.seen >= t.admitAfter) queued = this.queueWrite(t, e, value) || queued;
      if (!stored) break; // too big for DRAM: write through to the first lower tier only
    }
    if (!stored && !queued && e.where === 0 && e.pending === 0) {
      this.index.delete(key);
      return PutResult.DROPPED;
    }
    return PutResult.STORED;
  }

  private insertDram(e: BlockEntry, value: Buffer): boolean {
    const t = this.tiers[0]!;
    if (e.size > t.budgetBytes) return false;
    while (t.used + e.size > t.budgetBytes) if (!this.evictOne(t)) return false;
    this.dram.putSync(e.key, value, { checksum: e.checksum });
    this.addTo(t, e);
    return true;
  }

  private queueWrite(t: Tier, e: BlockEntry, value: Buffer, after?: () => Promise<void>): boolean {
    const bit = 1 << t.index;
    if ((e.where | e.pending) & bit) return true;
    e.pending |= bit;
    const ok = t.writes.offer(e.size, async () => {
      try {
        if (this.closed) return;
        await t.driver.put(e.key, value, { checksum: e.checksum });
        t.c.bytesWritten += e.size;
        if (this.index.get(e.key) !== e) {
          await t.driver.delete(e.key).catch(() => undefined);
          return;
        }
        this.addTo(t, e);
        this.enforceBudget(t);
        if (after) await after();
      } catch (err) {
        t.c.writeErrors++;
        throw err;
      } finally {
        e.pending &= ~bit;
        if (e.where === 0 && e.pending === 0 && this.index.get(e.key) === e) this.index.delete(e.key);
      }
    });
    if (!ok) e.pending &= ~bit;
    return ok;
  }

  private enforceBudget(t: Tier): void {
    while (t.used > t.budgetBytes) if (!this.evictOne(t)) break;
  }

  /** Evict one unpinned block from tier t. Returns false if nothing can be evicted. */
  private evictOne(t: Tier): boolean {
    const cands: BlockEntry[] = [];
    for (const e of t.lru.values()) {
      if (e.pins === 0) cands.push(e);
      if (cands.length >= this.opts.policy.window) break;
    }
    if (cands.length === 0) return false;
    const victim = cands[this.opts.policy.pick(cands, Date.now())] ?? cands[0]!;
    t.c.evictions++;
    if (this.demote(t, victim)) this.forget(t, victim);
    else this.removeFrom(t, victim);
    return true;
  }

  /**
   * Before a block leaves tier t, copy it down if no lower tier has it and the next tier admits it.
   * Returns true when a queued job took over deleting tier t's stored copy (lower → lower demotion).
   */
  private demote(t: Tier, e: BlockEntry): boolean {
    const below = this.tiers.slice(t.index + 1);
    if (below.some((b) => (e.where | e.pending) & (1 << b.index))) return false;
    const next = below.find((b) => e.seen >= b.admitAfter);
    if (!next) return false;
    if (t.index === 0) {
      const v = this.dram.getSync(e.key);
      if (v && this.queueWrite(next, e, v.value)) t.c.demotions++;
      return false;
    }
    const bit = 1 << next.index;
    e.pending |= bit;
    const ok = next.writes.offer(e.size, async () => {
      try {
        const v = await t.driver.get(e.key);
        if (v && !this.closed && this.index.get(e.key) === e && computeChecksum(v.value) === e.checksum) {
          await next.driver.put(e.key, v.value, { checksum: e.checksum });
          next.c.bytesWritten += e.size;
          this.addTo(next, e);
          this.enforceBudget(next);
        }
      } finally {
        e.pending &= ~bit;
        await t.driver.delete(e.key).catch(() => undefined);
        if (e.where === 0 && e.pending === 0 && this.index.get(e.key) === e) this.index.delete(e.key);
      }
    });
    if (!ok) {
      e.pending &= ~bit;
      return false;
    }
    t.c.demotions++;
    return true;
  }

  private touchChain(entries: BlockEntry[], now: number): void {
    // Deepest block first, so the chain's root ends up most recent (evicted last).
    for (let i = entries.length - 1; i >= 0; i--) this.touch(entries[i]!, now);
  }

  /** DRAM-only read; undefined if the block is not in DRAM. */
  getDram(key: string): Buffer | undefined {
    return this.dram.getSync(key)?.value;
  }

  /** If every key is in DRAM or absent everywhere, read them synchronously; else undefined (use get). */
  getResident(keys: string[]): (Buffer | undefined)[] | undefined {
    for (const k of keys) {
      const e = this.index.get(k);
      if (e && e.where !== 0 && !(e.where & 1)) return undefined;
    }
    const out: (Buffer | undefined)[] = new Array(keys.length);
    const touched: BlockEntry[] = [];
    const t0 = this.tiers[0]!;
    for (let i = 0; i < keys.length; i++) {
      const e = this.index.get(keys[i]!);
      if (!e || e.where === 0) { t0.c.misses++; continue; }
      t0.c.hits++;
      touched.push(e);
      out[i] = this.dram.getSync(e.key)?.value;
    }
    this.touchChain(touched, Date.now());
    return out;
  }

  /** Read blocks from the fastest tier holding each; misses are undefined. Lower-tier hits are promoted. */
  async get(keys: string[]): Promise<(Buffer | undefined)[]> {
    const now = Date.now();
    const out: (Buffer | undefined)[] = new Array(keys.length);
    const waits: Promise<void>[] = [];
    const touched: BlockEntry[] = [];
    for (let i = 0; i < keys.length; i++) {
      const e = this.index.get(keys[i]!);
      if (!e || e.where === 0) {
        this.tiers[0]!.c.misses++;
        continue;
      }
      touched.push(e);
      if (e.where & 1) {
        this.tiers[0]!.c.hits++;
        out[i] = this.dram.getSync(e.key)?.value;
      } else {
        waits.push(this.load(e).then((v) => { out[i] = v; }));
      }
    }
    this.touchChain(touched, now);
    if (waits.length) await Promise.all(waits);
    return out;
  }

  /** Read one block from the lower tiers (deduplicated), verify it, promote it. */
  private load(e: BlockEntry): Promise<Buffer | undefined> {
    let p = this.loading.get(e.key);
    if (!p) {
      p = this.loadFromTiers(e).finally(() => this.loading.delete(e.key));
      this.loading.set(e.key, p);
    }
    return p;
  }

  private async loadFromTiers(e: BlockEntry): Promise<Buffer | undefined> {
    for (const t of this.tiers.slice(1)) {
      if (!(e.where & (1 << t.index))) continue;
      const t0 = performance.now();
      let got: StoredValue | undefined;
      try {
        got = await t.driver.get(e.key);
      } catch {
        got = undefined;
      }
      if (!got) {
        t.c.misses++;
        if (this.index.get(e.key) === e && e.where & (1 << t.index)) this.forget(t, e);
        continue;
      }
      if (got.value.length !== e.size || computeChecksum(got.value) !== e.checksum || got.meta.checksum !== e.checksum) {
        t.c.checksumFailures++;
        this.emit('corrupt', { key: e.key, tier: t.name });
        const q = t.driver.quarantine ? t.driver.quarantine(e.key) : t.driver.delete(e.key).then(() => undefined);
        await q.catch(() => undefined);
        this.forget(t, e);
        continue;
      }
      const secs = Math.max((performance.now() - t0) / 1000, 1e-6);
      t.readBps = 0.8 * t.readBps + 0.2 * (got.value.length / secs);
      t.c.hits++;
      if (this.opts.promoteOnHit && this.index.get(e.key) === e && !(e.where & 1)) {
        if (this.insertDram(e, got.value)) t.c.promotions++;
      }
      return got.value;
    }
    this.tiers[0]!.c.misses++;
    return undefined;
  }

  /** Drop a tier's copy from the index without touching storage (it is already gone or quarantined). */
  private forget(t: Tier, e: BlockEntry): void {
    if (!(e.where & (1 << t.index))) return;
    e.where &= ~(1 << t.index);
    t.lru.delete(e.key);
    t.used -= e.size;
    this.emit('removed', { key: e.key, tier: t.name, medium: t.medium });
    if (e.where === 0 && e.pending === 0 && this.index.get(e.key) === e) this.index.delete(e.key);
  }

  /** Delete blocks from every tier. Returns how many were present. */
  delete(keys: string[]): number {
    let n = 0;
    for (const k of keys) {
      const e = this.index.get(k);
      if (!e) continue;
      n++;
      this.index.delete(k);
      for (const t of this.tiers) this.removeFrom(t, e);
    }
    return n;
  }

  entry(key: string): BlockEntry | undefined {
    return this.index.get(key);
  }

  stats(): TierStats[] {
    return this.tiers.map((t) => ({
      name: t.name, medium: t.medium, bytes: t.used, blocks: t.lru.size, budgetBytes: t.budgetBytes,
      hits: t.c.hits, misses: t.c.misses, evictions: t.c.evictions, queueDepth: t.writes.depth, droppedSaves: t.writes.dropped,
      checksumFailures: t.c.checksumFailures, promotions: t.c.promotions, demotions: t.c.demotions,
      writeErrors: t.c.writeErrors, bytesWritten: t.c.bytesWritten, readBps: Math.round(t.readBps),
    }));
  }

  /** Wait for every queued write to finish. */
  async drain(): Promise<void> {
    for (let i = 0; i < 3; i++) await Promise.all(this.tiers.map((t) => t.writes.drain()));
  }

  async close(): Promise<void> {
    await this.drain();
    this.closed = true;
    for (const t of this.tiers) await t.driver.close();
  }
}
