/**
 * The set duel of `lfuda` (lfuda.ts; docs/eviction.md): three shadow caches over a sample of the keys say which way
 * of running the tier would have hit more lately — LFU-DA with cap 1 (exactly LRU), with cap 15 (frequency), or
 * with cap 15 behind a W-TinyLFU admission window (Einziger et al., "TinyLFU: a highly efficient cache admission
 * policy", 2017): new blocks wait in a window of 1 % of the tier, and one leaving the window enters the main order
 * only if it was accessed more often than the main order's next victim.
 *
 * Rules:
 * - A shadow keeps 32-bit key hashes only (a collision costs it a wrong hit, nothing else), at 1/`sample` of the
 *   tier's blocks, fed the accesses of 1/`sample` of the keys (by key hash). Hits decay by `decay` per sampled
 *   access (~10 k accesses of memory). Past SHADOW_MAX blocks per shadow the sample halves (1 in 16, 32, …), so the
 *   shadows stay under ~20 MB at any tier size; keys that stop being sampled age out of them.
 * - The tier starts as LRU. Frequency (cap 15) only while its shadow has `margin` (1 %) more hits than LRU's;
 *   admission only while its shadow has `admitMargin` (3 %) more hits than both: a tie or near-tie goes to the
 *   simpler policy, so where LRU wins the tier is LRU (bench trace: within 0.01 point of it everywhere).
 */
export const LFU_CAP = 15;

/** Priority buckets of LFU-DA over keys K with values V (the shadows; the tier's own order is intrusive, lfuda.ts). */
export class LfuBuckets<K, V> {
  private readonly prio = new Map<K, number>();
  private readonly buckets = new Map<number, Map<K, V>>();
  private minP = 0;
  private maxP = 0;
  /** Priority of the last evicted block. */
  L = 0;

  get size(): number {
    return this.prio.size;
  }

  has(k: K): boolean {
    return this.prio.has(k);
  }

  /** Insert or refresh k at priority L + min(f, cap); it becomes the most recent of its bucket. */
  set(k: K, v: V, f: number, cap: number): void {
    this.delete(k);
    const p = this.L + Math.max(1, Math.min(f, cap));
    let b = this.buckets.get(p);
    if (!b) this.buckets.set(p, (b = new Map()));
    b.set(k, v);
    this.prio.set(k, p);
    if (this.prio.size === 1 || p < this.minP) this.minP = p;
    if (p > this.maxP) this.maxP = p;
  }

  delete(k: K): boolean {
    const p = this.prio.get(k);
    if (p === undefined) return false;
    this.prio.delete(k);
    const b = this.buckets.get(p)!;
    b.delete(k);
    if (b.size === 0) this.buckets.delete(p);
    return true;
  }

  /** The next victim (lowest priority, oldest), without building an iterator. */
  first(): [K, V] | undefined {
    for (let p = this.minP; p <= this.maxP; p++) {
      const b = this.buckets.get(p);
      if (b) return b.entries().next().value;
      if (p === this.minP) this.minP++;
    }
    return undefined;
  }

  /** Blocks in eviction order (lowest priority first, oldest first within one). */
  *victims(): IterableIterator<[K, V]> {
    for (let p = this.minP; p <= this.maxP; p++) {
      const b = this.buckets.get(p);
      if (!b) {
        if (p === this.minP) this.minP++;
        continue;
      }
      yield* b.entries();
    }
  }

  priority(k: K): number | undefined {
    return this.prio.get(k);
  }

  /** k is being evicted by the policy: it sets the ageing level. */
  evicted(k: K): void {
    const p = this.prio.get(k);
    if (p !== undefined && p > this.L) this.L = p;
    this.delete(k);
  }
}

/** 32 bits of a storage key `<32 hex ns>/<64 hex hash>`: hash bytes 0–3 mixed with 4–7. */
export function keyHash32(key: string): number {
  const a = parseInt(key.substr(33, 8), 16);
  const b = parseInt(key.substr(41, 8), 16);
  return (a ^ Math.imul(b, 0x9e3779b1)) >>> 0;
}


