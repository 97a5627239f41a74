/**
 * Index memory per block: rebuild a TierStack index from a lower tier that lists N blocks (a generated listing,
 * no stored bytes; N = 1 M, `--blocks=N` to change, e.g. `npm run bench -- index --blocks=10000000`) and measure
 * the heap + buffer growth and the RSS growth, the rebuild time, and the FastIndex's share (20 bytes per table
 * slot, connector/tiers/fast-index.ts). Run with --expose-gc for a clean figure (bench/run.ts passes it). Also
 * times LOOKUP of an 8,192-block chain in that full index. Above ~3 M blocks the V8 heap limit is raised by
 * re-running this file with --max-old-space-size (10 M blocks: about 6 GB heap, several minutes).
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { getHeapStatistics } from 'node:v8';
import type { ListedValue, StorageDriver } from '../connector/storage/driver.js';
import { MemoryDriver } from '../connector/storage/memory.js';
import { lfudaPolicy, lruPolicy } from '../connector/tiers/policy.js';
import { TierStack } from '../connector/tiers/tier-stack.js';
import { formatTable, median, pct, quick } from './util.js';


const argv = process.argv.slice(2);
const blocksArg = argv.find((a) => a.startsWith('--blocks='))?.slice(9) ?? (argv.includes('--blocks') ? argv[argv.indexOf('--blocks') + 1] : undefined);
const N = blocksArg !== undefined ? Number(blocksArg) : quick ? 250_000 : 1_000_000;
if (!Number.isInteger(N) || N < 8192 * 7) throw new Error(`--blocks must be an integer ≥ ${8192 * 7}, got ${blocksArg}`);
const wantHeapMb = Math.ceil((N * 200) / 2 ** 20) + 1024; // the index is columns (block-table.ts); the heap holds little of it
if (getHeapStatistics().heap_size_limit < wantHeapMb * 2 ** 20 && !process.env.KVS_INDEX_BENCH_CHILD) {
  const r = spawnSync(process.execPath, [...process.execArgv, `--max-old-space-size=${wantHeapMb}`, ...process.argv.slice(1)],
    { stdio: 'inherit', env: { ...process.env, KVS_INDEX_BENCH_CHILD: '1' } });
  process.exit(r.status ?? 1);
}
const NS = 'd'.repeat(32);
const seed = randomBytes(32);
const keyHex = (i: number) => { const b = Buffer.from(seed); b.writeUInt32BE(i, 0); b.writeUInt32BE(i * 2654435761 >>> 0, 8); return b.toString('hex'); };

const listing: StorageDriver = {
  name: 'listing', limits: { maxValueBytes: 1 << 30 }, durable: true,
  async open() {}, async get() { return undefined; }, async put() {}, async has() { return false; }, async delete() { return false; },
  async getMany(k) { return k.map(() => undefined); }, async putMany(i) { return i.map(() => false); },
  async *list(): AsyncIterable<ListedValue> { for (let i = 0; i < N; i++) yield { key: `${NS}/${keyHex(i)}`, size: 2 << 20, meta: { checksum: '0123456789abcdef' } }; },
  stats() { return {}; }, async close() {},
};

const gc = (globalThis as { gc?: () => void }).gc;
const q = { maxItems: 1, maxBytes: 1, concurrency: 1 };
const rows: (string | number)[][] = [];
// Each policy on its own stack, one after the other (the first is dropped and collected before the second).
for (const [name, policy] of [['lru', lruPolicy], ['lfuda (default)', lfudaPolicy()]] as const) {
  let s: TierStack | undefined = new TierStack({
    tiers: [
      { name: 'dram', medium: 'CPU', driver: new MemoryDriver(), budgetBytes: 1 << 30, writeMode: 'through', admitAfter: 1, queue: q, initialReadBps: 1e10 },
      { name: 'file', medium: 'DISK', driver: listing, budgetBytes: Number.MAX_SAFE_INTEGER, writeMode: 'through', admitAfter: 1, queue: q, initialReadBps: 1e9 },
    ],
    policy, halfLifeMs: 60_000, promoteOnHit: false,
  });
  gc?.(); gc?.();
  const before = process.memoryUsage();
  const t0 = performance.now();
  const { rebuilt } = await s.open();
  const rebuildS = (performance.now() - t0) / 1000;
  gc?.(); gc?.();
  const after = process.memoryUsage();
  const fastPerBlock = ((s.index.fast.capacity * 20) / rebuilt).toFixed(0);
  const perBlock = (after.heapUsed + after.arrayBuffers - before.heapUsed - before.arrayBuffers) / rebuilt; // the fast index lives in an ArrayBuffer
  const rss = (after.rss - before.rss) / rebuilt;
  const chain = Buffer.concat(Array.from({ length: 8192 }, (_, i) => Buffer.from(keyHex(i * 7), 'hex')));
  const lat: number[] = [];
  // Steady state, as in a running sidecar: 50 untimed lookups first (the first calls run before the JIT compiles them).
  for (let i = 0; i < 50; i++) s.lookupRaw(NS, chain);
  for (let i = 0; i < 500; i++) { const t0 = performance.now(); s.lookupRaw(NS, chain); lat.push(performance.now() - t0); }
  // The same while the process allocates as a busy sidecar does (request headers, key strings, 64 KiB socket
  // reads, a few survivors per request): garbage collections now run while lookups are timed.
  const churn: number[] = [];
  const kept: unknown[] = [];
  for (let i = 0; i < 2000; i++) {
    for (let j = 0; j < 200; j++) kept.push({ op: 'GET', id: i * 200 + j, key: keyHex(j) });
    kept.push(Buffer.alloc(64 << 10));
    if (kept.length > 20_000) kept.splice(0, 10_000);
    const t0 = performance.now();
    s.lookupRaw(NS, chain);
    churn.push(performance.now() - t0);
  }
  // A running sidecar's DRAM holds some of the blocks too (write-through: also on the SSD); the DRAM tier's order
  // columns are indexed by row id, so a sparse share of rows spread over all ids costs them nearly in full.
  const t0d = s.tiers[0]!;
  for (let id = 0; id < rebuilt; id += 300) s.addTo(t0d, s.index.table.view(id), false);
  gc?.(); gc?.();
  const withDram = process.memoryUsage();
  if (s.index.size !== rebuilt || t0d.blocks === 0) throw new Error('index changed under the bench'); // (also keeps `s` alive through the gc above)
  const rssDram = (withDram.rss - before.rss) / rebuilt;
  rows.push([name, rebuilt, perBlock.toFixed(0), rss.toFixed(0), fastPerBlock, rebuildS.toFixed(1), median(lat).toFixed(3), pct(lat, 99).toFixed(3),
    pct(churn, 99).toFixed(3), Math.max(...churn).toFixed(1), rssDram.toFixed(0)]);
  s = undefined;
}
process.stdout.write(`Index memory (${N.toLocaleString()} blocks; gc ${gc ? 'forced' : 'NOT available: run with --expose-gc'}); targets: ≤ 128 bytes/block, LOOKUP p99 < 1 ms\n`);
process.stdout.write(formatTable(['policy', 'blocks', 'heap + buffers bytes/block', 'rss bytes/block', 'of which fast index', 'rebuild s', 'LOOKUP 8,192 p50 ms', 'p99 ms', 'p99 ms, allocating', 'max ms, allocating', 'rss bytes/block, 1 in 300 also in DRAM'], rows) + '\n');
