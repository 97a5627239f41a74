/**
 * How an `lm://` object is stored in the sidecar's TierStack: a small header with LMCache's metadata, the key
 * string, then the payload — so a GET can echo fmt/dtype/shape/location exactly after a restart or after the
 * object moved between tiers (the tier stack checksums the whole stored value, header included).
 *
 * Layout (little-endian), version 1:
 *
 * | offset | bytes | field                                                     |
 * |--------|-------|-----------------------------------------------------------|
 * | 0      | 4     | magic "KVLM"                                              |
 * | 4      | 1     | version = 1                                               |
 * | 5      | 1     | generation: 0 legacy, 1 v1-early, 2 v1                    |
 * | 6      | 2     | u16 key length K (UTF-8 bytes, ≤ 150)                     |
 * | 8      | 4     | i32 fmt                                                   |
 * | 12     | 4     | i32 dtype                                                 |
 * | 16     | 4     | i32 location                                              |
 * | 20     | 16    | i32 shape0..shape3                                        |
 * | 36     | K     | key string (lets LIST be rebuilt and a GET check its key) |
 * | 36+K   | n     | payload, exactly as the client sent it                    |
 *
 * Rules: a stored value that does not decode (wrong magic/version, short) is treated as a miss by the server,
 * never served; its key must equal the requested key or it is a miss.
 */
import { GENERATIONS, type Generation, type LmMeta, type Shape } from './protocol.js';

export const STORED_MAGIC = Buffer.from('KVLM', 'ascii');
export const STORED_VERSION = 1;
export const STORED_FIXED_BYTES = 36;

export interface StoredObject {
  generation: Generation;
  key: string;
  meta: LmMeta;
  payload: Buffer;
}

export function storedHeaderBytes(key: string): number {
  return STORED_FIXED_BYTES + Buffer.byteLength(key, 'utf8');
}

/** Write the stored-value header into the first storedHeaderBytes(key) bytes of `buf`. */
export function writeStoredHeader(buf: Buffer, gen: Generation, key: string, meta: LmMeta): void {
  STORED_MAGIC.copy(buf, 0);
  buf.writeUInt8(STORED_VERSION, 4);
  buf.writeUInt8(GENERATIONS.indexOf(gen), 5);
  const k = buf.write(key, STORED_FIXED_BYTES, 'utf8');
  buf.writeUInt16LE(k, 6);
  buf.writeInt32LE(meta.fmt, 8);
  buf.writeInt32LE(meta.dtype, 12);
  buf.writeInt32LE(meta.location, 16);
  for (let i = 0; i < 4; i++) buf.writeInt32LE(meta.shape[i]!, 20 + i * 4);
}

export function encodeStoredValue(gen: Generation, key: string, meta: LmMeta, payload: Buffer): Buffer {
  const h = storedHeaderBytes(key);
  const buf = Buffer.allocUnsafe(h + payload.length);
  writeStoredHeader(buf, gen, key, meta);
  payload.copy(buf, h);
  return buf;
}

/** Decode a stored value; undefined if it is not a version-1 lm:// object. The payload is a view. */
export function decodeStoredValue(buf: Buffer): StoredObject | undefined {
  if (buf.length < STORED_FIXED_BYTES || !buf.subarray(0, 4).equals(STORED_MAGIC) || buf[4] !== STORED_VERSION) return undefined;
  const generation = GENERATIONS[buf[5]!];
  const k = buf.readUInt16LE(6);
  if (!generation || buf.length < STORED_FIXED_BYTES + k) return undefined;
  const shape = [0, 1, 2, 3].map((i) => buf.readInt32LE(20 + i * 4)) as Shape;
  return {
    generation,
    key: buf.toString('utf8', STORED_FIXED_BYTES, STORED_FIXED_BYTES + k),
    meta: { fmt: buf.readInt32LE(8), dtype: buf.readInt32LE(12), location: buf.readInt32LE(16), shape },
    payload: buf.subarray(STORED_FIXED_BYTES + k),
  };
}
