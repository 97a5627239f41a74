/**
 * `lfuda` eviction (the default; docs/eviction.md): LFU with dynamic ageing (Arlitt et al., "Evaluating content
 * management techniques for Web proxy caches", 2000), with priorities kept in buckets, and a frequency cap chosen
 * online by set dueling (Qureshi et al., "Adaptive insertion policies for high performance caching", ISCA 2007)
 * between cap 15 (frequency wins) and cap 1 (which is exactly LRU).
 *
 * Rules:
 * - A block's priority is L + min(seen, cap), set when it enters the tier or is accessed there; L is the priority of
 *   the last block the policy evicted (the ageing: untouched blocks fall behind newer ones). `seen` counts accesses
 *   remembered past evictions (AccessHistory), so a block evicted once and asked for again comes back warm.
 * - Priorities are integers within [L, L + 15], so they live in at most 16 buckets, each in access order: eviction
 *   takes the oldest block of the lowest bucket, O(1). Within a bucket the tier stack touches a chain deepest-first,
 *   so a chain's leaves go before its root (prefix semantics: a block is worthless once its parent is gone, and
 *   every access of a child also accesses its parent, so parents never rank below their children).
 * - The cap: two shadow caches, one of each cap, at 1/`sample` of the tier's blocks, see the accesses of 1/`sample`
 *   of the keys (by key hash); the main order uses cap 15 only while its shadow has 1 % more (decayed) hits than
 *   the LRU shadow, and starts at LRU (cap 1): a tie or a near-tie is LRU's, so where frequency does not clearly win
 *   the tier is LRU (bench trace: within 0.01 point of LRU everywhere, docs/eviction.md). The shadows keep
 *   32-bit key hashes only. A collision costs a shadow a wrong hit, nothing else. Past SHADOW_MAX blocks per shadow
 *   the sample halves (1 key in 16, 32, …), so the shadows stay under ~15 MB at any tier size; keys that stop being
 *   sampled age out of them.
 * - The main order is intrusive (recency.ts IdLinks over BlockTable row ids, one priority column): 12 bytes per row
 *   id per tier, no JS object per block. Priorities are integers; when the ageing level passes 2^30 every priority
 *   is shifted down (one pass, once per ~70 M evictions), so they stay 32-bit.
 */
import type { PolicyEntry, TierOrder } from './policy.js';
import { IdLinks, type Chain } from './recency.js';

export const LFU_CAP = 15;

/** Priority buckets of LFU-DA over keys K with values V. */
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

/** One shadow cache: cap 1 (LRU) or LFU_CAP, over sampled 32-bit key hashes, hits decayed. */
class Shadow {
  readonly b = new LfuBuckets<number, true>();
  hits = 0;
  constructor(readonly cap: number) {}
  access(h: number, f: number, capacity: number): void {
    if (this.b.has(h)) this.hits++;
    this.b.set(h, true, f, this.cap);
    while (this.b.size > capacity) {
      this.b.evicted(this.b.first()![0]);
    }
  }
}

export interface LfudaOptions {
  /** 1 in `sample` keys feeds the shadows (default 8; halves past SHADOW_MAX blocks per shadow). */
  sample?: number;
  /** Per sampled access, shadow hit counts are multiplied by this (default 0.9999: a memory of ~10 k accesses). */
  decay?: number;
  /** Fixed cap instead of dueling (1 = LRU, 15 = frequency). */
  cap?: number;
  /** Ageing level past which priorities are shifted down (default 2^30; tests lower it). */
  rebaseAt?: number;
  /** Frequency (cap 15) is used only while its shadow has this share more hits than LRU's (default 0.01). */
  margin?: number;
}

/** Most blocks one shadow simulates before the sample halves. */
export const SHADOW_MAX = 1 << 16;

/** 32 bits of a storage key `<32 hex ns>/<64 hex hash>`: hash bytes 0–3 mixed with 4–7. */
export function keyHash32(key: string): number {
  const a = parseInt(key.substr(33, 8), 16);
  const b = parseInt(key.substr(41, 8), 16);
  return (a ^ Math.imul(b, 0x9e3779b1)) >>> 0;
}

export class LfudaOrder implements TierOrder {
  private readonly links = new IdLinks();
  /** Priority per row id; 0 = not in this order (priorities are ≥ 1). */
  private prio = new Int32Array(0);
  private readonly buckets = new Map<number, Chain>();
  private minP = 0;
  private maxP = 0;
  /** Blocks in the order. */
  size = 0;
  /** Priority of the last evicted block (the ageing level). */
  L = 0;
  private readonly lo = new Shadow(1);
  private readonly hi = new Shadow(LFU_CAP);
  private sample: number;
  private readonly decay: number;
  private readonly rebaseAt: number;
  private readonly margin: number;
  cap: number;

