/**
 * vLLM's prefix-cache block hash with `--prefix-caching-hash-algo sha256_cbor`, recomputed from token ids
 * (vllm/v1/core/kv_cache_utils.py, vllm/utils/hashing.py; rules in docs/engine-interfaces.md §2).
 *
 * - `NONE_HASH` = sha256(canonical CBOR of the PYTHONHASHSEED value as a text string). vLLM with the seed unset
 *   uses random bytes: nothing outside that process can then reproduce its hashes.
 * - block i (tokens [i·bs, (i+1)·bs), full blocks only) = sha256(CBOR([parent, [tokens…], extra_keys])), where
 *   parent is the previous block's 32-byte digest (NONE_HASH for block 0) and extra_keys is null or an array:
 *   LoRA name (every block), multimodal keys of items overlapping the block, cache_salt (block 0 only).
 * - KV events carry the digest's last 8 bytes as a big-endian uint64 (`eventInt`) by default.
 *
 * Verified against every `sha256_cbor` vector in the shared fixtures (hash-vectors.json). Out of scope (run vLLM with
 * `--prefix-caching-hash-algo sha256_cbor`): the default `sha256` algorithm (pickle protocol 5 bytes), the xxhash
 * variants, and `prompt_embeds` keys.
 * Multimodal keys are best-effort: their form changed across vLLM versions and no vector exists.
 */
import * as crypto from 'node:crypto';
import { ErrorCode, KvstashError } from '../../protocol/errors.js';

/** The Python values that occur in vLLM's hashed tuples. Arrays stand for tuples and lists alike. */
export type CborValue = null | string | number | bigint | Uint8Array | readonly CborValue[];

/** A growable byte buffer with CBOR heads in the shortest form. */
class CborWriter {
  buf = Buffer.allocUnsafe(256);
  len = 0;

  room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.len + n));
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }

  head(major: number, n: number | bigint): void {
    this.room(9);
    const m = major << 5;
    const b = this.buf;
    if (typeof n === 'number' && n <= 0xffffffff) {
      if (n < 24) b[this.len++] = m | n;
      else if (n <= 0xff) { b[this.len++] = m | 24; b[this.len++] = n; }
      else if (n <= 0xffff) { b[this.len++] = m | 25; b.writeUInt16BE(n, this.len); this.len += 2; }
      else { b[this.len++] = m | 26; b.writeUInt32BE(n, this.len); this.len += 4; }
      return;
    }
    const big = BigInt(n);
    if (big <= 0xffffffffn) return this.head(major, Number(big));
    if (big > 0xffffffffffffffffn) throw new KvstashError(ErrorCode.INVALID_ARGUMENT, `CBOR: integer ${n} is out of the 64-bit range`);
    b[this.len++] = m | 27;
    b.writeBigUInt64BE(big, this.len);
    this.len += 8;
  }

  bytes(major: number, data: Uint8Array): void {
    this.head(major, data.length);
    this.room(data.length);
    this.buf.set(data, this.len);
    this.len += data.length;
  }

  value(v: CborValue): void {
    if (v === null) {
      this.room(1);
      this.buf[this.len++] = 0xf6;
    } else if (typeof v === 'number' || typeof v === 'bigint') {
      if (typeof v === 'number' && !Number.isSafeInteger(v)) throw new KvstashError(ErrorCode.INVALID_ARGUMENT, `CBOR: ${v} is not an integer`);
      if (v >= 0) this.head(0, v);
      else this.head(1, typeof v === 'number' ? -1 - v : -1n - v);
    } else if (typeof v === 'string') this.bytes(3, Buffer.from(v, 'utf8'));
    else if (v instanceof Uint8Array) this.bytes(2, v);
    else if (Array.isArray(v)) {
      this.head(4, v.length);
      for (const x of v as readonly CborValue[]) this.value(x);
    } else throw new KvstashError(ErrorCode.INVALID_ARGUMENT, `CBOR: cannot encode ${typeof v}`);
  }

  view(): Buffer {
    return this.buf.subarray(0, this.len);
  }
}

