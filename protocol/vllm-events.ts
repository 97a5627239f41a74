/**
 * vLLM KV events — the contract between vLLM's `ZmqEventPublisher` and kvstash (wire types, decoder, encoder).
 *
 * Whose format: vLLM's `vllm/distributed/kv_events.py` (msgspec Structs `KVEventBatch`, `BlockStored`,
 * `BlockRemoved`, `AllBlocksCleared`, tagged with `type` = class name, `omit_defaults=True`). Three payload
 * encodings exist and all decode into the same `KvEventBatch`:
 *
 * | EventEncoding    | envelope                           | events                          | vLLM                                         |
 * |------------------|------------------------------------|---------------------------------|----------------------------------------------|
 * | `array-events`   | array `[ts, events, dp_rank]`      | array `[tag, f1, f2, …]`        | releases up to v0.23.x (before PR #42892)    |
 * | `map-events`     | array `[ts, events, dp_rank]`      | map `{type, field: value, …}`   | after PR #42892 (present in v0.26.0)         |
 * | `map-envelope`   | map `{ts, events, data_parallel_rank}` | map                          | source at commit 0181ea3 (no release known)  |
 *
 * Rules of the decoder:
 * - Hashes: integers are read as uint64 `bigint` whatever msgpack width they came in (small values arrive as
 *   fixint/uint8…, values ≥ 2^63 as `0xcf`); signed int64 hashes (as other producers send) are accepted and
 *   reinterpreted as uint64 (two's complement). Byte-string hashes (`VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0`,
 *   32-byte raw digests) are kept as **lowercase hex strings**. So `typeof h === 'bigint'` ⇔ int form.
 * - Unknown event fields, map keys and trailing array positions are ignored; missing optional fields are
 *   `null`. An event with an unknown tag is skipped (reported through `onUnknown`), never an error.
 * - A payload that is not msgpack, or whose known fields have the wrong type, throws KvstashError
 *   KVS_BAD_HEADER (not msgpack / not an envelope) or KVS_BAD_FIELD (a field), with the field named.
 *
 * Rules of the encoder (`encodeEventBatch`), mirroring msgspec so the bytes equal vLLM's (checked against
 * the shared fixtures): tag first; fields in struct order; array form drops only *trailing* fields equal to
 * their default (`None`); map form drops every defaulted field that is `None` and always writes required
 * fields (as nil when null); `ts` is always float64; ints in the shortest form; bigint hashes as uint64;
 * hex-string hashes as bin.
 *
 * Frames (not part of the payload): live messages are `[topic, seq8, payload]`, replay replies to a DEALER are
 * `["", seq8, payload]` ending with `["", SEQ_END, ""]`; `seq8` is an 8-byte big-endian uint64.
 */
import { Unpackr } from 'msgpackr';
import { ErrorCode, KvstashError } from './errors.js';
import { MsgpackWriter } from './msgpack-writer.js';

/** A block hash: uint64 event int (`bigint`), or a raw digest as lowercase hex (`string`). */
export type BlockHash = bigint | string;
/** One element of a block's extra-keys tuple (LoRA name, cache salt, mm identifier or (id, offset) tuple, digest bytes). */
export type ExtraKey = string | number | bigint | Uint8Array | null | ExtraKey[];

export interface BlockStored {
  type: 'BlockStored';
  block_hashes: BlockHash[];
  /** Hash of the block before the first one; null at the start of a sequence. */
  parent_block_hash: BlockHash | null;
  /** Tokens of all blocks, concatenated (blocks × block_size). */
  token_ids: number[];
  block_size: number;
  /** Deprecated in vLLM; kept for completeness. */
  lora_id: number | null;
  /** "GPU" from the engine's own block pool; other media come from connectors; null in releases before #19737. */
  medium: string | null;
  lora_name: string | null;
  /** One entry per block: null or the extra-keys tuple (vLLM PR #33304). */
  extra_keys: (ExtraKey[] | null)[] | null;
  group_idx: number | null;
  kv_cache_spec_kind: string | null;
  kv_cache_spec_sliding_window: number | null;
}

export interface BlockRemoved {
  type: 'BlockRemoved';
  block_hashes: BlockHash[];
  medium: string | null;
  group_idx: number | null;
}

