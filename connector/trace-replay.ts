/**
 * Trace replay against the REAL TierStack (DRAM budget + a file tier in a temp folder), with the trace's own clock,
 * and the offline references (Belady, LRU) at the same capacity. Used by `kvstash bench trace` and bench/trace.ts.
 *
 * Capacities are given in the modelled system's bytes (`--dram 64GiB --ssd 1TiB`) with the modelled bytes per block
 * (`modelBlockBytes`, default 64 MiB: 512 tokens × 128 KiB/token for an 8B GQA model in bf16 — 2 × 32 layers × 8 KV
 * heads × 128 dims × 2 bytes). Each tier holds capacity / modelBlockBytes blocks; the replay stores `blockBytes` real
 * bytes per block (scaled down so a full replay takes about a minute), so hit ratios are those of the full-size
 * system and bytes written are reported scaled back up to model bytes.
 *
 * Per request: LOOKUP (longest cached prefix, split by the fastest tier holding each block), GET of that prefix
 * (bytes verified), PUT of the remaining blocks (a cached block after the first miss is refreshed: PRESENT); every 16
 * requests the write-behind queues are drained (the disk keeps up with the trace).
 */
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beladyHits, lruHits, type TraceRequest } from './belady.js';
import { admissionFilter, heatPolicy, lruPolicy, type EvictionPolicy } from './policy.js';
import { FileDriver, parseFileConfig } from './storage/file.js';
import { MemoryDriver } from './storage/memory.js';
import { TierStack } from './tiers.js';

export interface TraceBenchOptions {
  trace: string;
  dramBytes: number;
  ssdBytes: number;
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
  policy: string;
  kind: 'replay' | 'offline';
  capacityBlocks: number;
  dramHits: number;
  ssdHits: number;
  hits: number;
  blocks: number;
  ssdBlocksWritten: number;
  ssdModelBytesWritten: number;
  badReads: number;
  seconds: number;
}

