/**
 * Segment-log driver ("segment"): blocks appended to large segment files, so every write is sequential whatever the
 * block size. Record format and torn-tail detection: ./segment-format.ts; layout, recovery and when to pick it over
 * the file-per-block driver: docs/storage.md "Segment log".
 *
 * - Layout: `<root>/seg-v1/<16-hex start clock>-<pid>.log`. Each instance appends only to segments it created
 *   (created with O_EXCL), so two instances never write one file; the index is in memory, rebuilt at `open` by
 *   scanning every segment (the record with the highest sequence number wins per key; a tombstone deletes).
 * - Group commit: puts and deletes queue; one writer takes everything queued (up to `maxBatchBytes`), writes it
 *   with one writev at the segment's end, and with `fsync` one fdatasync for the whole batch; then the index
 *   changes and every put of the batch resolves. A put resolved = it survives kill -9; with fsync, power loss too.
 *   `stats().durableSeq` is the highest sequence number known on stable storage (fsync) or written (no fsync).
 * - A failed or short write truncates the segment back to where the batch began (if that fails too, the segment
 *   is retired and the next batch opens a new one); every put of the batch rejects with KVS_STORAGE.
 * - Reads: one pread of head + value into a new buffer (the value is a view of it: no second copy); the head's
 *   key, length and sequence number are checked against the index. getMany reads runs of records that lie back to
 *   back in one segment (a chain's blocks saved together) with one pread.
 * - Compaction: a sealed segment whose live bytes fall below `compactBelow` of its size has its live records
 *   (and the tombstones still needed) appended again with their original sequence numbers, then is unlinked.
 *   Reads keep going during it: a segment's file handle is closed only when no read holds it. A crash mid-
 *   compaction leaves both copies, identical and equally numbered: start-up keeps one.
 * - Not shared (`shared: false`): one sidecar owns the folder. Shared folders (NFS) keep the file-per-block layout.
 */
import { promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { ErrorCode, KvstashError } from '../../protocol/errors.js';
import {
  assertKey, assertValueSize, isKey, type BlockMeta, type DriverFactory, type DriverLimits, type ListedValue,
  type ReadIntoItem, type ReadIntoResult, type StorageDriver, type StoredValue,
} from './driver.js';
import { parseFileConfig, readFully, writeAll } from './file.js';
import { DEL, HEAD, PUT, TRAILER, decodeHead, encodeHead, encodeTrailer, readAt, recordBytes, scanSegment } from './segment-format.js';

export interface SegmentDriverConfig {
  root: string;
  fsync: boolean;
  maxValueBytes: number;
  /** Start a new segment once the active one reaches this size. */
  segmentBytes: number;
  /** Compact a sealed segment when its live bytes fall below this fraction of its size (0 turns it off). */
  compactBelow: number;
  /** Most bytes one group commit writes. */
  maxBatchBytes: number;
}

interface Seg {
  name: string;
  fh: FileHandle;
  size: number;
  live: number;
  /** Keys with a put record in this segment (live or not): decides which tombstones compaction must keep. */
  putKeys: Set<string>;
  tombs: Map<string, { off: number; seq: number }>;
  refs: number;
  gone: boolean;
  compacting: boolean;
  /** More of it died while it was being compacted: look again when that compaction ends. */
  again: boolean;
}

interface Loc { seg: Seg; off: number; size: number; checksum: string; seq: number }

interface Pending {
  type: number;
  key: string;
  value: Buffer | undefined;
  checksum: string;
  seq: number;
  /** Compaction copy: applied only while the index still points at `from`. */
  from?: Loc | undefined;
  resolve: (loc: Loc | undefined) => void;
  reject: (err: unknown) => void;
}

/** Reads of back-to-back records merge up to this size (small blocks: fewer syscalls; big ones read in parallel). */
const MERGE_BYTES = 2 << 20;
let lastClock = 0;
/** Hybrid clock: ms × 1024 + counter, never going back in this process (exact to 2^53 until the year 2248). */
const nextSeq = (): number => (lastClock = Math.max(lastClock + 1, Date.now() * 1024));

export class SegmentDriver implements StorageDriver {
  readonly name = 'segment';
  readonly limits: DriverLimits;
  readonly durable: boolean;
  private readonly index = new Map<string, Loc>();
  private readonly segs = new Map<string, Seg>();
  private active: Seg | undefined;
  private queue: Pending[] = [];
  private flushing: Promise<void> | undefined;
  private compactions: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly c = {
    puts: 0, gets: 0, deletes: 0, batches: 0, fsyncs: 0, bytesAppended: 0, readBytes: 0, mergedReads: 0,
    tornTails: 0, tornBytes: 0, torn: 0, errors: 0, lostTombstones: 0, compactions: 0, compactedBytes: 0, durableSeq: 0, segments: 0,
  };

  constructor(readonly config: SegmentDriverConfig) {
    this.limits = { maxValueBytes: config.maxValueBytes };
    this.durable = config.fsync;
  }

  private get dir(): string {
    return path.join(this.config.root, 'seg-v1');
  }

  async open(): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true });
    const names = (await fs.readdir(this.dir)).filter((n) => /^[0-9a-f]{16}-\d+\.log$/.test(n)).sort();
    // Per key, the record with the highest sequence number wins (a compaction copy ties with its original).
    const latest = new Map<string, { type: number; loc: Loc }>();
    for (const name of names) {
      const fh = await fs.open(path.join(this.dir, name), 'r+');
      const seg = this.addSeg(name, fh, 0);
      const { size } = await fh.stat();
      const end = await scanSegment(fh, size, (h, off) => {
        if (h.type === PUT) seg.putKeys.add(h.key);
        else seg.tombs.set(h.key, { off, seq: h.seq });
        const cur = latest.get(h.key);
        if (!cur || cur.loc.seq < h.seq) latest.set(h.key, { type: h.type, loc: { seg, off, size: h.size, checksum: h.checksum, seq: h.seq } });
        lastClock = Math.max(lastClock, h.seq);
      });
      if (end < size) {
        await fh.truncate(end); // a writer killed mid-append: its uncommitted tail goes
        this.c.tornTails++;
        this.c.tornBytes += size - end;
      }
      seg.size = end;
      if (end === 0) {
        // Nothing committed (a writer killed before its first record landed): the file goes.
        this.segs.delete(name);
        await fh.close();
        await fs.unlink(path.join(this.dir, name)).catch(() => undefined);
      }
    }
    this.c.segments = this.segs.size;
    for (const [key, { type, loc }] of latest) {
      if (type !== PUT) continue;
      this.index.set(key, loc);
      loc.seg.live += recordBytes(loc.size);
    }
    for (const seg of [...this.segs.values()]) this.maybeCompact(seg);
  }

  private addSeg(name: string, fh: FileHandle, size: number): Seg {
    const seg: Seg = { name, fh, size, live: 0, putKeys: new Set(), tombs: new Map(), refs: 0, gone: false, compacting: false, again: false };
    this.segs.set(name, seg);
    this.c.segments = this.segs.size;
    return seg;
  }

  private check(): void {
    if (this.closed) throw new KvstashError(ErrorCode.UNAVAILABLE, 'segment driver is closed');
  }

  // ---- writes ----------------------------------------------------------------------------------------------

  private enqueue(p: Omit<Pending, 'resolve' | 'reject'>): Promise<Loc | undefined> {
    return new Promise((resolve, reject) => {
      this.queue.push({ ...p, resolve, reject });
      if (!this.flushing) this.flushing = this.flush().finally(() => { this.flushing = undefined; });
    });
  }

  private async flush(): Promise<void> {
    await Promise.resolve(); // puts issued in the same tick (a batch, a chain) go out in one group commit
    while (this.queue.length > 0) {
      let bytes = 0;
      let n = 0;
      while (n < this.queue.length && n < 512 && (n === 0 || bytes + recordBytes(this.queue[n]!.value?.length ?? 0) <= this.config.maxBatchBytes)) {
        bytes += recordBytes(this.queue[n]!.value?.length ?? 0);
        n++;
      }
      const batch = this.queue.splice(0, n);
      try {
        const locs = await this.write(batch, bytes);
        for (let i = 0; i < batch.length; i++) batch[i]!.resolve(this.apply(batch[i]!, locs[i]!));
      } catch (err) {
        this.c.errors++;
        const e = new KvstashError(ErrorCode.STORAGE, `segment append failed: ${(err as Error).message}`, { cause: err });
        for (const p of batch) p.reject(e);
      }
    }
  }

  private async newSegment(): Promise<Seg> {
    for (;;) {
      const name = `${nextSeq().toString(16).padStart(16, '0')}-${process.pid}.log`;
      try {
        const fh = await fs.open(path.join(this.dir, name), 'wx+');
        if (this.config.fsync) await syncDir(this.dir);
        return this.addSeg(name, fh, 0);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
    }
  }

  /** Append one batch; returns each record's location (not yet in the index). */
  private async write(batch: Pending[], bytes: number): Promise<Loc[]> {
    if (!this.active || (this.active.size > 0 && this.active.size + bytes > this.config.segmentBytes)) {
      const old = this.active;
      this.active = await this.newSegment();
      if (old) this.maybeCompact(old);
    }
    const seg = this.active;
    const start = seg.size;
    const parts: Buffer[] = [];
    const locs: Loc[] = [];
    let off = start;
    for (const p of batch) {
      const size = p.value?.length ?? 0;
      const head = encodeHead(p.type, p.key, size, p.checksum, p.seq);
      parts.push(head);
      if (size > 0) parts.push(p.value!);
      parts.push(encodeTrailer(head));
      locs.push({ seg, off, size, checksum: p.checksum, seq: p.seq });
      off += recordBytes(size);
    }
    try {
      await writeAll(seg.fh, parts, start);
      if (this.config.fsync) {
        await seg.fh.datasync();
        this.c.fsyncs++;
      }
    } catch (err) {
      // Take the batch back out; if even that fails, never append to this segment again (start-up truncates it).
      await seg.fh.truncate(start).catch(() => { if (this.active === seg) this.active = undefined; });
      throw err;
    }
    seg.size = off;
    this.c.batches++;
    this.c.bytesAppended += off - start;
    this.c.durableSeq = Math.max(this.c.durableSeq, batch[batch.length - 1]!.seq);
    return locs;
  }

  /** Make a written record visible in the index. */
  private apply(p: Pending, loc: Loc): Loc | undefined {
    const cur = this.index.get(p.key);
    if (p.type === PUT) {
      loc.seg.putKeys.add(p.key);
      if (p.from ? cur !== p.from : cur && cur.seq > loc.seq) return undefined; // a compaction copy overtaken
      if (cur) this.dead(cur);
      this.index.set(p.key, loc);
      loc.seg.live += recordBytes(loc.size);
      return loc;
    }
    loc.seg.tombs.set(p.key, { off: loc.off, seq: loc.seq });
    if (cur && cur.seq < loc.seq) {
      this.index.delete(p.key);
      this.dead(cur);
    }
    return loc;
  }

  private dead(loc: Loc): void {
    loc.seg.live -= recordBytes(loc.size);
    this.maybeCompact(loc.seg);
  }

  async put(key: string, value: Buffer, meta: BlockMeta): Promise<void> {
    assertKey(key);
    assertValueSize(value, this.limits);
    this.check();
    await this.enqueue({ type: PUT, key, value, checksum: meta.checksum, seq: nextSeq() });
    this.c.puts++;
  }

  async putMany(items: { key: string; value: Buffer; meta: BlockMeta }[]): Promise<boolean[]> {
    return Promise.all(items.map((it) => this.put(it.key, it.value, it.meta).then(() => true, () => false)));
  }

  async delete(key: string): Promise<boolean> {
    assertKey(key);
    this.check();
    if (!this.index.has(key)) return false;
    try {
      await this.enqueue({ type: DEL, key, value: undefined, checksum: '0'.repeat(16), seq: nextSeq() });
    } catch {
      // No room even for a tombstone (a full disk): forget the value anyway, so whole segments can die and free
      // space. After a restart it may come back: its bytes are intact (and verified on read), only no longer wanted.
      const cur = this.index.get(key);
      if (cur) {
        this.index.delete(key);
        this.dead(cur);
      }
      this.c.lostTombstones++;
    }
    this.c.deletes++;
    return true;
  }

  // ---- reads -----------------------------------------------------------------------------------------------

  async get(key: string): Promise<StoredValue | undefined> {
    assertKey(key);
    this.check();
    const loc = this.index.get(key);
    return loc ? (await this.readRun([loc], [key]))[0] : undefined;
  }

  async getMany(keys: string[]): Promise<(StoredValue | undefined)[]> {
    const out = new Array<StoredValue | undefined>(keys.length);
    if (this.closed) return out;
    const found: { i: number; loc: Loc }[] = [];
    keys.forEach((k, i) => {
      const loc = typeof k === 'string' ? this.index.get(k) : undefined;
      if (loc) found.push({ i, loc });
    });
    found.sort((a, b) => (a.loc.seg === b.loc.seg ? a.loc.off - b.loc.off : a.loc.seg.name < b.loc.seg.name ? -1 : 1));
    const runs: { i: number; loc: Loc }[][] = [];
    for (const f of found) {
      const run = runs[runs.length - 1];
      const last = run?.[run.length - 1]?.loc;
      const runBytes = run ? last!.off + recordBytes(last!.size) - run[0]!.loc.off : 0;
      if (run && last!.seg === f.loc.seg && last!.off + recordBytes(last!.size) === f.loc.off && runBytes + recordBytes(f.loc.size) <= MERGE_BYTES) run.push(f);
      else runs.push([f]);
    }
    await Promise.all(runs.map(async (run) => {
      const vals = await this.readRun(run.map((r) => r.loc), run.map((r) => keys[r.i]!)).catch(() => []);
      run.forEach((r, j) => { out[r.i] = vals[j]; });
    }));
    return out;
  }

  /**
   * Read values into the caller's buffers. Records lying back to back in one segment (a chain's blocks saved
   * together) are read with one preadv: heads and trailers into one small scratch buffer, each value straight into
   * its `into`. Each head is checked against the index as in get.
   */
  async readInto(items: ReadIntoItem[]): Promise<ReadIntoResult[]> {
    const out = new Array<ReadIntoResult>(items.length).fill(this.closed ? 'failed' : 'missing');
    if (this.closed) return out;
    const runs: { i: number; loc: Loc }[][] = [];
    let last: Loc | undefined;
    for (let i = 0; i < items.length; i++) {
      const { key, into } = items[i]!;
      const bad = !isKey(key);
      const loc = bad ? undefined : this.index.get(key);
      if (!loc) {
        if (bad) out[i] = 'failed';
        last = undefined;
        continue;
      }
      if (loc.size !== into.length) {
        out[i] = { size: loc.size, meta: { checksum: loc.checksum } }; // not what the caller expects: nothing read
        last = undefined;
        continue;
      }
      // Items come in chain order; a run is cut at a gap, a segment change or IOV_MAX buffers.
      const run = runs[runs.length - 1];
      if (run && last && last.seg === loc.seg && last.off + recordBytes(last.size) === loc.off && run.length < 500) run.push({ i, loc });
      else runs.push([{ i, loc }]);
      last = loc;
    }
    await Promise.all(runs.map(async (run) => {
      const res = await this.readRunInto(run.map((r) => r.loc), run.map((r) => items[r.i]!)).catch(() => undefined);
      run.forEach((r, j) => { out[r.i] = res?.[j] ?? 'failed'; });
    }));
    return out;
  }

  private async readRunInto(locs: Loc[], items: ReadIntoItem[]): Promise<ReadIntoResult[]> {
    const seg = locs[0]!.seg;
    const gap = TRAILER + HEAD;
    const scratch = Buffer.allocUnsafe(HEAD + (locs.length - 1) * gap);
    const parts: Buffer[] = [scratch.subarray(0, HEAD)];
    for (let j = 0; j < locs.length; j++) {
      if (j > 0) parts.push(scratch.subarray(HEAD + (j - 1) * gap, HEAD + j * gap));
      if (locs[j]!.size > 0) parts.push(items[j]!.into);
    }
    seg.refs++;
    let got: number;
    try {
      got = await readFully(seg.fh, parts, locs[0]!.off);
    } catch (err) {
      this.c.errors++;
      throw new KvstashError(ErrorCode.STORAGE, `segment read of ${items[0]!.key} failed: ${(err as Error).message}`, { cause: err });
    } finally {
      if (--seg.refs === 0 && seg.gone) void seg.fh.close().catch(() => undefined);
    }
    if (locs.length > 1) this.c.mergedReads++;
    const first = locs[0]!.off;
    return locs.map((loc, j): ReadIntoResult => {
      const hb = j === 0 ? scratch : scratch.subarray(HEAD + (j - 1) * gap + TRAILER);
      const h = decodeHead(hb, 0);
      if (loc.off - first + HEAD + loc.size > got || !h || h.type !== PUT || h.key !== items[j]!.key || h.size !== loc.size || h.seq !== loc.seq) {
        this.c.torn++; // as in get: reported upstream as a checksum failure
        return { size: loc.size, meta: { checksum: 'ffffffffffffffff' } };
      }
      this.c.gets++;
      this.c.readBytes += loc.size;
      return { size: loc.size, meta: { checksum: h.checksum } };
    });
  }

  /** Read records lying back to back in one segment with one pread; check each head against what the index says. */
  private async readRun(locs: Loc[], keys: string[]): Promise<(StoredValue | undefined)[]> {
    const seg = locs[0]!.seg;
    const first = locs[0]!.off;
    const last = locs[locs.length - 1]!;
    const len = last.off + HEAD + last.size - first; // the last trailer is not needed
    const buf = Buffer.allocUnsafeSlow(len);
    seg.refs++;
    let got: number;
    try {
      got = await readAt(seg.fh, buf, 0, len, first);
    } catch (err) {
      this.c.errors++;
      throw new KvstashError(ErrorCode.STORAGE, `segment read of ${keys[0]} failed: ${(err as Error).message}`, { cause: err });
    } finally {
      if (--seg.refs === 0 && seg.gone) void seg.fh.close().catch(() => undefined);
    }
    if (locs.length > 1) this.c.mergedReads++;
    return locs.map((loc, j) => {
      const at = loc.off - first;
      if (at + HEAD + loc.size > got) return undefined;
      const h = decodeHead(buf, at);
      const value = buf.subarray(at + HEAD, at + HEAD + loc.size);
      if (!h || h.type !== PUT || h.key !== keys[j] || h.size !== loc.size || h.seq !== loc.seq) {
        this.c.torn++; // cannot come from this writer: reported upstream as a checksum failure, which deletes it
        return { value, meta: { checksum: 'ffffffffffffffff' } };
      }
      this.c.gets++;
      this.c.readBytes += loc.size;
      return { value, meta: { checksum: h.checksum } };
    });
  }

  async has(key: string): Promise<boolean> {
    assertKey(key);
    this.check();
    return this.index.has(key);
  }

  async stat(key: string): Promise<ListedValue | undefined> {
    assertKey(key);
    this.check();
    const loc = this.index.get(key);
    return loc && { key, size: loc.size, meta: { checksum: loc.checksum } };
  }

  async *list(): AsyncIterable<ListedValue> {
    this.check();
    for (const [key, loc] of [...this.index]) yield { key, size: loc.size, meta: { checksum: loc.checksum } };
  }

  // ---- compaction ------------------------------------------------------------------------------------------

  private maybeCompact(seg: Seg): void {
    const f = this.config.compactBelow;
    if (seg.compacting) seg.again = true;
    if (f <= 0 || seg === this.active || seg.compacting || seg.gone || this.closed || seg.live >= f * seg.size) return;
    seg.compacting = true;
    seg.again = false;
    this.compactions = this.compactions.then(() => this.compact(seg)).catch(() => undefined).then(() => {
      seg.compacting = false;
      if (seg.again && !seg.gone) this.maybeCompact(seg);
    });
  }

  /** Wait for every compaction scheduled so far (tests, close). */
  async settle(): Promise<void> {
    await this.compactions;
  }

  private async compact(seg: Seg): Promise<void> {
    if (this.closed || seg.gone) return;
    const live: { key: string; loc: Loc }[] = [];
    for (const k of seg.putKeys) {
      const loc = this.index.get(k);
      if (loc?.seg === seg) live.push({ key: k, loc });
    }
    live.sort((a, b) => a.loc.off - b.loc.off);
    const copies: Promise<unknown>[] = [];
    for (let i = 0; i < live.length;) {
      let j = i + 1;
      while (j < live.length && j - i < 256 && live[j]!.loc.off - live[i]!.loc.off < MERGE_BYTES) j++;
      const part = live.slice(i, j);
      const vals = await Promise.all(part.map((p) => this.readRun([p.loc], [p.key])));
      part.forEach((p, n) => {
        const v = vals[n]![0];
        if (v && v.meta.checksum === p.loc.checksum) {
          copies.push(this.enqueue({ type: PUT, key: p.key, value: v.value, checksum: p.loc.checksum, seq: p.loc.seq, from: p.loc }));
        }
      });
      i = j;
    }
    for (const [k, t] of seg.tombs) {
      if (this.index.has(k)) continue;
      const needed = [...this.segs.values()].some((s) => s !== seg && !s.gone && s.putKeys.has(k));
      if (needed) copies.push(this.enqueue({ type: DEL, key: k, value: undefined, checksum: '0'.repeat(16), seq: t.seq }));
    }
    await Promise.all(copies);
    for (const { key, loc } of live) if (this.index.get(key) === loc) return; // a copy failed: keep the segment
    seg.gone = true;
    this.segs.delete(seg.name);
    this.c.segments = this.segs.size;
    await fs.unlink(path.join(this.dir, seg.name));
    if (this.config.fsync) await syncDir(this.dir);
    if (seg.refs === 0) await seg.fh.close().catch(() => undefined);
    this.c.compactions++;
    this.c.compactedBytes += seg.size;
  }

  stats(): Record<string, number> {
    let size = 0;
    let live = 0;
    for (const s of this.segs.values()) {
      size += s.size;
      live += s.live;
    }
    return { ...this.c, liveBytes: live, deadBytes: size - live, blocks: this.index.size };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.flushing;
    await this.compactions.catch(() => undefined);
    await this.flushing;
    for (const s of this.segs.values()) await s.fh.close().catch(() => undefined);
  }
}

async function syncDir(dir: string): Promise<void> {
  const d = await fs.open(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

export function parseSegmentConfig(raw: Record<string, unknown>): SegmentDriverConfig {
  const base = parseFileConfig(raw);
  const num = (f: string, def: number, ok: (v: number) => boolean, what: string): number => {
    const v = raw[f] ?? def;
    if (typeof v !== 'number' || !ok(v)) throw new KvstashError(ErrorCode.CONFIG, `segment.${f} must be ${what}, got ${JSON.stringify(v)}`);
    return v;
  };
  return {
    ...base,
    segmentBytes: num('segmentBytes', 256 << 20, (v) => v >= 1 << 20, 'a number of bytes ≥ 1 MiB'),
    compactBelow: num('compactBelow', 0.5, (v) => v >= 0 && v < 1, 'a fraction in [0, 1)'),
    maxBatchBytes: num('maxBatchBytes', 64 << 20, (v) => v >= 1 << 16, 'a number of bytes ≥ 64 KiB'),
  };
}

export const segmentDriverFactory: DriverFactory<SegmentDriverConfig> = {
  name: 'segment',
  parseConfig: parseSegmentConfig,
  create: (c) => new SegmentDriver(c),
};
