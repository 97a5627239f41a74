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
 *   of the keys (by key hash); the main order uses the cap of the shadow with more (decayed) hits. The shadows keep
 *   32-bit key hashes only. A collision costs a shadow a wrong hit, nothing else.
 */
import type { PolicyEntry, TierOrder } from './policy.js';

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
  /** 1 in `sample` keys feeds the shadows (default 8). */
  sample?: number;
  /** Per sampled access, shadow hit counts are multiplied by this (default 0.9999: a memory of ~10 k accesses). */
  decay?: number;
  /** Fixed cap instead of dueling (1 = LRU, 15 = frequency). */
  cap?: number;
}

/** 32 bits of a storage key `<32 hex ns>/<64 hex hash>`: hash bytes 0–3 mixed with 4–7. */
export function keyHash32(key: string): number {
  const a = parseInt(key.substr(33, 8), 16);
  const b = parseInt(key.substr(41, 8), 16);
  return (a ^ Math.imul(b, 0x9e3779b1)) >>> 0;
}

export class LfudaOrder implements TierOrder {
  private readonly main = new LfuBuckets<string, PolicyEntry>();
  private readonly lo = new Shadow(1);
  private readonly hi = new Shadow(LFU_CAP);
  private readonly sample: number;
  private readonly decay: number;
  cap: number;

  constructor(private readonly o: LfudaOptions = {}) {
    this.sample = o.sample ?? 8;
    this.decay = o.decay ?? 0.9999;
    this.cap = o.cap ?? LFU_CAP;
  }

  private duel(e: PolicyEntry): void {
    if (this.o.cap !== undefined) return;
    const h = keyHash32(e.key);
    if (Math.imul(h ^ (h >>> 13), 0x5bd1e995) >>> 0 >= 0x100000000 / this.sample) return;
    const capacity = Math.max(16, Math.ceil(this.main.size / this.sample));
    this.lo.hits *= this.decay;
    this.hi.hits *= this.decay;
    this.lo.access(h, e.seen, capacity);
    this.hi.access(h, e.seen, capacity);
    this.cap = this.hi.hits >= this.lo.hits ? LFU_CAP : 1;
  }

  add(e: PolicyEntry): void {
    this.duel(e);
    this.main.set(e.key, e, e.seen, this.cap);
  }

  touch(e: PolicyEntry): void {
    this.add(e);
  }

  remove(e: PolicyEntry): void {
    this.main.delete(e.key);
  }

  first(): PolicyEntry | undefined {
    return this.main.first()?.[1];
  }

  victims(): IterableIterator<PolicyEntry> {
    const it = this.main.victims();
    return (function* () {
      for (const [, e] of it) yield e;
    })();
  }

  evicted(e: PolicyEntry): void {
    this.main.evicted(e.key);
  }

  /** Would a block accessed `seen` times rank above the next victim? (promotion admission) */
  outranksVictim(seen: number): boolean {
    const next = this.main.first();
    if (!next) return true;
    return this.main.L + Math.max(1, Math.min(seen, this.cap)) > (this.main.priority(next[0]) ?? 0);
  }
}
