/**
 * DemoteTarget — where the folder janitor (janitor.ts) demotes the files it would evict: a kvstash storage driver
 * (file, nfs, s3, or any registered one) built from a JSON driver spec (`--adopt-demote '{"driver":"s3",…}'`).
 *
 * Rules:
 * - The manifest of demoted files is the target's own listing: keys `<ns>/<sha256 of the relative path>` where `ns`
 *   is the first 32 hex of sha256("kvstash-adopt\0<folder>\0<layout>") (or the spec's `"ns"`). No separate database:
 *   what `list()` yields under that namespace is what is demoted, also after a restart.
 * - A stored value is a small header — "KVSADOPT", u32le length of the relative path, the path (UTF-8), f64le
 *   mtime (ms) of the file when demoted — followed by the file's bytes; its checksum (BlockMeta, xxh64 of the whole
 *   value) is computed here, on the bytes read back from the folder.
 * - Demote: read the file, check it did not change while read (size, mtime), put it, and only then unlink it. A
 *   failed put leaves the file where it is (counted `demoteErrors`).
 * - Restore: get the value, check its checksum, its header and that the path hashes to the key. Any mismatch:
 *   refused with KVS_CHECKSUM and nothing is written to the folder (counted `refused`). Else write a temp file next
 *   to the destination (a name no layout matches), rename it into place, and delete the demoted copy. A file the
 *   engine has written again in the meantime is kept; the demoted copy is then just dropped.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { checksum } from '../../connector/checksum.js';
import { defaultRegistry, type DriverRegistry } from '../../connector/storage/registry.js';
import { isKey, type StorageDriver } from '../../connector/storage/driver.js';
import '../../connector/storage/nfs.js'; // registers the nfs driver
import '../../connector/storage/s3.js'; // registers the s3 driver
import { ErrorCode, KvstashError } from '../../protocol/errors.js';

const MAGIC = Buffer.from('KVSADOPT');

export interface DemoteSpec { driver: string; ns?: string; config: Record<string, unknown> }

/** Parse `{"driver": "<registered name>", "ns"?: "<32 hex>", …driver config}`. Throws KVS_CONFIG. */
export function parseDemoteSpec(raw: string | Record<string, unknown>, registry: DriverRegistry = defaultRegistry()): DemoteSpec {
  let obj: unknown = raw;
  if (typeof raw === 'string') {
    try { obj = JSON.parse(raw); } catch (err) {
      throw new KvstashError(ErrorCode.CONFIG, `adoptDemote: not JSON (${(err as Error).message}): expected {"driver": "file", "root": "/mnt/nfs/kv"} or another driver spec`, { cause: err });
    }
  }
  if (!obj || typeof obj !== 'object' || Array.isArray(obj)) throw new KvstashError(ErrorCode.CONFIG, 'adoptDemote: must be a JSON object like {"driver": "file", "root": "/mnt/nfs/kv"}');
  const { driver, ns, ...config } = obj as Record<string, unknown>;
  if (typeof driver !== 'string' || !registry.names().includes(driver)) {
    throw new KvstashError(ErrorCode.CONFIG, `adoptDemote.driver must name a registered storage driver (${registry.names().join(', ')}), got ${JSON.stringify(driver)}`);
  }
  if (ns !== undefined && (typeof ns !== 'string' || !/^[0-9a-f]{32}$/.test(ns))) throw new KvstashError(ErrorCode.CONFIG, 'adoptDemote.ns must be 32 lowercase hex chars');
  registry.get(driver).parseConfig({ maxValueBytes: 4 * 2 ** 30, ...config }); // config errors now, not at start
  return { driver, ns: ns as string | undefined, config };
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

/** The target namespace of one adopted folder. */
export function adoptNamespace(dir: string, layout: string): string {
  return sha256(`kvstash-adopt\0${dir}\0${layout}`).slice(0, 32);
}

export function encodeValue(rel: string, mtimeMs: number, bytes: Buffer): Buffer {
  const p = Buffer.from(rel, 'utf8');
  const h = Buffer.alloc(MAGIC.length + 4 + p.length + 8);
  MAGIC.copy(h, 0);
  h.writeUInt32LE(p.length, MAGIC.length);
  p.copy(h, MAGIC.length + 4);
  h.writeDoubleLE(mtimeMs, MAGIC.length + 4 + p.length);
  return Buffer.concat([h, bytes]);
}

export function decodeValue(v: Buffer): { rel: string; mtimeMs: number; bytes: Buffer } | undefined {
  if (v.length < MAGIC.length + 12 || !v.subarray(0, MAGIC.length).equals(MAGIC)) return undefined;
  const n = v.readUInt32LE(MAGIC.length);
  const end = MAGIC.length + 4 + n;
  if (end + 8 > v.length) return undefined;
  return { rel: v.toString('utf8', MAGIC.length + 4, end), mtimeMs: v.readDoubleLE(end), bytes: v.subarray(end + 8) };
}

export interface RestoreResult { key: string; file?: string; bytes?: number; status: 'restored' | 'kept' | 'missing' }

let tmpCounter = 0;

export class DemoteTarget {
  readonly driver: StorageDriver;
  readonly ns: string;
  readonly counters = { demoted: 0, demotedBytes: 0, demoteErrors: 0, restored: 0, restoredBytes: 0, refused: 0 };
  /** Demoted files: target key → stored size. Filled from the target's listing at open, kept up to date after. */
  readonly demoted = new Map<string, number>();

  constructor(readonly dir: string, readonly layout: string, readonly spec: DemoteSpec, private readonly re: RegExp, registry: DriverRegistry = defaultRegistry()) {
    this.ns = spec.ns ?? adoptNamespace(dir, layout);
    this.driver = registry.create(spec.driver, { maxValueBytes: 4 * 2 ** 30, ...spec.config });
  }

  keyOf(rel: string): string {
    return `${this.ns}/${sha256(rel)}`;
  }

  /** Open the driver and read the manifest (the target's listing under this folder's namespace). */
  async open(): Promise<void> {
    await this.driver.open();
    this.demoted.clear();
    const prefix = this.ns + '/';
    for await (const v of this.driver.list()) if (v.key.startsWith(prefix)) this.demoted.set(v.key, v.size);
  }

  close(): Promise<void> {
    return this.driver.close();
  }

  /**
   * Demote one file of the folder: 'demoted', 'changed' (it changed while read: left in place, the engine is writing
   * it) or 'gone' (no longer there). A failed put rejects (counted `demoteErrors`) and leaves the file in place.
   */
  async demote(rel: string): Promise<'demoted' | 'changed' | 'gone'> {
    const abs = path.join(this.dir, rel);
    let before, bytes, after;
    try {
      before = await stat(abs);
      bytes = await readFile(abs);
      after = await stat(abs);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'gone';
      throw err;
    }
    if (after.size !== before.size || after.mtimeMs !== before.mtimeMs || bytes.length !== after.size) return 'changed';
    const value = encodeValue(rel, after.mtimeMs, bytes);
    const key = this.keyOf(rel);
    try {
      await this.driver.put(key, value, { checksum: checksum(value) });
    } catch (err) {
      this.counters.demoteErrors++;
      throw err;
    }
    this.demoted.set(key, value.length);
    await unlink(abs).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'ENOENT') throw err; });
    this.counters.demoted++;
    this.counters.demotedBytes += bytes.length;
    return 'demoted';
  }

  /** `key` is a target key or a path relative to the folder. */
  resolveKey(keyOrRel: string): string {
    if (isKey(keyOrRel)) return keyOrRel;
    const rel = path.normalize(keyOrRel);
    if (path.isAbsolute(rel) || rel.startsWith('..') || !this.re.test(rel)) {
      throw new KvstashError(ErrorCode.BAD_FIELD, `${JSON.stringify(keyOrRel)} is neither a demoted key nor a ${this.layout} file path relative to ${this.dir}`);
    }
    return this.keyOf(rel);
  }

  /** Put a demoted file back where the engine expects it. KVS_CHECKSUM (nothing written) when its bytes are bad. */
  async restore(keyOrRel: string): Promise<RestoreResult> {
    const key = this.resolveKey(keyOrRel);
    const got = await this.driver.get(key);
    if (!got) {
      this.demoted.delete(key);
      return { key, status: 'missing' };
    }
    const d = decodeValue(got.value);
    const bad = checksum(got.value) !== got.meta.checksum ? 'its checksum does not match'
      : !d ? 'its header is damaged'
      : this.keyOf(d.rel) !== key || !this.re.test(d.rel) || path.normalize(d.rel) !== d.rel || d.rel.startsWith('..') ? `it names another file (${JSON.stringify(d.rel)})`
      : undefined;
    if (bad || !d) {
      this.counters.refused++;
      throw new KvstashError(ErrorCode.CHECKSUM, `adopt restore of ${key} refused: ${bad ?? 'damaged'}; nothing was written to ${this.dir}`);
    }
    const abs = path.join(this.dir, d.rel);
    const exists = await stat(abs).then(() => true, () => false);
    if (!exists) {
      await mkdir(path.dirname(abs), { recursive: true });
      const tmp = `${abs}.kvstash-restore-${process.pid}-${tmpCounter++}.tmp`;
      try {
        await writeFile(tmp, d.bytes);
        await rename(tmp, abs);
      } catch (err) {
        await unlink(tmp).catch(() => undefined);
        throw new KvstashError(ErrorCode.STORAGE, `adopt restore of ${d.rel}: cannot write into ${this.dir}: ${(err as Error).message}`, { cause: err });
      }
    }
    await this.driver.delete(key);
    this.demoted.delete(key);
    if (exists) return { key, file: d.rel, status: 'kept' };
    this.counters.restored++;
    this.counters.restoredBytes += d.bytes.length;
    return { key, file: d.rel, bytes: d.bytes.length, status: 'restored' };
  }

  stats(): Record<string, number | string> {
    let bytes = 0;
    for (const n of this.demoted.values()) bytes += n;
    return { driver: this.driver.name, ns: this.ns, demotedFiles: this.demoted.size, demotedStoredBytes: bytes, ...this.counters };
  }
}
