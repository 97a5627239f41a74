/**
 * FastIndex — the LOOKUP/EXISTS index of the TierStack: an open-addressing hash table (linear probing,
 * backward-shift deletion) in one Int32Array, 4 ints (16 bytes) per slot, four slots per cache line:
 *   [h1 + 1 (0 = empty), h2, namespace slot << 8 | where (tier bits), size (bytes, capped at 2^31 − 1)]
 * plus a parallel array of the slots' BlockEntry objects. A probe touches one cache line and no JS object, so an
 * 8,192-block chain is answered in well under a millisecond even with a million blocks indexed
 * (bench/index-memory.ts); a Map keyed by strings or numbers pays several cache misses per key.
 * Memory: (16 + 8) bytes per slot; the table holds at most 70 % full (MAX_LOAD) and doubles when that is passed,
 * so 24–69 bytes per indexed block (10 M blocks: 2^24 slots, 40 bytes per block).
 *
 * Rules:
 * - h1 and h2 are 30 bits each of the block hash (bytes 0–3 and 4–7, big-endian, >>> 2). The index is advisory:
 *   two keys sharing those 60 bits in one namespace would make a LOOKUP over-report, and the GET that follows —
 *   which always matches the full 256-bit key — answers a miss, so the engine recomputes.
 * - where is 8 bits: a TierStack has at most MAX_TIERS tiers (its constructor checks); at most 2^23 namespaces
 *   (add throws beyond; namespace slots are never reused, so a namespace id keeps its slot for the process).
 * - The TierStack calls `add` when a block enters its index, `drop` when it leaves, and `sync` whenever the
 *   block's tier bits change; `BlockEntry.fslot` is the block's slot (moved by deletions and growth).
 */
import type { BlockEntry } from './tier-types.js';

const S = 4;
const MAX_SIZE = 0x7fffffff;
/** Tier bits fit in the low byte of word 2 of a slot. */
export const MAX_TIERS = 8;
const MAX_NS = 1 << 23;
/** Grow once more than this share of the slots is used (linear probing stays short below ~0.75). */
const MAX_LOAD = 0.7;

export class FastIndex {
  private table = new Int32Array(1024 * S);
  private entries: (BlockEntry | undefined)[] = new Array(1024);
  private mask = 1023;
  private count = 0;
  private limit = Math.floor(1024 * MAX_LOAD);
  private readonly nsSlots = new Map<string, number>();

  /** Small integer of a namespace id, or undefined if no block of it was ever indexed. */
  namespace(ns: string): number | undefined {
    return this.nsSlots.get(ns);
  }

  private home(h1p: number): number {
    return (Math.imul(h1p, 0x9e3779b1) >>> 0) & this.mask;
  }

  add(e: BlockEntry): void {
    if (this.count + 1 > this.limit) this.grow();
    const ns = e.key.slice(0, 32);
    let nsSlot = this.nsSlots.get(ns);
    if (nsSlot === undefined) {
      if (this.nsSlots.size >= MAX_NS) throw new Error(`fast index: more than ${MAX_NS} namespaces`);
      this.nsSlots.set(ns, (nsSlot = this.nsSlots.size));
    }
    const h1p = (parseInt(e.key.substr(33, 8), 16) >>> 2) + 1;
    const h2 = parseInt(e.key.substr(41, 8), 16) >>> 2;
    this.place(e, h1p, h2, (nsSlot << 8) | (e.where & 0xff));
  }

  /** `nsWhere`: word 2 of the slot (namespace slot << 8 | tier bits). */
  private place(e: BlockEntry, h1p: number, h2: number, nsWhere: number): void {
    const t = this.table;
    let i = this.home(h1p);
    while (t[i * S] !== 0) i = (i + 1) & this.mask;
    const o = i * S;
    t[o] = h1p;
    t[o + 1] = h2;
    t[o + 2] = nsWhere;
    t[o + 3] = Math.min(e.size, MAX_SIZE);
    this.entries[i] = e;
    e.fslot = i;
    this.count++;
  }

  private grow(): void {
    const old = this.table;
    const olds = this.entries;
    const cap = (this.mask + 1) * 2;
    this.table = new Int32Array(cap * S);
    this.entries = new Array(cap);
    this.mask = cap - 1;
    this.limit = Math.floor(cap * MAX_LOAD);
    this.count = 0;
    for (let i = 0; i < olds.length; i++) {
      const e = olds[i];
      if (e) this.place(e, old[i * S]!, old[i * S + 1]!, old[i * S + 2]!);
    }
  }

  /** The block's tier bits changed. */
  sync(e: BlockEntry): void {
    if (e.fslot < 0 || this.entries[e.fslot] !== e) return;
    const o = e.fslot * S + 2;
    this.table[o] = (this.table[o]! & ~0xff) | (e.where & 0xff);
  }

  drop(e: BlockEntry): void {
    let i = e.fslot;
    if (i < 0 || this.entries[i] !== e) return;
    e.fslot = -1;
    const t = this.table;
    // Backward-shift deletion: pull later members of the probe run into the hole, so no tombstones.
    let j = i;
    for (;;) {
      j = (j + 1) & this.mask;
      if (t[j * S] === 0) break;
      const h = this.home(t[j * S]!);
      const stays = i <= j ? i < h && h <= j : i < h || h <= j;
      if (stays) continue;
      t.copyWithin(i * S, j * S, j * S + S);
      const moved = this.entries[j]!;
      this.entries[i] = moved;
      moved.fslot = i;
      i = j;
    }
    t.fill(0, i * S, i * S + S);
    this.entries[i] = undefined;
    this.count--;
  }

  /** Slot of key `i` of a wire `keys` buffer (n × 32 bytes) in namespace `nsSlot`, or -1. */
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

  where(slot: number): number {
    return this.table[slot * S + 2]! & 0xff;
  }

  size(slot: number): number {
    return this.table[slot * S + 3]!;
  }

  /** Slots in the table (bench and tests: memory is 24 bytes per slot). */
  get capacity(): number {
    return this.mask + 1;
  }

  entry(slot: number): BlockEntry {
    return this.entries[slot]!;
  }
}
