/**
 * The lower-tier hit path (connector/tiers/tier-reads.ts, read-pool.ts) on real files through the real drivers:
 * blocks read with readInto into pooled buffers are served byte-exact and promoted, a block failing its checksum is
 * never served and is counted, pooled buffers are never handed out twice nor overwritten while a reader holds
 * them, and a chain with a gap is served around the gap.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { existsSync, openSync, readFileSync, readdirSync, rmSync, writeSync, closeSync } from 'node:fs';
import path from 'node:path';
import { lruPolicy } from '../connector/tiers/policy.js';
import { ArenaStore } from '../connector/storage/arena.js';
import { FileDriver } from '../connector/storage/file.js';
import { MemoryDriver } from '../connector/storage/memory.js';
import { SegmentDriver, parseSegmentConfig } from '../connector/storage/segment.js';
import type { StorageDriver } from '../connector/storage/driver.js';
import { ReadPool } from '../connector/tiers/read-pool.js';
import { TierStack } from '../connector/tiers/tier-stack.js';
import { tempDir } from './helpers/sidecar.js';

const KiB = 1024;
const NS = 'c'.repeat(32);
const key = (i: number) => `${NS}/${i.toString(16).padStart(64, '0')}`;
type Layout = 'file' | 'segment';

function stack(layout: Layout, opts: { dram?: number; readPoolBytes?: number; dramStore?: ArenaStore } = {}) {
  const root = tempDir();
  const driver: StorageDriver = layout === 'file'
    ? new FileDriver({ root, fsync: false, maxValueBytes: 1 << 30 })
    : new SegmentDriver(parseSegmentConfig({ root }));
  const queue = { maxItems: 1000, maxBytes: 1 << 30, concurrency: 2 };
  const s = new TierStack({
    tiers: [
      { name: 'dram', medium: 'CPU', driver: opts.dramStore ?? new MemoryDriver(), budgetBytes: opts.dram ?? 64 << 20, writeMode: 'through', admitAfter: 1, queue, initialReadBps: 1e10 },
      { name: 'file', medium: 'DISK', driver, budgetBytes: 1 << 30, writeMode: 'through', admitAfter: 1, queue, initialReadBps: 1e9 },
    ],
    policy: lruPolicy, halfLifeMs: 60_000, promoteOnHit: true,
    ...(opts.readPoolBytes !== undefined ? { readPoolBytes: opts.readPoolBytes } : {}),
  });
  return { s, root, driver };
}

/** Put a chain, wait until the file tier holds it, then drop the DRAM copies: every read is a file-tier hit. */
async function chainOnDisk(s: TierStack, n: number, size: number, from = 0): Promise<Buffer[]> {
  const vals = Array.from({ length: n }, () => randomBytes(size));
  vals.forEach((v, i) => s.put(key(from + i), v));
  await s.drain();
  for (let i = 0; i < n; i++) s.evictFrom(key(from + i), 0);
  return vals;
}

