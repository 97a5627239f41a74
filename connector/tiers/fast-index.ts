/**
 * FastIndex — the TierStack's index of blocks (BlockTable rows, block-table.ts): an open-addressing hash table
 * (linear probing, backward-shift deletion) in one Int32Array, 4 ints (16 bytes) per slot, four slots per cache line:
 *   [h1 + 1 (0 = empty), h2, namespace slot << 8 | where (tier bits), size (bytes, capped at 2^31 − 1)]
 * plus a parallel Int32Array of the slots' row ids. A LOOKUP probe touches one cache line and no JS object, so an
 * 8,192-block chain is answered in well under a millisecond even with a million blocks indexed
 * (bench/index-memory.ts); a Map keyed by strings or numbers pays several cache misses per key.
 * Memory: 20 bytes per slot; the table holds at most 70 % full (MAX_LOAD) and doubles when that is passed, so
 * 29–57 bytes per indexed block (10 M blocks: 2^24 slots, 34 bytes per block).
 *
 * Rules:
 * - h1 and h2 are 30 bits each of the block hash (bytes 0–3 and 4–7, big-endian, >>> 2). LOOKUP (`find`) is
 *   advisory: two keys sharing those 60 bits in one namespace would make it over-report, and the GET that follows
 *   — `findKey`, which matches the row's full 256-bit hash — answers a miss, so the engine recomputes.
 * - where is 8 bits: a TierStack has at most MAX_TIERS tiers (its constructor checks).
 * - The TierStack calls `add` when a block enters its index, `drop` when it leaves, and `sync` whenever the
 *   block's tier bits change. Rows keep no slot number (slots move on deletion and growth): `slotOf` probes.
 */
import { columnFor, type BlockTable } from './block-table.js';

const S = 4;
const MAX_SIZE = 0x7fffffff;
/** Tier bits fit in the low byte of word 2 of a slot. */
export const MAX_TIERS = 8;
/** Grow once more than this share of the slots is used (linear probing stays short below ~0.75). */
const MAX_LOAD = 0.7;

