/**
 * `lfuda` eviction (the default; docs/eviction.md): LFU with dynamic ageing (Arlitt et al., "Evaluating content
 * management techniques for Web proxy caches", 2000), with priorities kept in buckets; its frequency cap, and
 * whether new blocks pass a W-TinyLFU admission window first, chosen online by set dueling (duel.ts).
 *
 * Rules:
 * - A block's priority is L + min(seen, cap), set when it enters the main order or is accessed there; L is the
 *   priority of the last block the policy evicted (the ageing: untouched blocks fall behind newer ones). `seen`
 *   counts accesses remembered past evictions (AccessHistory), so a block evicted once and asked for again comes
 *   back warm. Cap 1 is exactly LRU; cap 15 favours frequency.
 * - Priorities are integers within [L, L + 15], so they live in at most 16 buckets, each in access order: eviction
 *   takes the oldest block of the lowest bucket, O(1). Within a bucket the tier stack touches a chain deepest-first,
 *   so a chain's leaves go before its root (prefix semantics: a block is worthless once its parent is gone, and
 *   every access of a child also accesses its parent, so parents never rank below their children).
 * - Admission (only while the duel says it wins): a new block enters a window (LRU, 1 % of the tier) instead of the
 *   main order. When the tier must evict and the window is full, the window's oldest block enters the main order
 *   only if it was accessed more often than the main order's next victim (which is then evicted); otherwise it is
 *   the one evicted. When the duel turns admission off, the window empties into the main order at the next eviction.
 * - The orders are intrusive (recency.ts IdLinks over BlockTable row ids, one priority column; window members have
 *   priority -1): 12 bytes per row id per tier, no JS object per block. When the ageing level passes 2^30 every
 *   priority is shifted down (one pass, once per ~70 M evictions), so they stay 32-bit.
 */
import type { PolicyEntry, TierOrder } from './policy.js';
import { IdLinks, type Chain } from './recency.js';
import { Duel, LFU_CAP, WINDOW_SHARE } from './duel.js';
import { columnFor } from './block-table.js';

export { LFU_CAP, LfuBuckets, SHADOW_MAX, keyHash32 } from './duel.js';

/** Priority column value of a block in the admission window. */
const WINDOW = -1;

export interface LfudaOptions {
  /** 1 in `sample` keys feeds the duel's shadows (default 8). */
  sample?: number;
  /** Per sampled access, shadow hit counts are multiplied by this (default 0.9999: a memory of ~10 k accesses). */
  decay?: number;
  /** Fixed cap instead of dueling (1 = LRU, 15 = frequency); no admission window then. */
  cap?: number;
  /** Ageing level past which priorities are shifted down (default 2^30; tests lower it). */
  rebaseAt?: number;
  /** Frequency (cap 15) is used only while its shadow has this share more hits than LRU's (default 0.01). */
  margin?: number;
  /** Admission is used only while its shadow has this share more hits than both others (default 0.03). */
  admitMargin?: number;
  /** Let the W-TinyLFU admission window compete in the duel (default true). */
  admission?: boolean;
  /** With a fixed `cap`: the admission window always on (tests). */
  window?: boolean;
}

export class LfudaOrder implements TierOrder {
  private readonly links = new IdLinks();
  /** Priority per row id; 0 = not in this order (priorities are ≥ 1), WINDOW = in the admission window. */
  private prio = new Int32Array(0);
  private readonly buckets = new Map<number, Chain>();
  private readonly win: Chain = { head: -1, tail: -1 };
  private winSize = 0;
  private mainSize = 0;
  private minP = 0;
  private maxP = 0;
  /** Priority of the last evicted block (the ageing level). */
  L = 0;
  private readonly duel: Duel | undefined;
  private readonly rebaseAt: number;
  private readonly fixedCap: number | undefined;
  private readonly fixedWindow: boolean;

  /** `view(id)`: the block of a row id (the victims handed back are views). */
  constructor(private readonly view: (id: number) => PolicyEntry, o: LfudaOptions = {}) {
    this.fixedCap = o.cap;
    this.fixedWindow = o.window === true;
    this.duel = o.cap === undefined ? new Duel(o) : undefined;
    this.rebaseAt = o.rebaseAt ?? 2 ** 30;
  }

  /** Blocks in the order (main and window). */
  get size(): number {
    return this.mainSize + this.winSize;
  }

  get cap(): number {
    return this.fixedCap ?? this.duel!.cap;
  }

  /** New blocks go through the admission window now. */
  get admitting(): boolean {
    return this.duel ? this.duel.admit : this.fixedWindow;
  }

  private get windowLimit(): number {
    return this.admitting ? Math.max(1, Math.ceil(WINDOW_SHARE * this.size)) : 0;
  }

