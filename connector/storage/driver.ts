/**
 * StorageDriver — the southbound contract. Built-in drivers (memory, file, nfs, s3) and vendors' drivers
 * implement it; the conformance kit (connector/storage/conformance.ts) checks every rule below.
 * EXPERIMENTAL until a second, external implementation has proven it (semver does not cover it yet).
 *
 * Keys
 * - A key is a string `<ns>/<hash>`: `ns` is a 32-hex-char namespace id, `hash` a 64-hex-char block hash
 *   (both lowercase). Drivers may map it to paths or object names but must round-trip it exactly in `list`.
 *   Anything else is rejected with KvstashError code KVS_KEY_LENGTH before any I/O (`assertKey`).
 * - Keys are content addresses: the bytes stored under a key never legitimately change. `put` of a key that
 *   already exists may overwrite (same bytes) or keep the old value; both are correct. `put` is idempotent.
 *
 * Values
 * - A value is a byte string of 0 .. `limits.maxValueBytes` bytes with a `BlockMeta` (its xxh64 checksum).
 *   Over the limit → KVS_TOO_LARGE, before any I/O.
 * - The driver stores meta with the value and returns both from `get`. It does NOT verify checksums: the tier
 *   stack (connector/tiers/tier-stack.ts) checks every lower-tier read against the checksum it indexed, and quarantines
 *   (or deletes) a copy that fails.
 *
 * Results and errors
 * - `get` of a missing key resolves `undefined`; `has` resolves false; `delete` resolves false. Misses are
 *   results, never errors.
 * - A failed operation rejects with a KvstashError: KVS_STORAGE (I/O or server failure, `cause` set),
 *   KVS_TIMEOUT (the per-request deadline passed), KVS_UNAVAILABLE (driver closed or circuit open),
 *   KVS_UNAUTHENTICATED (credentials refused), KVS_KEY_LENGTH, KVS_TOO_LARGE. Nothing else.
 * - Batch calls (`getMany`, `putMany`) answer per key: one key failing never fails the others; a failed
 *   key appears as `undefined` (get) or `false` (put).
 *
 * Durability and crash consistency
 * - Once `put` resolves, the value survives the sidecar process being killed (kill -9). Whether it survives
 *   power loss is the driver's `durable` flag (file: only with fsync on).
 * - A partially written value is never visible: not to `get`, `has` or `list`, in this or any other process,
 *   even if the writer is killed mid-write. (Temp-then-rename, multipart complete, …)
 *
 * Concurrency
 * - Every method may be called concurrently with any other, for the same or different keys, from one process;
 *   shared drivers (nfs, s3) also from many processes and hosts at once. Concurrent put+get of the same key
 *   returns either nothing or the whole value. Concurrent put+delete leave either state.
 *
 * Listing
 * - `list` yields every complete value's key, size and meta, for rebuilding the index on start-up. Order is
 *   unspecified. Values put or deleted during a listing may or may not appear.
 *
 * Buffers
 * - `put` takes ownership of `value`: the caller never mutates it afterwards, and the driver may keep it (the
 *   memory driver does). Buffers returned by `get` belong to the caller; the driver never changes them later.
 * - `readInto` (optional) reads values into buffers the caller supplies (a pooled buffer, the DRAM tier's memory)
 *   instead of allocating one per value. Per item it answers `{ size, meta }` when the key is present — the bytes
 *   in `into` are the value only when `size === into.length`; on any other size `into` holds nothing meaningful
 *   (the caller treats it as a damaged copy) — 'missing' when the key is absent, 'failed' when reading it failed
 *   (I/O error; the copy may still be fine). It never writes to `into` after it resolves, never keeps `into`, and
 *   writes nothing outside `into`. One item failing never fails the others; after `close` every item is 'failed'.
 *
 * Shared stores (`shared: true`: nfs, s3)
 * - Other processes and hosts write and delete the same store at the same time. `open` must not remove their
 *   writes in progress (clean temp data by age, never "everything at open"), and no method may take locks that
 *   a dead host could leave held. The tier stack learns about blocks other hosts wrote by probing the shared
 *   tier (`stat`, else `has`) on index misses, rate-limited (docs/storage.md "Shared tiers").
 * - `stat` (optional) answers size and meta of one key without reading the value; a miss resolves undefined.
 *
 * Lifecycle
 * - `open` is called once before anything else; after `close` every call rejects with KVS_UNAVAILABLE.
 *
 * Checked by the conformance kit (connector/storage/conformance.ts) — run it on every driver:
 * `driverConformance(test, factory)` from ava, or `kvstash driver-test ./driver.js --config cfg.json`.
 */
import { ErrorCode, KvstashError } from '../../protocol/errors.js';

export interface BlockMeta {
  /** xxh64 (seed 0) of the value, 16 lowercase hex chars. */
  checksum: string;
}

export interface StoredValue {
  value: Buffer;
  meta: BlockMeta;
}

/** One item of a `readInto` batch: read `key`'s value into `into` (whose length is the size the caller expects). */
export interface ReadIntoItem {
  key: string;
  into: Buffer;
}

/** Per item of a `readInto` batch (see "Buffers"). */
export type ReadIntoResult = { size: number; meta: BlockMeta } | 'missing' | 'failed';

export interface ListedValue {
  key: string;
  size: number;
  meta: BlockMeta;
}

export interface DriverLimits {
  /** Largest value this driver accepts. */
  maxValueBytes: number;
}

