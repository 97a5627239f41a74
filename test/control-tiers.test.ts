/** TierStack control-plane primitives (pin/unpin/evictFrom/clear/move) on a real DRAM + file stack. */
import test from 'ava';
import { rmSync } from 'node:fs';
import { lruPolicy } from '../connector/tiers/policy.js';
import { FileDriver } from '../connector/storage/file.js';
import { MemoryDriver } from '../connector/storage/memory.js';
import { TierStack, type TierSpec } from '../connector/tiers/tier-stack.js';
import { tempDir } from './helpers/sidecar.js';

const KiB = 1024;
const NS = 'c'.repeat(32);
const key = (i: number, ns = NS) => `${ns}/${i.toString(16).padStart(64, '0')}`;
const block = (i: number, size = 64 * KiB) => Buffer.alloc(size, i & 0xff);

async function stack(dram: number, writeMode: 'through' | 'back' = 'through') {
  const root = tempDir();
  const queue = { maxItems: 1000, maxBytes: 1 << 30, concurrency: 2 };
  const tiers: TierSpec[] = [
    { name: 'dram', medium: 'CPU', driver: new MemoryDriver(), budgetBytes: dram, writeMode: 'through', admitAfter: 1, queue, initialReadBps: 1e10 },
    { name: 'file', medium: 'DISK', driver: new FileDriver({ root, fsync: false, maxValueBytes: 1 << 30 }), budgetBytes: 1 << 30, writeMode, admitAfter: 1, queue, initialReadBps: 1e9 },
  ];
  const s = new TierStack({ tiers, policy: lruPolicy, halfLifeMs: 60_000, promoteOnHit: true });
  await s.open();
  return { s, root };
}

test('control tiers - pins survive eviction pressure; the budget is all-or-nothing; tags unpin independently', async (t) => {
  const { s, root } = await stack(512 * KiB);
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  s.setPinBudget(200 * KiB);
  for (let i = 0; i < 4; i++) s.put(key(i), block(i));
  t.like(s.pin([key(0), key(1), key(99)], 'a'), { pinned: 2, missing: 1, addedBytes: 128 * KiB, exhausted: false });
  t.like(s.pin([key(0), key(1)], 'b'), { pinned: 2, addedBytes: 0 });
  t.like(s.pin([key(2), key(3), key(2)], 'c'), { pinned: 0, exhausted: true, addedBytes: 128 * KiB }, '128 KiB pinned + 128 KiB more > 200 KiB');
  t.is(s.entry(key(2))!.pins, 0, 'nothing of a refused pin stays pinned');
  t.like(s.pinStats(), { blocks: 2, bytes: 128 * KiB, tags: 2 });
  for (let i = 10; i < 40; i++) s.put(key(i), block(i));
  t.truthy(s.entry(key(0))!.where & 1);
  t.truthy(s.entry(key(1))!.where & 1);
  t.false(!!(s.entry(key(2))!.where & 1) && !!(s.entry(key(3))!.where & 1), 'unpinned blocks were free to go');
  t.deepEqual(s.pinTags(key(0)).sort(), ['a', 'b']);
  t.is(s.unpin('a', (k) => k === key(0)), 1);
  t.is(s.entry(key(0))!.pins, 1);
  t.is(s.unpin('b'), 2);
  t.like(s.pinStats(), { blocks: 1, bytes: 64 * KiB, tags: 1 });
  t.is(s.unpin('a'), 1);
  t.like(s.pinStats(), { blocks: 0, bytes: 0, tags: 0 });
  await s.drain();
});

test('control tiers - a pinned block removed by DELETE or a lost copy releases its pin bytes', async (t) => {
  const { s, root } = await stack(1 << 20, 'back');
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  s.setPinBudget(128 * KiB);
  s.put(key(1), block(1));
  s.put(key(2), block(2));
  t.like(s.pin([key(1), key(2)], 'x'), { pinned: 2, exhausted: false });
  t.is(s.delete([key(1)]), 1);
  await Promise.resolve();
  t.like(s.pinStats(), { blocks: 1, bytes: 64 * KiB });
  t.like(s.pin([key(3)], 'y'), { missing: 1 });
  s.put(key(1), block(1));
  t.like(s.pin([key(1)], 'x'), { pinned: 1, exhausted: false }, 'budget space came back');
  t.is(s.entry(key(1))!.pins, 1, 'a re-stored block starts unpinned');
  await s.drain();
});

test('control tiers - evictFrom and clear keep pinned blocks unless told; move demotes and warms through verified copies', async (t) => {
  const { s, root } = await stack(1 << 20, 'back');
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const other = 'd'.repeat(32);
  for (let i = 0; i < 6; i++) s.put(key(i), block(i));
  s.put(key(0, other), block(50));
  s.pin([key(5)], 'p');
  t.is(s.evictFrom(key(5), 0), 'pinned');
  t.is(s.evictFrom(key(4)), 'evicted');
  t.is(s.evictFrom(key(4)), 'missing');
  t.is(s.evictFrom(key(3), 1), 'missing', 'write-back: not in the file tier');
  t.is(await s.move(key(3), 1), 'moved');
  t.is(s.entry(key(3))!.where, 2);
  t.is(await s.move(key(3), 1), 'present');
  t.is(await s.move(key(5), 1), 'pinned');
  t.is(await s.move(key(42), 1), 'missing');
  // Corrupt the file copy of block 3: warming refuses it (checksum), DRAM never gets bad bytes.
  const file = s.tiers[1]!.driver as FileDriver;
  const got = await file.get(key(3));
  t.truthy(got);
  t.is(await s.move(key(3), 0), 'moved');
  t.true((await s.get([key(3)]))[0]!.equals(block(3)));
  s.evictFrom(key(3), 0);
  await file.put(key(3), Buffer.alloc(64 * KiB, 0xee), got!.meta);
  t.is(await s.move(key(3), 0), 'missing', 'its only copy failed the checksum: the block is gone');
  t.is(s.entry(key(3)), undefined);
  t.is(s.stats()[1]!.checksumFailures, 1);
  t.like(s.clear((k) => k.startsWith(NS)), { removed: 3, pinnedSkipped: 1 });
  t.deepEqual(s.exists([0, 1, 2, 5].map((i) => key(i))), [false, false, false, true]);
  t.truthy(s.entry(key(0, other)), 'another namespace untouched');
  t.like(s.clear((k) => k.startsWith(NS), { includePinned: true }), { removed: 1 });
  await Promise.resolve();
  t.like(s.pinStats(), { blocks: 0, bytes: 0 });
  await s.drain();
});
