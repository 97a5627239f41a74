/**
 * Trace replay against the REAL TierStack, with the trace's own clock, and the offline references (Belady, LRU) at
 * the same capacity. Used by `kvstash bench trace` and bench/trace.ts. Policies and workloads: docs/eviction.md.
 *
 * Workloads: the public Mooncake conversation trace (bench/traces/) and the generators of connector/trace/workloads.ts
 * (each at the tuning seed, plus `<name>@heldout` at the seed no policy was tuned on).
 *
 * Two kinds of run per workload:
 * - one level: only the DRAM tier, at each `capacities` block count, against LRU and Belady at that capacity;
 * - the split: DRAM + SSD tier (write-through), capacities in the modelled system's bytes (`--dram 64GiB --ssd
 *   1TiB`) over the modelled bytes per block (`modelBlockBytes`, default 64 MiB: 512 tokens × 128 KiB/token for an
 *   8B GQA model in bf16 — 2 × 32 layers × 8 KV heads × 128 dims × 2 bytes). The SSD tier is a real file tier in a
 *   temp folder (`ssdDriver: 'file'`) or a second memory driver (`'memory'`, the same tier-stack code without the
 *   disk: minutes instead of an hour on a busy machine). Reports DRAM hits against Belady at DRAM size (the bound
 *   on DRAM hits) and SSD bytes written per hit, scaled back up to model bytes.
 *
 * Per request: LOOKUP (longest cached prefix, split by the fastest tier holding each block), GET of that prefix
 * (bytes verified), PUT of the remaining blocks (a cached block after the first miss is refreshed: PRESENT); every 16
 * requests the write-behind queues are drained (the disk keeps up with the trace).
 */
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beladyHits, lruHits, reuseOracleLruHits, type TraceRequest } from './belady.js';
import { admissionFilter, heatPolicy, lfudaPolicy, lruPolicy, type EvictionPolicy } from '../tiers/policy.js';
import { FileDriver, parseFileConfig } from '../storage/file.js';
import { MemoryDriver } from '../storage/memory.js';
import { TierStack, type TierSpec } from '../tiers/tier-stack.js';
import { HELD_OUT_SEED, TUNING_SEED, WORKLOADS } from './workloads.js';

export interface TraceBenchOptions {
  /** Mooncake JSONL file used for the workload named `mooncake`. */
  trace: string;
  /** `mooncake`, a generator name (connector/trace/workloads.ts), or `<generator>@heldout`. */
  workloads: string[];
  /** One-level capacities, blocks. */
  capacities: number[];
  /** The split run (0 = skip it). */
  dramBytes: number;
  ssdBytes: number;
  ssdDriver: 'file' | 'memory';
  blockBytes: number;
  modelBlockBytes: number;
  /** SSD tier: write-through or write-back, and the accesses a block needs before the SSD takes it. */
  ssdWriteMode: 'through' | 'back';
  ssdAdmitAfter: number;
  halfLifeMs: number;
  /** Candidates the heat policy compares (config heatWindow). */
  heatWindow?: number;
  /** Replay only the first n requests (0 = all). */
  limit: number;
  dir?: string;
  log?: (line: string) => void;
}

export interface PolicyRow {
  workload: string;
  /** 'one level' or 'split'. */
  run: string;
  policy: string;
  capacityBlocks: number;
  hits: number;
  blocks: number;
  lruHits: number;
  beladyHits: number;
  /** LRU that knows which blocks are ever reused (belady.ts reuseOracleLruHits): the reach of perfect admission. */
  oracleHits: number;
  dramHits: number;
  /** Belady's hits at DRAM size (split runs). */
  dramBound: number;
  ssdBlocksWritten: number;
  ssdModelBytesWritten: number;
  badReads: number;
  seconds: number;
}

export interface WorkloadInfo {
  name: string;
  requests: number;
  blocks: number;
  uniqueBlocks: number;
}

export interface TraceBenchResult {
  workloads: WorkloadInfo[];
  dramBlocks: number;
  ssdBlocks: number;
  rows: PolicyRow[];
}

