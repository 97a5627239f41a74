/** In-process memory driver: the DRAM tier's store and the reference implementation of the contract. */
import {
  assertKey, assertValueSize, type BlockMeta, type DriverFactory, type DriverLimits, type ListedValue,
  type DramStore, type StoredValue,
} from './driver.js';
import { ErrorCode, KvstashError } from '../../protocol/errors.js';

export interface MemoryDriverConfig {
  maxValueBytes: number;
}

export class MemoryDriver implements DramStore {
  readonly name = 'memory';
  readonly durable = false;
  /** putSync keeps the caller's buffer (no copy). */
  readonly keepsValues = true;
  readonly limits: DriverLimits;
  private readonly map = new Map<string, StoredValue>();
  private closed = false;
  private bytes = 0;

  constructor(config: MemoryDriverConfig = { maxValueBytes: 1 << 30 }) {
    this.limits = { maxValueBytes: config.maxValueBytes };
  }
  async open(): Promise<void> {}
  private check(): void {
    if (this.closed) throw new KvstashError(ErrorCode.UNAVAILABLE, 'memory driver is closed');
  }
  /** Synchronous read for the DRAM fast path. */
  getSync(key: string): StoredValue | undefined {
    return this.map.get(key);
  }
  putSync(key: string, value: Buffer, meta: BlockMeta): boolean {
    const old = this.map.get(key);
    if (old) this.bytes -= old.value.length;
    this.map.set(key, { value, meta: { checksum: meta.checksum } });
    this.bytes += value.length;
    return true;
  }
  deleteSync(key: string): boolean {
    const old = this.map.get(key);
    if (!old) return false;
    this.bytes -= old.value.length;
    return this.map.delete(key);
  }
  async get(key: string): Promise<StoredValue | undefined> {
    assertKey(key);
    this.check();
    return this.map.get(key);
  }
  async put(key: string, value: Buffer, meta: BlockMeta): Promise<void> {
    assertKey(key);
    assertValueSize(value, this.limits);
    this.check();
    this.putSync(key, value, meta);
  }
  async has(key: string): Promise<boolean> {
    assertKey(key);
    this.check();
    return this.map.has(key);
  }
  async delete(key: string): Promise<boolean> {
    assertKey(key);
    this.check();
    return this.deleteSync(key);
  }
  async getMany(keys: string[]): Promise<(StoredValue | undefined)[]> {
    return Promise.all(keys.map((k) => this.get(k).catch(() => undefined)));
  }
  async putMany(items: { key: string; value: Buffer; meta: BlockMeta }[]): Promise<boolean[]> {
    return Promise.all(items.map((it) => this.put(it.key, it.value, it.meta).then(() => true, () => false)));
  }
  async *list(): AsyncIterable<ListedValue> {
    this.check();
    for (const [key, v] of [...this.map]) yield { key, size: v.value.length, meta: v.meta };
  }
  stats(): Record<string, number> {
    return { entries: this.map.size, bytes: this.bytes };
  }
  async close(): Promise<void> {
    this.closed = true;
  }
}

export const memoryDriverFactory: DriverFactory<MemoryDriverConfig> = {
  name: 'memory',
  parseConfig(raw) {
    const maxValueBytes = raw.maxValueBytes ?? 1 << 30;
    if (typeof maxValueBytes !== 'number' || !(maxValueBytes > 0)) {
      throw new KvstashError(ErrorCode.CONFIG, `memory.maxValueBytes must be a positive number, got ${JSON.stringify(maxValueBytes)}`);
    }
    return { maxValueBytes };
  },
  create: (c) => new MemoryDriver(c),
};
