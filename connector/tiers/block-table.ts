/**
 * BlockTable — the TierStack's per-block state as columns (a struct of arrays) indexed by a row id, instead of one
 * JS object and one 97-character key string per block. A row costs 54 bytes (62 with the `heat` columns), the
 * FastIndex slot that finds it 20–40, each tier's order 8–12 (bench/index-memory.ts: ≤ 128 bytes a block at 10 M).
 *
 * Rules:
 * - A storage key is `<namespace, 32 chars>/<block hash, 64 lowercase hex>`; `alloc` refuses any other shape
 *   (KVS-internal callers build keys with connector/keys.ts). The key is kept as its 32 hash bytes plus a namespace
 *   slot (namespace strings are interned, at most 2^23, never reused) and rebuilt on demand.
 * - A row lives while the block is indexed, held by a tier or has a write pending (the TierStack releases it when
 *   none is true); a released row is reused (free list), and its generation is bumped first.
 * - BlockEntry is a view of one row, made on demand (cheap: five fields). It carries the key and size it was made
 *   with; every other field reads and writes the row — while the row still holds that block (`live`, generation
 *   check). A stale view reads as absent (where = pending = pins = seen = 0) and ignores writes, so a write that
 *   lands after its block was deleted can never touch the block that reuses the row.
 * - Columns are zero-filled and grow by 1.5×: rows never used cost no resident memory beyond the copy.
 * - Checksums are xxh64 hex (16 chars, connector/checksum.ts) kept as 8 bytes; another form a driver listed is kept
 *   as is (a side map), never rewritten.
 */
import type { HeatState } from './policy.js';

const MAX_NS = 1 << 23;
const HASH_HEX = /^[0-9a-f]{64}$/;
const SUM_HEX = /^[0-9a-f]{16}$/;
/** Largest block a row holds (the size column is 32-bit). */
export const MAX_BLOCK_BYTES = 0xffffffff;

/** Is `key` a storage key a row can hold (`<32-char namespace>/<64 lowercase hex>`)? */
export function isBlockKey(key: string): boolean {
  return key.length === 97 && key.charCodeAt(32) === 47 && HASH_HEX.test(key.slice(33));
}

type Column = Uint8Array | Uint16Array | Uint32Array | Int32Array | Float32Array;

/** A copy of column `a` with `n` entries (the new ones zero). */
function grown<T extends Column>(a: T, n: number): T {
  const b = new (a.constructor as new (n: number) => T)(n);
  b.set(a);
  return b;
}

/** Entries a column indexed by row id should have to hold index `min`: 1.5× growth, at least 1,024. */
export function columnLength(current: number, min: number): number {
  return Math.max(min, Math.ceil(current * 1.5), 1024);
}

/** `a` itself if it holds index `id`, else a grown copy (columnLength): every column indexed by row id grows so. */
export function columnFor<T extends Column>(a: T, id: number): T {
  return id < a.length ? a : grown(a, columnLength(a.length, id + 1));
}

export class BlockTable {
  private cap = 0;
  private used = 0;
  private readonly free: number[] = [];
  /** Rows holding a block now. */
  live = 0;
  keys = new Uint8Array(0);
  private keysBuf = Buffer.alloc(0);
  ns = new Int32Array(0);
  size = new Uint32Array(0);
  private sums = new Uint8Array(0);
  private sumsBuf = Buffer.alloc(0);
  /** Bits 0–1: checksum kind (0 none yet, 1 in `sums`, 2 in `oddSums`); bit 2: indexed (fast-index.ts sets it);
   * bit 3: readable from a queued lower-tier write (the TierStack's `inflight`). */
  private flags = new Uint8Array(0);
  private readonly oddSums = new Map<number, string>();
  where = new Uint8Array(0);
  pending = new Uint8Array(0);
  seen = new Uint8Array(0);
  pins = new Uint16Array(0);
  gen = new Int32Array(0);
  heat: Float32Array | undefined;
  /** ms since `heatBase`, so a 32-bit float keeps ~10 ms precision over days. */
  heatAt: Float32Array | undefined;
  private readonly nsNames: string[] = [];
  private readonly nsSlots = new Map<string, number>();

