/**
 * Intrusive lists over BlockTable row ids (block-table.ts), without a JS Map entry per block and tier: the per-tier
 * recency order of the `lru` / `heat` policies (RecencyList) and the buckets of `lfuda` (lfuda.ts) are chains in
 * IdLinks columns.
 *
 * - IdLinks: two Int32Array columns indexed by row id, zero-filled = "in no list", so rows never linked cost no
 *   resident memory: prev holds 1 for a list's head and id + 2 otherwise, next holds id + 1 (0 ends the list).
 *   8 bytes per row id per tier. Columns grow by 1.5×, so memory stays close to linear in blocks.
 * - RecencyList is one tier's recency order (least recently used first). Its order is exactly a Map's insertion
 *   order when every `touch` is a delete + set: push appends, touch moves to the tail, iteration runs head to tail.
 */
import { columnFor } from './block-table.js';

/** Ends of one chain in an IdLinks (-1 when empty). */
export interface Chain {
  head: number;
  tail: number;
}

export class IdLinks {
  private prev = new Int32Array(0);
  private next = new Int32Array(0);

  has(id: number): boolean {
    return id < this.prev.length && this.prev[id] !== 0;
  }

  /** Append `id` (not in any chain of these links) at the tail of `c`. */
  append(c: Chain, id: number): void {
    this.prev = columnFor(this.prev, id);
    this.next = columnFor(this.next, id);
    this.prev[id] = c.tail === -1 ? 1 : c.tail + 2;
    this.next[id] = 0;
    if (c.tail === -1) c.head = id;
    else this.next[c.tail] = id + 1;
    c.tail = id;
  }

  /** Unlink `id` from `c` (the chain it is in). */
  unlink(c: Chain, id: number): void {
    const p = this.prev[id]! - 2;
    const n = this.next[id]! - 1;
    if (p === -1) c.head = n;
    else this.next[p] = n + 1;
    if (n === -1) c.tail = p;
    else this.prev[n] = p + 2;
    this.prev[id] = 0;
    this.next[id] = 0;
  }

  /** The id after `id` in its chain, or -1. */
  after(id: number): number {
    return this.next[id]! - 1;
  }
}

export class RecencyList {
  private readonly links = new IdLinks();
  private readonly chain: Chain = { head: -1, tail: -1 };
  size = 0;

  has(id: number): boolean {
    return this.links.has(id);
  }

  /** Append at the most recent end (no-op if already in the list, as Map.set keeps an existing key's place). */
  push(id: number): void {
    if (this.links.has(id)) return;
    this.links.append(this.chain, id);
    this.size++;
  }

  remove(id: number): void {
    if (!this.links.has(id)) return;
    this.links.unlink(this.chain, id);
    this.size--;
  }

  /** Move to the most recent end (Map delete + set). */
  touch(id: number): void {
    if (!this.links.has(id) || id === this.chain.tail) return;
    this.links.unlink(this.chain, id);
    this.links.append(this.chain, id);
  }

  /** Ids least recently used first. Do not remove ids while iterating (collect first, as evictOne does). */
  *ids(): IterableIterator<number> {
    for (let id = this.chain.head; id !== -1; id = this.links.after(id)) yield id;
  }
}