/** Canonical CBOR (shortest heads, definite lengths) for the subset above — what `cbor2.dumps(obj, canonical=True)` gives. */
export function canonicalCbor(v: CborValue): Buffer {
  const w = new CborWriter();
  w.value(v);
  return Buffer.from(w.view());
}

/** One-shot `crypto.hash` (Node ≥ 20.12) is ~2× faster than createHash for these ~90-byte inputs. */
const sha256: (b: Buffer) => Buffer = typeof crypto.hash === 'function'
  ? (b) => crypto.hash('sha256', b, 'buffer')
  : (b) => crypto.createHash('sha256').update(b).digest();

export function sha256Cbor(v: CborValue): Buffer {
  return sha256(canonicalCbor(v));
}

/** vLLM's seed digest for a fixed PYTHONHASHSEED (the value as a string, e.g. "0"). */
export function noneHash(pythonHashSeed: string): Buffer {
  return sha256Cbor(pythonHashSeed);
}

/** The int form KV events carry: the digest's last 8 bytes read as a big-endian uint64. */
export function eventInt(digest: Uint8Array): bigint {
  if (digest.length < 8) throw new KvstashError(ErrorCode.INVALID_ARGUMENT, `digest of ${digest.length} bytes is shorter than 8`);
  return Buffer.from(digest.buffer, digest.byteOffset, digest.byteLength).readBigUInt64BE(digest.length - 8);
}

/** A multimodal item of the request: its placeholder's token offset and length, and its identifier (hash). */
export interface MmItem {
  identifier: string;
  offset: number;
  length: number;
}

export interface VllmHashOptions {
  blockSize: number;
  /** PYTHONHASHSEED as vLLM saw it; default "0". Ignored when `noneHash` is given. */
  seed?: string;
  /** Precomputed NONE_HASH (saves one sha256 per call). */
  noneHash?: Uint8Array;
  lora?: string | null;
  cacheSalt?: string | null;
  mm?: readonly MmItem[];
  /** `tuple` (newest vLLM: `(identifier, item_offset − block_start)`) or `identifier` (older releases). Default `tuple`. */
  mmForm?: 'tuple' | 'identifier';
}

/** extra_keys of block `index` (tokens [start, end)), or null when empty — LoRA, then mm, then cache_salt. */
export function blockExtraKeys(index: number, start: number, end: number, opts: VllmHashOptions): CborValue[] | null {
  const keys: CborValue[] = [];
  if (opts.lora) keys.push(opts.lora);
  for (const it of opts.mm ?? []) {
    if (it.offset < end && it.offset + it.length > start) keys.push(opts.mmForm === 'identifier' ? it.identifier : [it.identifier, it.offset - start]);
  }
  if (index === 0 && opts.cacheSalt) keys.push(opts.cacheSalt);
  return keys.length ? keys : null;
}

/** The 32-byte digests of every full block of `tokens`, in chain order. */
export function vllmBlockDigests(tokens: ArrayLike<number>, opts: VllmHashOptions): Buffer[] {
  const bs = opts.blockSize;
  if (!Number.isSafeInteger(bs) || bs <= 0) throw new KvstashError(ErrorCode.INVALID_ARGUMENT, `block size must be a positive integer, got ${bs}`);
  let parent: Uint8Array = opts.noneHash ?? noneHash(opts.seed ?? '0');
  const out: Buffer[] = [];
  const w = new CborWriter();
  for (let i = 0; (i + 1) * bs <= tokens.length; i++) {
    const start = i * bs;
    // CBOR of the 3-tuple (parent, tuple(tokens), extra_keys), written straight from the token array
    w.len = 0;
    w.head(4, 3);
    w.bytes(2, parent);
    w.head(4, bs);
    for (let j = start; j < start + bs; j++) w.value(tokens[j]!);
    w.value(blockExtraKeys(i, start, start + bs, opts));
    const d = sha256(w.view());
    out.push(d);
    parent = d;
  }
  return out;
}

/** The event-int hashes of every full block of `tokens` (what vLLM's KV events report with int hashes). */
export function vllmEventHashes(tokens: ArrayLike<number>, opts: VllmHashOptions): bigint[] {
  return vllmBlockDigests(tokens, opts).map(eventInt);
}
