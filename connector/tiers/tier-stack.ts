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
 * - "Stored" holds until the lower-tier write lands: a block evicted from DRAM (or too big for it) while its write
 *   is queued stays readable from the queued buffer (`inflight`), and LOOKUP counts it as a DRAM hit. DRAM never
 *   evicts a block that no lower tier holds or is writing if the next tier would take it but its queue is full: it
 *   evicts another, and if none can go the new PUT answers DROPPED (what really happened) instead of an older
 *   acknowledged block being lost. A write that fails drops the block (LOOKUP then says so), is counted and
 *   logged, and marks the tier degraded until a write lands again.
 * - Every value read from a lower tier is verified against its checksum; a mismatch is a miss, the copy is
 *   quarantined and counted, and the next tier is tried.
 * - Emits 'stored' and 'removed' ({ key, tier, medium }) for tier-aware KV events, and 'corrupt' ({ key, tier })
 *   when a lower-tier copy fails its checksum.
 */
import { EventEmitter } from 'node:events';
import { checksum as computeChecksum } from '../checksum.js';
import { AccessHistory, bumpHeat } from './policy.js';
import { orderVictim, windowVictim } from './tier-evict.js';
import { SharedProbe } from './shared-probe.js';
import type { DramStore, ListedValue } from '../storage/driver.js';
import { WriteQueue } from './write-queue.js';
import { MAX_TIERS } from './fast-index.js';
import { RecencyList } from './recency.js';
import { BlockIndex } from './block-index.js';
import { MAX_BLOCK_BYTES, isBlockKey } from './block-table.js';
import { PinBook } from './pin-book.js';
import { clearBlocks, evictFrom, moveBlock, tierStats } from './tier-control.js';
import { demoteLower } from './tier-demote.js';
import { load, startLoads } from './tier-reads.js';
import { ReadPool } from './read-pool.js';
import { countPrefix } from './tier-prefix.js';
import { WriteFaults } from './write-queue.js';
import { IN_DRAM, type BlockEntry, type LookupResult, type StackInternals, type Tier, type TierStackOptions, type TierStats } from './tier-types.js';
import { PutResult } from '../../protocol/wire.js';

export { IN_DRAM, type BlockEntry, type LookupResult, type TierSpec, type TierStackOptions, type TierStats } from './tier-types.js';

export class TierStack extends EventEmitter implements StackInternals {
  /** Every block by storage key: rows in columns plus the hash table LOOKUP reads (block-index.ts). */
  readonly index: BlockIndex;
  readonly tiers: Tier[];
  /** @internal */ readonly dram: DramStore;
  /** @internal */ readonly loading = new Map<string, Promise<Buffer | undefined>>();
  /** Memory lower-tier hits are read into and reused (read-pool.ts); release() gives a GET's buffers back. */
  readonly pool: ReadPool;
  /**
   * The buffer of every queued lower-tier write, by key: what serves a block evicted from DRAM (or too big for it)
   * until its write lands. The queued job holds the same buffer, so this costs no memory beyond the write queues'
   * byte bounds. (The queued buffer must be the block's own bytes, never a view of DRAM memory that is reused.)
   */
  private readonly inflight = new Map<string, { e: BlockEntry; value: Buffer }>();
  private readonly faults = new WriteFaults();
  /** @internal */ closed = false;
  /** @internal */ readonly now: () => number;
  /** Present when a tier is shared: asks it about index misses (see connector/tiers/shared-probe.ts). */
  readonly probe: SharedProbe | undefined;
  /** Some write-through tier admits only later accesses: hits must offer it the block. */
  private readonly lateAdmission: boolean;
  /** Access counts that outlive evictions, when some tier filters admission by them. */
  private readonly history: AccessHistory | undefined;

