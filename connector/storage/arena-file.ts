/**
 * One shared-memory arena file and its slot allocator (the byte layout is the contract in arena-layout.ts).
 *
 * - The file is sparse (tmpfs pages are committed only when written) and sized once at creation.
 * - The allocator carves `chunkBytes` chunks into slots of one stride each (a size class: data rounded up to
 *   4 KiB below 64 KiB, else to 1/8 of its power of two, plus one header page). Slots handed out one after
 *   another from a fresh chunk are consecutive, so a chain saved together lies at one stride and the engine
 *   side copies it as one strided run. Values larger than a quarter chunk take whole chunks of their own.
 * - A chunk whose slots are all free goes back to the pool (any class may take it next).
 * - Slot headers are written with positional I/O (fs.writeSync at the slot offset); the sidecar is the only
 *   writer of headers. Generations only grow, so a reader that copied a slot can tell afterwards whether the
 *   slot changed hands (state, generation, key and namespace are all checked by the reader).
 */
import { closeSync, ftruncateSync, openSync, readSync, writeSync, writevSync, fchmodSync, fchownSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import {
  ARENA_FILE_HEADER_BYTES, ARENA_MAGIC, ARENA_VERSION, PAGE, SLOT_HEADER_BYTES, SLOT_MAGIC, SlotState, dataStride,
} from './arena-layout.js';

export interface Slot {
  /** Byte offset of the slot's data (its header page starts PAGE bytes earlier). */
  readonly off: number;
  readonly stride: number;
  readonly chunk: number;
  readonly index: number;
  /** Current generation (what the header says). */
  gen: number;
  /** Bytes of the value stored (≤ stride − PAGE). */
  size: number;
}

interface Chunk {
  readonly index: number;
  readonly stride: number;
  readonly slots: number;
  used: number;
  bump: number;
  /** Freed slot indexes; kept in descending order when `sorted`, so pop() hands out the lowest one. */
  readonly free: number[];
  sorted: boolean;
  /** Chunks in this run (a large value spans several). */
  readonly span: number;
  /** Slots whose data pages were all written once (committed in tmpfs). */
  readonly committed: Uint8Array;
}

/** Zeros between a slot header and its data (the rest of the header page), written with the header. */
const HEADER_PAD = Buffer.alloc(PAGE - SLOT_HEADER_BYTES);

export interface ArenaFileOptions {
  path: string;
  bytes: number;
  chunkBytes: number;
  mode: number;
  gid?: number;
  tenant: string;
}

export class ArenaFile {
  readonly fd: number;
  readonly token = randomBytes(16);
  readonly id = randomBytes(8).toString('hex');
  readonly bytes: number;
  private readonly chunkOwner: (Chunk | undefined)[];
  /** Per chunk: bytes from its start whose tmpfs pages are known committed (written once), whatever the stride. */
  private readonly committedTo: Float64Array;
  private readonly open = new Map<number, Set<Chunk>>(); // stride → chunks with a free slot
  private readonly hdr = Buffer.alloc(SLOT_HEADER_BYTES);
  private gens = 0;
  /** Size class (stride) → one emptied chunk kept for it. */
  private readonly spare = new Map<number, Chunk>();
  /** Freed slots whose FREE header is not written yet, by data offset (see free()). */
  private readonly unstamped = new Map<number, Slot>();
  private stampQueued = false;
  /** Every chunk below this index is owned (takeChunks starts here). */
  private searchFrom = 0;
  private closed = false;
  allocated = 0;

  constructor(readonly opts: ArenaFileOptions) {
    const chunks = Math.max(1, Math.ceil((opts.bytes - ARENA_FILE_HEADER_BYTES) / opts.chunkBytes));
    this.bytes = ARENA_FILE_HEADER_BYTES + chunks * opts.chunkBytes;
    this.chunkOwner = new Array(chunks).fill(undefined);
    this.committedTo = new Float64Array(chunks);
    this.fd = openSync(opts.path, 'wx+', opts.mode);
    try {
      fchmodSync(this.fd, opts.mode); // the umask must not widen or narrow what the operator asked for
      if (opts.gid !== undefined) fchownSync(this.fd, process.getuid?.() ?? 0, opts.gid);
      ftruncateSync(this.fd, this.bytes);
      const h = Buffer.alloc(64);
      h.write(ARENA_MAGIC, 0, 'latin1');
      h.writeUInt32LE(ARENA_VERSION, 8);
      h.writeUInt32LE(process.pid, 12);
      this.token.copy(h, 16);
      h.writeUInt32LE(PAGE, 32);
      h.writeUInt32LE(SLOT_HEADER_BYTES, 36);
      h.writeUInt32LE(opts.chunkBytes, 40);
      writeSync(this.fd, h, 0, h.length, 0);
    } catch (err) {
      closeSync(this.fd);
      throw err;
    }
  }

  /** A slot for a value of `size` bytes, or undefined when the arena has no room for it. */
  alloc(size: number): Slot | undefined {
    const stride = dataStride(size) + PAGE;
    const cb = this.opts.chunkBytes;
    const span = Math.ceil(stride / cb);
    const slots = stride > cb / 4 ? 1 : Math.floor(cb / stride);
    let set = slots > 1 ? this.open.get(stride) : undefined;
    let c: Chunk | undefined = set?.values().next().value;
    if (!c) {
      c = this.spare.get(stride);
      if (c) this.spare.delete(stride);
      else c = this.takeChunks(span, stride, slots) ?? (this.dropSpares() ? this.takeChunks(span, stride, slots) : undefined);
      if (!c) return undefined;
      if (slots > 1) {
        if (!set) this.open.set(stride, (set = new Set()));
        set.add(c);
      }
    }
    // Lowest free slot first: a batch of allocations gets ascending offsets (evenly spaced when the chunk's slots
    // were freed together), which readers copy as one strided run instead of slot by slot (a LIFO free list
    // handed them out in descending order).
    if (c.free.length && !c.sorted) {
      c.free.sort((x, y) => y - x);
      c.sorted = true;
    }
    const index = c.free.length ? c.free.pop()! : c.bump++;
    c.used++;
    if (c.used === c.slots) set?.delete(c);
    this.allocated += stride;
    const off = ARENA_FILE_HEADER_BYTES + c.index * cb + index * stride + PAGE;
    this.unstamped.delete(off); // its next header (WRITING or LIVE) is written by the caller
    return { off, stride, chunk: c.index, index, gen: 0, size };
  }

  /**
   * Commit the memory of a slot's chunk(s) before a client writes through its own mapping: a store into a tmpfs
   * page that cannot be allocated (shm full) would kill the engine with SIGBUS; a write here fails with ENOSPC
   * instead, and the slot is not handed out. Once per chunk (pages stay committed when slots are reused).
   */
  commitMemory(s: Slot): boolean {
    const c = this.chunkOwner[s.chunk];
    if (!c || c.committed[s.index]) return true;
    const start = s.off - PAGE - ARENA_FILE_HEADER_BYTES - s.chunk * this.opts.chunkBytes; // within the chunk
    const done = this.committedTo[s.chunk]!;
    if (start + s.stride > done) {
      const from = Math.max(s.off, ARENA_FILE_HEADER_BYTES + s.chunk * this.opts.chunkBytes + done);
      const len = s.off + s.stride - PAGE - from;
      const zero = Buffer.alloc(Math.min(len, 4 << 20));
      try {
        for (let o = 0; o < len; o += zero.length) writeSync(this.fd, zero, 0, Math.min(zero.length, len - o), from + o);
      } catch {
        return false;
      }
      if (start <= done) this.committedTo[s.chunk] = start + s.stride;
    }
    c.committed[s.index] = 1;
    return true;
  }

  /** Give a slot back (its header must already say FREE). */
  release(s: Slot): void {
    const c = this.chunkOwner[s.chunk];
    if (!c) return;
    c.used--;
    this.allocated -= s.stride;
    c.free.push(s.index);
    c.sorted = false;
    if (c.used === 0) {
      this.open.get(c.stride)?.delete(c);
      // One emptied chunk per size class stays with the class (reused without a search, its pages committed);
      // others go back to the pool for any class.
      if (!this.spare.has(c.stride)) this.spare.set(c.stride, c);
      else this.toPool(c);
      return;
    }
    if (c.slots > 1) {
      let set = this.open.get(c.stride);
      if (!set) this.open.set(c.stride, (set = new Set()));
      set.add(c);
    }
  }

  /**
   * Free a slot nothing refers to any more. Its FREE header is written at the end of the current task unless the
   * slot is handed out again first (then the next owner's header, with a newer generation, replaces it): a
   * delete-then-put of the same size class costs one header write, not two. A reader copying the slot sees a
   * new generation once it is reused either way.
   */
  free(s: Slot): void {
    this.unstamped.set(s.off, s);
    this.release(s);
    if (!this.stampQueued) {
      this.stampQueued = true;
      queueMicrotask(this.stampFreed);
    }
  }

  private readonly stampFreed = (): void => {
    this.stampQueued = false;
    if (this.closed) return;
    for (const s of this.unstamped.values()) this.stamp(s, SlotState.FREE);
    this.unstamped.clear();
  };

  /** Hand the class-kept empty chunks back to the pool (a search found no free run). True if there were any. */
  private dropSpares(): boolean {
    if (this.spare.size === 0) return false;
    for (const c of this.spare.values()) this.toPool(c);
    this.spare.clear();
    return true;
  }

  private toPool(c: Chunk): void {
    // Headers still to be stamped FREE must land before the chunk's bytes can belong to another class.
    if (this.unstamped.size) this.stampFreed();
    for (let i = 0; i < c.span; i++) this.chunkOwner[c.index + i] = undefined;
    if (c.index < this.searchFrom) this.searchFrom = c.index;
  }

  private takeChunks(span: number, stride: number, slots: number): Chunk | undefined {
    const owner = this.chunkOwner;
    // Chunks below searchFrom are all owned: the search starts there, not at 0.
    for (let i = this.searchFrom; i + span <= owner.length; i++) {
      let j = 0;
      while (j < span && owner[i + j] === undefined) j++;
      if (j === span) {
        const c: Chunk = { index: i, stride, slots, used: 0, bump: 0, free: [], sorted: true, span, committed: new Uint8Array(slots) };
        for (let k = 0; k < span; k++) owner[i + k] = c;
        if (i === this.searchFrom) this.searchFrom = i + span;
        return c;
      }
      if (i === this.searchFrom && j === 0) this.searchFrom = i + 1;
      i += j;
    }
    return undefined;
  }

  /** Fill `hdr` for slot s in `state` with a new generation; key and namespace as hex (LIVE). */
  private header(s: Slot, state: SlotState, keyHex?: string, nsHex?: string): Buffer {
    const h = this.hdr;
    h.fill(0);
    s.gen = ++this.gens;
    h.writeUInt32LE(SLOT_MAGIC, 0);
    h.writeUInt32LE(state, 4);
    h.writeUInt32LE(s.gen % 2 ** 32, 8);
    h.writeUInt32LE(Math.floor(s.gen / 2 ** 32), 12);
    h.writeUInt32LE(s.size % 2 ** 32, 16);
    h.writeUInt32LE(Math.floor(s.size / 2 ** 32), 20);
    if (keyHex) h.write(keyHex, 32, 32, 'hex');
    if (nsHex) h.write(nsHex, 64, 16, 'hex');
    return h;
  }

  /** Write a slot header: state, a new generation, and (for LIVE) what the slot holds. Returns the generation. */
  stamp(s: Slot, state: SlotState, key?: Buffer, ns?: Buffer): number {
    const h = this.header(s, state);
    key?.copy(h, 32);
    ns?.copy(h, 64);
    writeSync(this.fd, h, 0, h.length, s.off - PAGE);
    return s.gen;
  }

  /**
   * Store a value the sidecar itself writes and publish it LIVE, header page and data in one pwritev (readers
   * copy first and check the header after: a slot being reused shows them a new generation either way, and no
   * descriptor with the new generation exists before this returns). Throws on ENOSPC; the caller frees the slot.
   */
  writeLive(s: Slot, value: Buffer, keyHex: string, nsHex: string): number {
    const h = this.header(s, SlotState.LIVE, keyHex, nsHex);
    let bufs = [h, HEADER_PAD, value];
    let pos = s.off - PAGE;
    let left = PAGE + value.length;
    for (;;) {
      const n = writevSync(this.fd, bufs, pos);
      left -= n;
      if (left === 0) break;
      if (n === 0) throw new Error(`arena ${this.opts.path}: short write at ${pos}`);
      pos += n;
      bufs = skipBytes(bufs, n);
    }
    if (Math.ceil(value.length / PAGE) * PAGE >= s.stride - PAGE) {
      const c = this.chunkOwner[s.chunk];
      if (c) c.committed[s.index] = 1; // every data page touched: later writes cannot hit ENOSPC
    }
    return s.gen;
  }

  read(s: Slot, into?: Buffer): Buffer {
    const b = into ?? Buffer.allocUnsafe(s.size);
    let done = 0;
    while (done < s.size) {
      const n = readSync(this.fd, b, done, s.size - done, s.off + done);
      if (n === 0) throw new Error(`arena ${this.opts.path}: short read at ${s.off + done}`);
      done += n;
    }
    return b;
  }

  close(): void {
    if (!this.closed) this.stampFreed();
    this.closed = true;
    closeSync(this.fd);
  }
}

/** The buffers after their first n bytes. */
function skipBytes(bufs: Buffer[], n: number): Buffer[] {
  const out: Buffer[] = [];
  for (const b of bufs) {
    if (n >= b.length) n -= b.length;
    else {
      out.push(n > 0 ? b.subarray(n) : b);
      n = 0;
    }
  }
  return out;
}