/** Most blocks one shadow simulates before the sample halves. */
export const SHADOW_MAX = 1 << 16;
/** Share of the tier the admission window holds. */
export const WINDOW_SHARE = 0.01;

/** A shadow LFU-DA at one cap. */
class CapShadow {
  private readonly b = new LfuBuckets<number, true>();
  hits = 0;
  constructor(private readonly cap: number) {}
  access(h: number, f: number, capacity: number): void {
    if (this.b.has(h)) this.hits++;
    this.b.set(h, true, f, this.cap);
    while (this.b.size > capacity) this.b.evicted(this.b.first()![0]);
  }
}

/** A shadow of LFU-DA (cap 15) behind a W-TinyLFU window; values are the access counts seen last. */
class AdmitShadow {
  private readonly win = new Map<number, number>();
  private readonly main = new LfuBuckets<number, number>();
  hits = 0;
  access(h: number, f: number, capacity: number): void {
    if (this.win.has(h)) { this.hits++; this.win.delete(h); this.win.set(h, f); return; }
    if (this.main.has(h)) { this.hits++; this.main.set(h, f, f, LFU_CAP); return; }
    this.win.set(h, f);
    const w = Math.max(1, Math.ceil(capacity * WINDOW_SHARE));
    while (this.win.size > w) {
      const [ch, cf] = this.win.entries().next().value as [number, number];
      this.win.delete(ch);
      if (this.main.size < capacity - w) { this.main.set(ch, cf, cf, LFU_CAP); continue; }
      const [vh, vf] = this.main.first()!;
      if (cf > vf) { this.main.evicted(vh); this.main.set(ch, cf, cf, LFU_CAP); }
    }
  }
}

export interface DuelOptions {
  /** 1 in `sample` keys feeds the shadows (default 8). */
  sample?: number;
  /** Per sampled access, shadow hit counts are multiplied by this (default 0.9999). */
  decay?: number;
  /** Frequency needs this share more shadow hits than LRU (default 0.01). */
  margin?: number;
  /** Admission needs this share more shadow hits than the best of the other two (default 0.03). */
  admitMargin?: number;
  /** Let admission compete (default true). */
  admission?: boolean;
}

export class Duel {
  /** What the tier should use now: the cap, and whether new blocks go through the admission window. */
  cap = 1;
  admit = false;
  private sample: number;
  private readonly lo = new CapShadow(1);
  private readonly hi = new CapShadow(LFU_CAP);
  private readonly wt: AdmitShadow | undefined;

  constructor(private readonly o: DuelOptions = {}) {
    this.sample = o.sample ?? 8;
    this.wt = o.admission === false ? undefined : new AdmitShadow();
  }

  /** An access of `key` (accessed `seen` times in all) in a tier of `blocks` blocks. */
  access(key: string, seen: number, blocks: number): void {
    while (blocks / this.sample > SHADOW_MAX) this.sample *= 2;
    const h = keyHash32(key);
    if (Math.imul(h ^ (h >>> 13), 0x5bd1e995) >>> 0 >= 0x100000000 / this.sample) return;
    const capacity = Math.max(16, Math.ceil(blocks / this.sample));
    const decay = this.o.decay ?? 0.9999;
    this.lo.hits *= decay;
    this.hi.hits *= decay;
    this.lo.access(h, seen, capacity);
    this.hi.access(h, seen, capacity);
    this.cap = this.hi.hits > this.lo.hits * (1 + (this.o.margin ?? 0.01)) ? LFU_CAP : 1;
    if (!this.wt) return;
    this.wt.hits *= decay;
    this.wt.access(h, seen, capacity);
    this.admit = this.wt.hits > Math.max(this.lo.hits, this.hi.hits) * (1 + (this.o.admitMargin ?? 0.03));
  }
}