  constructor(/** @internal */ readonly opts: TierStackOptions) {
    super();
    if (!opts.tiers.length || opts.tiers.length > MAX_TIERS || opts.tiers[0]!.driver.name !== 'memory') throw new Error(`tier 0 must be the memory driver; 1–${MAX_TIERS} tiers`);
    this.now = opts.now ?? Date.now;
    const keepHeat = !!opts.policy.heat || opts.tiers.some((t) => t.admit?.heat);
    this.index = new BlockIndex(keepHeat, this.now());
    const view = (id: number) => this.index.table.view(id);
    this.tiers = opts.tiers.map((t, index) => ({
      ...t, index, lru: opts.policy.order ? undefined : new RecencyList(), order: opts.policy.order?.(view), used: 0, blocks: 0, writes: new WriteQueue(t.queue), readBps: t.initialReadBps,
      c: { hits: 0, misses: 0, evictions: 0, checksumFailures: 0, promotions: 0, demotions: 0, writeErrors: 0, bytesWritten: 0, readErrors: 0 },
    }));
    this.dram = opts.tiers[0]!.driver as DramStore;
    this.pool = new ReadPool(opts.readPoolBytes);
    const shared = this.tiers.filter((t) => t.index > 0 && t.driver.shared);
    this.probe = shared.length ? new SharedProbe(shared, opts.probe, this.now) : undefined;
    this.lateAdmission = this.tiers.some((t) => t.index > 0 && t.writeMode === 'through' && (t.admitAfter > 1 || t.admit !== undefined));
    this.history = opts.policy.history || this.tiers.some((t) => t.index > 0 && (t.admitAfter > 1 || t.admit !== undefined)) ? new AccessHistory() : undefined;
  }

  /** One more access of e: `seen` also remembers accesses from before the block was last evicted (AccessHistory). */
  private countAccess(e: BlockEntry): void {
    e.seen = this.history ? Math.max(e.seen + 1, this.history.add(e.key)) : e.seen + 1;
  }

  /** Does tier t take block e now? (admitAfter and the tier's AdmissionFilter) */
  /** @internal */ admits(t: Tier, e: BlockEntry, now: number): boolean {
    return e.seen >= t.admitAfter && (!t.admit || t.admit.admit(e, now));
  }

  /** Tiers whose driver can serve reads now (a driver with an open circuit breaker says no). Bit i = tier i. */
  /** @internal */ availableMask(): number {
    let m = 0;
    for (const t of this.tiers) if (!t.driver.available || t.driver.available()) m |= 1 << t.index;
    return m;
  }

  /** A DRAM block that became admissible for a write-through tier after its first put (a hit): write it there now. */
  private admitLater(e: BlockEntry, now: number): void {
    if (!(e.where & 1)) return;
    for (const t of this.tiers) {
      if (t.index === 0 || t.writeMode !== 'through' || (e.where | e.pending) & (1 << t.index) || !this.admits(t, e, now)) continue;
      const v = this.dram.getSync(e.key);
      if (v) this.queueWrite(t, e, this.escape(v.value));
    }
  }

  /**
   * Probe the shared tiers for the blocks after a LOOKUP's hit prefix (rate-limited; see SharedProbe) and answer
   * the LOOKUP again if any were found. `r` is lookupRaw's answer for the same keys.
   */
  async lookupShared(ns: string, keys: Buffer, r: LookupResult, prefetch = false): Promise<LookupResult> {
    const n = keys.length / 32;
    if (!this.probe || r.hit >= n) return r;
    const found = await this.probe.extend(n, r.hit, (i) => `${ns}/${keys.toString('hex', i * 32, i * 32 + 32)}`, (ti, item) => this.adopt(ti, item));
    return found > 0 ? this.lookupRaw(ns, keys, prefetch) : r;
  }

  /** Add a block that tier `ti` holds but this index did not know (another host wrote it). */
  adopt(ti: number, item: ListedValue): void {
    const t = this.tiers[ti]!;
    let e = this.index.get(item.key);
    if (!e) {
      if (item.size > MAX_BLOCK_BYTES || !isBlockKey(item.key)) return; // not a block this stack could have written
      e = this.newEntry(item.key, item.size, item.meta.checksum, 1, this.now());
    } else if (e.size !== item.size || (e.checksum && e.checksum !== item.meta.checksum)) {
      return; // a copy that disagrees with ours is not adopted (reads verify checksums anyway)
    }
    if (e.where & (1 << ti)) return;
    this.addTo(t, e);
    this.enforceBudget(t);
  }

  /** Open every driver and rebuild the index from what the lower tiers hold. */
  async open(): Promise<{ rebuilt: number }> {
    let rebuilt = 0;
    for (const t of this.tiers) await t.driver.open();
    for (const t of this.tiers.slice(1)) {
      for await (const item of t.driver.list()) {
        let e = this.index.get(item.key);
        if (!e) {
          if (item.size > MAX_BLOCK_BYTES || !isBlockKey(item.key)) continue; // not a block this stack could have written
          e = this.newEntry(item.key, item.size, item.meta.checksum, 1, 0);
          rebuilt++;
        }
        if (e.where & (1 << t.index)) continue;
        this.addTo(t, e, false);
      }
      this.enforceBudget(t);
    }
    return { rebuilt };
  }

