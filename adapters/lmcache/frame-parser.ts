/**
 * Streaming parser for the client side of the `lm://` protocol (rules in protocol.ts): bytes in, whole
 * requests out, whatever way TCP split them. One parser per connection; it fixes the connection's generation
 * from configuration or by sniffing the first request, then never changes it.
 *
 * - `push(chunk, onFrame)` delivers every complete request in order. A PUT's payload is copied once, straight
 *   from the socket chunks into a buffer of `payloadOffset(header) + length` bytes (the caller reserves room
 *   in front, e.g. for the stored-value header), so no concat of the payload happens.
 * - A PUT longer than `maxPayloadBytes` is delivered with `payload: undefined` and its bytes are skipped, so
 *   the stream stays aligned (a cache may drop a save).
 * - A header that cannot be decoded throws LmProtocolError after the frames before it were delivered; the
 *   parser then stays failed (every later push throws the same error). The caller closes the connection.
 */
import {
  Command, decodeClientHeader, LAYOUTS, LmProtocolError, sniffGeneration, SNIFF_BYTES,
  type ClientHeader, type Generation, type GenerationSetting,
} from './protocol.js';

export interface LmFrame {
  header: ClientHeader;
  /** PUT only: `payloadOffset` reserved bytes, then `header.length` payload bytes. Undefined when dropped. */
  payload?: Buffer;
  payloadOffset: number;
  /** PUT over maxPayloadBytes: its bytes were skipped. */
  dropped?: boolean;
}

export interface FrameParserOptions {
  generation: GenerationSetting;
  maxPayloadBytes: number;
  /** Bytes to reserve in front of a PUT payload. Default 0. */
  payloadOffset?: (h: ClientHeader) => number;
}

export class LmFrameParser {
  private gen: Generation | undefined;
  private head: Buffer = Buffer.alloc(0);
  private frame: LmFrame | undefined;
  private filled = 0;
  private skip = 0;
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

  push(chunk: Buffer, onFrame: (f: LmFrame) => void): void {
    if (this.failure) throw this.failure;
    let data = chunk;
    while (data.length > 0) {
      if (this.frame) {
        const f = this.frame;
        const n = Math.min(f.header.length - this.filled, data.length);
        data.copy(f.payload!, f.payloadOffset + this.filled, 0, n);
        this.filled += n;
        this.offset += n;
        data = data.subarray(n);
        if (this.filled === f.header.length) {
          this.frame = undefined;
          onFrame(f);
        }
        continue;
      }
      if (this.skip > 0) {
        const n = Math.min(this.skip, data.length);
        this.skip -= n;
        this.offset += n;
        data = data.subarray(n);
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
      onFrame({ header, payloadOffset: 0 });
      return;
    }
    if (header.length > this.opts.maxPayloadBytes) {
      this.skip = header.length;
      onFrame({ header, payloadOffset: 0, dropped: true });
      return;
    }
    const off = this.opts.payloadOffset?.(header) ?? 0;
    const f: LmFrame = { header, payload: Buffer.allocUnsafe(off + header.length), payloadOffset: off };
    if (header.length === 0) {
      onFrame(f);
      return;
    }
    this.frame = f;
    this.filled = 0;
  }
}
