/**
 * Build the TierStack from configuration: DRAM first, then either the default local-file tier or the
 * tiers listed in `config.tiers` (each: { name, driver, budget, medium?, writeMode?, admitAfter?, ...driver config }).
 */
import { ErrorCode, KvstashError } from '../protocol/errors.js';
import { parseBytes, type Config } from './config.js';
import { heatPolicy, lruPolicy } from './policy.js';
import type { DriverRegistry } from './storage/registry.js';
import { MemoryDriver } from './storage/memory.js';
import { TierStack, type TierSpec } from './tiers.js';
// Built-in drivers that register themselves (registerBuiltinDriver) — imported here, not from registry.ts, to avoid a cycle.
import './storage/nfs.js';
import './storage/s3.js';

const MEDIUM: Record<string, string> = { memory: 'CPU', file: 'DISK', nfs: 'NFS', s3: 'S3' };
const READ_BPS: Record<string, number> = { memory: 10e9, file: 2e9, nfs: 200e6, s3: 150e6 };

export function buildTierStack(config: Config, registry: DriverRegistry): TierStack {
  const queue = { maxItems: config.writeQueueItems, maxBytes: config.writeQueueBytes, concurrency: config.writeConcurrency };
  const tiers: TierSpec[] = [{
    name: 'dram', medium: 'CPU', driver: new MemoryDriver({ maxValueBytes: config.maxBlockBytes }), budgetBytes: config.dramBytes,
    writeMode: 'through', admitAfter: 1, queue, initialReadBps: READ_BPS.memory!,
  }];
  if (config.tiers) {
    if (!Array.isArray(config.tiers)) throw new KvstashError(ErrorCode.CONFIG, 'tiers must be a JSON array');
    for (const [i, raw] of config.tiers.entries()) {
      const { name, driver, budget, medium, writeMode, admitAfter, ...rest } = raw as Record<string, unknown>;
      if (typeof driver !== 'string') throw new KvstashError(ErrorCode.CONFIG, `tiers[${i}].driver must name a registered driver`);
      const tierName = typeof name === 'string' ? name : driver;
      if (tiers.some((t) => t.name === tierName)) throw new KvstashError(ErrorCode.CONFIG, `tiers[${i}]: duplicate tier name "${tierName}"`);
      if (writeMode !== undefined && writeMode !== 'through' && writeMode !== 'back') throw new KvstashError(ErrorCode.CONFIG, `tiers[${i}].writeMode must be "through" or "back"`);
      const admit = admitAfter ?? 1;
      if (typeof admit !== 'number' || !Number.isInteger(admit) || admit < 1) throw new KvstashError(ErrorCode.CONFIG, `tiers[${i}].admitAfter must be an integer ≥ 1`);
      tiers.push({
        name: tierName, medium: typeof medium === 'string' ? medium : (MEDIUM[driver] ?? driver.toUpperCase()),
        driver: registry.create(driver, { maxValueBytes: config.maxBlockBytes, ...rest }),
        budgetBytes: parseBytes(budget, `tiers[${i}].budget`),
        writeMode: (writeMode as 'through' | 'back' | undefined) ?? 'through', admitAfter: admit, queue,
        initialReadBps: READ_BPS[driver] ?? 100e6,
      });
    }
  } else if (config.fileRoot) {
    tiers.push({
      name: 'file', medium: 'DISK',
      driver: registry.create('file', { root: config.fileRoot, fsync: config.fileFsync, maxValueBytes: config.maxBlockBytes }),
      budgetBytes: config.fileBytes, writeMode: config.fileWriteMode, admitAfter: 1, queue, initialReadBps: READ_BPS.file!,
    });
  }
  const policy = config.policy === 'lru' ? lruPolicy : heatPolicy(config.heatHalfLifeMs);
  return new TierStack({ tiers, policy, halfLifeMs: config.heatHalfLifeMs, promoteOnHit: true });
}