  private newEntry(key: string, size: number, sum: string, seen: number, heatAt: number): BlockEntry {
    const e = this.index.create(key, size);
    if (sum) e.checksum = sum;
    e.seen = seen;
    e.heatAt = heatAt;
    return e;
  }

  /** Drop e from the index once no tier holds it and no write of it is pending. */
  /** @internal */ dropIfGone(e: BlockEntry): void {
    this.index.dropIfGone(e);
  }

  /** lookup() on raw wire keys (n × 32 bytes) without building key strings: the LOOKUP hot path. */
  lookupRaw(ns: string, keys: Buffer, prefetch = false): LookupResult {
    const f = this.index.fast;
    const rows = this.index.table;
    const nsSlot = rows.nsSlot(ns);
    const find = (i: number) => (nsSlot === undefined ? -1 : f.find(nsSlot, keys, i));
    return this.countPrefix(keys.length / 32, find, (s) => f.where(s), (s) => f.size(s), (s) => rows.queued(f.id(s)),
      (s) => rows.view(f.id(s)), prefetch);
  }

  /** Longest present prefix of `keys`, split by the fastest tier holding each block. Does not change heat. */
  lookup(keys: string[], prefetch = false): LookupResult {
    const find = (i: number) => this.index.get(keys[i]!) ?? -1;
    return this.countPrefix(keys.length, find, (e) => e.where, (e) => e.size, (e) => this.index.table.queued(e.id), (e) => e, prefetch);
  }

  /** Count the leading present blocks (tier-prefix.ts); `find` gives a handle (an entry, or a FastIndex slot) or -1. */
  private countPrefix<H>(n: number, find: (i: number) => H | -1, where: (h: H) => number, size: (h: H) => number,
    inflight: (h: H) => boolean, entry: (h: H) => BlockEntry, prefetch: boolean): LookupResult {
    const queued = (h: H) => this.inflight.size > 0 && inflight(h); // a queued write keeps the block readable
    return countPrefix(this.tiers, this.availableMask(), n, find, where, size, queued, prefetch ? (h) => void this.load(entry(h)) : undefined);
  }

  /** exists() on raw wire keys. */
  existsRaw(ns: string, keys: Buffer): boolean[] {
    const f = this.index.fast;
    const rows = this.index.table;
    const nsSlot = rows.nsSlot(ns);
    const out = new Array<boolean>(keys.length / 32);
    for (let i = 0; i < out.length; i++) {
      const slot = nsSlot === undefined ? -1 : f.find(nsSlot, keys, i);
      out[i] = slot !== -1 && (f.where(slot) !== 0 || rows.queued(f.id(slot)));
    }
    return out;
  }

  /** @internal */ addTo(t: Tier, e: BlockEntry, emit = true): void {
    if (e.where & (1 << t.index)) return;
    e.where |= 1 << t.index;
    this.index.sync(e);
    t.lru?.push(e.id);
    t.order?.add(e);
    t.used += e.size;
    t.blocks++;
    if (emit) this.emit('stored', { key: e.key, tier: t.name, medium: t.medium });
  }

  /** @internal */ removeFrom(t: Tier, e: BlockEntry): void {
    if (!(e.where & (1 << t.index))) return;
    if (t.index === 0) {
      const v = this.pool.active && this.dram.keepsValues ? this.dram.getSync(e.key)?.value : undefined; // (an arena getSync copies)
      this.dram.deleteSync(e.key);
      if (v) this.pool.droppedByDram(v);
    }
    else t.driver.delete(e.key).catch(() => undefined);
    this.forget(t, e);
  }

  private touch(e: BlockEntry, now: number): void {
    bumpHeat(e, now, this.opts.halfLifeMs);
    this.countAccess(e);
    for (const t of this.tiers) if (e.where & (1 << t.index)) { t.lru?.touch(e.id); t.order?.touch(e); }
  }

  exists(keys: string[]): boolean[] {
    return keys.map((k) => (this.index.get(k)?.where ?? 0) !== 0 || this.inflight.has(k));
  }

  /** Store a block. The buffer is kept as is (not copied): callers hand over ownership. */
  put(key: string, value: Buffer, sum?: string): PutResult {
    this.escape(value); // a buffer get() answered, stored again: DRAM keeps it now
    return this.putWith(key, value.length, sum, (e) => this.dram.putSync(e.key, value, { checksum: e.checksum }), () => value);
  }