export interface AllBlocksCleared {
  type: 'AllBlocksCleared';
}

export type KvEvent = BlockStored | BlockRemoved | AllBlocksCleared;

export interface KvEventBatch {
  /** Epoch seconds (float). */
  ts: number;
  events: KvEvent[];
  /** Filled in by vLLM's `publish()` (0 without data parallelism); null when absent. */
  data_parallel_rank: number | null;
}

export type EventEncoding = 'array-events' | 'map-events' | 'map-envelope';
export const EVENT_ENCODINGS: readonly EventEncoding[] = ['array-events', 'map-events', 'map-envelope'];

/** End-of-replay marker in the seq frame (−1 as signed int64). */
export const SEQ_END = 0xffffffffffffffffn;

/** Struct fields in definition order and how many leading fields are required (no default). */
const FIELDS = {
  BlockStored: {
    names: ['block_hashes', 'parent_block_hash', 'token_ids', 'block_size', 'lora_id', 'medium', 'lora_name',
      'extra_keys', 'group_idx', 'kv_cache_spec_kind', 'kv_cache_spec_sliding_window'],
    required: 7,
  },
  BlockRemoved: { names: ['block_hashes', 'medium', 'group_idx'], required: 2 },
  AllBlocksCleared: { names: [], required: 0 },
} as const satisfies Record<KvEvent['type'], { names: readonly string[]; required: number }>;

type Tag = keyof typeof FIELDS;
const isTag = (t: unknown): t is Tag => typeof t === 'string' && Object.hasOwn(FIELDS, t);

// ---- decoding ----------------------------------------------------------------------------------------

const unpackr = new Unpackr({ int64AsType: 'bigint', useRecords: false, mapsAsObjects: true });

export interface DecodeOptions {
  /** Called with the tag of each skipped event whose type is unknown. */
  onUnknown?: (tag: unknown) => void;
}

const bad = (what: string, v: unknown): never => {
  const shown = typeof v === 'bigint' ? `${v}n` : v instanceof Uint8Array ? `<${v.length} bytes>` : JSON.stringify(v) ?? String(v);
  throw new KvstashError(ErrorCode.BAD_FIELD, `vLLM KV event: ${what}, got ${String(shown).slice(0, 80)}`);
};

/** Decode one msgpack `KVEventBatch` payload (any of the three encodings). */
export function decodeEventBatch(payload: Uint8Array, opts: DecodeOptions = {}): KvEventBatch {
  let raw: unknown;
  try {
    raw = unpackr.unpack(payload);
  } catch (err) {
    throw new KvstashError(ErrorCode.BAD_HEADER, `vLLM KV event batch is not valid msgpack (${(err as Error).message})`, { cause: err });
  }
  return normalizeEventBatch(raw, opts);
}

/** Normalize an already-unpacked batch (array or map envelope) into a KvEventBatch. */
export function normalizeEventBatch(raw: unknown, opts: DecodeOptions = {}): KvEventBatch {
  let ts: unknown, events: unknown, rank: unknown;
  if (Array.isArray(raw)) [ts, events, rank] = raw;
  else if (isPlainMap(raw)) ({ ts, events, data_parallel_rank: rank } = raw);
  else throw new KvstashError(ErrorCode.BAD_HEADER, `vLLM KV event batch must be an array or a map, got ${typeof raw}`);
  if (!Array.isArray(events)) bad('batch "events" must be an array', events);
  const out: KvEvent[] = [];
  for (const e of events as unknown[]) {
    const ev = normalizeEvent(e, opts);
    if (ev) out.push(ev);
  }
  return { ts: toFloat(ts, 'batch "ts"'), events: out, data_parallel_rank: optInt(rank, 'batch "data_parallel_rank"') };
}

