import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { lruPolicy } from '../connector/policy.js';
import { MemoryDriver } from '../connector/storage/memory.js';
import { SegmentDriver, parseSegmentConfig } from '../connector/storage/segment.js';
import { TierStack } from '../connector/tiers.js';
import { checksum } from '../connector/checksum.js';
const NS = 'e'.repeat(32);
const key = (i: number) => `${NS}/${i.toString(16).padStart(64, '0')}`;
const size = Number(process.argv[2] ?? 2 << 20);
const TOTAL = 512 << 20;
const root = mkdtempSync(path.join(os.tmpdir(), 'prof-'));
const q = { maxItems: 100_000, maxBytes: 2 ** 40, concurrency: 4 };
const s = new TierStack({ tiers: [
  { name: 'dram', medium: 'CPU', driver: new MemoryDriver(), budgetBytes: 64 * 2 ** 20, writeMode: 'through', admitAfter: 1, queue: q, initialReadBps: 1e10 },
  { name: 'file', medium: 'DISK', driver: new SegmentDriver(parseSegmentConfig({ root })), budgetBytes: 2 ** 40, writeMode: 'through', admitAfter: 1, queue: q, initialReadBps: 1e9 },
], policy: lruPolicy, halfLifeMs: 60_000, promoteOnHit: true } as never);
await s.open();
const n = TOTAL / size;
const buf = Buffer.alloc(size, 9);
for (let i = 0; i < n; i++) s.put(key(i), buf);
await s.drain();
let t0 = performance.now();
for (let i = 0; i < n; i += 4) await s.get([key(i), key(i + 1), key(i + 2), key(i + 3)].slice(0, n - i));
console.log('stack get GB/s', TOTAL / ((performance.now() - t0) / 1000) / 1e9);
const d = s.tiers[1]!.driver;
t0 = performance.now();
for (let i = 0; i < n; i += 4) await Promise.all([0,1,2,3].map((j) => d.get(key(i + j))));
console.log('driver get GB/s', TOTAL / ((performance.now() - t0) / 1000) / 1e9);
t0 = performance.now();
for (let i = 0; i < n; i++) checksum(buf);
console.log('xxh GB/s', TOTAL / ((performance.now() - t0) / 1000) / 1e9);
await s.close();
rmSync(root, { recursive: true, force: true });
{
const root2 = mkdtempSync(path.join(os.tmpdir(), 'prof-'));
const d2 = new SegmentDriver(parseSegmentConfig({ root: root2 }));
await d2.open();
const m = { checksum: checksum(buf) };
for (let i = 0; i < n; i += 4) await Promise.all([0,1,2,3].map((j) => d2.put(key(i + j), buf, m)));
let t0 = performance.now();
for (let i = 0; i < n; i += 4) await Promise.all([0,1,2,3].map((j) => d2.get(key(i + j))));
console.log('driver2 get GB/s', TOTAL / ((performance.now() - t0) / 1000) / 1e9);
let tc = 0;
t0 = performance.now();
for (let i = 0; i < n; i += 4) { const vs = await Promise.all([0,1,2,3].map((j) => d2.get(key(i + j)))); const t1 = performance.now(); for (const v of vs) checksum(v!.value); tc += performance.now() - t1; }
console.log('driver2 get+xxh GB/s', TOTAL / ((performance.now() - t0) / 1000) / 1e9, 'xxh ms', tc);
const keep: Buffer[] = [];
t0 = performance.now(); tc = 0;
for (let i = 0; i < n; i += 4) { const vs = await Promise.all([0,1,2,3].map((j) => d2.get(key(i + j)))); const t1 = performance.now(); for (const v of vs) { checksum(v!.value); keep.push(v!.value); if (keep.length > 32) keep.shift(); } tc += performance.now() - t1; }
console.log('driver2 get+xxh+keep GB/s', TOTAL / ((performance.now() - t0) / 1000) / 1e9, 'xxh ms', tc);
await d2.close();
rmSync(root2, { recursive: true, force: true });
}
