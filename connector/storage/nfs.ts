/**
 * NFS driver: the file driver's block format (header + value, see ./file.ts) on a folder that many hosts mount and
 * use at once. What changes against the local-file driver, and why:
 *
 * - Close-to-open consistency: every access opens, reads and closes the file; no handle or attribute is kept
 *   between calls, so a value another host published (rename) is seen at the next open. Mount with
 *   `lookupcache=positive` (or `none`) so a miss is not cached; see docs/storage.md.
 * - Publish: write to `tmp/<host>-<pid>-<start>-<n>.tmp` on the same export (rename never crosses a filesystem),
 *   fsync, close, rename into place. Names are unique per host, process and write, so writers never collide;
 *   a value is visible whole or not at all. No advisory locks anywhere (a dead host could leave them held).
 * - Races with other hosts' writers and deleters: ESTALE or ENOENT on any step is retried once, then treated as a
 *   miss (get/has/stat) or as "already gone" (delete). A put racing a delete leaves either state.
 * - Bounded folders: `nfs-v1/<ns>/<hash[0:2]>/<hash[2:4]>/<hash>.kvb` (two-level fan-out: 65,536 folders per
 *   namespace, so a million blocks make ~16 files per folder).
 * - Temp files of writers that died are removed by age (`tmpMaxAgeMs`, at open and every `sweepIntervalMs`), never
 *   "all at open": other hosts are writing theirs right now.
 * - Orphans (damaged headers, or a header naming another key than the file's name) are never served and are counted
 *   (`orphans` at listing, `misplaced` at reads), but not removed: on a shared folder the tier keeps its hands off
 *   files it cannot prove are its own to delete; `kvstash` operators clear them with the quarantine folder's tools.
 * - `directIO`: open data files with O_DIRECT (bypasses the client page cache; the Linux NFS client accepts
 *   unaligned O_DIRECT). If the filesystem refuses it (EINVAL), that write or read falls back to buffered I/O
 *   and `directFallbacks` counts it.
 */
import { promises as fs, constants as C } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ErrorCode, KvstashError } from '../../protocol/errors.js';
import {
  assertKey, assertValueSize, getManyBySingle, putManyBySingle, type BlockMeta, type DriverFactory, type DriverLimits,
  type ListedValue, type StorageDriver, type StoredValue,
} from './driver.js';
import { HEADER_BYTES, decodeHeader, encodeHeader, listBlockFolder, parseFileConfig, readdirSafe, readHeader, writeAll } from './file.js';
import { registerBuiltinDriver } from './registry.js';

export interface NfsDriverConfig {
  root: string;
  /** fsync before rename (default true: errors surface before publish, and the value survives a server crash). */
  fsync: boolean;
  directIO: boolean;
  tmpMaxAgeMs: number;
  sweepIntervalMs: number;
  maxValueBytes: number;
}

const host = os.hostname().replace(/[^A-Za-z0-9.-]/g, '_');
const started = Date.now().toString(36);
let counter = 0;
const code = (err: unknown) => (err as NodeJS.ErrnoException)?.code;
const gone = (err: unknown) => code(err) === 'ENOENT' || code(err) === 'ESTALE';

/** Run fn; on ESTALE run it once more (the file handle went stale under a concurrent rename/unlink on another host). */
async function staleRetry<T>(fn: () => Promise<T>, onRetry: () => void): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (code(err) !== 'ESTALE') throw err;
    onRetry();
    return fn();
  }
}

export class NfsDriver implements StorageDriver {
  readonly name = 'nfs';
  readonly shared = true;
  readonly limits: DriverLimits;
  readonly durable: boolean;
  private readonly c = { reads: 0, writes: 0, readBytes: 0, writeBytes: 0, errors: 0, torn: 0, staleRetries: 0, raceMisses: 0, tmpSwept: 0, directFallbacks: 0, misplaced: 0, orphans: 0 };
  private closed = false;
  private sweeper: NodeJS.Timeout | undefined;

  constructor(readonly config: NfsDriverConfig) {
    this.limits = { maxValueBytes: config.maxValueBytes };
    this.durable = config.fsync;
  }