function normalizeEvent(e: unknown, opts: DecodeOptions): KvEvent | undefined {
  let tag: unknown;
  let get: (name: string, i: number) => unknown;
  if (Array.isArray(e)) {
    tag = e[0];
    get = (_n, i) => e[i + 1];
  } else if (isPlainMap(e)) {
    tag = e.type;
    get = (n) => (Object.hasOwn(e, n) ? e[n] : undefined);
  } else {
    return bad('an event must be an array or a map', e);
  }
  if (!isTag(tag)) {
    opts.onUnknown?.(tag);
    return undefined;
  }
  const f = (name: string): unknown => get(name, (FIELDS[tag].names as readonly string[]).indexOf(name));
  switch (tag) {
    case 'AllBlocksCleared':
      return { type: tag };
    case 'BlockRemoved':
      return { type: tag, block_hashes: hashList(f('block_hashes')), medium: optStr(f('medium'), 'medium'), group_idx: optInt(f('group_idx'), 'group_idx') };
    case 'BlockStored': {
      const tokens = f('token_ids');
      if (!Array.isArray(tokens)) bad('BlockStored.token_ids must be an array', tokens);
      const blockSize = optInt(f('block_size'), 'block_size');
      if (blockSize === null) bad('BlockStored.block_size is required', null);
      return {
        type: tag,
        block_hashes: hashList(f('block_hashes')),
        parent_block_hash: optHash(f('parent_block_hash')),
        token_ids: (tokens as unknown[]).map((t) => toInt(t, 'token_ids[]')),
        block_size: blockSize!,
        lora_id: optInt(f('lora_id'), 'lora_id'),
        medium: optStr(f('medium'), 'medium'),
        lora_name: optStr(f('lora_name'), 'lora_name'),
        extra_keys: extraKeys(f('extra_keys')),
        group_idx: optInt(f('group_idx'), 'group_idx'),
        kv_cache_spec_kind: optStr(f('kv_cache_spec_kind'), 'kv_cache_spec_kind'),
        kv_cache_spec_sliding_window: optInt(f('kv_cache_spec_sliding_window'), 'kv_cache_spec_sliding_window'),
      };
    }
  }
}

function isPlainMap(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== 'object') return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** A hash from the wire → BlockHash (uint64 bigint, or hex of bytes). */
export function toBlockHash(v: unknown): BlockHash {
  if (typeof v === 'bigint') return BigInt.asUintN(64, v);
  if (typeof v === 'number' && Number.isSafeInteger(v)) return BigInt.asUintN(64, BigInt(v));
  if (v instanceof Uint8Array && v.length > 0) return Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('hex');
  return bad('a block hash must be an integer or non-empty bytes', v);
}

function hashList(v: unknown): BlockHash[] {
  if (!Array.isArray(v)) return bad('block_hashes must be an array', v);
  return v.map(toBlockHash);
}

function optHash(v: unknown): BlockHash | null {
  return v === null || v === undefined ? null : toBlockHash(v);
}

function toInt(v: unknown, what: string): number {
  if (typeof v === 'number' && Number.isSafeInteger(v)) return v;
  if (typeof v === 'bigint' && v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(v);
  return bad(`${what} must be an integer`, v);
}

function optInt(v: unknown, what: string): number | null {
  return v === null || v === undefined ? null : toInt(v, what);
}

function toFloat(v: unknown, what: string): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  return bad(`${what} must be a number`, v);
}

function optStr(v: unknown, what: string): string | null {
  if (v === null || v === undefined) return null;
  return typeof v === 'string' ? v : bad(`${what} must be a string or nil`, v);
}

function extraKey(v: unknown): ExtraKey {
  if (v === null || v === undefined) return null;
  if (typeof v === 'string' || typeof v === 'number' || typeof v === 'bigint') return v;
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  if (Array.isArray(v)) return v.map(extraKey);
  return bad('extra_keys entries must be strings, integers, bytes or tuples', v);
}

function extraKeys(v: unknown): (ExtraKey[] | null)[] | null {
  if (v === null || v === undefined) return null;
  if (!Array.isArray(v)) return bad('extra_keys must be an array (one entry per block) or nil', v);
  return v.map((k) => (k === null || k === undefined ? null : Array.isArray(k) ? k.map(extraKey) : bad('extra_keys[i] must be a tuple or nil', k)));
}

/** The uint64 key the index files a hash under: the int itself, or the last 8 bytes (big-endian) of a digest. */
export function hashKey(h: BlockHash): bigint {
  if (typeof h === 'bigint') return h;
  const b = Buffer.from(h.length >= 16 ? h.slice(-16) : h.padStart(16, '0'), 'hex');
  return b.readBigUInt64BE(0);
}