  /** Put row `id` in the main order at priority L + min(f, cap), the most recent of its bucket. */
  private set(id: number, f: number): void {
    this.unset(id);
    const p = this.L + Math.max(1, Math.min(f, this.cap));
    this.link(id, p);
    if (this.mainSize === 1 || p < this.minP) this.minP = p;
    if (p > this.maxP) this.maxP = p;
  }

  private link(id: number, p: number): void {
    let c = this.buckets.get(p);
    if (!c) this.buckets.set(p, (c = { head: -1, tail: -1 }));
    this.prio = columnFor(this.prio, id);
    this.links.append(c, id);
    this.prio[id] = p;
    this.mainSize++;
  }

  /** Take row `id` out of the order (main or window). */
  private unset(id: number): boolean {
    const p = id < this.prio.length ? this.prio[id]! : 0;
    if (p === 0) return false;
    if (p === WINDOW) {
      this.links.unlink(this.win, id);
      this.winSize--;
    } else {
      const c = this.buckets.get(p)!;
      this.links.unlink(c, id);
      if (c.head === -1) this.buckets.delete(p);
      this.mainSize--;
    }
    this.prio[id] = 0;
    return true;
  }

  add(e: PolicyEntry): void {
    this.duel?.access(e.key, e.seen, this.size);
    if (this.windowLimit === 0 || (e.id < this.prio.length && this.prio[e.id]! > 0)) { this.set(e.id, e.seen); return; }
    this.unset(e.id);
    this.prio = columnFor(this.prio, e.id);
    this.links.append(this.win, e.id);
    this.prio[e.id] = WINDOW;
    this.winSize++;
  }

  touch(e: PolicyEntry): void {
    this.duel?.access(e.key, e.seen, this.size);
    if (e.id < this.prio.length && this.prio[e.id] === WINDOW) { // most recent of the window
      this.links.unlink(this.win, e.id);
      this.links.append(this.win, e.id);
    } else this.set(e.id, e.seen);
  }

  remove(e: PolicyEntry): void {
    this.unset(e.id);
  }

  /** Move the window's oldest block into the main order. */
  private admitOldest(): void {
    const id = this.win.head;
    this.unset(id);
    this.set(id, this.view(id).seen);
  }

  private firstId(): number {
    for (let p = this.minP; p <= this.maxP; p++) {
      const c = this.buckets.get(p);
      if (c) return c.head;
      if (p === this.minP) this.minP++;
    }
    return -1;
  }

  /**
   * The next victim (the tier is full when the stack asks). A window past its share offers its oldest block:
   * it enters the main order if accessed more often than the main order's victim (which is the answer then),
   * else it is the answer. A window larger than its share (admission just turned off, or a tier filled while
   * everything waited there) first moves its oldest blocks into the main order.
   */
  first(): PolicyEntry | undefined {
    const limit = this.windowLimit;
    while (this.win.head !== -1 && this.mainSize < this.size - limit) this.admitOldest();
    if (this.win.head === -1) return this.mainFirst();
    if (this.winSize < limit) return this.mainFirst() ?? this.view(this.win.head);
    const cand = this.view(this.win.head);
    const victim = this.mainFirst();
    if (victim && cand.seen > victim.seen) {
      this.admitOldest();
      return victim;
    }
    return cand;
  }

  private mainFirst(): PolicyEntry | undefined {
    const id = this.firstId();
    return id === -1 ? undefined : this.view(id);
  }

  *victims(): IterableIterator<PolicyEntry> {
    const f = this.first();
    if (!f) return;
    yield f;
    for (let id = this.win.head; id !== -1; id = this.links.after(id)) if (id !== f.id) yield this.view(id);
    for (let p = this.minP; p <= this.maxP; p++) {
      const c = this.buckets.get(p);
      if (!c) continue;
      for (let id = c.head; id !== -1; id = this.links.after(id)) if (id !== f.id) yield this.view(id);
    }
  }

  evicted(e: PolicyEntry): void {
    const p = e.id < this.prio.length ? this.prio[e.id]! : 0;
    if (p > this.L) this.L = p;
    this.unset(e.id);
    if (this.L > this.rebaseAt) this.rebase();
  }

  /** Shift every main priority down by L − LFU_CAP − 1 (never below 1; buckets that meet there are joined in order). */
  private rebase(): void {
    const shift = this.L - LFU_CAP - 1;
    const old = [...this.buckets].sort((a, b) => a[0] - b[0]);
    this.buckets.clear();
    this.mainSize = 0;
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

  /** Priority of row `id` in this order (WINDOW in the window), or undefined (tests). */
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
