/**
 * Streaming parser for the client side of the `lm://` protocol (rules in protocol.ts): bytes in, whole
 * requests out, whatever way TCP split them. One parser per connection; it fixes the connection's generation
 * from configuration or by sniffing the first request, then never changes it.
 *
 * - `push(chunk, onFrame)` delivers every complete request in order. A PUT's payload is kept as the socket
 *   chunks that carried it (memory grows only as bytes arrive: a header alone reserves nothing), and copied
 *   once, when complete, into a buffer of `payloadOffset(header) + length` bytes (the caller reserves room in
 *   front, e.g. for the stored-value header).
 * - A PUT longer than `maxPayloadBytes` is delivered with `payload: undefined` and its bytes are skipped, so
 *   the stream stays aligned (a cache may drop a save). With a `budget` (memory-budget.ts), a PUT that does
 *   not fit is delivered the same way with `refused: true`; a delivered payload's bytes stay charged to the
 *   budget (`charged`) until the caller releases them. `abort()` releases what a partial request holds.
 * - `requestStartedAt` is when the current partial request's first byte came (for per-request deadlines).
 * - A header that cannot be decoded throws LmProtocolError after the frames before it were delivered; the
 *   parser then stays failed (every later push throws the same error). The caller closes the connection.
 */
import {
  Command, decodeClientHeader, LAYOUTS, LmProtocolError, sniffGeneration, SNIFF_BYTES,
  type ClientHeader, type Generation, type GenerationSetting,
} from './protocol.js';
import type { LmMemoryBudget } from './memory-budget.js';

export interface LmFrame {
  header: ClientHeader;
  /** PUT only: `payloadOffset` reserved bytes, then `header.length` payload bytes. Undefined when dropped. */
  payload?: Buffer;
  payloadOffset: number;
  /** PUT over maxPayloadBytes, or refused by the memory budget: its bytes were skipped. */
  dropped?: boolean;
  /** PUT refused by the memory budget (implies dropped). */
  refused?: boolean;
  /** Budget bytes the delivered payload still holds (release them when done with it). */
  charged?: number;
}

export interface FrameParserOptions {
  generation: GenerationSetting;
  maxPayloadBytes: number;
  /** Bytes to reserve in front of a PUT payload. Default 0. */
  payloadOffset?: (h: ClientHeader) => number;
  /** Shared cap on buffered payload bytes (all connections). Default: none. */
  budget?: LmMemoryBudget;
}

export class LmFrameParser {
  private gen: Generation | undefined;
  private head: Buffer = Buffer.alloc(0);
  private frame: LmFrame | undefined;
  private pieces: Buffer[] = [];
  private filled = 0;
  private charged = 0;
  private skip = 0;
  private skipFrame: LmFrame | undefined;
  /** Date.now() of the current partial request's first byte (0 between requests). */
  requestStartedAt = 0;
  private failure: LmProtocolError | undefined;
  /** Bytes consumed so far (for error reports). */
  offset = 0;

  constructor(private readonly opts: FrameParserOptions) {
    if (opts.generation !== 'auto') this.gen = opts.generation;
  }

  get generation(): Generation | undefined {
    return this.gen;
  }

  /** True while a request is partly received. */
  get midFrame(): boolean {
    return this.head.length > 0 || this.frame !== undefined || this.skip > 0;
  }

  /** True while a header is partly received (LMCache clients write a header in one send: a partial header
   * that stays partial means a client of a shorter header generation waiting for a reply). */
  get midHeader(): boolean {
    return this.head.length > 0;
  }

  get failed(): LmProtocolError | undefined {
    return this.failure;
  }

  /** Bytes of PUT payload this parser holds now (charged to the budget when there is one). */
  get heldBytes(): number {
    return this.charged;
  }

  /** Drop a partial request and release its memory (connection closed or timed out). */
  abort(): void {
    this.pieces = [];
    this.frame = undefined;
    this.opts.budget?.release(this.charged);
    this.charged = 0;
  }

