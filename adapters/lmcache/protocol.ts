/**
 * LMCache `lm://` remote-server protocol — the contract between LMCache's `LMCServerConnector` (inside vLLM
 * or SGLang) and kvstash's drop-in `lm://` server. Byte-level recordings: test/fixtures/lmcache/upstream/.
 *
 * Whose format: LMCache's (`LMCache/LMCache`), three incompatible header generations, none versioned:
 *
 * | generation | LMCache source                                   | client header            | reply header       |
 * |------------|--------------------------------------------------|--------------------------|--------------------|
 * | `legacy`   | 0.1.x `lmcache/protocol.py` (54641ca, 0.1.2)     | `ii150s` 158 B           | `ii` 8 B           |
 * | `v1-early` | `lmcache/v1/protocol.py` @ 0e65d2fc              | `iiiiiiii150s` 182 B     | `iiiiiiii` 32 B    |
 * | `v1`       | `lmcache/v1/protocol.py` @ c1a02cc8 and later    | `iiiiiiiii150s` 186 B    | `iiiiiiiii` 36 B   |
 * | `v1-loc5`  | `lmcache/v1/protocol.py` @ 0851d06c              | as `v1`                  | as `v1`, location 5th |
 *
 * Rules:
 * - Ints are Python `struct` native int32 = little-endian on x86-64/arm64 (always read/written LE here).
 * - Client header fields: legacy `command, length, key`; v1-early `command, length, fmt, dtype, s0..s3, key`;
 *   v1 `command, length, fmt, dtype, location, s0..s3, key`. Reply: legacy `code, length`; v1-early
 *   `code, length, fmt, dtype, s0..s3`; v1 `code, length, fmt, dtype, s0..s3, location` (location LAST).
 * - Key field: 150 bytes, UTF-8, right-padded with spaces; decoded by stripping ASCII whitespace (space,
 *   \t\n\v\f\r, 0x1c-0x1f, as Python's str.strip() does for ASCII) from both ends. Keys are opaque.
 * - Commands PUT=1 GET=2 EXIST=3 LIST=4 HEALTH=5 (HEALTH is v1-only upstream); codes SUCCESS=200 FAIL=400.
 *   PUT is followed by `length` payload bytes and has no reply. Unknown commands are consumed (header only)
 *   and ignored without a reply, as LMCache's servers do.
 * - fmt, dtype, location and shape are opaque ints: a server stores them with a PUT and echoes them on GET.
 *   Replies without stored metadata (GET miss, EXIST, HEALTH) carry fmt 1, dtype 2, zero shape, location 0.
 * - `v1-loc5` (LmListenSetting only, never sniffed): LmCache @ 0851d06c's `ServerMetaMessage.serialize` writes
 *   location LAST but its `deserialize` reads `code, length, fmt, dtype, location, shape×4`, so its clients misread
 *   every GET-hit reply of a v1 server (LMCache's own included). Its requests are byte-identical to `v1` (same
 *   `ClientMetaMessage`, same dtype/location tables), so nothing in the bytes tells the two apart: a port
 *   configured `/v1-loc5` decodes requests as `v1` and writes replies in the order that client reads
 *   (`ReplyOrder` 'location-fifth'); stored objects are shared with `v1`.
 * - Generation of a connection: configured per port, or sniffed from the first request (`sniffGeneration`):
 *   no byte below 0x20 in bytes 8–11 → legacy (key text there — ASCII or UTF-8 —, fmt in v1, whose upper
 *   bytes are 0); else a NUL in bytes 32–35 → v1 (shape3 there, any dim below 2^24 has one; early v1 has key
 *   text there); else → v1-early. Needs SNIFF_BYTES = 36 bytes. Configure the port when in doubt.
 * - LMCache never detects a generation mismatch (it desyncs or hangs; see mismatch.json). This decoder
 *   rejects, with KVS_BAD_HEADER, any header that cannot be a well-formed request of its generation — key not
 *   UTF-8 or containing C0 control characters/DEL (ints of a shifted header land there), negative length,
 *   fmt/dtype/location outside 0..255, shape dims outside 0..2^30 — so a misaligned stream is caught and the
 *   connection closed instead of silently answering garbage. LMCache's own keys never hit these limits.
 * - Streaming (split/partial frames, sniffing per connection): frame-parser.ts. Client: client.ts.
 */
import { ErrorCode, KvstashError } from '../../protocol/errors.js';

export type Generation = 'legacy' | 'v1-early' | 'v1';
export type GenerationSetting = Generation | 'auto';
/** Where `location` sits in a v1 reply header: last (LMCache's servers and clients from c1a02cc8) or 5th (0851d06c clients). */
export type ReplyOrder = 'location-last' | 'location-fifth';
/** What a listening port may be configured with: a generation, `auto`, or `v1-loc5` (v1 requests, location-fifth replies). */
export type LmListenSetting = GenerationSetting | 'v1-loc5';
export const LISTEN_SETTINGS: readonly LmListenSetting[] = ['auto', 'legacy', 'v1-early', 'v1', 'v1-loc5'];
/** The parser generation and reply order of a listen setting. */
export function wireOf(s: LmListenSetting): { generation: GenerationSetting; replyOrder: ReplyOrder } {
  return s === 'v1-loc5' ? { generation: 'v1', replyOrder: 'location-fifth' } : { generation: s, replyOrder: 'location-last' };
}
export const GENERATIONS: readonly Generation[] = ['legacy', 'v1-early', 'v1'];

