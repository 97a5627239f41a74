/**
 * Example vendor driver: an append-only segment log. Written as a storage vendor would, against the public SDK
 * only (outside this repository: `kvstash/driver`).
 *
 * Store layout under `dir`: one file per writer instance, `<ms>-<pid>-<random>.seg`, never shared between writers.
 * Record = 72-byte header | value | 8-byte trailer.
 *   header: "KVSG" magic, u8 type (1 put, 2 delete), 3 zero bytes, 16-byte namespace, 32-byte hash,
 *           u64le value length, 8-byte xxh64 checksum   (4+1+3+16+32+8+8 = 72)
 *   trailer: "KVSGEND!" — written in the same write as the record; a record without it is ignored.
 * A writer killed mid-record leaves a record without its trailer at the end of its own segment: `open` (which
 * scans every segment, oldest first) stops reading that segment there, so the value never becomes visible.
 * Deletes append a tombstone. There is no compaction in this example: space of overwritten and deleted values
 * comes back only when segments are removed offline.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import {
  assertKey, assertValueSize, ErrorCode, KvstashError, getManyBySingle, putManyBySingle,
  type BlockMeta, type DriverFactory, type ListedValue, type StorageDriver, type StoredValue,
} from '../../connector/storage/sdk.js';

export interface SegmentDriverConfig {
  dir: string;
  /** Start a new segment file after this many bytes. */
  segmentBytes: number;
  /** fsync after every record (power-loss durability). */
  fsync: boolean;
  maxValueBytes: number;
}

const HEADER = 72;
const MAGIC = Buffer.from('KVSG');
const TRAILER = Buffer.from('KVSGEND!');
const PUT = 1;
const DEL = 2;

interface Loc { segment: string; offset: number; size: number; checksum: string }

export class SegmentDriver implements StorageDriver {
  readonly name = 'segment';
  readonly durable: boolean;
  readonly limits: { maxValueBytes: number };
  private readonly index = new Map<string, Loc>();
  private readonly readers = new Map<string, Promise<FileHandle>>();
  private writer: { name: string; fh: FileHandle; size: number } | undefined;
  private tail: Promise<unknown> = Promise.resolve();
  private closed = false;
  private readonly c = { puts: 0, gets: 0, deletes: 0, bytesAppended: 0, tornRecords: 0 };

  constructor(private readonly config: SegmentDriverConfig) {
    this.durable = config.fsync;
    this.limits = { maxValueBytes: config.maxValueBytes };
  }

  async open(): Promise<void> {
    await fs.mkdir(this.config.dir, { recursive: true });
    const segs = (await fs.readdir(this.config.dir)).filter((n) => n.endsWith('.seg')).sort();
    for (const s of segs) await this.scan(s);
  }

  /** Replay one segment into the index, stopping at the first incomplete record. */
  private async scan(segment: string): Promise<void> {
    const buf = await fs.readFile(path.join(this.config.dir, segment));
    let off = 0;
    while (off + HEADER <= buf.length) {
      if (!buf.subarray(off, off + 4).equals(MAGIC)) break;
      const type = buf[off + 4]!;
      const key = `${buf.toString('hex', off + 8, off + 24)}/${buf.toString('hex', off + 24, off + 56)}`;
      const size = Number(buf.readBigUInt64LE(off + 56));
      const end = off + HEADER + size;
      if (end + TRAILER.length > buf.length || !buf.subarray(end, end + TRAILER.length).equals(TRAILER)) {
        this.c.tornRecords++;
        break;
      }
      if (type === PUT) this.index.set(key, { segment, offset: off + HEADER, size, checksum: buf.toString('hex', off + 64, off + 72) });
      else if (type === DEL) this.index.delete(key);
      off = end + TRAILER.length;
    }
  }

  private check(): void {
    if (this.closed) throw new KvstashError(ErrorCode.UNAVAILABLE, 'segment driver is closed');
  }

  private fail(op: string, err: unknown): never {
    throw new KvstashError(ErrorCode.STORAGE, `segment ${op} failed: ${(err as Error).message}`, { cause: err });
  }

