/** Types of the TierStack (connector/tiers/tier-stack.ts): tier specs, index entries, stats. */
import type { AdmissionFilter, EvictionPolicy, TierOrder } from './policy.js';
import type { BlockEntry } from './block-table.js';
import type { BlockIndex } from './block-index.js';
import type { SharedProbeOptions } from './shared-probe.js';
import type { DramStore, StorageDriver } from '../storage/driver.js';
import type { WriteQueue, WriteQueueOptions } from './write-queue.js';
import type { RecencyList } from './recency.js';

export interface TierSpec {
  /** Tier name used in LOOKUP replies and stats: "dram", "file", "nfs", "s3", … */
  name: string;
  /** Medium announced in KV events: "CPU", "DISK", "NFS", "S3", … */
  medium: string;
  driver: StorageDriver;
  budgetBytes: number;
  /** through: every admitted block is written here; back: only when evicted from the tier above. */
  writeMode: 'through' | 'back';
  /** Accesses a block needs before this tier admits it (1 = admit everything). */
  admitAfter: number;
  /** Further admission rule (policy.ts AdmissionFilter); both it and admitAfter must agree. */
  admit?: AdmissionFilter;
  queue: WriteQueueOptions;
  /** Read bandwidth assumed before any measurement, bytes/s. */
  initialReadBps: number;
}

export interface TierStackOptions {
  tiers: TierSpec[];
  policy: EvictionPolicy;
  halfLifeMs: number;
  promoteOnHit: boolean;
  /** Clock for heat and recency (default Date.now); trace replays pass the trace's time. */
  now?: () => number;
  /** Free memory the hit path keeps for reuse (read-pool.ts), bytes; default 128 MiB, 0 turns reuse off. */
  readPoolBytes?: number;
  /** Bounds of the index-miss probe of shared tiers (connector/tiers/shared-probe.ts). */
  probe?: Partial<SharedProbeOptions>;
}

export { BlockEntry } from './block-table.js';

/** A tier as the TierStack runs it (internal). */
export interface Tier extends TierSpec {
  index: number;
  /** Recency order of the blocks the tier holds, least recent first (recency.ts; by row id); absent when the
   * policy keeps its own order. */
  lru: RecencyList | undefined;
  /** Blocks the tier holds. */
  blocks: number;
  /** The policy's own eviction order, for ordering policies (policy.ts TierOrder). */
  order: TierOrder | undefined;
  used: number;
  writes: WriteQueue;
  readBps: number;
  c: { hits: number; misses: number; evictions: number; checksumFailures: number; promotions: number; demotions: number; writeErrors: number; bytesWritten: number; readErrors: number };
  /** Why the tier's last write failed; cleared by the next write that lands. Health says DEGRADED meanwhile. */
  writeFault?: string | undefined;
}

export interface TierStats {
  name: string; medium: string; bytes: number; blocks: number; budgetBytes: number; hits: number; misses: number;
  evictions: number; queueDepth: number; droppedSaves: number; checksumFailures: number; promotions: number;
  demotions: number; writeErrors: number; bytesWritten: number; readBps: number; readErrors: number; available: boolean;
  /** The tier's last write failed (disk full, I/O error …): why, else absent. */
  degraded?: string;
}

export interface LookupResult {
  hit: number;
  tiers: Record<string, number>;
  loadMs: Record<string, number>;
  /** Per tier: leading blocks served by that tier or faster ones (the prefix worth loading if slower tiers are not). */
  depth?: Record<string, number>;
}

/**
 * The parts of TierStack that its control primitives (tier-control.ts: Evict / Clear / Move) work on. TierStack
 * implements it; tier-control.ts depends on this interface, not on tier-stack.ts, so the two do not import each
 * other. The members marked @internal on TierStack are for these primitives only.
 */
export interface StackInternals {
  readonly index: BlockIndex;
  readonly tiers: Tier[];
  readonly dram: DramStore;
  delete(keys: string[]): number;
  addTo(t: Tier, e: BlockEntry, emit?: boolean): void;
  removeFrom(t: Tier, e: BlockEntry): void;
  insertDram(e: BlockEntry, value: Buffer): boolean;
  enforceBudget(t: Tier): void;
  load(e: BlockEntry): Promise<Buffer | undefined>;
  /** A buffer going where the read pool cannot track it (read-pool.ts): never reused; answers it. */
  escape(v: Buffer): Buffer;
}


/** What TierStack.get(keys, true) answers for a block that is in DRAM (compare by identity). */
export const IN_DRAM = Buffer.alloc(0);
