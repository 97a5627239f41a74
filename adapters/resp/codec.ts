/**
 * RESP request parser and reply encoders (Redis serialization protocol: RESP2 requests, RESP2 or RESP3 replies,
 * https://redis.io/docs/latest/develop/reference/protocol-spec/ — the commands in commands.ts).
 *
 * Rules:
 * - Requests are multibulk arrays (`*<n>\r\n$<len>\r\n<bytes>\r\n…`, what every client library, redis-cli and
 *   redis-benchmark send) or inline lines (`PING\r\n`, telnet). Arguments come out as Buffers; a bulk argument
 *   of VIEW_BELOW bytes or more is an exact-size Buffer the parser owns alone (never a view into a socket chunk),
 *   so its ownership can pass to the tier stack without a copy; shorter ones (names, keys) may be views, valid
 *   until the command has run — a command that keeps a short argument must copy it.
 * - Limits, each a protocol error (the connection answers `-ERR Protocol error: …` and closes, as Redis does):
 *   a header or inline line over 64 KiB without CRLF, more than `maxArgs` arguments, a bulk length over
 *   `maxBulkBytes`, a malformed length, a missing CRLF after a bulk.
 * - Global cap: every byte the parser holds for an incomplete request (the carried-over partial line and the
 *   bulk buffer being filled, charged at its declared length when allocated) is charged to one ByteBudget shared
 *   by all connections. When the budget cannot cover a new bulk, `push` throws BUDGET (the connection answers
 *   `-ERR` and closes). Completed commands release their charge when handed to `onCommand`.
 *   So truncated multibulks, huge declared lengths and slow senders hold at most the budget between them.
 * - A hand-written parser rather than an npm one: the npm RESP parsers (redis-parser, resp3) parse replies for
 *   clients, not requests for servers, and none has a cross-connection byte budget.
 */

export class ByteBudget {
  used = 0;
  constructor(readonly limit: number) {}
  tryAcquire(n: number): boolean {
    if (this.used + n > this.limit) return false;
    this.used += n;
    return true;
  }
  release(n: number): void {
    this.used -= n;
  }
}

export class RespProtocolError extends Error {
  constructor(message: string, readonly budget = false) {
    super(message);
  }
}

export interface ParserLimits {
  maxArgs: number;
  maxBulkBytes: number;
}

const MAX_LINE = 64 * 1024;
/** Bulk arguments shorter than this (command names, keys) may be views of the socket chunk; longer ones are owned copies. */
export const VIEW_BELOW = 512;
const CR = 13;
const LF = 10;

/**
 * Large bulk buffers given back by a consumer that copied them and kept no reference (RespStore.set when the DRAM
 * arena wrote the value and no other tier holds on to it): the next request of the same length reuses one instead
 * of a fresh allocation (for 256 KiB values the fresh buffers' page faults and GC were most of a SET's cost).
 */
export class BulkPool {
  static readonly MIN = 64 << 10;
  private readonly free = new Map<number, Buffer[]>();
  private bytes = 0;
  private readonly limit = 32 << 20;
  take(len: number): Buffer {
    const list = len >= BulkPool.MIN ? this.free.get(len) : undefined;
    const b = list?.pop();
    if (!b) return Buffer.allocUnsafe(len);
    this.bytes -= len;
    return b;
  }
  /** Give back a buffer nothing refers to any more (it may be handed out again at once). */
  give(b: Buffer): void {
    if (b.length < BulkPool.MIN || this.bytes + b.length > this.limit || b.byteOffset !== 0 || b.buffer.byteLength !== b.length) return;
    let list = this.free.get(b.length);
    if (!list) this.free.set(b.length, (list = []));
    list.push(b);
    this.bytes += b.length;
  }
}
export const bulkPool = new BulkPool();

export class RespParser {
  /** Carried-over bytes of an incomplete header line (charged to the budget). */
  private carry: Buffer | undefined;
  private args: Buffer[] = [];
  private argc = -1;
  private bulk: Buffer | undefined;
  private bulkFill = 0;
  /** Bytes of the current incomplete request charged to the budget. */
  held = 0;

  constructor(private readonly limits: ParserLimits, private readonly budget: ByteBudget) {}

  /** True while a request is partly received. */
  get midRequest(): boolean {
    return this.argc >= 0 || this.carry !== undefined || this.bulk !== undefined;
  }