  /**
   * Index a block whose bytes a same-host writer already put into a DRAM arena slot (ALLOC / COMMIT): like put(),
   * but DRAM takes it by `publish()` instead of a copy; lower write-through tiers read it back from DRAM.
   */
  putInPlace(key: string, size: number, publish: () => void): PutResult {
    return this.putWith(key, size, undefined, () => (publish(), true), () => this.dram.getSync(key)?.value);
  }

  private putWith(key: string, size: number, sum: string | undefined, store: (e: BlockEntry) => boolean, bytes: () => Buffer | undefined): PutResult {
    const now = this.now();
    const existing = this.index.get(key);
    if (existing && existing.where !== 0) {
      this.touchChain([existing], now);
      if (this.lateAdmission) this.admitLater(existing, now);
      return PutResult.PRESENT;
    }
    if (!existing && size > MAX_BLOCK_BYTES) return PutResult.DROPPED;
    const e = existing ?? this.newEntry(key, size, sum ?? '', 0, now);
    bumpHeat(e, now, this.opts.halfLifeMs);
    this.countAccess(e);
    const stored = this.insertDramWith(e, store);
    let queued = false;
    let value: Buffer | undefined;
    for (let i = 1; i < this.tiers.length; i++) {
      const t = this.tiers[i]!;
      if (t.writeMode === 'through' && this.admits(t, e, now) && (value ??= bytes())) queued = this.queueWrite(t, e, value) || queued;
      if (!stored) break; // too big for DRAM: write through to the first lower tier only
    }
    if (!stored && !queued && e.where === 0 && e.pending === 0) {
      this.index.drop(e);
      return PutResult.DROPPED;
    }
    return PutResult.STORED;
  }

  /** @internal */ insertDram(e: BlockEntry, value: Buffer): boolean {
    return this.insertDramWith(e, () => this.dram.putSync(e.key, value, { checksum: e.checksum }));
  }