/** h1 + 1 of 32 hash bytes at `b[o]` (bytes 0–3, big-endian, >>> 2). */
const h1Of = (b: Uint8Array, o: number) => (((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 2) + 1;
const h2Of = (b: Uint8Array, o: number) => (((b[o + 4]! << 24) | (b[o + 5]! << 16) | (b[o + 6]! << 8) | b[o + 7]!) >>> 2);

export class FastIndex {
  private table = new Int32Array(1024 * S);
  private ids = new Int32Array(1024);
  private mask = 1023;
  /** Blocks indexed. */
  count = 0;
  /** Blocks indexed per namespace slot. */
  private nsCount = new Int32Array(64);
  private limit = Math.floor(1024 * MAX_LOAD);

  constructor(private readonly rows: BlockTable) {}

  private home(h1p: number): number {
    return (Math.imul(h1p, 0x9e3779b1) >>> 0) & this.mask;
  }

  /** Index row `id` (its key, namespace, tier bits and size are read from the row). */
  add(id: number): void {
    if (this.count + 1 > this.limit) this.grow();
    const r = this.rows;
    const ns = r.ns[id]!;
    this.place(id, h1Of(r.keys, id * 32), h2Of(r.keys, id * 32), (ns << 8) | (r.where[id]! & 0xff), Math.min(r.size[id]!, MAX_SIZE));
    r.setIndexed(id, true);
    this.nsCount = columnFor(this.nsCount, ns);
    this.nsCount[ns]!++;
    this.count++;
  }

  private place(id: number, h1p: number, h2: number, nsWhere: number, size: number): void {
    const t = this.table;
    let i = this.home(h1p);
    while (t[i * S] !== 0) i = (i + 1) & this.mask;
    const o = i * S;
    t[o] = h1p;
    t[o + 1] = h2;
    t[o + 2] = nsWhere;
    t[o + 3] = size;
    this.ids[i] = id;
  }

  private grow(): void {
    const old = this.table;
    const oldIds = this.ids;
    const cap = (this.mask + 1) * 2;
    this.table = new Int32Array(cap * S);
    this.ids = new Int32Array(cap);
    this.mask = cap - 1;
    this.limit = Math.floor(cap * MAX_LOAD);
    for (let i = 0; i < oldIds.length; i++) {
      const o = i * S;
      if (old[o] !== 0) this.place(oldIds[i]!, old[o]!, old[o + 1]!, old[o + 2]!, old[o + 3]!);
    }
  }

  /** Slot of indexed row `id` (probed from its key: rows keep no slot number), or -1. */
  slotOf(id: number): number {
    if (!this.rows.indexed(id)) return -1;
    const t = this.table;
    let s = this.home(h1Of(this.rows.keys, id * 32));
    for (;;) {
      if (t[s * S] === 0) return -1;
      if (this.ids[s] === id) return s;
      s = (s + 1) & this.mask;
    }
  }

  /** Row `id`'s tier bits changed. */
  sync(id: number): void {
    const slot = this.slotOf(id);
    if (slot < 0) return;
    const o = slot * S + 2;
    this.table[o] = (this.table[o]! & ~0xff) | (this.rows.where[id]! & 0xff);
  }

  drop(id: number): void {
    let i = this.slotOf(id);
    if (i < 0) return;
    this.rows.setIndexed(id, false);
    const t = this.table;
    this.nsCount[t[i * S + 2]! >>> 8]!--;
    // Backward-shift deletion: pull later members of the probe run into the hole, so no tombstones.
    let j = i;
    for (;;) {
      j = (j + 1) & this.mask;
      if (t[j * S] === 0) break;
      const h = this.home(t[j * S]!);
      const stays = i <= j ? i < h && h <= j : i < h || h <= j;
      if (stays) continue;
      t.copyWithin(i * S, j * S, j * S + S);
      this.ids[i] = this.ids[j]!;
      i = j;
    }
    t.fill(0, i * S, i * S + S);
    this.count--;
  }

  /** Slot of key `i` of a wire `keys` buffer (n × 32 bytes) in namespace `nsSlot`, or -1 (advisory: 60 bits). */
  find(nsSlot: number, keys: Buffer, i: number): number {
    const h1p = (keys.readUInt32BE(i * 32) >>> 2) + 1;
    const h2 = keys.readUInt32BE(i * 32 + 4) >>> 2;
    const t = this.table;
    let s = this.home(h1p);
    for (;;) {
      const a = t[s * S];
      if (a === 0) return -1;
      if (a === h1p && t[s * S + 1] === h2 && t[s * S + 2]! >>> 8 === nsSlot) return s;
      s = (s + 1) & this.mask;
    }
  }

  /** Row id of the block whose 32 hash bytes are `hash[off, off + 32)` in namespace `nsSlot` (exact), or -1. */
  findKey(nsSlot: number, hash: Uint8Array, off: number): number {
    const h1p = h1Of(hash, off);
    const h2 = h2Of(hash, off);
    const t = this.table;
    let s = this.home(h1p);
    for (;;) {
      const a = t[s * S];
      if (a === 0) return -1;
      if (a === h1p && t[s * S + 1] === h2 && t[s * S + 2]! >>> 8 === nsSlot && this.rows.sameHash(this.ids[s]!, hash, off)) return this.ids[s]!;
      s = (s + 1) & this.mask;
    }
  }

  where(slot: number): number {
    return this.table[slot * S + 2]! & 0xff;
  }

  size(slot: number): number {
    return this.table[slot * S + 3]!;
  }

  /** Row id at `slot`. */
  id(slot: number): number {
    return this.ids[slot]!;
  }

  /** Slots in the table (bench and tests: memory is 20 bytes per slot). */
  get capacity(): number {
    return this.mask + 1;
  }

  /** Blocks indexed in namespace slot `ns`. */
  countIn(ns: number): number {
    return ns < this.nsCount.length ? this.nsCount[ns]! : 0;
  }

  /** Row ids of every indexed block (of the namespace slots in `only`, when given), in slot order (a snapshot). */
  rowIds(only?: Set<number>): Int32Array {
    let total = this.count;
    if (only) { total = 0; for (const ns of only) total += this.countIn(ns); }
    const out = new Int32Array(total);
    let n = 0;
    const t = this.table;
    for (let i = 0; i <= this.mask && n < total; i++) {
      if (t[i * S] !== 0 && (!only || only.has(t[i * S + 2]! >>> 8))) out[n++] = this.ids[i]!;
    }
    return out;
  }
}
