/**
 * Block identity: namespace ids and the canonical chained block hash (kvstash hash v1).
 * Byte-for-byte definition and test vectors: docs/block-identity.md and protocol/vectors/block-hash.json.
 * The Python package (adapters/python/kvstash/hashing.py) implements the same functions against the same vectors.
 *
 * Namespace id = first 16 bytes, as hex, of SHA-256 over
 *   "kvstash-ns-v1\n" + for each field in this order: "<name>=<value>\n"
 *   fields: model, engine, layout, tp_rank, tp_size, pp_rank, pp_size, tenant (integers in decimal).
 *
 * Block hash h_i = SHA-256( "kvstash-block-v1" ‖ h_{i-1} ‖ u32le(T) ‖ T × u32le(token) ‖ u32le(E) ‖ E × extra )
 *   h_{-1} = 32 zero bytes; T = tokens in the block (always the block size: only full blocks are hashed);
 *   extra = u8 tag ‖ u32le(len) ‖ bytes, in this order: LoRA name (tag 1, every block), cache salt
 *   (tag 2, first block only), one multimodal item per overlapping item (tag 3, UTF-8 "<identifier>:<offset of
 *   the item's first token relative to the block start, decimal, may be negative>").
 */
import { createHash } from 'node:crypto';
import type { NamespaceDescriptor } from '../protocol/wire.js';

export const NS_FIELDS = ['model', 'engine', 'layout', 'tp_rank', 'tp_size', 'pp_rank', 'pp_size', 'tenant'] as const;

export function namespaceId(d: NamespaceDescriptor): string {
  let s = 'kvstash-ns-v1\n';
  for (const f of NS_FIELDS) s += `${f}=${d[f]}\n`;
  return createHash('sha256').update(s, 'utf8').digest('hex').slice(0, 32);
}

export interface MultimodalItem {
  identifier: string;
  /** Index of the item's first token in the request. */
  offset: number;
  /** Number of tokens the item occupies. */
  length: number;
}

export interface HashExtras {
  lora?: string | null;
  cacheSalt?: string | null;
  mm?: MultimodalItem[];
}

const DOMAIN = Buffer.from('kvstash-block-v1', 'ascii');
export const ZERO_HASH = Buffer.alloc(32);

function extraBytes(tag: number, value: Buffer): Buffer {
  const b = Buffer.allocUnsafe(5 + value.length);
  b.writeUInt8(tag, 0);
  b.writeUInt32LE(value.length, 1);
  value.copy(b, 5);
  return b;
}

/** Hash of one block given its parent hash. */
export function blockHash(parent: Buffer, tokens: ArrayLike<number>, extras: Buffer[] = []): Buffer {
  const tok = Buffer.allocUnsafe(4 + tokens.length * 4);
  tok.writeUInt32LE(tokens.length, 0);
  for (let i = 0; i < tokens.length; i++) tok.writeUInt32LE(tokens[i]!, 4 + i * 4);
  const n = Buffer.allocUnsafe(4);
  n.writeUInt32LE(extras.length, 0);
  const h = createHash('sha256').update(DOMAIN).update(parent).update(tok).update(n);
  for (const e of extras) h.update(e);
  return h.digest();
}

/** Chained hashes of every full block of `tokens`. Returns one 32-byte Buffer per full block. */
export function blockHashes(tokens: ArrayLike<number>, blockSize: number, extras: HashExtras = {}): Buffer[] {
  if (!Number.isInteger(blockSize) || blockSize <= 0) throw new RangeError(`blockSize must be a positive integer, got ${blockSize}`);
  const out: Buffer[] = [];
  let parent: Buffer = ZERO_HASH;
  const full = Math.floor(tokens.length / blockSize);
  for (let b = 0; b < full; b++) {
    const start = b * blockSize;
    const ex: Buffer[] = [];
    if (extras.lora) ex.push(extraBytes(1, Buffer.from(extras.lora, 'utf8')));
    if (b === 0 && extras.cacheSalt) ex.push(extraBytes(2, Buffer.from(extras.cacheSalt, 'utf8')));
    for (const m of extras.mm ?? []) {
      if (m.offset < start + blockSize && m.offset + m.length > start) {
        ex.push(extraBytes(3, Buffer.from(`${m.identifier}:${m.offset - start}`, 'utf8')));
      }
    }
    const slice = Array.prototype.slice.call(tokens, start, start + blockSize) as number[];
    parent = blockHash(parent, slice, ex);
    out.push(parent);
  }
  return out;
}

/** Concatenate hashes into the wire `keys` field. */
export function packKeys(hashes: Buffer[]): Buffer {
  return Buffer.concat(hashes);
}