/** Flip one byte of a stored value in place, wherever the layout keeps it. */
function corrupt(root: string, layout: Layout, value: Buffer): void {
  const files = layout === 'file'
    ? readdirSync(path.join(root, 'v1'), { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.kvb')).map((f) => path.join(root, 'v1', f))
    : readdirSync(path.join(root, 'seg-v1')).map((f) => path.join(root, 'seg-v1', f));
  for (const f of files) {
    const at = readFileSync(f).indexOf(value.subarray(0, 64));
    if (at < 0) continue;
    const fd = openSync(f, 'r+');
    writeSync(fd, Buffer.from([value[100]! ^ 0xff]), 0, 1, at + 100);
    closeSync(fd);
    return;
  }
  throw new Error('value not found on disk');
}

for (const layout of ['file', 'segment'] as const) {
  test(`hit path (${layout}) - a chain of file-tier hits is read with readInto, served byte-exact and promoted`, async (t) => {
    const { s, root, driver } = stack(layout);
    t.teardown(() => rmSync(root, { recursive: true, force: true }));
    await s.open();
    const vals = await chainOnDisk(s, 6, 256 * KiB);
    const keys = vals.map((_, i) => key(i));
    t.deepEqual(s.lookup(keys).tiers, { dram: 0, file: 6 });
    const got = await s.get(keys);
    got.forEach((g, i) => t.true(g?.equals(vals[i]!), `block ${i}`));
    t.is(s.pool.stats().acquired, 6, 'all six read into pooled buffers');
    t.deepEqual(s.lookup(keys).tiers, { dram: 6, file: 0 }, 'promoted');
    t.is(s.stats()[1]!.hits, 6);
    t.is(s.stats()[1]!.promotions, 6);
    if (layout === 'segment') t.true(driver.stats().mergedReads! >= 1, 'consecutive records read together');
    // Served again from DRAM: the same bytes.
    (await s.get(keys)).forEach((g, i) => t.true(g?.equals(vals[i]!), `DRAM block ${i}`));
    await s.close();
  });

  test(`hit path (${layout}) - a block failing its checksum is never served, is counted and goes back to the pool`, async (t) => {
    const { s, root } = stack(layout);
    t.teardown(() => rmSync(root, { recursive: true, force: true }));
    await s.open();
    const vals = await chainOnDisk(s, 4, 256 * KiB);
    corrupt(root, layout, vals[2]!);
    const corrupted: string[] = [];
    s.on('corrupt', (ev: { key: string }) => corrupted.push(ev.key));
    const got = await s.get(vals.map((_, i) => key(i)));
    t.is(got[2], undefined, 'the damaged block is a miss');
    for (const i of [0, 1, 3]) t.true(got[i]?.equals(vals[i]!), `block ${i}`);
    t.is(s.stats()[1]!.checksumFailures, 1);
    t.deepEqual(corrupted, [key(2)]);
    t.is(s.lookup([key(2)]).hit, 0, 'the damaged copy is forgotten');
    t.true(s.pool.stats().recycled >= 1, 'its buffer went back to the pool unserved');
    t.false(got.some((g) => g && g.equals(Buffer.from(vals[2]!).fill(vals[2]![100]! ^ 0xff, 100, 101))), 'damaged bytes never handed out');
    await s.close();
  });

  test(`hit path (${layout}) - a chain with a gap is served around it; the batch stops at the gap`, async (t) => {
    const { s, root, driver } = stack(layout);
    t.teardown(() => rmSync(root, { recursive: true, force: true }));
    await s.open();
    const vals = await chainOnDisk(s, 5, 64 * KiB);
    t.true(await driver.delete(key(2)), 'gone from the store behind the index');
    const got = await s.get(vals.map((_, i) => key(i)));
    t.is(got[2], undefined);
    for (const i of [0, 1, 3, 4]) t.true(got[i]?.equals(vals[i]!), `block ${i}`);
    t.is(s.stats()[1]!.misses, 1, 'the gap is counted as a miss of the tier');
    // Prefix semantics: LOOKUP stops at the gap.
    t.is(s.lookup(vals.map((_, i) => key(i))).hit, 2);
    await s.close();
  });

  test(`hit path (${layout}) - pooled buffers are not reused while a GET caller or DRAM holds them`, async (t) => {
    // DRAM takes 4 blocks: reading 4 more evicts the first 4, whose buffers the first caller still holds.
    const { s, root } = stack(layout, { dram: 4 * 128 * KiB });
    t.teardown(() => rmSync(root, { recursive: true, force: true }));
    await s.open();
    const vals = await chainOnDisk(s, 12, 128 * KiB);
    const first = await s.get([0, 1, 2, 3].map(key));
    const second = await s.get([4, 5, 6, 7].map(key));
    t.is(s.pool.stats().reused, 0, 'nothing free yet: the first answers are still held');
    first.forEach((g, i) => t.true(g?.equals(vals[i]!), `first answer ${i} intact`));
    // Given back: evicted blocks 0-3 are free now and the next reads reuse their memory.
    s.release(first);
    const third = await s.get([8, 9, 10, 11].map(key));
    t.true(s.pool.stats().reused >= 1, 'released and evicted buffers are read into again');
    // Blocks 0-3 again (evicted, read from the file tier once more): the pool has only what nobody holds.
    const fourth = await s.get([0, 1, 2, 3].map(key));
    second.forEach((g, i) => t.true(g?.equals(vals[4 + i]!), `second answer ${i} intact (still held)`));
    third.forEach((g, i) => t.true(g?.equals(vals[8 + i]!), `third answer ${i} intact (still held)`));
    fourth.forEach((g, i) => t.true(g?.equals(vals[i]!), `fourth answer ${i}`));
    // No buffer is in two answers at once.
    const all = [...second, ...third, ...fourth].map((b) => b!.buffer);
    t.is(new Set(all).size, all.length);
    await s.close();
  });
}

test('read pool - holds decide reuse; escaped buffers and buffers past the bound are never reused', (t) => {
  const p = new ReadPool(3 * KiB);
  const a = p.acquire(KiB);
  const b = p.acquire(KiB);
  t.not(a, b, 'two lent buffers are distinct');
  p.hold(a); // a second reader
  p.release(a);
  t.not(p.acquire(KiB), a, 'still held by one reader: not handed out again');
  p.release(a);
  t.is(p.acquire(KiB), a, 'free once the last holder is done');
  p.keptByDram(b);
  p.release(b);
  t.not(p.acquire(KiB), b, 'DRAM still keeps it');
  p.droppedByDram(b);
  t.is(p.acquire(KiB), b);
  const c = p.acquire(KiB);
  p.escape(c);
  p.release(c);
  t.not(p.acquire(KiB), c, 'an escaped buffer is never reused');
  const big = Array.from({ length: 4 }, () => p.acquire(KiB));
  for (const x of big) p.release(x);
  t.is(p.stats().freeBytes, 3 * KiB, 'free memory kept within the bound');
  t.is(p.stats().letGo, 1);
  const off = new ReadPool(0);
  const d = off.acquire(KiB);
  off.release(d);
  t.not(off.acquire(KiB), d, 'readPoolBytes 0: no reuse');
});

test('hit path - a buffer get() answered and stored again under another key is not reused', async (t) => {
  const { s, root } = stack('segment', { dram: 2 * 64 * KiB });
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  await s.open();
  const vals = await chainOnDisk(s, 4, 64 * KiB);
  const [v0] = await s.get([key(0)]);
  s.put(key(100), v0!); // DRAM now keeps the same buffer for another block
  s.release([v0]);
  await s.get([key(1), key(2), key(3)]); // evicts and reads into whatever the pool has free
  await s.drain();
  const again = s.getResident([key(100)]) ?? (await s.get([key(100)]));
  t.true(again[0]?.equals(vals[0]!), 'the re-stored block keeps its bytes');
  await s.close();
});

for (const size of [32 * KiB, 128 * KiB]) {
  test(`hit path - a copying DRAM store (the arena) copies the pooled buffer: reusing it after release never changes DRAM (${size / KiB} KiB)`, async (t) => {
    const dir = existsSync('/dev/shm') ? '/dev/shm' : tempDir();
    const arena = new ArenaStore({ dir, bytes: 64 << 20, chunkBytes: 16 << 20, maxValueBytes: 16 << 20, leaseMs: 5000, commitMs: 5000, fileMode: 0o600, tenantGroups: {} });
    const { s, root } = stack('segment', { dram: 8 * size, dramStore: arena });
    t.teardown(() => rmSync(root, { recursive: true, force: true }));
    await s.open();
    const vals = await chainOnDisk(s, 8, size);
    const first = await s.get([0, 1, 2, 3].map(key));
    first.forEach((g, i) => t.true(g?.equals(vals[i]!), `block ${i}`));
    t.deepEqual(s.lookup([0, 1, 2, 3].map(key)).tiers, { dram: 4, file: 0 }, 'promoted into the arena');
    s.release(first);
    t.is(s.pool.stats().recycled, 4, 'the arena holds its own copy: released buffers are free at once');
    const second = await s.get([4, 5, 6, 7].map(key));
    t.is(s.pool.stats().reused, 4, 'read into the buffers the first GET gave back');
    second.forEach((g, i) => t.true(g?.equals(vals[4 + i]!), `block ${4 + i}`));
    for (let i = 0; i < 4; i++) t.true(arena.getSync(key(i))?.value.equals(vals[i]!), `arena copy of block ${i} intact`);
    await s.close();
  });
}

test('hit path - a key asked twice in one GET is read once; giving the answer back never frees what DRAM keeps', async (t) => {
  const { s, root } = stack('segment', { dram: 8 * 512 * KiB });
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  await s.open();
  // 512 KiB blocks: two sub-batches, so the loads of the two halves may land in any order.
  const vals = await chainOnDisk(s, 4, 512 * KiB);
  const keys = [key(0), key(1), key(2), key(3), key(0), key(3)];
  const got = await s.get(keys);
  got.forEach((g, j) => t.true(g?.equals(vals[[0, 1, 2, 3, 0, 3][j]!]!), `slot ${j}`));
  t.is(s.pool.stats().acquired, 4, 'each block read once');
  s.release(got);
  // Read other blocks into whatever the pool has free: DRAM's copies of blocks 0-3 must not change.
  await chainOnDisk(s, 4, 512 * KiB, 10).then(async (more) => {
    const again = await s.get([10, 11, 12, 13].map(key));
    again.forEach((g, i) => t.true(g?.equals(more[i]!), `block ${10 + i}`));
  });
  for (let i = 0; i < 4; i++) {
    const r = s.getResident([key(i)]) ?? (await s.get([key(i)]));
    t.true(r[0]?.equals(vals[i]!), `block ${i} intact`);
  }
  await s.close();
});