// ---- encoding ----------------------------------------------------------------------------------------

export interface EncodeOptions {
  /** Default `map-events` (the post-#42892 encoding, what current vLLM sends). */
  encoding?: EventEncoding;
}

/** Encode a batch exactly as vLLM's publisher would in the chosen encoding. */
export function encodeEventBatch(batch: KvEventBatch, opts: EncodeOptions = {}): Buffer {
  const encoding = opts.encoding ?? 'map-events';
  if (!EVENT_ENCODINGS.includes(encoding)) throw new KvstashError(ErrorCode.INVALID_ARGUMENT, `unknown vLLM event encoding ${JSON.stringify(encoding)}; expected ${EVENT_ENCODINGS.join(', ')}`);
  const w = new MsgpackWriter();
  const hasRank = batch.data_parallel_rank !== null && batch.data_parallel_rank !== undefined;
  if (encoding === 'map-envelope') w.map(hasRank ? 3 : 2).str('ts');
  else w.array(hasRank ? 3 : 2);
  w.float64(batch.ts);
  if (encoding === 'map-envelope') w.str('events');
  w.array(batch.events.length);
  for (const ev of batch.events) writeEvent(w, ev, encoding === 'array-events');
  if (hasRank) {
    if (encoding === 'map-envelope') w.str('data_parallel_rank');
    w.int(batch.data_parallel_rank!);
  }
  return w.finish();
}

function writeEvent(w: MsgpackWriter, ev: KvEvent, asArray: boolean): void {
  const spec = FIELDS[ev.type];
  const names = spec.names as readonly string[];
  const rec = ev as unknown as Record<string, unknown>;
  const present = (i: number) => i < spec.required || (rec[names[i]!] !== null && rec[names[i]!] !== undefined);
  if (asArray) {
    let n = names.length;
    while (n > spec.required && !present(n - 1)) n--;
    w.array(n + 1).str(ev.type);
    for (let i = 0; i < n; i++) writeValue(w, names[i]!, rec[names[i]!]);
  } else {
    const keep = names.filter((_, i) => present(i));
    w.map(keep.length + 1).str('type').str(ev.type);
    for (const name of keep) writeValue(w.str(name), name, rec[name]);
  }
}

function writeValue(w: MsgpackWriter, name: string, v: unknown): void {
  if (v === null || v === undefined) w.nil();
  else if (name === 'block_hashes') {
    const hs = v as BlockHash[];
    w.array(hs.length);
    for (const h of hs) writeHash(w, h);
  } else if (name === 'parent_block_hash') writeHash(w, v as BlockHash);
  else writeExtra(w, v as ExtraKey);
}

function writeHash(w: MsgpackWriter, h: BlockHash): void {
  if (typeof h === 'bigint') w.int(BigInt.asUintN(64, h));
  else w.bin(Buffer.from(h, 'hex'));
}

function writeExtra(w: MsgpackWriter, v: ExtraKey): void {
  if (v === null || v === undefined) w.nil();
  else if (typeof v === 'string') w.str(v);
  else if (typeof v === 'bigint') w.int(v);
  else if (typeof v === 'number') (Number.isSafeInteger(v) ? w.int(v) : w.float64(v));
  else if (v instanceof Uint8Array) w.bin(v);
  else if (Array.isArray(v)) {
    w.array(v.length);
    for (const x of v) writeExtra(w, x);
  } else throw new KvstashError(ErrorCode.INVALID_ARGUMENT, `cannot encode ${typeof v} in a vLLM KV event`);
}

// ---- frames ------------------------------------------------------------------------------------------

/** An 8-byte big-endian sequence-number frame. */
export function encodeSeq(seq: bigint): Buffer {
  const b = Buffer.allocUnsafe(8);
  b.writeBigUInt64BE(BigInt.asUintN(64, seq));
  return b;
}

/** Read a seq frame; undefined when it is not exactly 8 bytes. */
export function decodeSeq(frame: Uint8Array): bigint | undefined {
  if (frame.length !== 8) return undefined;
  return Buffer.from(frame.buffer, frame.byteOffset, 8).readBigUInt64BE(0);
}