  pathOf(key: string): string {
    const h = key.slice(33);
    return path.join(this.config.root, 'nfs-v1', key.slice(0, 32), h.slice(0, 2), h.slice(2, 4), `${h}.kvb`);
  }

  private tmpPath(): string {
    return path.join(this.config.root, 'tmp', `${host}-${process.pid}-${started}-${counter++}.tmp`);
  }

  async open(): Promise<void> {
    for (const d of ['nfs-v1', 'tmp', 'quarantine']) await fs.mkdir(path.join(this.config.root, d), { recursive: true });
    await this.sweep();
    if (this.config.sweepIntervalMs > 0) {
      this.sweeper = setInterval(() => void this.sweep().catch(() => undefined), this.config.sweepIntervalMs);
      this.sweeper.unref();
    }
  }

  /** Remove temp files older than tmpMaxAgeMs (writers that died). Returns how many went. */
  async sweep(now = Date.now()): Promise<number> {
    const dir = path.join(this.config.root, 'tmp');
    let n = 0;
    for (const f of await fs.readdir(dir).catch(() => [] as string[])) {
      const p = path.join(dir, f);
      const st = await fs.stat(p).catch(() => undefined);
      if (st && now - st.mtimeMs > this.config.tmpMaxAgeMs && (await fs.unlink(p).then(() => true, () => false))) n++;
    }
    this.c.tmpSwept += n;
    return n;
  }

  private check(): void {
    if (this.closed) throw new KvstashError(ErrorCode.UNAVAILABLE, 'nfs driver is closed');
  }

  private fail(op: string, key: string, err: unknown): KvstashError {
    this.c.errors++;
    return new KvstashError(ErrorCode.STORAGE, `nfs ${op} of ${key} failed: ${(err as Error).message}`, { cause: err });
  }

  private async readWhole(file: string): Promise<Buffer> {
    if (!this.config.directIO) return fs.readFile(file);
    try {
      return await fs.readFile(file, { flag: C.O_RDONLY | C.O_DIRECT });
    } catch (err) {
      if (code(err) !== 'EINVAL') throw err;
      this.c.directFallbacks++;
      return fs.readFile(file);
    }
  }

  async get(key: string): Promise<StoredValue | undefined> {
    assertKey(key);
    this.check();
    let buf: Buffer;
    try {
      buf = await staleRetry(() => this.readWhole(this.pathOf(key)), () => this.c.staleRetries++);
    } catch (err) {
      if (gone(err)) {
        if (code(err) === 'ESTALE') this.c.raceMisses++;
        return undefined;
      }
      throw this.fail('read', key, err);
    }
    const h = decodeHeader(buf);
    if (!h || h.size !== buf.length - HEADER_BYTES) {
      this.c.torn++; // cannot come from rename-publish; reported upstream as a checksum failure
      return { value: buf.subarray(Math.min(HEADER_BYTES, buf.length)), meta: { checksum: 'ffffffffffffffff' } };
    }
    if (h.key !== key) {
      this.c.misplaced++; // the header names another key: a miss, never that key's block
      return undefined;
    }
    this.c.reads++;
    this.c.readBytes += h.size;
    return { value: buf.subarray(HEADER_BYTES), meta: { checksum: h.checksum } };
  }

  private async writeTmp(tmp: string, parts: Buffer[]): Promise<void> {
    const flags = C.O_WRONLY | C.O_CREAT | C.O_EXCL;
    let direct = this.config.directIO;
    for (;;) {
      let fh: fs.FileHandle | undefined;
      try {
        fh = await fs.open(tmp, direct ? flags | C.O_DIRECT : flags, 0o644);
        await writeAll(fh, parts);
        if (this.config.fsync) await fh.sync();
        return;
      } catch (err) {
        if (!direct || code(err) !== 'EINVAL') throw err;
        direct = false; // this filesystem refuses (unaligned) O_DIRECT: write buffered instead
        this.c.directFallbacks++;
        await fh?.close().catch(() => undefined);
        fh = undefined;
        await fs.unlink(tmp).catch(() => undefined);
      } finally {
        await fh?.close();
      }
    }
  }

