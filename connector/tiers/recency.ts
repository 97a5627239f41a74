/**
 * Block ids and per-tier recency lists of the TierStack, without a JS Map entry per block and tier.
 *
 * - BlockIds gives each BlockEntry a small integer id (`BlockEntry.id`) and maps ids back to entries. Ids are reused
 *   (a free list), so the columns below stay as long as the most blocks held at once. Invariant kept by the
 *   TierStack: an entry has an id (≥ 0) while it is in the index or some tier holds it (`where` ≠ 0); otherwise -1.
 * - RecencyList is one tier's recency order (least recently used first), as an intrusive doubly linked list over
 *   two Int32Array columns indexed by id (prev, next; -1 ends, PREV_OUT marks "not in this list"): 8 bytes per id
 *   per tier where a Map<string, BlockEntry> costs about 30–40. Its order is exactly a Map's insertion order when
 *   every `touch` is a delete + set: push appends, touch moves to the tail, iteration runs head to tail.
 * - Columns grow by 1.5× (not doubling), so memory stays close to linear in blocks.
 */
import type { BlockEntry } from './tier-types.js';

const PREV_OUT = -2;

const grown = (a: Int32Array, min: number, fill: number): Int32Array => {
  const b = new Int32Array(Math.max(min, Math.ceil(a.length * 1.5), 1024));
  b.set(a);
  b.fill(fill, a.length);
  return b;
};

export class BlockIds {
  private entries: (BlockEntry | undefined)[] = [];
  private free: number[] = [];

  /** Give e an id if it has none. */
  give(e: BlockEntry): void {
    if (e.id >= 0) return;
    const id = this.free.length ? this.free.pop()! : this.entries.length;
    this.entries[id] = e;
    e.id = id;
  }

  /** Take e's id back (it is no longer indexed and no tier holds it). */
  release(e: BlockEntry): void {
    if (e.id < 0 || this.entries[e.id] !== e) return;
    this.entries[e.id] = undefined;
    this.free.push(e.id);
    e.id = -1;
  }

  entry(id: number): BlockEntry {
    return this.entries[id]!;
  }

  /** Ids handed out now. */
  get live(): number {
    return this.entries.length - this.free.length;
  }
}

export class RecencyList {
  private prev: Int32Array = new Int32Array(0);
  private next: Int32Array = new Int32Array(0);
  private head = -1;
  private tail = -1;
  size = 0;

  constructor(private readonly ids: BlockIds) {}

  has(id: number): boolean {
    return id >= 0 && id < this.prev.length && this.prev[id] !== PREV_OUT;
  }

  /** Append at the most recent end (no-op if already in the list, as Map.set keeps an existing key's place). */
  push(id: number): void {
    if (id >= this.prev.length) {
      this.prev = grown(this.prev, id + 1, PREV_OUT);
      this.next = grown(this.next, id + 1, -1);
    }
    if (this.prev[id] !== PREV_OUT) return;
    this.prev[id] = this.tail;
    this.next[id] = -1;
    if (this.tail === -1) this.head = id;
    else this.next[this.tail] = id;
    this.tail = id;
    this.size++;
  }

  remove(id: number): void {
    if (!this.has(id)) return;
    const p = this.prev[id]!;
    const n = this.next[id]!;
    if (p === -1) this.head = n;
    else this.next[p] = n;
    if (n === -1) this.tail = p;
    else this.prev[n] = p;
    this.prev[id] = PREV_OUT;
    this.next[id] = -1;
    this.size--;
  }

  /** Move to the most recent end (Map delete + set). */
  touch(id: number): void {
    if (!this.has(id) || id === this.tail) return;
    this.remove(id);
    this.push(id);
  }

  /** Entries least recently used first. Do not remove entries while iterating (collect first, as evictOne does). */
  *values(): IterableIterator<BlockEntry> {
    for (let id = this.head; id !== -1; id = this.next[id]!) yield this.ids.entry(id);
  }
}
