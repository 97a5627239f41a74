/**
 * A minimal msgpack writer with the byte choices msgspec and Python's msgpack make, so the vLLM event encoder
 * (events.ts) reproduces publisher bytes exactly:
 * - integers in the shortest form (positive fixint, uint8/16/32/64 for non-negative; negative fixint,
 *   int8/16/32/64 for negative); numbers and bigints alike;
 * - floats always as float64 (`0xcb`), even when the value is integral (vLLM's `ts` is a Python float);
 * - strings as fixstr/str8/str16/str32 (UTF-8), binary as bin8/bin16/bin32;
 * - array and map heads in the shortest form.
 * Maps are written by the caller as a head followed by key/value pairs, in the caller's order.
 */
export class MsgpackWriter {
  private buf = Buffer.allocUnsafe(512);
  private len = 0;

  private room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.len + n));
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }

  private byte(b: number): void {
    this.room(1);
    this.buf[this.len++] = b;
  }

  nil(): this {
    this.byte(0xc0);
    return this;
  }

  bool(v: boolean): this {
    this.byte(v ? 0xc3 : 0xc2);
    return this;
  }

  float64(x: number): this {
    this.room(9);
    this.buf[this.len] = 0xcb;
    this.buf.writeDoubleBE(x, this.len + 1);
    this.len += 9;
    return this;
  }

  /** An integer (number must be a safe integer; bigint must fit in int64 or uint64). */
  int(v: number | bigint): this {
    if (typeof v === 'number') {
      if (!Number.isSafeInteger(v)) throw new RangeError(`msgpack int: ${v} is not a safe integer`);
      if (v >= 0 && v <= 0xffffffff) return this.uint32(v);
      if (v < 0 && v >= -32) return this.byteThis(0x100 + v);
      return this.bigint(BigInt(v));
    }
    return this.bigint(v);
  }

  private uint32(v: number): this {
    this.room(5);
    const b = this.buf;
    const o = this.len;
    if (v < 0x80) { b[o] = v; this.len += 1; }
    else if (v <= 0xff) { b[o] = 0xcc; b[o + 1] = v; this.len += 2; }
    else if (v <= 0xffff) { b[o] = 0xcd; b.writeUInt16BE(v, o + 1); this.len += 3; }
    else { b[o] = 0xce; b.writeUInt32BE(v, o + 1); this.len += 5; }
    return this;
  }

  private byteThis(b: number): this {
    this.byte(b);
    return this;
  }

  private bigint(v: bigint): this {
    this.room(9);
    const b = this.buf;
    const o = this.len;
    if (v >= 0n) {
      if (v < 0x80n) { b[o] = Number(v); this.len += 1; }
      else if (v <= 0xffn) { b[o] = 0xcc; b[o + 1] = Number(v); this.len += 2; }
      else if (v <= 0xffffn) { b[o] = 0xcd; b.writeUInt16BE(Number(v), o + 1); this.len += 3; }
      else if (v <= 0xffffffffn) { b[o] = 0xce; b.writeUInt32BE(Number(v), o + 1); this.len += 5; }
      else if (v <= 0xffffffffffffffffn) { b[o] = 0xcf; b.writeBigUInt64BE(v, o + 1); this.len += 9; }
      else throw new RangeError(`msgpack int: ${v} does not fit in uint64`);
    } else {
      if (v >= -32n) { b[o] = 0x100 + Number(v); this.len += 1; }
      else if (v >= -0x80n) { b[o] = 0xd0; b.writeInt8(Number(v), o + 1); this.len += 2; }
      else if (v >= -0x8000n) { b[o] = 0xd1; b.writeInt16BE(Number(v), o + 1); this.len += 3; }
      else if (v >= -0x80000000n) { b[o] = 0xd2; b.writeInt32BE(Number(v), o + 1); this.len += 5; }
      else if (v >= -0x8000000000000000n) { b[o] = 0xd3; b.writeBigInt64BE(v, o + 1); this.len += 9; }
      else throw new RangeError(`msgpack int: ${v} does not fit in int64`);
    }
    return this;
  }

  str(s: string): this {
    const n = Buffer.byteLength(s, 'utf8');
    this.head(n, 0xa0, 32, 0xd9, 0xda, 0xdb);
    this.room(n);
    this.len += this.buf.write(s, this.len, 'utf8');
    return this;
  }

  bin(data: Uint8Array): this {
    const n = data.length;
    if (n <= 0xff) { this.room(2); this.buf[this.len++] = 0xc4; this.buf[this.len++] = n; }
    else if (n <= 0xffff) { this.room(3); this.buf[this.len] = 0xc5; this.buf.writeUInt16BE(n, this.len + 1); this.len += 3; }
    else { this.room(5); this.buf[this.len] = 0xc6; this.buf.writeUInt32BE(n, this.len + 1); this.len += 5; }
    this.room(n);
    this.buf.set(data, this.len);
    this.len += n;
    return this;
  }

  array(n: number): this {
    this.head(n, 0x90, 16, -1, 0xdc, 0xdd);
    return this;
  }

  map(n: number): this {
    this.head(n, 0x80, 16, -1, 0xde, 0xdf);
    return this;
  }

  /** fix form below `fixLimit`, then the 8-bit (when the type has one), 16-bit and 32-bit length forms. */
  private head(n: number, fix: number, fixLimit: number, h8: number, h16: number, h32: number): void {
    this.room(5);
    const b = this.buf;
    if (n < fixLimit) b[this.len++] = fix + n;
    else if (h8 >= 0 && n <= 0xff) { b[this.len++] = h8; b[this.len++] = n; }
    else if (n <= 0xffff) { b[this.len] = h16; b.writeUInt16BE(n, this.len + 1); this.len += 3; }
    else { b[this.len] = h32; b.writeUInt32BE(n, this.len + 1); this.len += 5; }
  }

  /** The bytes written so far (a copy; the writer may be reused after `reset()`). */
  finish(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.len));
  }

  reset(): this {
    this.len = 0;
    return this;
  }
}