  push(chunk: Buffer, onFrame: (f: LmFrame) => void): void {
    if (this.failure) throw this.failure;
    let data = chunk;
    while (data.length > 0) {
      if (this.requestStartedAt === 0) this.requestStartedAt = Date.now();
      if (this.frame) {
        const f = this.frame;
        const n = Math.min(f.header.length - this.filled, data.length);
        if (this.opts.budget && !this.opts.budget.take(n)) {
          // Over the cap mid-way: refuse this PUT, release what it held, skip the rest of its bytes.
          this.abort();
          this.opts.budget.refusals++;
          this.skip = f.header.length - this.filled;
          this.skipFrame = { header: f.header, payloadOffset: 0, dropped: true, refused: true };
          continue;
        }
        this.pieces.push(data.subarray(0, n));
        this.charged += n;
        this.filled += n;
        this.offset += n;
        data = data.subarray(n);
        if (this.filled === f.header.length) {
          const buf = Buffer.allocUnsafe(f.payloadOffset + f.header.length);
          let at = f.payloadOffset;
          for (const p of this.pieces) { p.copy(buf, at); at += p.length; }
          f.payload = buf;
          f.charged = this.charged;
          this.pieces = [];
          this.charged = 0;
          this.frame = undefined;
          this.requestStartedAt = 0;
          onFrame(f);
        }
        continue;
      }
      if (this.skip > 0) {
        const n = Math.min(this.skip, data.length);
        this.skip -= n;
        this.offset += n;
        data = data.subarray(n);
        if (this.skip === 0) {
          this.requestStartedAt = 0;
          const sf = this.skipFrame;
          this.skipFrame = undefined;
          if (sf) onFrame(sf);
        }
        continue;
      }
      const need = this.gen ? LAYOUTS[this.gen].clientHeaderBytes : SNIFF_BYTES;
      if (this.head.length + data.length < need) {
        this.head = this.head.length ? Buffer.concat([this.head, data]) : Buffer.from(data);
        return;
      }
      const take = need - this.head.length;
      const hdr = this.head.length ? Buffer.concat([this.head, data.subarray(0, take)]) : data.subarray(0, take);
      data = data.subarray(take);
      this.head = Buffer.alloc(0);
      if (!this.gen) {
        this.gen = sniffGeneration(hdr);
        this.head = Buffer.from(hdr);
        continue;
      }
      let header: ClientHeader;
      try {
        header = decodeClientHeader(this.gen, hdr);
      } catch (err) {
        this.failure = err as LmProtocolError;
        throw this.failure;
      }
      this.offset += need;
      this.onHeader(header, onFrame);
    }
  }

  private onHeader(header: ClientHeader, onFrame: (f: LmFrame) => void): void {
    if (header.command !== Command.PUT) {
      this.requestStartedAt = 0;
      onFrame({ header, payloadOffset: 0 });
      return;
    }
    const tooLarge = header.length > this.opts.maxPayloadBytes;
    if (tooLarge || (this.opts.budget && !this.opts.budget.fits(header.length))) {
      this.skip = header.length;
      const f: LmFrame = { header, payloadOffset: 0, dropped: true, refused: !tooLarge };
      if (!tooLarge) this.opts.budget!.refusals++;
      // Delivered at once (the reply order does not depend on it: a PUT has no reply).
      if (this.skip === 0) this.requestStartedAt = 0;
      onFrame(f);
      return;
    }
    const off = this.opts.payloadOffset?.(header) ?? 0;
    const f: LmFrame = { header, payloadOffset: off, charged: 0 };
    if (header.length === 0) {
      f.payload = Buffer.allocUnsafe(off);
      this.requestStartedAt = 0;
      onFrame(f);
      return;
    }
    this.frame = f;
    this.pieces = [];
    this.filled = 0;
  }
}