  async put(key: string, value: Buffer, meta: BlockMeta): Promise<void> {
    assertKey(key);
    assertValueSize(value, this.limits);
    this.check();
    const tmp = this.tmpPath();
    const dest = this.pathOf(key);
    try {
      await this.writeTmp(tmp, [encodeHeader(value.length, meta.checksum, key), value]);
      await staleRetry(async () => {
        try {
          await fs.rename(tmp, dest);
        } catch (err) {
          if (code(err) !== 'ENOENT') throw err;
          await fs.mkdir(path.dirname(dest), { recursive: true }); // first value of this fan-out folder
          await fs.rename(tmp, dest);
        }
      }, () => this.c.staleRetries++);
      this.c.writes++;
      this.c.writeBytes += value.length;
    } catch (err) {
      await fs.unlink(tmp).catch(() => undefined);
      throw this.fail('write', key, err);
    }
  }

  async stat(key: string): Promise<ListedValue | undefined> {
    assertKey(key);
    this.check();
    try {
      const h = await staleRetry(() => readHeader(this.pathOf(key)), () => this.c.staleRetries++);
      if (h && h.key !== key) this.c.misplaced++;
      return h && h.key === key ? { key, size: h.size, meta: { checksum: h.checksum } } : undefined;
    } catch (err) {
      if (gone(err)) return undefined;
      throw this.fail('stat', key, err);
    }
  }

  async has(key: string): Promise<boolean> {
    assertKey(key);
    this.check();
    try {
      await staleRetry(() => fs.access(this.pathOf(key)), () => this.c.staleRetries++);
      return true;
    } catch (err) {
      if (gone(err)) return false;
      throw this.fail('has', key, err);
    }
  }

  async delete(key: string): Promise<boolean> {
    assertKey(key);
    this.check();
    try {
      await staleRetry(() => fs.unlink(this.pathOf(key)), () => this.c.staleRetries++);
      return true;
    } catch (err) {
      if (gone(err)) return false; // another host deleted it first
      throw this.fail('delete', key, err);
    }
  }

  async quarantine(key: string): Promise<void> {
    assertKey(key);
    const dest = path.join(this.config.root, 'quarantine', `${key.replace('/', '-')}-${host}-${process.pid}.kvb`);
    await fs.rename(this.pathOf(key), dest).catch(() => fs.unlink(this.pathOf(key)).catch(() => undefined));
  }

  getMany(keys: string[]): Promise<(StoredValue | undefined)[]> {
    return getManyBySingle(this, keys);
  }

  putMany(items: { key: string; value: Buffer; meta: BlockMeta }[]): Promise<boolean[]> {
    return putManyBySingle(this, items);
  }

  async *list(): AsyncIterable<ListedValue> {
    this.check();
    const base = path.join(this.config.root, 'nfs-v1');
    for (const ns of await readdirSafe(base)) {
      if (!/^[0-9a-f]{32}$/.test(ns)) continue;
      for (const a of await readdirSafe(path.join(base, ns))) {
        for (const b of await readdirSafe(path.join(base, ns, a))) yield* listBlockFolder(path.join(base, ns, a, b), ns, 32, async () => { this.c.orphans++; });
      }
    }
  }

  stats(): Record<string, number> {
    return { ...this.c };
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.sweeper);
  }
}

export function parseNfsConfig(raw: Record<string, unknown>): NfsDriverConfig {
  const base = parseFileConfig(raw, { fsync: true });
  const num = (f: string, def: number): number => {
    const v = raw[f] ?? def;
    if (typeof v !== 'number' || !(v >= 0)) throw new KvstashError(ErrorCode.CONFIG, `nfs.${f} must be a number ≥ 0, got ${JSON.stringify(v)}`);
    return v;
  };
  const directIO = raw.directIO ?? false;
  if (typeof directIO !== 'boolean') throw new KvstashError(ErrorCode.CONFIG, `nfs.directIO must be true or false, got ${JSON.stringify(directIO)}`);
  return { ...base, directIO, tmpMaxAgeMs: num('tmpMaxAgeMs', 3600_000), sweepIntervalMs: num('sweepIntervalMs', 600_000) };
}

export const nfsDriverFactory: DriverFactory<NfsDriverConfig> = {
  name: 'nfs',
  parseConfig: parseNfsConfig,
  create: (c) => new NfsDriver(c),
};

registerBuiltinDriver(nfsDriverFactory);