  /** `keepHeat`: keep decayed heat (policies and admission filters that read it say so); else it reads as 0. */
  constructor(keepHeat: boolean, private readonly heatBase = 0) {
    if (keepHeat) { this.heat = new Float32Array(0); this.heatAt = new Float32Array(0); }
  }

  private grow(min: number): void {
    const n = columnLength(this.cap, min);
    this.keys = grown(this.keys, n * 32);
    this.keysBuf = Buffer.from(this.keys.buffer, this.keys.byteOffset, this.keys.byteLength);
    this.sums = grown(this.sums, n * 8);
    this.sumsBuf = Buffer.from(this.sums.buffer, this.sums.byteOffset, this.sums.byteLength);
    this.ns = grown(this.ns, n);
    this.size = grown(this.size, n);
    this.flags = grown(this.flags, n);
    this.where = grown(this.where, n);
    this.pending = grown(this.pending, n);
    this.seen = grown(this.seen, n);
    this.pins = grown(this.pins, n);
    this.gen = grown(this.gen, n);
    if (this.heat) { this.heat = grown(this.heat, n); this.heatAt = grown(this.heatAt!, n); }
    this.cap = n;
  }

  /** Rows the columns have room for (bench: memory). */
  get capacity(): number {
    return this.cap;
  }

  /** Namespace slot of `ns`, or undefined if no block of it was ever stored. */
  nsSlot(ns: string): number | undefined {
    return this.nsSlots.get(ns);
  }

  /** A new row for `key` (well-formed, see the rules), `size` bytes; throws on a malformed key. */
  alloc(key: string, size: number): number {
    const hex = key.slice(33);
    if (!isBlockKey(key)) throw new Error(`block key must be <32-char namespace>/<64 lowercase hex>, got '${key.slice(0, 120)}'`);
    if (!(size >= 0 && size <= MAX_BLOCK_BYTES)) throw new RangeError(`block size ${size} is outside 0–${MAX_BLOCK_BYTES}`);
    const ns = key.slice(0, 32);
    let slot = this.nsSlots.get(ns);
    if (slot === undefined) {
      if (this.nsSlots.size >= MAX_NS) throw new Error(`block table: more than ${MAX_NS} namespaces`);
      this.nsSlots.set(ns, (slot = this.nsSlots.size));
      this.nsNames.push(ns);
    }
    const id = this.free.length ? this.free.pop()! : this.used++;
    if (id >= this.cap) this.grow(id + 1);
    this.keysBuf.write(hex, id * 32, 32, 'hex');
    this.ns[id] = slot;
    this.size[id] = size;
    this.flags[id] = 0;
    this.where[id] = 0;
    this.pending[id] = 0;
    this.seen[id] = 0;
    this.pins[id] = 0;
    if (this.heat) { this.heat[id] = 0; this.heatAt![id] = 0; }
    this.live++;
    return id;
  }

  /** The row's block is gone: bump its generation (stale views go inert) and reuse the row later. */
  release(id: number): void {
    this.gen[id] = (this.gen[id]! + 1) | 0;
    this.where[id] = 0;
    this.pending[id] = 0;
    this.pins[id] = 0;
    if ((this.flags[id]! & 3) === 2) this.oddSums.delete(id);
    this.flags[id] = 0;
    this.free.push(id);
    this.live--;
  }

  keyOf(id: number): string {
    return `${this.nsNames[this.ns[id]!]}/${this.keysBuf.toString('hex', id * 32, id * 32 + 32)}`;
  }

  /** Do row `id`'s hash bytes equal `hash[off, off + 32)`? */
  sameHash(id: number, hash: Uint8Array, off: number): boolean {
    const k = this.keys;
    const o = id * 32;
    for (let i = 0; i < 32; i++) if (k[o + i] !== hash[off + i]) return false;
    return true;
  }

  /** A view of row `id` (its current block); `key` when the caller has it already. */
  view(id: number, key?: string): BlockEntry {
    return new BlockEntry(this, id, this.gen[id]!, key ?? this.keyOf(id), this.size[id]!);
  }

