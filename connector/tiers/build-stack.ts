/**
 * Build the TierStack from configuration: DRAM first, then either the default local-file tier or the tiers listed
 * in `config.tiers`, in order (fastest first). Each entry (docs/storage.md "Tier configuration"):
 *   { "name": "ssd", "driver": "file", "budget": "200GiB",          // required: driver; budget (bytes or "200GiB")
 *     "medium": "DISK", "writeMode": "through" | "back",           // optional
 *     "admitAfter": 2, "admit": { "minSeen": 2, "minHeat": 1.5, "maxBlockBytes": "64MiB" },
 *     "probe": { "perSecond": 500, "negativeTtlMs": 1000 },        // shared tiers: index-miss probe bounds
 *     …driver config (root, bucket, endpoint, …) }
 */
import { ErrorCode, KvstashError } from '../../protocol/errors.js';
import { parseBytes, type Config } from '../config.js';
import { admissionFilter, heatPolicy, lfudaPolicy, lruPolicy, type AdmissionFilter, type AdmissionSpec } from './policy.js';
import type { SharedProbeOptions } from './shared-probe.js';
import type { DriverRegistry } from '../storage/registry.js';
import { ArenaStore } from '../storage/arena.js';
import type { DramStore } from '../storage/driver.js';
import { MemoryDriver } from '../storage/memory.js';
import { TierStack, type TierSpec } from './tier-stack.js';
import { MAX_TIERS } from './fast-index.js';
import type { WriteQueueOptions } from './write-queue.js';
// Built-in drivers that register themselves (registerBuiltinDriver) — imported here, not from registry.ts, to avoid a cycle.
import '../storage/nfs.js';
import '../storage/s3.js';

const MEDIUM: Record<string, string> = { memory: 'CPU', file: 'DISK', segment: 'DISK', nfs: 'NFS', s3: 'S3' };
const READ_BPS: Record<string, number> = { memory: 10e9, file: 2e9, segment: 2e9, nfs: 200e6, s3: 150e6 };
const PROBE_KEYS = ['perSecond', 'burst', 'negativeTtlMs', 'maxNegative', 'maxPerLookup', 'concurrency'];

function fail(what: string, msg: string): never {
  throw new KvstashError(ErrorCode.CONFIG, `${what} ${msg}`);
}

export function parseAdmission(raw: unknown, what: string, halfLifeMs: number): AdmissionFilter | undefined {
  if (raw === undefined) return undefined;
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) fail(what, 'must be an object like { "minSeen": 2 }');
  const { minSeen, minHeat, maxBlockBytes, ...extra } = raw as Record<string, unknown>;
  if (Object.keys(extra).length) fail(what, `has unknown field(s) ${Object.keys(extra).join(', ')} (known: minSeen, minHeat, maxBlockBytes)`);
  const spec: AdmissionSpec = {};
  if (minSeen !== undefined) spec.minSeen = Number.isInteger(minSeen) && (minSeen as number) >= 1 ? (minSeen as number) : fail(`${what}.minSeen`, 'must be an integer ≥ 1');
  if (minHeat !== undefined) spec.minHeat = typeof minHeat === 'number' && minHeat >= 0 ? minHeat : fail(`${what}.minHeat`, 'must be a number ≥ 0');
  if (maxBlockBytes !== undefined) spec.maxBlockBytes = parseBytes(maxBlockBytes, `${what}.maxBlockBytes`);
  return admissionFilter(spec, halfLifeMs);
}

function parseProbe(raw: unknown, what: string): Partial<SharedProbeOptions> {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) fail(what, 'must be an object');
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
    if (!PROBE_KEYS.includes(k)) fail(what, `has unknown field "${k}" (known: ${PROBE_KEYS.join(', ')})`);
    if (typeof v !== 'number' || !(v >= 0)) fail(`${what}.${k}`, 'must be a number ≥ 0');
    out[k] = v;
  }
  return out;
}