export function loadTrace(file: string, limit = 0): TraceRequest[] {
  const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '');
  const out: TraceRequest[] = [];
  for (const l of limit > 0 ? lines.slice(0, limit) : lines) {
    const r = JSON.parse(l) as { timestamp?: unknown; hash_ids?: unknown };
    if (typeof r.timestamp !== 'number' || !Array.isArray(r.hash_ids)) throw new Error(`${file}: not a trace line: ${l.slice(0, 80)}`);
    out.push({ timestamp: r.timestamp, hash_ids: r.hash_ids as number[] });
  }
  return out;
}

const NS = '7'.repeat(32);
/** Storage key of a trace block id (ids are small integers; spread them over the hash so the fast index works). */
function keyOf(id: number): string {
  const h1 = (Math.imul(id ^ 0x5bd1e995, 0x9e3779b1) >>> 0).toString(16).padStart(8, '0');
  const h2 = (Math.imul(id ^ 0x85ebca6b, 0xc2b2ae35) >>> 0).toString(16).padStart(8, '0');
  return `${NS}/${h1}${h2}${id.toString(16).padStart(48, '0')}`;
}

/** Requests per generator: about 200–400 k block accesses each, like the public trace. */
const GEN_REQUESTS: Record<string, number> = { chat: 12_000, agent: 3_000, rag: 12_000, sysprompt: 8_000 };

export function workload(name: string, o: Pick<TraceBenchOptions, 'trace' | 'limit'>): TraceRequest[] {
  if (name === 'mooncake') return loadTrace(o.trace, o.limit);
  const [gen, variant] = name.split('@');
  const g = WORKLOADS[gen!];
  if (!g || (variant !== undefined && variant !== 'heldout')) throw new Error(`unknown workload ${name}`);
  const n = GEN_REQUESTS[gen!]!;
  return g(variant === 'heldout' ? HELD_OUT_SEED : TUNING_SEED, o.limit > 0 ? Math.min(o.limit, n) : n);
}

interface Layout { dramBlocks: number; ssdBlocks: number }

