/**
 * Index memory per block at 1 M blocks: rebuild a TierStack index from a lower tier that lists 1 M blocks
 * (a generated listing, no stored bytes) and measure the heap growth. Run with --expose-gc for a clean
 * figure (bench/run.ts passes it). Also times LOOKUP of an 8,192-block chain in that full index.
 */
import { randomBytes } from 'node:crypto';
import type { ListedValue, StorageDriver } from '../connector/storage/driver.js';
import { MemoryDriver } from '../connector/storage/memory.js';
import { lfudaPolicy, lruPolicy } from '../connector/tiers/policy.js';
import { TierStack } from '../connector/tiers/tier-stack.js';
import { formatTable, median, pct, quick } from './util.js';

const N = quick ? 250_000 : 1_000_000;
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
  const { rebuilt } = await s.open();
  gc?.(); gc?.();
  const after = process.memoryUsage();
  const perBlock = (after.heapUsed + after.arrayBuffers - before.heapUsed - before.arrayBuffers) / rebuilt; // the fast index lives in an ArrayBuffer
  const rss = (after.rss - before.rss) / rebuilt;
  const chain = Buffer.concat(Array.from({ length: 8192 }, (_, i) => Buffer.from(keyHex(i * 7), 'hex')));
  const lat: number[] = [];
  for (let i = 0; i < 500; i++) { const t0 = performance.now(); s.lookupRaw(NS, chain); lat.push(performance.now() - t0); }
  rows.push([name, rebuilt, perBlock.toFixed(0), rss.toFixed(0), median(lat).toFixed(3), pct(lat, 99).toFixed(3)]);
  s = undefined;
}
process.stdout.write(`Index memory (${N.toLocaleString()} blocks; gc ${gc ? 'forced' : 'NOT available: run with --expose-gc'}); targets: ≤ 128 bytes/block, LOOKUP p99 < 1 ms\n`);
process.stdout.write(formatTable(['policy', 'blocks', 'heap + buffers bytes/block', 'rss bytes/block', 'LOOKUP 8,192 p50 ms', 'p99 ms'], rows) + '\n');