export interface DriverStats {
  [counter: string]: number;
}

export interface StorageDriver {
  /** Registered driver name, e.g. "memory", "file", "s3". */
  readonly name: string;
  readonly limits: DriverLimits;
  /** True if an acknowledged put survives power loss. */
  readonly durable: boolean;
  /** True if other processes or hosts may use the same store concurrently (see "Shared stores"). */
  readonly shared?: boolean;
  /** Prepare (create folders, check the bucket). Called once before any other method. */
  open(): Promise<void>;
  get(key: string): Promise<StoredValue | undefined>;
  put(key: string, value: Buffer, meta: BlockMeta): Promise<void>;
  has(key: string): Promise<boolean>;
  delete(key: string): Promise<boolean>;
  getMany(keys: string[]): Promise<(StoredValue | undefined)[]>;
  putMany(items: { key: string; value: Buffer; meta: BlockMeta }[]): Promise<boolean[]>;
  list(): AsyncIterable<ListedValue>;
  /**
   * Optional: read a batch of values into caller-supplied buffers, no allocation per value (see "Buffers"). Drivers
   * that store a chain's blocks back to back read consecutive ones with one system call.
   */
  readInto?(items: ReadIntoItem[]): Promise<ReadIntoResult[]>;
  /** Optional: size and meta of one value without reading it; undefined when missing. */
  stat?(key: string): Promise<ListedValue | undefined>;
  /**
   * Optional: false while the driver knows calls would fail right now (e.g. its circuit breaker is open). The tier
   * stack then leaves the tier out of lookups and reads until it says true again. Must be cheap and synchronous.
   */
  available?(): boolean;
  /**
   * Optional: move a value that failed its checksum out of the read path, keeping it for inspection.
   * Drivers without it have the value deleted instead.
   */
  quarantine?(key: string): Promise<void>;
  stats(): DriverStats;
  /** Stop accepting calls; in-flight calls may finish. Idempotent. */
  close(): Promise<void>;
}

/**
 * The DRAM tier's store (tier 0): the StorageDriver calls plus synchronous ones for the TierStack's fast path.
 * Two implementations: the heap MemoryDriver (memory.ts) and the shared-memory ArenaStore (arena.ts).
 * `putSync` copies or keeps `value` and answers false when the store has no room for it right now (the TierStack
 * then evicts and retries); `deleteSync` frees the block's memory once nobody reads it.
 */
export interface DramStore extends StorageDriver {
  /**
   * True when `putSync` keeps the very buffer it is given as the block's memory (the heap MemoryDriver); absent or
   * false when it copies the bytes into memory of its own (the arena). The hit path then knows whether DRAM holds
   * a read-pool buffer (connector/tiers/read-pool.ts) without asking `getSync`, which may copy.
   */
  readonly keepsValues?: boolean;
  getSync(key: string): StoredValue | undefined;
  putSync(key: string, value: Buffer, meta: BlockMeta): boolean;
  deleteSync(key: string): boolean;
  /**
   * Copy a resident value into `into` (exactly its size) without a Buffer of its own: the shared-memory arena,
   * whose values are read with pread, offers it so a reply can be read straight into an output buffer. False when
   * the key is not resident.
   */
  copySyncInto?(key: string, into: Buffer): boolean;
}

/** A factory building a driver from a parsed config. */
export interface DriverFactory<C = unknown> {
  readonly name: string;
  /** Parse and default a raw config object; throws KVS_CONFIG with the offending field named. */
  parseConfig(raw: Record<string, unknown>): C;
  create(config: C): StorageDriver;
}

/** The only codes a driver may reject with (see "Results and errors"). */
export const DRIVER_ERROR_CODES: readonly ErrorCode[] = [
  ErrorCode.STORAGE, ErrorCode.TIMEOUT, ErrorCode.UNAVAILABLE, ErrorCode.UNAUTHENTICATED, ErrorCode.KEY_LENGTH, ErrorCode.TOO_LARGE,
];

const KEY_RE = /^[0-9a-f]{32}\/[0-9a-f]{64}$/;

/** Is `key` a well-formed storage key ("<32 hex ns>/<64 hex hash>")? */
export function isKey(key: unknown): key is string {
  return typeof key === 'string' && KEY_RE.test(key);
}

export function assertKey(key: unknown): asserts key is string {
  if (!isKey(key)) {
    throw new KvstashError(ErrorCode.KEY_LENGTH, `storage key must be "<32 hex ns>/<64 hex hash>", got ${JSON.stringify(key)}`);
  }
}

export function assertValueSize(value: Buffer, limits: DriverLimits): void {
  if (value.length > limits.maxValueBytes) {
    throw new KvstashError(ErrorCode.TOO_LARGE, `value of ${value.length} bytes is over the driver limit of ${limits.maxValueBytes}`);
  }
}

/** Default batch implementations in terms of single calls, for drivers with no native batch API. */
export async function getManyBySingle(d: StorageDriver, keys: string[]): Promise<(StoredValue | undefined)[]> {
  return Promise.all(keys.map((k) => d.get(k).catch(() => undefined)));
}
export async function putManyBySingle(d: StorageDriver, items: { key: string; value: Buffer; meta: BlockMeta }[]): Promise<boolean[]> {
  return Promise.all(items.map((it) => d.put(it.key, it.value, it.meta).then(() => true, () => false)));
}
