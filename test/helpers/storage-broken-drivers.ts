/**
 * Drivers that break the StorageDriver contract on purpose, to prove the conformance kit catches each fault.
 * Used by test/storage-conformance.test.ts and test/integration/custom-driver.test.ts (as a module a child loads).
 */
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import path from 'node:path';
import { FileDriver, encodeHeader, parseFileConfig, type FileDriverConfig } from '../../connector/storage/file.js';
import { MemoryDriver } from '../../connector/storage/memory.js';
import type { BlockMeta, DriverFactory, StoredValue } from '../../connector/storage/driver.js';

/**
 * Writes values in place, with no temp file: readers and crashes see partial values. The header and the first half
 * go out synchronously as the put starts (so a kill a few ms after the kit's "putting" lands mid-value even on a
 * loaded machine); for values over 1 MiB the rest waits until a get has run meanwhile (at most 2 s: a reader racing
 * the put always meets the torn state, however slow the machine), then goes out 1 MiB at a time.
 */
export class TornWriterDriver extends FileDriver {
  private gets = 0;

  override async get(key: string): Promise<StoredValue | undefined> {
    try {
      return await super.get(key);
    } finally {
      this.gets++;
    }
  }

  override async put(key: string, value: Buffer, meta: BlockMeta): Promise<void> {
    const seen = this.gets;
    const dest = this.pathOf(key);
    mkdirSync(path.dirname(dest), { recursive: true });
    const fd = openSync(dest, 'w');
    try {
      const half = value.length >> 1;
      writeSync(fd, encodeHeader(value.length, meta.checksum, key));
      writeSync(fd, value.subarray(0, half));
      const until = Date.now() + 2000;
      while (value.length > 2 ** 20 && this.gets === seen && Date.now() < until) await new Promise((r) => setTimeout(r, 1));
      for (let off = half; off < value.length; off += 2 ** 20) {
        await new Promise((r) => setImmediate(r));
        writeSync(fd, value.subarray(off, Math.min(off + 2 ** 20, value.length)));
      }
    } finally {
      closeSync(fd);
    }
  }
}

export const tornWriterFactory: DriverFactory<FileDriverConfig> = {
  name: 'torn-writer',
  parseConfig: (raw) => parseFileConfig(raw),
  create: (c) => new TornWriterDriver(c),
};

/** Accepts any key and any size, and keeps working after close. */
export class LaxMemoryDriver extends MemoryDriver {
  override async get(key: string): Promise<StoredValue | undefined> { return this.getSync(key); }
  override async put(key: string, value: Buffer, meta: BlockMeta): Promise<void> { this.putSync(key, value, meta); }
  override async has(key: string): Promise<boolean> { return this.getSync(key) !== undefined; }
  override async delete(key: string): Promise<boolean> { return this.deleteSync(key); }
}

/** Returns the stored buffer's first half when asked for a big value (a torn read). */
export class HalfReadDriver extends MemoryDriver {
  override async get(key: string): Promise<StoredValue | undefined> {
    const v = await super.get(key);
    return v && v.value.length > 2 ** 20 ? { value: v.value.subarray(0, v.value.length >> 1), meta: v.meta } : v;
  }
}
