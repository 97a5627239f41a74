/**
 * ReadPool — the memory the TierStack's hit path reads lower-tier blocks into (driver `readInto`), reused instead
 * of allocated fresh per read. Fresh memory page-faults on first touch (~10 µs per 4 KiB page on the 2-core bench
 * VM), which costs more than the read itself for 256 KiB blocks (bench/file-tier.ts, docs/storage.md "Hit path").
 *
 * A pooled buffer goes back to the pool only when nothing holds it. Holds:
 * - the reader that acquired it: the hit path, which hands the block (and this hold) to its GET caller; the caller
 *   gives it back with TierStack.release() once done, or never (then the buffer is simply never reused);
 * - the DRAM tier while it keeps the buffer as the block's memory (heap DRAM does; a copying store like the arena
 *   does not), dropped when DRAM evicts or deletes the block;
 * - every further handout of the block from DRAM to a GET caller (again given back by release(), or never).
 * A buffer handed anywhere else (a queued lower-tier write, getDram, a control-plane move) is forgotten by the pool
 * (`escape`): never reused, freed by the GC like any buffer. So a buffer is never handed out twice at once, and
 * never overwritten while anyone may still read it — the rule test/tiers-hit-path.test.ts checks.
 * Free buffers are kept per size, `maxBytes` in all (config `readPoolBytes`, default 128 MiB); past that, or with
 * maxBytes 0, a buffer nothing holds is let go. Releasing one answer twice is a caller bug (holds are counts).
 */

interface Lent {
  holds: number;
  /** The DRAM tier keeps this buffer as a block's memory (one of the holds). */
  dram: boolean;
}

export const DEFAULT_READ_POOL_BYTES = 128 * 2 ** 20;

export class ReadPool {
  private readonly free = new Map<number, Buffer[]>();
  private readonly lent = new WeakMap<Buffer, Lent>();
  private freeBytes = 0;
  /** Something was ever lent: until then the hold bookkeeping on DRAM hits is skipped. */
  active = false;
  readonly c = { acquired: 0, reused: 0, recycled: 0, letGo: 0, escaped: 0 };

  constructor(readonly maxBytes: number = DEFAULT_READ_POOL_BYTES) {}

  /** A buffer of exactly `size` bytes, held once by the caller: a free pooled one if any, else a new one. */
  acquire(size: number): Buffer {
    const list = this.free.get(size);
    let b = list?.pop();
    if (b) {
      this.freeBytes -= size;
      this.c.reused++;
    } else {
      b = Buffer.allocUnsafeSlow(size);
    }
    this.lent.set(b, { holds: 1, dram: false });
    this.c.acquired++;
    this.active = true;
    return b;
  }

  /** Is `b` lent by this pool (and not escaped)? */
  owns(b: Buffer): boolean {
    return this.lent.has(b);
  }

  /** One more holder of a pooled buffer (no-op for any other buffer). */
  hold(b: Buffer): void {
    const l = this.lent.get(b);
    if (l) l.holds++;
  }

  /** A holder is done with `b`; the last one returns it to the pool (no-op for any other buffer). */
  release(b: Buffer): void {
    const l = this.lent.get(b);
    if (l && --l.holds <= 0) this.recycle(b);
  }

  /** The DRAM tier now keeps `b` as a block's memory. */
  keptByDram(b: Buffer): void {
    const l = this.lent.get(b);
    if (l && !l.dram) {
      l.dram = true;
      l.holds++;
    }
  }

  /** The DRAM tier dropped the block whose memory `b` was. */
  droppedByDram(b: Buffer): void {
    const l = this.lent.get(b);
    if (!l?.dram) return;
    l.dram = false;
    this.release(b);
  }

  /** `b` goes where holds are not tracked: never reuse it. */
  escape(b: Buffer): void {
    if (this.lent.delete(b)) this.c.escaped++;
  }

  private recycle(b: Buffer): void {
    this.lent.delete(b);
    if (this.freeBytes + b.length > this.maxBytes) {
      this.c.letGo++;
      return;
    }
    let list = this.free.get(b.length);
    if (!list) this.free.set(b.length, (list = []));
    list.push(b);
    this.freeBytes += b.length;
    this.c.recycled++;
  }

  stats(): { freeBytes: number; maxBytes: number } & ReadPool['c'] {
    return { freeBytes: this.freeBytes, maxBytes: this.maxBytes, ...this.c };
  }
}