export interface GenerationLayout {
  /** Number of int32 fields before the key in a client header. */
  readonly clientInts: number;
  readonly clientHeaderBytes: number;
  readonly replyHeaderBytes: number;
  /** The LMCache source this layout matches. */
  readonly source: string;
}

export const MAX_KEY_LENGTH = 150;
export const SNIFF_BYTES = 36;
export const LAYOUTS: Readonly<Record<Generation, GenerationLayout>> = {
  legacy: { clientInts: 2, clientHeaderBytes: 158, replyHeaderBytes: 8, source: 'LMCache 0.1.x lmcache/protocol.py (54641ca)' },
  'v1-early': { clientInts: 8, clientHeaderBytes: 182, replyHeaderBytes: 32, source: 'LMCache lmcache/v1/protocol.py @ 0e65d2fc' },
  v1: { clientInts: 9, clientHeaderBytes: 186, replyHeaderBytes: 36, source: 'LMCache lmcache/v1/protocol.py @ c1a02cc8 (and later)' },
};

export const Command = { PUT: 1, GET: 2, EXIST: 3, LIST: 4, HEALTH: 5 } as const;
export const ReturnCode = { SUCCESS: 200, FAIL: 400 } as const;

export type Shape = [number, number, number, number];
/** LMCache's per-object metadata; opaque ints, echoed exactly. Absent (zeros) in the legacy generation. */
export interface LmMeta {
  fmt: number;
  dtype: number;
  location: number;
  shape: Shape;
}
export interface ClientHeader extends LmMeta {
  command: number;
  length: number;
  key: string;
}
export interface ReplyHeader extends LmMeta {
  code: number;
  length: number;
}

/** Metadata LMCache's v1 servers put in replies that carry no stored object: fmt 1, dtype 2 (float16). */
export const NO_META: Readonly<LmMeta> = Object.freeze({ fmt: 1, dtype: 2, location: 0, shape: [0, 0, 0, 0] as Shape });
export const ZERO_META: Readonly<LmMeta> = Object.freeze({ fmt: 0, dtype: 0, location: 0, shape: [0, 0, 0, 0] as Shape });

const MAX_SMALL = 255;
const MAX_DIM = 2 ** 30;

/** A header that cannot be a request of its generation. The connection must be closed. */
export class LmProtocolError extends KvstashError {
  constructor(code: ErrorCode, message: string, readonly generation: Generation | undefined, readonly head: Buffer) {
    super(code, message);
  }
}