  /** `view(id)`: the block of a row id (the victims handed back are views). */
  constructor(private readonly view: (id: number) => PolicyEntry, private readonly o: LfudaOptions = {}) {
    this.sample = o.sample ?? 8;
    this.decay = o.decay ?? 0.9999;
    this.cap = o.cap ?? 1;
    this.margin = o.margin ?? 0.01;
    this.rebaseAt = o.rebaseAt ?? 2 ** 30;
  }

  private duel(e: PolicyEntry): void {
    if (this.o.cap !== undefined) return;
    while (this.size / this.sample > SHADOW_MAX) this.sample *= 2;
    const h = keyHash32(e.key);
    if (Math.imul(h ^ (h >>> 13), 0x5bd1e995) >>> 0 >= 0x100000000 / this.sample) return;
    const capacity = Math.max(16, Math.ceil(this.size / this.sample));
    this.lo.hits *= this.decay;
    this.hi.hits *= this.decay;
    this.lo.access(h, e.seen, capacity);
    this.hi.access(h, e.seen, capacity);
    this.cap = this.hi.hits > this.lo.hits * (1 + this.margin) ? LFU_CAP : 1;
  }

  /** Put row `id` at priority L + min(f, cap), the most recent of its bucket. */
  private set(id: number, f: number): void {
    this.unset(id);
    const p = this.L + Math.max(1, Math.min(f, this.cap));
    this.link(id, p);
    if (this.size === 1 || p < this.minP) this.minP = p;
    if (p > this.maxP) this.maxP = p;
  }

  private link(id: number, p: number): void {
    let c = this.buckets.get(p);
    if (!c) this.buckets.set(p, (c = { head: -1, tail: -1 }));
    if (id >= this.prio.length) {
      const n = new Int32Array(Math.max(id + 1, Math.ceil(this.prio.length * 1.5), 1024));
      n.set(this.prio);
      this.prio = n;
    }
    this.links.append(c, id);
    this.prio[id] = p;
    this.size++;
  }

  private unset(id: number): boolean {
    const p = id < this.prio.length ? this.prio[id]! : 0;
    if (p === 0) return false;
    const c = this.buckets.get(p)!;
    this.links.unlink(c, id);
    if (c.head === -1) this.buckets.delete(p);
    this.prio[id] = 0;
    this.size--;
    return true;
  }

  add(e: PolicyEntry): void {
    this.duel(e);
    this.set(e.id, e.seen);
  }

  touch(e: PolicyEntry): void {
    this.add(e);
  }

  remove(e: PolicyEntry): void {
    this.unset(e.id);
  }

  private firstId(): number {
    for (let p = this.minP; p <= this.maxP; p++) {
      const c = this.buckets.get(p);
      if (c) return c.head;
      if (p === this.minP) this.minP++;
    }
    return -1;
  }

  first(): PolicyEntry | undefined {
    const id = this.firstId();
    return id === -1 ? undefined : this.view(id);
  }

  *victims(): IterableIterator<PolicyEntry> {
    for (let p = this.minP; p <= this.maxP; p++) {
      const c = this.buckets.get(p);
      if (!c) {
        if (p === this.minP) this.minP++;
        continue;
      }
      for (let id = c.head; id !== -1; id = this.links.after(id)) yield this.view(id);
    }
  }

  evicted(e: PolicyEntry): void {
    const p = e.id < this.prio.length ? this.prio[e.id]! : 0;
    if (p > this.L) this.L = p;
    this.unset(e.id);
    if (this.L > this.rebaseAt) this.rebase();
  }

  /** Shift every priority down by L − LFU_CAP − 1 (never below 1; buckets that meet there are joined in order). */
  private rebase(): void {
    const shift = this.L - LFU_CAP - 1;
    const old = [...this.buckets].sort((a, b) => a[0] - b[0]);
    this.buckets.clear();
    this.size = 0;
    for (const [p, c] of old) {
      const np = Math.max(1, p - shift);
      const ids: number[] = [];
      for (let id = c.head; id !== -1; id = this.links.after(id)) ids.push(id);
      for (const id of ids) { this.links.unlink(c, id); this.link(id, np); }
    }
    this.L -= shift;
    this.minP = Math.max(1, this.minP - shift);
    this.maxP = Math.max(1, this.maxP - shift);
  }

  /** Priority of row `id` in this order, or undefined (tests). */
  priority(id: number): number | undefined {
    const p = id < this.prio.length ? this.prio[id]! : 0;
    return p === 0 ? undefined : p;
  }

  /** Would a block accessed `seen` times rank above the next victim? (promotion admission) */
  outranksVictim(seen: number): boolean {
    const next = this.firstId();
    if (next === -1) return true;
    return this.L + Math.max(1, Math.min(seen, this.cap)) > this.prio[next]!;
  }
}
