/**
 * Reply output of RESP connections (connection.ts): the bytes a connection queues between two flushes.
 *
 * - Small pieces (headers, small values) and values read straight from the DRAM arena (ValueRead) are copied
 *   into shared output slabs, one after another, so a pipelined batch usually goes out as one contiguous write
 *   and a GET of an arena value costs one pread into the slab, no Buffer of its own.
 * - Pieces of COPY_BELOW bytes or more that are Buffers already (heap DRAM values) are written as they are.
 * - A slab is shared by every connection (one JS thread; each connection's run of bytes in it is a segment).
 *   It is reused only when every write of its bytes has completed (write callbacks), so the memory stays hot
 *   (no page faults on fresh buffers) and nothing is overwritten that a socket still has to send. At most
 *   POOL_SLABS idle slabs are kept. Bytes queued in a task stay as they are until that task has ended (RespStore
 *   copies a value read earlier in the task from them).
 */
import type { Socket } from 'node:net';
import type { Piece } from './codec.js';

const SLAB_BYTES = 4 << 20;
/** Buffers at least this big are written as they are (no copy). */
const COPY_BELOW = 64 << 10;
/** Values read from DRAM bigger than this get an exact buffer of their own instead of slab space. */
const OWN_ABOVE = SLAB_BYTES / 4;
const POOL_SLABS = 4;

class Slab {
  used = 0;
  /** Segments (queued or being written) that refer to this slab. */
  refs = 0;
  constructor(readonly buf: Buffer) {}
}

const idle: Slab[] = [];
let current: Slab | undefined;

function slabWithRoom(n: number): Slab {
  if (current && SLAB_BYTES - current.used >= n) return current;
  const old = current;
  current = idle.pop() ?? new Slab(Buffer.allocUnsafeSlow(SLAB_BYTES));
  current.used = 0;
  if (old && old.refs === 0) recycle(old);
  return current;
}

function release(s: Slab): void {
  if (--s.refs === 0 && s !== current) recycle(s);
}

function recycle(s: Slab): void {
  if (idle.length < POOL_SLABS) idle.push(s);
}

export class Output {
  private pieces: Buffer[] = [];
  private slabs: Slab[] = [];
  /** Open segment: seg.buf[segStart, segEnd) is this connection's, still growing. */
  private seg: Slab | undefined;
  private segStart = 0;
  private segEnd = 0;
  /** Bytes queued since the last flush. */
  bytes = 0;

  get empty(): boolean {
    return this.bytes === 0 && this.pieces.length === 0;
  }

  add(p: Piece): void {
    const n = p.length;
    this.bytes += n;
    if (p instanceof Buffer ? n >= COPY_BELOW : n > OWN_ABOVE) {
      this.closeSegment();
      let b: Buffer;
      if (p instanceof Buffer) b = p;
      else {
        b = Buffer.allocUnsafeSlow(n);
        p.fill(b);
      }
      this.pieces.push(b);
      return;
    }
    let s = this.seg;
    if (!s || s !== current || s.used !== this.segEnd || SLAB_BYTES - s.used < n) {
      this.closeSegment();
      s = this.seg = slabWithRoom(n);
      s.refs++;
      this.segStart = this.segEnd = s.used;
    }
    if (p instanceof Buffer) p.copy(s.buf, s.used);
    else p.fill(s.buf.subarray(s.used, s.used + n));
    s.used += n;
    this.segEnd = s.used;
  }

  private closeSegment(): void {
    const s = this.seg;
    if (!s) return;
    this.seg = undefined;
    if (this.segEnd > this.segStart) {
      this.pieces.push(s.buf.subarray(this.segStart, this.segEnd));
      this.slabs.push(s);
    } else release(s);
  }

  /** Write what is queued (one write, or a corked run of writes); slab space is released when written. */
  flush(socket: Socket): void {
    this.closeSegment();
    const pieces = this.pieces;
    const slabs = this.slabs;
    this.pieces = [];
    this.slabs = [];
    this.bytes = 0;
    if (pieces.length === 0) return;
    const done = slabs.length ? () => { for (const s of slabs) release(s); } : undefined;
    if (socket.destroyed) {
      if (done) queueMicrotask(done); // never recycled within the task that filled it (store.ts reuses its bytes)
      return;
    }
    if (pieces.length === 1) {
      socket.write(pieces[0]!, done);
      return;
    }
    socket.cork();
    for (let i = 0; i < pieces.length - 1; i++) socket.write(pieces[i]!);
    socket.write(pieces[pieces.length - 1]!, done);
    socket.uncork();
  }

  /** Drop what is queued (the connection closes). */
  discard(): void {
    this.closeSegment();
    const slabs = this.slabs;
    queueMicrotask(() => { for (const s of slabs) release(s); });
    this.pieces = [];
    this.slabs = [];
    this.bytes = 0;
  }
}