function isSpace(b: number): boolean {
  return b === 0x20 || (b >= 0x09 && b <= 0x0d) || (b >= 0x1c && b <= 0x1f);
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Decode the 150-byte key field. Throws LmProtocolError (KVS_BAD_HEADER) for a field no LMCache client writes. */
export function decodeKeyField(field: Buffer, gen?: Generation): string {
  let a = 0;
  let b = field.length;
  while (a < b && isSpace(field[a]!)) a++;
  while (b > a && isSpace(field[b - 1]!)) b--;
  for (let i = a; i < b; i++) {
    const c = field[i]!;
    if (c < 0x20 || c === 0x7f) {
      throw new LmProtocolError(ErrorCode.BAD_HEADER, `key field byte ${i} is 0x${c.toString(16).padStart(2, '0')}: expected space-padded key text (is the client of another header generation?)`, gen, field);
    }
  }
  try {
    return utf8.decode(field.subarray(a, b));
  } catch {
    throw new LmProtocolError(ErrorCode.BAD_HEADER, 'key field is not valid UTF-8', gen, field);
  }
}

/** Encode a key into the 150-byte space-padded field. Throws KVS_BAD_FIELD if it does not fit. */
export function encodeKeyField(key: string): Buffer {
  const k = Buffer.from(key, 'utf8');
  if (k.length > MAX_KEY_LENGTH) throw new KvstashError(ErrorCode.BAD_FIELD, `lm:// key is ${k.length} bytes; at most ${MAX_KEY_LENGTH} fit`);
  const f = Buffer.alloc(MAX_KEY_LENGTH, 0x20);
  k.copy(f);
  return f;
}

/** Which generation wrote this first request; undefined until SNIFF_BYTES bytes are available. */
export function sniffGeneration(head: Buffer): Generation | undefined {
  if (head.length < SNIFF_BYTES) return undefined;
  let text = true;
  for (let i = 8; i < 12; i++) if (head[i]! < 0x20) text = false;
  if (text) return 'legacy';
  for (let i = 32; i < 36; i++) if (head[i] === 0) return 'v1';
  return 'v1-early';
}

function checkMeta(m: LmMeta, gen: Generation, head: Buffer): void {
  const bad = (what: string, v: number, max: number) => {
    throw new LmProtocolError(ErrorCode.BAD_HEADER, `${gen} header: ${what} ${v} is outside 0..${max} (is the client of another header generation?)`, gen, head);
  };
  if (m.fmt < 0 || m.fmt > MAX_SMALL) bad('fmt', m.fmt, MAX_SMALL);
  if (m.dtype < 0 || m.dtype > MAX_SMALL) bad('dtype', m.dtype, MAX_SMALL);
  if (m.location < 0 || m.location > MAX_SMALL) bad('location', m.location, MAX_SMALL);
  for (let i = 0; i < 4; i++) if (m.shape[i]! < 0 || m.shape[i]! > MAX_DIM) bad(`shape[${i}]`, m.shape[i]!, MAX_DIM);
}

/** Decode one client header (exactly LAYOUTS[gen].clientHeaderBytes bytes). Throws LmProtocolError. */
export function decodeClientHeader(gen: Generation, buf: Buffer): ClientHeader {
  const L = LAYOUTS[gen];
  if (buf.length !== L.clientHeaderBytes) throw new LmProtocolError(ErrorCode.BAD_HEADER, `${gen} header must be ${L.clientHeaderBytes} bytes, got ${buf.length}`, gen, buf);
  const i = (n: number) => buf.readInt32LE(n * 4);
  const command = i(0);
  const length = i(1);
  let meta: LmMeta = ZERO_META;
  if (gen === 'v1-early') meta = { fmt: i(2), dtype: i(3), location: 0, shape: [i(4), i(5), i(6), i(7)] };
  else if (gen === 'v1') meta = { fmt: i(2), dtype: i(3), location: i(4), shape: [i(5), i(6), i(7), i(8)] };
  const key = decodeKeyField(buf.subarray(L.clientInts * 4), gen);
  if (length < 0) throw new LmProtocolError(ErrorCode.BAD_HEADER, `${gen} header: negative length ${length}`, gen, buf);
  if (gen !== 'legacy') checkMeta(meta, gen, buf);
  return { command, length, key, fmt: meta.fmt, dtype: meta.dtype, location: meta.location, shape: [...meta.shape] as Shape };
}

export function encodeClientHeader(gen: Generation, h: ClientHeader): Buffer {
  const L = LAYOUTS[gen];
  const b = Buffer.allocUnsafe(L.clientHeaderBytes);
  const ints = gen === 'legacy' ? [h.command, h.length]
    : gen === 'v1-early' ? [h.command, h.length, h.fmt, h.dtype, ...h.shape]
      : [h.command, h.length, h.fmt, h.dtype, h.location, ...h.shape];
  ints.forEach((v, n) => b.writeInt32LE(v, n * 4));
  encodeKeyField(h.key).copy(b, L.clientInts * 4);
  return b;
}

export function encodeReplyHeader(gen: Generation, r: ReplyHeader, into?: Buffer, at = 0, order: ReplyOrder = 'location-last'): Buffer {
  const b = into ?? Buffer.allocUnsafe(LAYOUTS[gen].replyHeaderBytes);
  const ints = gen === 'legacy' ? [r.code, r.length]
    : gen === 'v1-early' ? [r.code, r.length, r.fmt, r.dtype, ...r.shape]
      : order === 'location-fifth' ? [r.code, r.length, r.fmt, r.dtype, r.location, ...r.shape]
        : [r.code, r.length, r.fmt, r.dtype, ...r.shape, r.location];
  for (let n = 0; n < ints.length; n++) b.writeInt32LE(ints[n]!, at + n * 4);
  return b;
}

export function decodeReplyHeader(gen: Generation, buf: Buffer, order: ReplyOrder = 'location-last'): ReplyHeader {
  const L = LAYOUTS[gen];
  if (buf.length < L.replyHeaderBytes) throw new LmProtocolError(ErrorCode.BAD_HEADER, `${gen} reply header must be ${L.replyHeaderBytes} bytes, got ${buf.length}`, gen, buf);
  const i = (n: number) => buf.readInt32LE(n * 4);
  if (gen === 'legacy') return { code: i(0), length: i(1), ...ZERO_META, shape: [0, 0, 0, 0] };
  if (gen === 'v1-early') return { code: i(0), length: i(1), fmt: i(2), dtype: i(3), location: 0, shape: [i(4), i(5), i(6), i(7)] };
  if (order === 'location-fifth') return { code: i(0), length: i(1), fmt: i(2), dtype: i(3), location: i(4), shape: [i(5), i(6), i(7), i(8)] };
  return { code: i(0), length: i(1), fmt: i(2), dtype: i(3), shape: [i(4), i(5), i(6), i(7)], location: i(8) };
}
