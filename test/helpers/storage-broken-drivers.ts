/**
 * Drivers that break the StorageDriver contract on purpose, to prove the conformance kit catches each fault.
 * Used by test/storage-conformance.test.ts and test/integration/custom-driver.test.ts (as a module a child loads).
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { FileDriver, encodeHeader, parseFileConfig, type FileDriverConfig } from '../../connector/storage/file.js';
import { MemoryDriver } from '../../connector/storage/memory.js';
import type { BlockMeta, DriverFactory, StoredValue } from '../../connector/storage/driver.js';

/** Writes values in place, 1 MiB at a time, with no temp file: readers and crashes see partial values. */
export class TornWriterDriver extends FileDriver {
  override async put(key: string, value: Buffer, meta: BlockMeta): Promise<void> {
    const dest = this.pathOf(key);
    await fs.mkdir(path.dirname(dest), { recursive: true });
    const fh = await fs.open(dest, 'w');
    try {
      await fh.write(encodeHeader(value.length, meta.checksum, key));
      for (let off = 0; off < value.length; off += 2 ** 20) await fh.write(value.subarray(off, off + 2 ** 20));
    } finally {
      await fh.close();
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