  /** Return every charge to the budget (connection closed). */
  dispose(): void {
    this.budget.release(this.held);
    this.held = 0;
    this.carry = undefined;
    this.bulk = undefined;
    this.args = [];
  }

  push(chunk: Buffer, onCommand: (args: Buffer[]) => void): void {
    const carry = this.carry;
    if (!carry) {
      this.parse(chunk, onCommand);
      return;
    }
    // Complete the carried-over line (or CRLF) with just the bytes it needs; never re-copy the whole chunk.
    const lf = chunk.indexOf(LF);
    const need = this.bulk ? Math.min(2 - carry.length, chunk.length) : lf < 0 ? chunk.length : lf + 1;
    this.charge(-carry.length);
    this.carry = undefined;
    this.parse(Buffer.concat([carry, chunk.subarray(0, need)]), onCommand);
    if (need < chunk.length) {
      if (this.carry) throw new RespProtocolError('internal: incomplete line after its end'); // cannot happen: the line ended
      this.parse(chunk.subarray(need), onCommand);
    }
  }

  private parse(buf: Buffer, onCommand: (args: Buffer[]) => void): void {
    let pos = 0;
    const n = buf.length;
    while (pos < n) {
      if (this.bulk) {
        // Filling a bulk argument: copy what we have, then expect CRLF.
        const need = this.bulk.length - this.bulkFill;
        if (need > 0) {
          const take = Math.min(need, n - pos);
          buf.copy(this.bulk, this.bulkFill, pos, pos + take);
          this.bulkFill += take;
          pos += take;
          if (this.bulkFill < this.bulk.length) break;
        }
        if (n - pos < 2) {
          // CRLF not (wholly) here yet: keep the filled bulk and the odd byte, wait
          if (n > pos) {
            this.carry = Buffer.from(buf.subarray(pos));
            this.charge(this.carry.length);
          }
          return;
        }
        if (buf[pos] !== CR || buf[pos + 1] !== LF) throw new RespProtocolError("expected '\\r\\n' after a bulk string");
        pos += 2;
        this.args.push(this.bulk);
        this.bulk = undefined;
        if (this.args.length === this.argc) this.emit(onCommand);
        continue;
      }
      const eol = buf.indexOf(LF, pos);
      if (eol < 0) {
        if (n - pos > MAX_LINE) throw new RespProtocolError(this.argc < 0 && buf[pos] !== 42 ? 'too big inline request' : 'too big header line');
        this.carry = Buffer.from(buf.subarray(pos));
        this.charge(this.carry.length);
        return;
      }
      const end = eol > pos && buf[eol - 1] === CR ? eol - 1 : eol;
      if (this.argc < 0) {
        if (buf[pos] === 42 /* * */) {
          const count = parseLen(buf, pos + 1, end, 'multibulk length');
          pos = eol + 1;
          if (count > this.limits.maxArgs) throw new RespProtocolError(`invalid multibulk length ${count} (limit ${this.limits.maxArgs})`);
          if (count <= 0) continue; // `*0` / `*-1`: empty request, ignored as Redis does
          this.argc = count;
          this.args = [];
        } else {
          const line = buf.toString('latin1', pos, end);
          pos = eol + 1;
          const words = line.split(/[ \t]+/).filter((w) => w.length > 0);
          if (words.length > 0) onCommand(words.map((w) => Buffer.from(w, 'latin1')));
        }
        continue;
      }
      if (buf[pos] !== 36 /* $ */) throw new RespProtocolError(`expected '$', got '${String.fromCharCode(buf[pos]!)}'`);
      const len = parseLen(buf, pos + 1, end, 'bulk length');
      if (len < 0 || len > this.limits.maxBulkBytes) throw new RespProtocolError(`invalid bulk length ${len} (limit ${this.limits.maxBulkBytes})`);
      pos = eol + 1;
      if (n - pos >= len + 2) {
        // Whole bulk in this chunk: copy it out (never keep a view that would pin the chunk).
        if (buf[pos + len] !== CR || buf[pos + len + 1] !== LF) throw new RespProtocolError("expected '\\r\\n' after a bulk string");
        let b: Buffer;
        if (len < VIEW_BELOW) {
          b = buf.subarray(pos, pos + len); // names and keys: a view, dropped when the command has run
        } else {
          this.acquire(len);
          b = bulkPool.take(len);
          buf.copy(b, 0, pos, pos + len);
        }
        pos += len + 2;
        this.args.push(b);
        if (this.args.length === this.argc) this.emit(onCommand);
        continue;
      }
      this.acquire(len);
      this.bulk = bulkPool.take(len);
      this.bulkFill = 0;
    }
  }