  /** Append one record; appends are serialized so each lands whole at a known offset. */
  private append(type: number, key: string, value: Buffer, checksum: string): Promise<Loc> {
    const run = async (): Promise<Loc> => {
      if (!this.writer || this.writer.size >= this.config.segmentBytes) {
        await this.writer?.fh.close();
        const name = `${Date.now().toString().padStart(15, '0')}-${process.pid}-${randomBytes(4).toString('hex')}.seg`;
        this.writer = { name, fh: await fs.open(path.join(this.config.dir, name), 'wx'), size: 0 };
      }
      const w = this.writer;
      const h = Buffer.alloc(HEADER);
      MAGIC.copy(h, 0);
      h[4] = type;
      h.write(key.slice(0, 32), 8, 16, 'hex');
      h.write(key.slice(33), 24, 32, 'hex');
      h.writeBigUInt64LE(BigInt(value.length), 56);
      h.write(checksum, 64, 8, 'hex');
      const at = w.size;
      try {
        await w.fh.writev([h, value, TRAILER], at);
        if (this.config.fsync) await w.fh.sync();
      } catch (err) {
        // A failed append may have left part of a record: never write after it (a scan stops there).
        this.writer = undefined;
        await w.fh.close().catch(() => undefined);
        throw err;
      }
      w.size += HEADER + value.length + TRAILER.length;
      this.c.bytesAppended += HEADER + value.length + TRAILER.length;
      return { segment: w.name, offset: at + HEADER, size: value.length, checksum };
    };
    const p = this.tail.then(run);
    this.tail = p.catch(() => undefined);
    return p;
  }

  private reader(segment: string): Promise<FileHandle> {
    let r = this.readers.get(segment);
    if (!r) {
      r = fs.open(path.join(this.config.dir, segment), 'r');
      this.readers.set(segment, r);
      r.catch(() => this.readers.delete(segment));
    }
    return r;
  }

  async get(key: string): Promise<StoredValue | undefined> {
    assertKey(key);
    this.check();
    const loc = this.index.get(key);
    if (!loc) return undefined;
    try {
      const buf = Buffer.allocUnsafe(loc.size);
      const { bytesRead } = await (await this.reader(loc.segment)).read(buf, 0, loc.size, loc.offset);
      if (bytesRead !== loc.size) this.fail('read', new Error(`short read of ${key}`));
      this.c.gets++;
      return { value: buf, meta: { checksum: loc.checksum } };
    } catch (err) {
      if (err instanceof KvstashError) throw err;
      this.fail('read', err);
    }
  }

  async put(key: string, value: Buffer, meta: BlockMeta): Promise<void> {
    assertKey(key);
    assertValueSize(value, this.limits);
    this.check();
    try {
      const loc = await this.append(PUT, key, value, meta.checksum);
      this.index.set(key, loc);
      this.c.puts++;
    } catch (err) {
      this.fail('append', err);
    }
  }

  async has(key: string): Promise<boolean> {
    assertKey(key);
    this.check();
    return this.index.has(key);
  }

  async delete(key: string): Promise<boolean> {
    assertKey(key);
    this.check();
    if (!this.index.has(key)) return false;
    this.index.delete(key);
    try {
      await this.append(DEL, key, Buffer.alloc(0), '0'.repeat(16));
    } catch (err) {
      this.fail('append tombstone', err);
    }
    this.c.deletes++;
    return true;
  }

  getMany(keys: string[]): Promise<(StoredValue | undefined)[]> {
    return getManyBySingle(this, keys);
  }

  putMany(items: { key: string; value: Buffer; meta: BlockMeta }[]): Promise<boolean[]> {
    return putManyBySingle(this, items);
  }

  async *list(): AsyncIterable<ListedValue> {
    this.check();
    for (const [key, l] of [...this.index]) yield { key, size: l.size, meta: { checksum: l.checksum } };
  }

  stats(): Record<string, number> {
    return { ...this.c, values: this.index.size };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.tail;
    await this.writer?.fh.close().catch(() => undefined);
    for (const r of this.readers.values()) await r.then((fh) => fh.close(), () => undefined);
  }
}

function num(raw: Record<string, unknown>, field: string, def: number): number {
  const v = raw[field] ?? def;
  if (typeof v !== 'number' || !(v > 0)) throw new KvstashError(ErrorCode.CONFIG, `segment.${field} must be a positive number, got ${JSON.stringify(v)}`);
  return v;
}

const factory: DriverFactory<SegmentDriverConfig> = {
  name: 'segment',
  parseConfig(raw) {
    if (typeof raw.dir !== 'string' || raw.dir === '') throw new KvstashError(ErrorCode.CONFIG, 'segment driver needs "dir": a folder path');
    const fsync = raw.fsync ?? false;
    if (typeof fsync !== 'boolean') throw new KvstashError(ErrorCode.CONFIG, 'segment.fsync must be true or false');
    return { dir: raw.dir, fsync, segmentBytes: num(raw, 'segmentBytes', 256 * 2 ** 20), maxValueBytes: num(raw, 'maxValueBytes', 256 * 2 ** 20) };
  },
  create: (c) => new SegmentDriver(c),
};

export default factory;
