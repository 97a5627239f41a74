/**
 * On-disk record format of the segment-log driver (./segment.ts); docs/storage.md "Segment log" draws it.
 *
 * Record = 80-byte head | value | 16-byte commit trailer, written in one writev with the rest of its batch.
 *   head:    "KVSR" · u8 version 1 · u8 type (1 put, 2 tombstone) · 2 zero bytes · 16-byte namespace · 32-byte hash ·
 *            u64le value length · 8-byte xxh64 of the value · u64le sequence number (hybrid clock, orders records
 *            across segments and processes; a compaction copy keeps its original number)
 *   trailer: "KVSC" · 4 zero bytes · 8-byte xxh64 of the head
 * A record counts only with its trailer, and the trailer names the head it closes: a writer killed mid-append leaves
 * a head without a matching trailer (or a short file), which the start-up scan finds and truncates. Values are not
 * hashed at scan time (that would read the whole log); the tier stack verifies each value's xxh64 when it reads it.
 */
import type { FileHandle } from 'node:fs/promises';
import { xxh64 } from '@node-rs/xxhash';

export const HEAD = 80;
export const TRAILER = 16;
export const PUT = 1;
export const DEL = 2;
const MAGIC = 0x5253564b; // "KVSR" little-endian
const COMMIT = 0x4353564b; // "KVSC"

export interface RecordHead {
  type: number;
  key: string;
  size: number;
  checksum: string;
  seq: number;
}

/** Bytes one record takes on disk. */
export const recordBytes = (size: number): number => HEAD + size + TRAILER;

export function encodeHead(type: number, key: string, size: number, checksum: string, seq: number): Buffer {
  const h = Buffer.alloc(HEAD);
  h.writeUInt32LE(MAGIC, 0);
  h[4] = 1;
  h[5] = type;
  h.write(key.slice(0, 32), 8, 16, 'hex');
  h.write(key.slice(33), 24, 32, 'hex');
  h.writeBigUInt64LE(BigInt(size), 56);
  h.write(checksum, 64, 8, 'hex');
  h.writeBigUInt64LE(BigInt(seq), 72);
  return h;
}

export function encodeTrailer(head: Buffer): Buffer {
  const t = Buffer.alloc(TRAILER);
  t.writeUInt32LE(COMMIT, 0);
  t.writeBigUInt64BE(xxh64(head), 8);
  return t;
}

export function decodeHead(b: Buffer, off = 0): RecordHead | undefined {
  if (b.length - off < HEAD || b.readUInt32LE(off) !== MAGIC || b[off + 4] !== 1) return undefined;
  const type = b[off + 5]!;
  if (type !== PUT && type !== DEL) return undefined;
  const size = b.readBigUInt64LE(off + 56);
  const seq = b.readBigUInt64LE(off + 72);
  if (size > BigInt(Number.MAX_SAFE_INTEGER) || seq > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
  return {
    type, key: `${b.toString('hex', off + 8, off + 24)}/${b.toString('hex', off + 24, off + 56)}`,
    size: Number(size), checksum: b.toString('hex', off + 64, off + 72), seq: Number(seq),
  };
}

/** Does `t` (at tOff) commit the head at `h`/hOff? */
export function trailerMatches(h: Buffer, hOff: number, t: Buffer, tOff: number): boolean {
  return t.readUInt32LE(tOff) === COMMIT && t.readBigUInt64BE(tOff + 8) === xxh64(h.subarray(hOff, hOff + HEAD));
}

/** pread exactly len bytes (fewer only at end of file). */
export async function readAt(fh: FileHandle, buf: Buffer, off: number, len: number, pos: number): Promise<number> {
  let got = 0;
  while (got < len) {
    const { bytesRead } = await fh.read(buf, off + got, len - got, pos + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got;
}

/**
 * Walk one segment's committed records in order, calling `onRecord(head, offset)` for each. Returns the offset where
 * committed records end: the file size, or the start of a torn tail (which the caller truncates).
 */
export async function scanSegment(fh: FileHandle, fileSize: number, onRecord: (h: RecordHead, off: number) => void): Promise<number> {
  const CHUNK = 4 << 20;
  const buf = Buffer.allocUnsafe(CHUNK);
  const tbuf = Buffer.allocUnsafe(TRAILER);
  let bufPos = 0;
  let bufLen = 0;
  let off = 0;
  while (off + HEAD + TRAILER <= fileSize) {
    if (off < bufPos || off + HEAD > bufPos + bufLen) {
      bufPos = off;
      bufLen = await readAt(fh, buf, 0, Math.min(CHUNK, fileSize - off), off);
    }
    const h = decodeHead(buf.subarray(0, bufLen), off - bufPos);
    if (!h) break;
    const end = off + recordBytes(h.size);
    if (end > fileSize) break;
    let ok: boolean;
    if (end <= bufPos + bufLen) ok = trailerMatches(buf, off - bufPos, buf, end - TRAILER - bufPos);
    else ok = (await readAt(fh, tbuf, 0, TRAILER, end - TRAILER)) === TRAILER && trailerMatches(buf, off - bufPos, tbuf, 0);
    if (!ok) break;
    onRecord(h, off);
    off = end;
  }
  return off;
}