  private acquire(n: number): void {
    if (!this.budget.tryAcquire(n)) {
      throw new RespProtocolError(`buffered request bytes over the global cap (${this.budget.limit} bytes across connections)`, true);
    }
    this.held += n;
  }

  private charge(n: number): void {
    this.held += n;
    this.budget.used += n;
  }

  private emit(onCommand: (args: Buffer[]) => void): void {
    const args = this.args;
    this.args = [];
    this.argc = -1;
    this.budget.release(this.held); // nothing is carried over while a command completes
    this.held = 0;
    onCommand(args);
  }
}

function parseLen(buf: Buffer, from: number, to: number, what: string): number {
  if (to <= from || to - from > 12) throw new RespProtocolError(`invalid ${what}`);
  let neg = false;
  let i = from;
  if (buf[i] === 45 /* - */) {
    neg = true;
    i++;
  }
  let v = 0;
  for (; i < to; i++) {
    const c = buf[i]! - 48;
    if (c < 0 || c > 9) throw new RespProtocolError(`invalid ${what}`);
    v = v * 10 + c;
  }
  if (i === from + (neg ? 1 : 0)) throw new RespProtocolError(`invalid ${what}`);
  return neg ? -v : v;
}

// ---- replies ----------------------------------------------------------------------------------------------

/**
 * A value the connection copies straight from the DRAM tier into its output buffer when it queues the reply
 * (synchronously, right after the command ran): no Buffer of its own per GET. `fill` writes exactly `length` bytes.
 */
export class ValueRead {
  constructor(readonly length: number, readonly fill: (into: Buffer) => void) {}
}
export type Piece = Buffer | ValueRead;
/** A reply: one buffer, or pieces the connection writes in order. */
export type Reply = Buffer | Piece[];

const CRLF = Buffer.from('\r\n');
export const OK = Buffer.from('+OK\r\n');
export const PONG = Buffer.from('+PONG\r\n');
export const NULL2 = Buffer.from('$-1\r\n');
export const NULL3 = Buffer.from('_\r\n');
const INTS = Array.from({ length: 64 }, (_, i) => Buffer.from(`:${i}\r\n`));

export function simple(s: string): Buffer {
  return Buffer.from(`+${s}\r\n`, 'latin1');
}
export function error(s: string): Buffer {
  return Buffer.from(`-${s.replace(/[\r\n]+/g, ' ')}\r\n`, 'utf8');
}
export function int(n: number): Buffer {
  return n >= 0 && n < INTS.length ? INTS[n]! : Buffer.from(`:${n}\r\n`);
}
const bulkHeads = new Map<number, Buffer>();
function bulkHead(n: number): Buffer {
  let h = bulkHeads.get(n);
  if (!h) {
    h = Buffer.from(`$${n}\r\n`);
    if (bulkHeads.size < 4096) bulkHeads.set(n, h);
  }
  return h;
}
export function bulk(v: Buffer | ValueRead | string | undefined, proto: number): Piece[] {
  if (v === undefined) return [proto === 3 ? NULL3 : NULL2];
  const b = typeof v === 'string' ? Buffer.from(v, 'utf8') : v;
  return [bulkHead(b.length), b, CRLF];
}
export function array(items: Reply[]): Piece[] {
  const out: Piece[] = [Buffer.from(`*${items.length}\r\n`)];
  for (const it of items) Array.isArray(it) ? out.push(...it) : out.push(it);
  return out;
}
/** A map: RESP3 `%`, RESP2 a flat array of key, value, … */
export function map(pairs: [string, Reply][], proto: number): Piece[] {
  const out: Piece[] = [Buffer.from(proto === 3 ? `%${pairs.length}\r\n` : `*${pairs.length * 2}\r\n`)];
  for (const [k, v] of pairs) {
    out.push(...bulk(k, proto));
    Array.isArray(v) ? out.push(...v) : out.push(v);
  }
  return out;
}