async function replay(reqs: TraceRequest[], o: TraceBenchOptions, l: Layout, policy: EvictionPolicy, ssdAdmitAfter: number): Promise<Omit<PolicyRow, 'workload' | 'run' | 'policy' | 'lruHits' | 'beladyHits' | 'oracleHits' | 'dramBound'>> {
  const dir = l.ssdBlocks && o.ssdDriver === 'file' ? mkdtempSync(path.join(o.dir ?? os.tmpdir(), 'kvstash-trace-')) : undefined;
  let now = 0;
  const queue = { maxItems: 1 << 20, maxBytes: 2 ** 40, concurrency: 4 };
  const tiers: TierSpec[] = [{ name: 'dram', medium: 'CPU', driver: new MemoryDriver(), budgetBytes: l.dramBlocks * o.blockBytes, writeMode: 'through', admitAfter: 1, queue, initialReadBps: 1e10 }];
  if (l.ssdBlocks) {
    tiers.push({
      name: 'ssd', medium: 'DISK', driver: dir ? new FileDriver(parseFileConfig({ root: dir })) : new MemoryDriver(), budgetBytes: l.ssdBlocks * o.blockBytes,
      writeMode: o.ssdWriteMode, admitAfter: ssdAdmitAfter, queue, initialReadBps: 2e9,
      admit: ssdAdmitAfter > 1 ? admissionFilter({ minSeen: ssdAdmitAfter }, o.halfLifeMs) : undefined,
    });
  }
  const stack = new TierStack({ tiers, policy, halfLifeMs: o.halfLifeMs, promoteOnHit: true, now: () => now });
  const t0 = performance.now();
  const row = { capacityBlocks: l.dramBlocks + l.ssdBlocks, dramHits: 0, hits: 0, blocks: 0, ssdBlocksWritten: 0, ssdModelBytesWritten: 0, badReads: 0, seconds: 0 };
  try {
    await stack.open();
    for (let i = 0; i < reqs.length; i++) {
      const r = reqs[i]!;
      now = r.timestamp;
      const keys = r.hash_ids.map(keyOf);
      row.blocks += keys.length;
      const lk = stack.lookup(keys);
      row.hits += lk.hit;
      row.dramHits += lk.tiers.dram ?? 0;
      if (lk.hit > 0) {
        const got = stack.getResident(keys.slice(0, lk.hit)) ?? await stack.get(keys.slice(0, lk.hit));
        for (let j = 0; j < got.length; j++) if (!got[j] || got[j]!.readUInt32LE(0) !== r.hash_ids[j]) row.badReads++;
      }
      for (let j = keys.length - 1; j >= lk.hit; j--) { // deepest first, as the sidecar's PUT does
        const v = Buffer.alloc(o.blockBytes);
        v.writeUInt32LE(r.hash_ids[j]!, 0);
        stack.put(keys[j]!, v);
      }
      // Let the disk keep up (a real hour is replayed in minutes): wait for the write-behind queue every few
      // requests. A block still queued is in DRAM (write-through) or counted as pending, so results barely move.
      if (l.ssdBlocks && (i % 16 === 15 || stack.stats()[1]!.queueDepth > 512)) await stack.drain();
    }
    await stack.drain();
    if (l.ssdBlocks) {
      row.ssdBlocksWritten = Math.round(stack.stats()[1]!.bytesWritten / o.blockBytes);
      row.ssdModelBytesWritten = row.ssdBlocksWritten * o.modelBlockBytes;
    }
  } finally {
    await stack.close().catch(() => undefined);
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
  row.seconds = (performance.now() - t0) / 1000;
  return row;
}

/** The policies every run compares: kvstash's default first. */
export function policies(o: TraceBenchOptions): [string, () => EvictionPolicy][] {
  return [['kvstash (lfuda)', () => lfudaPolicy()], ['LRU', () => lruPolicy], ['heat (old default)', () => heatPolicy(o.halfLifeMs, o.heatWindow ?? 256)]];
}

export async function runTraceBench(o: TraceBenchOptions): Promise<TraceBenchResult> {
  const dramBlocks = Math.floor(o.dramBytes / o.modelBlockBytes);
  const ssdBlocks = Math.floor(o.ssdBytes / o.modelBlockBytes);
  const rows: PolicyRow[] = [];
  const infos: WorkloadInfo[] = [];
  for (const name of o.workloads) {
    const reqs = workload(name, o);
    const unique = new Set<number>();
    let blocks = 0;
    for (const r of reqs) for (const id of r.hash_ids) { unique.add(id); blocks++; }
    infos.push({ name, requests: reqs.length, blocks, uniqueBlocks: unique.size });
    for (const cap of o.capacities) {
      const lru = lruHits(reqs, cap).hits;
      const bel = beladyHits(reqs, cap).hits;
      const oracle = reuseOracleLruHits(reqs, cap).hits;
      for (const [pn, mk] of policies(o)) {
        const r = await replay(reqs, o, { dramBlocks: cap, ssdBlocks: 0 }, mk(), 1);
        rows.push({ workload: name, run: 'one level', policy: pn, lruHits: lru, beladyHits: bel, oracleHits: oracle, dramBound: 0, ...r });
      }
      o.log?.(`${name} at ${cap} blocks done`);
    }
    if (dramBlocks > 0 && ssdBlocks > 0) {
      // Distinct blocks the stack can hold: write-through keeps DRAM's blocks on the SSD too (inclusive).
      const total = o.ssdWriteMode === 'through' ? Math.max(dramBlocks, ssdBlocks) : dramBlocks + ssdBlocks;
      const lru = lruHits(reqs, total).hits;
      const bel = beladyHits(reqs, total).hits;
      const oracle = reuseOracleLruHits(reqs, total).hits;
      const dramBound = beladyHits(reqs, dramBlocks).hits;
      const runs: [string, EvictionPolicy, number][] = policies(o).map(([pn, mk]) => [pn, mk(), o.ssdAdmitAfter]);
      if (o.ssdAdmitAfter === 1) runs.splice(1, 0, ['kvstash (lfuda), SSD admits seen ≥ 2', lfudaPolicy(), 2]);
      const done = await Promise.all(runs.map(([, p, adm]) => replay(reqs, o, { dramBlocks, ssdBlocks }, p, adm)));
      done.forEach((r, i) => rows.push({ workload: name, run: 'split', policy: runs[i]![0], lruHits: lru, beladyHits: bel, oracleHits: oracle, dramBound, ...r }));
      o.log?.(`${name} split done`);
    }
  }
  return { workloads: infos, dramBlocks, ssdBlocks, rows };
}