  /** Is row `id` in the FastIndex? */
  indexed(id: number): boolean {
    return (this.flags[id]! & 4) !== 0;
  }

  setIndexed(id: number, on: boolean): void {
    this.flags[id] = on ? this.flags[id]! | 4 : this.flags[id]! & ~4;
  }

  /** Is row `id` readable from a queued write (TierStack `inflight`)? LOOKUP counts it as a DRAM hit. */
  queued(id: number): boolean {
    return (this.flags[id]! & 8) !== 0;
  }

  setQueued(id: number, on: boolean): void {
    this.flags[id] = on ? this.flags[id]! | 8 : this.flags[id]! & ~8;
  }

  checksumOf(id: number): string {
    const k = this.flags[id]! & 3;
    return k === 1 ? this.sumsBuf.toString('hex', id * 8, id * 8 + 8) : k === 2 ? this.oddSums.get(id)! : '';
  }

  setChecksum(id: number, sum: string): void {
    const f = this.flags[id]! & ~3;
    if ((this.flags[id]! & 3) === 2) this.oddSums.delete(id);
    if (sum === '') this.flags[id] = f;
    else if (SUM_HEX.test(sum)) { this.sumsBuf.write(sum, id * 8, 8, 'hex'); this.flags[id] = f | 1; }
    else { this.oddSums.set(id, sum); this.flags[id] = f | 2; }
  }

  heatOf(id: number): number {
    return this.heat ? this.heat[id]! : 0;
  }

  heatAtOf(id: number): number {
    return this.heatAt ? this.heatAt[id]! + this.heatBase : 0;
  }

  setHeat(id: number, heat: number, at: number): void {
    if (!this.heat) return;
    this.heat[id] = heat;
    this.heatAt![id] = at - this.heatBase;
  }
}

/**
 * One block of the TierStack: a view of its BlockTable row (see the rules above). Compare two views with `same`,
 * not `===` (each lookup makes a new one).
 */
export class BlockEntry implements HeatState {
  constructor(private readonly t: BlockTable, readonly id: number, readonly gen: number, readonly key: string, readonly size: number) {}

  /** The row still holds this block. */
  get live(): boolean {
    return this.t.gen[this.id] === this.gen;
  }

  /** Another view of the same block (same row, same generation). */
  same(o: BlockEntry | undefined): boolean {
    return o !== undefined && o.id === this.id && o.gen === this.gen;
  }

  /** Bit i set: tier i holds a complete copy. */
  get where(): number { return this.live ? this.t.where[this.id]! : 0; }
  set where(v: number) { if (this.live) this.t.where[this.id] = v; }
  /** Bit i set: a write to tier i is queued or running. */
  get pending(): number { return this.live ? this.t.pending[this.id]! : 0; }
  set pending(v: number) { if (this.live) this.t.pending[this.id] = v; }
  /** Accesses (puts + hits), saturating at 255. */
  get seen(): number { return this.live ? this.t.seen[this.id]! : 0; }
  set seen(v: number) { if (this.live) this.t.seen[this.id] = Math.min(v, 255); }
  get pins(): number { return this.live ? this.t.pins[this.id]! : 0; }
  set pins(v: number) {
    if (v > 0xffff) throw new RangeError('more than 65,535 pins on one block');
    if (this.live) this.t.pins[this.id] = v;
  }
  /** xxh64 of the bytes; '' until first needed (computed off the request path, before any lower-tier write). */
  get checksum(): string { return this.live ? this.t.checksumOf(this.id) : ''; }
  set checksum(v: string) { if (this.live) this.t.setChecksum(this.id, v); }
  get heat(): number { return this.live ? this.t.heatOf(this.id) : 0; }
  set heat(v: number) { if (this.live) this.t.setHeat(this.id, v, this.t.heatAtOf(this.id)); }
  get heatAt(): number { return this.live ? this.t.heatAtOf(this.id) : 0; }
  set heatAt(v: number) { if (this.live) this.t.setHeat(this.id, this.t.heatOf(this.id), v); }
}