export interface TraceBenchResult {
  requests: number;
  blocks: number;
  uniqueBlocks: number;
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

async function replay(reqs: TraceRequest[], o: TraceBenchOptions, name: string, policy: EvictionPolicy): Promise<PolicyRow> {
  const dir = mkdtempSync(path.join(o.dir ?? os.tmpdir(), 'kvstash-trace-'));
  let now = 0;
  const dramBlocks = Math.floor(o.dramBytes / o.modelBlockBytes);
  const ssdBlocks = Math.floor(o.ssdBytes / o.modelBlockBytes);
  const queue = { maxItems: 1 << 20, maxBytes: 2 ** 40, concurrency: 4 };
  const stack = new TierStack({
    tiers: [
      { name: 'dram', medium: 'CPU', driver: new MemoryDriver(), budgetBytes: dramBlocks * o.blockBytes, writeMode: 'through', admitAfter: 1, queue, initialReadBps: 1e10 },
      {
        name: 'ssd', medium: 'DISK', driver: new FileDriver(parseFileConfig({ root: dir })), budgetBytes: ssdBlocks * o.blockBytes,
        writeMode: o.ssdWriteMode, admitAfter: o.ssdAdmitAfter, queue, initialReadBps: 2e9,
        admit: o.ssdAdmitAfter > 1 ? admissionFilter({ minSeen: o.ssdAdmitAfter }, o.halfLifeMs) : undefined,
      },
    ],
    policy, halfLifeMs: o.halfLifeMs, promoteOnHit: true, now: () => now,
  });
  const t0 = performance.now();
  const row: PolicyRow = { policy: name, kind: 'replay', capacityBlocks: dramBlocks + ssdBlocks, dramHits: 0, ssdHits: 0, hits: 0, blocks: 0, ssdBlocksWritten: 0, ssdModelBytesWritten: 0, badReads: 0, seconds: 0 };
  try {
    await stack.open();
    for (let i = 0; i < reqs.length; i++) {
      const r = reqs[i]!;
      now = r.timestamp;
      const keys = r.hash_ids.map(keyOf);
      row.blocks += keys.length;
      const l = stack.lookup(keys);
      row.hits += l.hit;
      row.dramHits += l.tiers.dram ?? 0;
      row.ssdHits += l.tiers.ssd ?? 0;
      if (l.hit > 0) {
        const got = await stack.get(keys.slice(0, l.hit));
        for (let j = 0; j < got.length; j++) if (!got[j] || got[j]!.readUInt32LE(0) !== r.hash_ids[j]) row.badReads++;
      }
      for (let j = l.hit; j < keys.length; j++) {
        const v = Buffer.alloc(o.blockBytes);
        v.writeUInt32LE(r.hash_ids[j]!, 0);
        stack.put(keys[j]!, v);
      }
      // Let the disk keep up (a real hour is replayed in a minute): wait for the write-behind queue every few
      // requests. A block still queued is in DRAM (write-through) or counted as pending, so results barely move.
      if (i % 16 === 15 || stack.stats()[1]!.queueDepth > 512) await stack.drain();
      if (o.log && i % 2000 === 1999) o.log(`${name}: ${i + 1}/${reqs.length} requests, hit ratio so far ${(row.hits / row.blocks * 100).toFixed(1)}%`);
    }
    await stack.drain();
    const ssd = stack.stats()[1]!;
    row.ssdBlocksWritten = Math.round(ssd.bytesWritten / o.blockBytes);
    row.ssdModelBytesWritten = row.ssdBlocksWritten * o.modelBlockBytes;
  } finally {
    await stack.close().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
  row.seconds = (performance.now() - t0) / 1000;
  return row;
}

function offline(name: string, capacity: number, f: typeof beladyHits): PolicyRow & { run: (reqs: TraceRequest[]) => PolicyRow } {
  const row: PolicyRow = { policy: name, kind: 'offline', capacityBlocks: capacity, dramHits: 0, ssdHits: 0, hits: 0, blocks: 0, ssdBlocksWritten: 0, ssdModelBytesWritten: 0, badReads: 0, seconds: 0 };
  return {
    ...row,
    run(reqs) {
      const t0 = performance.now();
      const r = f(reqs, capacity);
      return { ...row, hits: r.hits, blocks: r.blocks, seconds: (performance.now() - t0) / 1000 };
    },
  };
}

export async function runTraceBench(o: TraceBenchOptions): Promise<TraceBenchResult> {
  const reqs = loadTrace(o.trace, o.limit);
  const dramBlocks = Math.floor(o.dramBytes / o.modelBlockBytes);
  const ssdBlocks = Math.floor(o.ssdBytes / o.modelBlockBytes);
  const unique = new Set<number>();
  let blocks = 0;
  for (const r of reqs) for (const id of r.hash_ids) { unique.add(id); blocks++; }
  const rows: PolicyRow[] = [];
  // Both real replays at once: they are I/O bound, each on its own stack, folder and clock.
  rows.push(...await Promise.all([replay(reqs, o, 'kvstash (heat)', heatPolicy(o.halfLifeMs, o.heatWindow ?? 256)), replay(reqs, o, 'LRU', lruPolicy)]));
  // Distinct blocks the stack can hold: write-through keeps DRAM's blocks on the SSD too (inclusive).
  const total = o.ssdWriteMode === 'through' ? Math.max(dramBlocks, ssdBlocks) : dramBlocks + ssdBlocks;
  rows.push(offline('LRU, offline, one level', total, lruHits).run(reqs));
  rows.push(offline('Belady, offline, DRAM size', dramBlocks, beladyHits).run(reqs));
  rows.push(offline('Belady, offline, all tiers', total, beladyHits).run(reqs));
  return { requests: reqs.length, blocks, uniqueBlocks: unique.size, dramBlocks, ssdBlocks, rows };
}