  /** Make room in DRAM's budget for e, then store it; an arena without a free slot for it evicts more first. */
  private insertDramWith(e: BlockEntry, store: (e: BlockEntry) => boolean): boolean {
    const t = this.tiers[0]!;
    if (e.size > t.budgetBytes) return false;
    while (t.used + e.size > t.budgetBytes) if (!this.evictOne(t)) return false;
    while (!store(e)) if (!this.evictOne(t)) return false;
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
        const sum = e.checksum || computeChecksum(value);
        e.checksum = sum;
        await t.driver.put(e.key, value, { checksum: sum });
        t.c.bytesWritten += e.size;
        if (!this.index.holds(e)) {
          await t.driver.delete(e.key).catch(() => undefined);
          return;
        }
        t.writeFault = undefined;
        this.addTo(t, e);
        this.enforceBudget(t);
        if (after) await after();
      } catch (err) {
        this.faults.failed(t, e.key, err);
        throw err;
      } finally {
        e.pending &= ~bit;
        if (e.pending === 0 && e.same(this.inflight.get(e.key)?.e)) this.unqueue(e.key);
        this.dropIfGone(e);
        this.index.releaseIfDead(e);
      }
    });
    if (!ok) e.pending &= ~bit;
    else { // readable from here until the write lands, whatever DRAM does
      this.inflight.set(e.key, { e, value });
      this.index.table.setQueued(e.id, true);
    }
    return ok;
  }

  /** `key` is no longer readable from a queued write. */
  private unqueue(key: string): void {
    const q = this.inflight.get(key);
    if (!q) return;
    this.inflight.delete(key);
    if (q.e.live) this.index.table.setQueued(q.e.id, false);
  }

  /** @internal */ enforceBudget(t: Tier): void {
    while (t.used > t.budgetBytes) if (!this.evictOne(t)) break;
  }

  /** Evict one unpinned block from tier t. Returns false if nothing can be evicted. */
  private evictOne(t: Tier): boolean {
    // In DRAM a block that must be copied down first and cannot be now stays (demoteFromDram); another one goes.
    const canLeave = t.index === 0 ? (e: BlockEntry) => this.demoteFromDram(e) : () => true;
    const victim = t.order ? orderVictim(t.order, canLeave) : windowVictim(t.lru!, this.index.table, this.opts.policy, this.now(), canLeave);
    if (!victim) return false;
    t.c.evictions++;
    t.order?.evicted(victim);
    if (t.index === 0) this.removeFrom(t, victim); // its copy down, if due, is queued (and readable: inflight)
    else if (demoteLower(this, t, victim)) this.forget(t, victim);
    else this.removeFrom(t, victim);
    return true;
  }

  /** Promote a lower-tier hit into DRAM? Always while DRAM has room; when full, only past the policy's next victim. */
  /** @internal */ promotes(e: BlockEntry): boolean {
    const t = this.tiers[0]!;
    if (t.used + e.size <= t.budgetBytes || !t.order?.outranksVictim) return true;
    return t.order.outranksVictim(e.seen);
  }

  /** Before a block leaves DRAM: copy it down if it needs to be. False when it needs to be and cannot be now. */
  private demoteFromDram(e: BlockEntry): boolean {
    if (this.tiers.length === 1 || (e.where | e.pending) & ~1) return true;
    const now = this.now();
    const next = this.tiers.find((b) => b.index > 0 && this.admits(b, e, now));
    if (!next) return true; // no tier takes it (admission): evicting it is the policy's choice, not a loss
    const v = this.dram.getSync(e.key);
    if (!v) return true;
    if (!this.queueWrite(next, e, this.escape(v.value))) return false;
    this.tiers[0]!.c.demotions++;
    return true;
  }

  private touchChain(entries: BlockEntry[], now: number): void {
    // Deepest block first, so the chain's root ends up most recent (evicted last).
    for (let i = entries.length - 1; i >= 0; i--) this.touch(entries[i]!, now);
  }

  /** DRAM-only read; undefined if the block is not in DRAM. */
  getDram(key: string): Buffer | undefined {
    const v = this.dram.getSync(key)?.value;
    return v && this.escape(v);
  }

  /** A DRAM buffer going where the read pool cannot track it: never reused (read-pool.ts). */
  /** @internal */ escape(v: Buffer): Buffer {
    if (this.pool.active) this.pool.escape(v);
    return v;
  }

  /** A DRAM buffer handed to a GET caller: one more hold on it if pooled. */
  private handOut(v: Buffer | undefined): Buffer | undefined {
    if (v && this.pool.active) this.pool.hold(v);
    return v;
  }

  /**
   * Optional: a GET caller is done with the buffers get() or getResident() answered (each answer released once):
   * pooled ones may then be reused (read-pool.ts). Buffers never released are simply never reused.
   */
  release(values: readonly (Buffer | undefined)[]): void {
    for (const v of values) if (v && v !== IN_DRAM) this.pool.release(v);
  }

  /**
   * If every key is in DRAM or absent everywhere, read them synchronously; else undefined (use get). With `inPlace`
   * (same-host readers served from the DRAM arena) a DRAM hit is answered IN_DRAM instead of a copy of its bytes.
   */
  getResident(keys: string[], inPlace = false): (Buffer | undefined)[] | undefined {
    const entries = new Array<BlockEntry | undefined>(keys.length);
    for (let i = 0; i < keys.length; i++) {
      const e = (entries[i] = this.index.get(keys[i]!));
      if (e && e.where !== 0 && !(e.where & 1) && !this.inflight.has(e.key)) return undefined;
    }
    const out: (Buffer | undefined)[] = new Array(keys.length);
    const touched: BlockEntry[] = [];
    const t0 = this.tiers[0]!;
    for (let i = 0; i < keys.length; i++) {
      const e = entries[i];
      const queued = e && !(e.where & 1) ? this.inflight.get(e.key)?.value : undefined;
      if (!e || (e.where === 0 && !queued)) { t0.c.misses++; continue; }
      t0.c.hits++;
      touched.push(e);
      out[i] = queued ?? (inPlace ? IN_DRAM : this.handOut(this.dram.getSync(e.key)?.value));
    }
    const now = this.now();
    this.touchChain(touched, now);
    if (this.lateAdmission) for (const e of touched) this.admitLater(e, now);
    return out;
  }

  /** Read blocks from the fastest tier holding each; misses are undefined. Lower-tier hits are promoted. */
  async get(keys: string[], inPlace = false): Promise<(Buffer | undefined)[]> {
    const now = this.now();
    const out: (Buffer | undefined)[] = new Array(keys.length);
    const waits: Promise<void>[] = [];
    const touched: BlockEntry[] = [];
    const lower: { i: number; e: BlockEntry }[] = [];
    for (let i = 0; i < keys.length; i++) {
      const e = this.index.get(keys[i]!);
      const queued = e && !(e.where & 1) && this.inflight.get(e.key)?.value;
      if (!e || (e.where === 0 && !queued)) {
        this.tiers[0]!.c.misses++;
        continue;
      }
      touched.push(e);
      if (e.where & 1 || queued) {
        this.tiers[0]!.c.hits++;
        out[i] = queued || (inPlace ? IN_DRAM : this.handOut(this.dram.getSync(e.key)?.value));
      } else {
        lower.push({ i, e });
      }
    }
    this.touchChain(touched, now);
    if (this.lateAdmission) for (const e of touched) this.admitLater(e, now);
    // Loads started here carry this caller's hold on their pooled buffers; a block another reader was already
    // loading is shared with it, so its buffer leaves the pool (escape) rather than be reused under either reader.
    const mine = lower.length ? startLoads(this, lower.map((l) => l.e)) : undefined;
    for (const { i, e } of lower) {
      const own = mine?.get(e);
      mine?.delete(e); // a key asked twice: only its first slot takes the load's hold, the other one shares (escape)
      waits.push((own ?? this.load(e)).then((v) => { out[i] = own || !v ? v : this.escape(v); }));
    }
    if (waits.length) await Promise.all(waits);
    return out;
  }

  /** Read one block from the lower tiers (deduplicated), verify it, promote it (see tier-reads.ts). */
  /** @internal */ load(e: BlockEntry): Promise<Buffer | undefined> {
    return load(this, e);
  }

  /** Drop a tier's copy from the index without touching storage (it is already gone or quarantined). */
  /** @internal */ forget(t: Tier, e: BlockEntry): void {
    if (!(e.where & (1 << t.index))) return;
    e.where &= ~(1 << t.index);
    this.index.sync(e);
    t.lru?.remove(e.id);
    t.order?.remove(e);
    t.used -= e.size;
    t.blocks--;
    this.emit('removed', { key: e.key, tier: t.name, medium: t.medium });
    this.dropIfGone(e);
    this.index.releaseIfDead(e);
  }

  /** Delete blocks from every tier. Returns how many were present. */
  delete(keys: string[]): number {
    let n = 0;
    for (const k of keys) {
      const e = this.index.get(k);
      if (!e) continue;
      n++;
      this.index.drop(e);
      this.unqueue(k);
      for (const t of this.tiers) this.removeFrom(t, e);
    }
    return n;
  }

  entry(key: string): BlockEntry | undefined {
    return this.index.get(key);
  }

  stats(): TierStats[] {
    return tierStats(this.tiers, this.availableMask());
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

  // ---- control-plane primitives ----
  // Used by connector/control (gRPC Pin/Unpin/Evict/Clear/Move): pins in pin-book.ts, the rest in tier-control.ts.

  private pinBook: PinBook | undefined;

  private pins_(): PinBook {
    if (!this.pinBook) {
      const book = new PinBook((k) => this.index.get(k));
      this.pinBook = book;
      this.on('removed', (ev: { key: string }) => queueMicrotask(() => book.forgetIfUnpinned(ev.key)));
    }
    return this.pinBook;
  }

  /** Bytes that distinct pinned blocks may occupy (default unbounded). */
  setPinBudget(bytes: number): void {
    this.pins_().budget = bytes;
  }

  /** Pin the present blocks among `keys` under `tag` (all or nothing; see PinBook.pin). */
  pin(keys: string[], tag: string): { pinned: number; missing: number; addedBytes: number; exhausted: boolean } {
    return this.pins_().pin(keys, tag);
  }

  /** Remove `tag`'s pins from the keys it pins that pass `filter` (all when absent). Returns how many. */
  unpin(tag: string, filter?: (key: string) => boolean): number {
    return this.pins_().unpin(tag, filter);
  }

  /** Tags pinning `key`. */
  pinTags(key: string): string[] {
    return this.pins_().tagsOf(key);
  }

  pinStats(): { blocks: number; bytes: number; budgetBytes: number; tags: number } {
    return this.pins_().stats();
  }

  /** Drop a block's copy in tier `tier` (every tier when undefined) without demoting it. Pinned blocks stay. */
  evictFrom(key: string, tier?: number): 'evicted' | 'pinned' | 'missing' {
    return evictFrom(this, key, tier);
  }

  /** Delete each block among `keys` (all when absent) that passes `pred` from every tier; see tier-control.ts. */
  clear(pred: (key: string, e: BlockEntry) => boolean, opts: { keys?: Iterable<string>; includePinned?: boolean } = {}): { removed: number; pinnedSkipped: number } {
    return clearBlocks(this, pred, opts);
  }

  /** Warm or demote one block to tier `to`; see tier-control.ts. */
  move(key: string, to: number): Promise<'moved' | 'present' | 'missing' | 'pinned' | 'failed'> {
    return moveBlock(this, key, to);
  }
}