/** One entry of the `tiers` setting → a TierSpec (the driver built through the registry). */
export function parseTier(raw: unknown, i: number, config: Config, registry: DriverRegistry, queue: WriteQueueOptions, taken: string[]): { spec: TierSpec; probe?: Partial<SharedProbeOptions> } {
  const what = `tiers[${i}]`;
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) fail(what, 'must be an object');
  const { name, driver, budget, medium, writeMode, admitAfter, admit, probe, ...rest } = raw as Record<string, unknown>;
  if (typeof driver !== 'string') fail(`${what}.driver`, `must name a registered driver (${registry.names().join(', ')})`);
  const tierName = name ?? driver;
  if (typeof tierName !== 'string' || !/^[a-z][a-z0-9_-]*$/.test(tierName)) fail(`${what}.name`, 'must be a lowercase name like "ssd"');
  if (taken.includes(tierName)) fail(what, `duplicate tier name "${tierName}"`);
  if (budget === undefined) fail(`${what}.budget`, 'is required (bytes, e.g. "200GiB")');
  if (writeMode !== undefined && writeMode !== 'through' && writeMode !== 'back') fail(`${what}.writeMode`, 'must be "through" or "back"');
  const after = admitAfter ?? 1;
  if (typeof after !== 'number' || !Number.isInteger(after) || after < 1) fail(`${what}.admitAfter`, 'must be an integer ≥ 1');
  if (medium !== undefined && typeof medium !== 'string') fail(`${what}.medium`, 'must be a string');
  return {
    spec: {
      name: tierName, medium: (medium as string | undefined) ?? MEDIUM[driver] ?? driver.toUpperCase(),
      driver: registry.create(driver, { maxValueBytes: config.maxBlockBytes, ...rest }),
      budgetBytes: parseBytes(budget, `${what}.budget`),
      writeMode: (writeMode as 'through' | 'back' | undefined) ?? 'through', admitAfter: after,
      admit: parseAdmission(admit, `${what}.admit`, config.heatHalfLifeMs), queue, initialReadBps: READ_BPS[driver] ?? 100e6,
    },
    probe: probe === undefined ? undefined : parseProbe(probe, `${what}.probe`),
  };
}

const ARENA_CHUNK = 64 * 2 ** 20;

/** The DRAM tier's store: a shared-memory arena when arenaDir is set, else the heap. */
function dramStore(config: Config): DramStore {
  if (!config.arenaDir) return new MemoryDriver({ maxValueBytes: config.maxBlockBytes });
  const mode = /^0?[0-7]{3}$/.test(config.arenaFileMode) ? parseInt(config.arenaFileMode, 8) : fail('arenaFileMode', `must be an octal mode like "0600", got ${JSON.stringify(config.arenaFileMode)}`);
  const groups = config.arenaTenantGroups ?? {};
  if (typeof groups !== 'object' || Array.isArray(groups) || !Object.values(groups).every((g) => Number.isSafeInteger(g) && g >= 0)) {
    fail('arenaTenantGroups', 'must be a JSON map of tenant → numeric group id');
  }
  return new ArenaStore({
    dir: config.arenaDir, bytes: Math.ceil(config.dramBytes * 1.25) + 2 * ARENA_CHUNK + config.maxBlockBytes, chunkBytes: ARENA_CHUNK,
    maxValueBytes: config.maxBlockBytes, leaseMs: config.arenaLeaseMs, commitMs: config.arenaCommitMs, fileMode: mode, tenantGroups: groups,
  });
}

export function buildTierStack(config: Config, registry: DriverRegistry): TierStack {
  const queue = { maxItems: config.writeQueueItems, maxBytes: config.writeQueueBytes, concurrency: config.writeConcurrency };
  const tiers: TierSpec[] = [{
    name: 'dram', medium: 'CPU', driver: dramStore(config), budgetBytes: config.dramBytes,
    writeMode: 'through', admitAfter: 1, queue, initialReadBps: READ_BPS.memory!,
  }];
  let probe: Partial<SharedProbeOptions> | undefined;
  if (config.tiers) {
    if (!Array.isArray(config.tiers)) fail('tiers', 'must be a JSON array');
    if (config.tiers.length + 1 > MAX_TIERS) fail('tiers', `lists ${config.tiers.length} tiers; at most ${MAX_TIERS - 1} below DRAM`);
    for (const [i, raw] of config.tiers.entries()) {
      const t = parseTier(raw, i, config, registry, queue, tiers.map((x) => x.name));
      tiers.push(t.spec);
      if (t.probe) probe = { ...probe, ...t.probe };
    }
  } else if (config.fileRoot) {
    tiers.push({
      name: 'file', medium: 'DISK',
      driver: registry.create(config.fileLayout === 'segment' ? 'segment' : 'file', { root: config.fileRoot, fsync: config.fileFsync, maxValueBytes: config.maxBlockBytes }),
      budgetBytes: config.fileBytes, writeMode: config.fileWriteMode, admitAfter: 1, queue, initialReadBps: READ_BPS.file!,
    });
  }
  const policy = config.policy === 'lru' ? lruPolicy : config.policy === 'heat' ? heatPolicy(config.heatHalfLifeMs, config.heatWindow ?? 256) : lfudaPolicy();
  return new TierStack({ tiers, policy, halfLifeMs: config.heatHalfLifeMs, promoteOnHit: true, probe, readPoolBytes: config.readPoolBytes });
}
