/**
 * vLLM's prefix-cache block hash with `--prefix-caching-hash-algo sha256_cbor`, recomputed from token ids
 * (vllm/v1/core/kv_cache_utils.py, vllm/utils/hashing.py; rules in shared docs engine-interfaces.md §2).
 *
 * - `NONE_HASH` = sha256(canonical CBOR of the PYTHONHASHSEED value as a text string). vLLM with the seed unset
 *   uses random bytes: nothing outside that process can then reproduce its hashes.
 * - block i (tokens [i·bs, (i+1)·bs), full blocks only) = sha256(CBOR([parent, [tokens…], extra_keys])), where
 *   parent is the previous block's 32-byte digest (NONE_HASH for block 0) and extra_keys is null or an array:
 *   LoRA name (every block), multimodal keys of items overlapping the block, cache_salt (block 0 only).
 * - KV events carry the digest's last 8 bytes as a big-endian uint64 (`eventInt`) by default.
 *
 * Verified against every `sha256_cbor` vector in the shared fixtures (hash-vectors.json). Not implemented:
 * the default `sha256` algorithm (pickle protocol 5 bytes), the xxhash variants, and `prompt_embeds` keys.
 * Multimodal keys are best-effort: their form changed across vLLM versions and no vector exists.
 */
import { createHash } from 'node:crypto';
import { ErrorCode, KvstashError } from '../../protocol/errors.js';

/** The Python values that occur in vLLM's hashed tuples. Arrays stand for tuples and lists alike. */
export type CborValue = null | string | number | bigint | Uint8Array | readonly CborValue[];

function head(out: number[], major: number, n: bigint): void {
  const m = major << 5;
  if (n < 24n) out.push(m | Number(n));
  else if (n <= 0xffn) out.push(m | 24, Number(n));
  else if (n <= 0xffffn) out.push(m | 25, Number(n >> 8n), Number(n & 0xffn));
  else if (n <= 0xffffffffn) {
    out.push(m | 26);
    for (let s = 24n; s >= 0n; s -= 8n) out.push(Number((n >> s) & 0xffn));
  } else if (n <= 0xffffffffffffffffn) {
    out.push(m | 27);
    for (let s = 56n; s >= 0n; s -= 8n) out.push(Number((n >> s) & 0xffn));
  } else throw new KvstashError(ErrorCode.INVALID_ARGUMENT, `CBOR: integer ${n} is out of the 64-bit range`);
}

function encodeInto(out: number[], v: CborValue): void {
  if (v === null) out.push(0xf6);
  else if (typeof v === 'number' && v >= 0 && v < 24 && Number.isInteger(v)) out.push(v);
  else if (typeof v === 'number' && v >= 0 && v <= 0xffff && Number.isInteger(v)) {
    if (v <= 0xff) out.push(0x18, v);
    else out.push(0x19, v >> 8, v & 0xff);
  } else if (typeof v === 'number' || typeof v === 'bigint') {
    if (typeof v === 'number' && !Number.isSafeInteger(v)) throw new KvstashError(ErrorCode.INVALID_ARGUMENT, `CBOR: ${v} is not an integer`);
    const n = BigInt(v);
    if (n >= 0n) head(out, 0, n);
    else head(out, 1, -1n - n);
  } else if (typeof v === 'string') {
    const b = Buffer.from(v, 'utf8');
    head(out, 3, BigInt(b.length));
    for (const x of b) out.push(x);
  } else if (v instanceof Uint8Array) {
    head(out, 2, BigInt(v.length));
    for (const x of v) out.push(x);
  } else if (Array.isArray(v)) {
    head(out, 4, BigInt(v.length));
    for (const x of v) encodeInto(out, x);
  } else throw new KvstashError(ErrorCode.INVALID_ARGUMENT, `CBOR: cannot encode ${typeof v}`);
}

/** Canonical CBOR (shortest heads, definite lengths) for the subset above — what `cbor2.dumps(obj, canonical=True)` gives. */
export function canonicalCbor(v: CborValue): Buffer {
  const out: number[] = [];
  encodeInto(out, v);
  return Buffer.from(out);
}

export function sha256Cbor(v: CborValue): Buffer {
  return createHash('sha256').update(canonicalCbor(v)).digest();
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
  for (let i = 0; (i + 1) * bs <= tokens.length; i++) {
    const start = i * bs;
    const blockTokens = Array.prototype.slice.call(tokens, start, start + bs) as number[];
    const d = sha256Cbor([parent, blockTokens, blockExtraKeys(i, start, start + bs, opts)]);
    out.push(d);
    parent = d;
  }
  return out;
}

/** The event-int hashes of every full block of `tokens` (what vLLM's KV events report with int hashes). */
export function vllmEventHashes(tokens: ArrayLike<number>, opts: VllmHashOptions): bigint[] {
  return vllmBlockDigests(tokens, opts).map(eventInt);
}
