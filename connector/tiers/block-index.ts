/**
 * BlockIndex — every block the TierStack knows, by storage key: the rows (block-table.ts) and the hash table that
 * finds them (fast-index.ts), behind a small Map-like read API (get / has / size / keys / values) for the control
 * plane and plugins.
 *
 * Rules:
 * - At most one row per key is indexed. A row leaves the index when no tier holds it and no write of it is pending
 *   (`dropIfGone`), or on delete; it is released (reused later) only once it is also out of every tier and has no
 *   write pending, so a queued write always finds its row intact.
 * - `get` matches the whole 256-bit key; LOOKUP on wire keys (`fast.find`) is advisory (60 bits, fast-index.ts).
 * - Views (BlockEntry) are made per call: compare them with `same` or `holds`, never `===`.
 */
import { BlockEntry, BlockTable } from './block-table.js';
import { FastIndex } from './fast-index.js';

/** Value of a lowercase hex digit by char code, else -1. */
const HEX = new Int8Array(128).fill(-1);
for (let c = 0; c < 16; c++) HEX['0123456789abcdef'.charCodeAt(c)] = c;

export class BlockIndex {
  readonly table: BlockTable;
  readonly fast: FastIndex;
  /** Scratch for parsing a key's hash (get / has). */
  private readonly hash = Buffer.alloc(32);

  constructor(keepHeat: boolean, heatBase: number) {
    this.table = new BlockTable(keepHeat, heatBase);
    this.fast = new FastIndex(this.table);
  }

  get size(): number {
    return this.fast.count;
  }

  private find(key: string): number {
    if (key.length !== 97 || key.charCodeAt(32) !== 47) return -1;
    const ns = this.table.nsSlot(key.slice(0, 32));
    if (ns === undefined) return -1;
    // Parse the 64 lowercase hex digits into the scratch (a regex plus Buffer.write cost ~10× this loop).
    const h = this.hash;
    for (let i = 0; i < 32; i++) {
      const a = key.charCodeAt(33 + 2 * i);
      const b = key.charCodeAt(34 + 2 * i);
      const hi = a < 128 ? HEX[a]! : -1;
      const lo = b < 128 ? HEX[b]! : -1;
      if ((hi | lo) < 0) return -1;
      h[i] = (hi << 4) | lo;
    }
    return this.fast.findKey(ns, h, 0);
  }

  /** The indexed block of `key`, or undefined. */
  get(key: string): BlockEntry | undefined {
    const id = this.find(key);
    return id === -1 ? undefined : this.table.view(id, key);
  }

  has(key: string): boolean {
    return this.find(key) !== -1;
  }

  /** Is `e` the block indexed under its key (not deleted or replaced since the view was made)? */
  holds(e: BlockEntry): boolean {
    return e.live && this.table.indexed(e.id);
  }

  /** Index a new block (throws on a malformed key or a size over MAX_BLOCK_BYTES). */
  create(key: string, size: number): BlockEntry {
    const id = this.table.alloc(key, size);
    this.fast.add(id);
    return this.table.view(id, key);
  }

  /** e's tier bits changed. */
  sync(e: BlockEntry): void {
    if (e.live) this.fast.sync(e.id);
  }

  /** Take e out of the index (its row lives on while a tier holds it or a write of it is pending). */
  drop(e: BlockEntry): void {
    if (!e.live) return;
    this.fast.drop(e.id);
    this.releaseIfDead(e);
  }

  /** Drop e from the index once no tier holds it and no write of it is pending. */
  dropIfGone(e: BlockEntry): void {
    if (e.live && e.where === 0 && e.pending === 0) this.drop(e);
  }

  /** Release e's row if nothing refers to it any more (not indexed, in no tier, no write pending). */
  releaseIfDead(e: BlockEntry): void {
    const t = this.table;
    if (e.live && !t.indexed(e.id) && t.where[e.id] === 0 && t.pending[e.id] === 0) t.release(e.id);
  }

  /** Blocks indexed in namespace `ns` (kept per namespace as blocks come and go: O(1)). */
  blocksIn(ns: string): number {
    const slot = this.table.nsSlot(ns);
    return slot === undefined ? 0 : this.fast.countIn(slot);
  }

  /** Storage keys of every indexed block, or of those in `namespaces` (only their keys are built). */
  *keys(namespaces?: Set<string>): IterableIterator<string> {
    let only: Set<number> | undefined;
    if (namespaces) {
      only = new Set();
      for (const ns of namespaces) { const slot = this.table.nsSlot(ns); if (slot !== undefined) only.add(slot); }
    }
    for (const id of this.fast.rowIds(only)) if (this.table.indexed(id)) yield this.table.keyOf(id);
  }

  *values(): IterableIterator<BlockEntry> {
    for (const id of this.fast.rowIds()) if (this.table.indexed(id)) yield this.table.view(id);
  }

  /** Rows in use (bench and tests: indexed blocks plus deleted ones a queued write still holds). */
  get rows(): number {
    return this.table.live;
  }
}
