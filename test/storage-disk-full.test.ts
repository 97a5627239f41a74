/**
 * Issue 9 item 3: a full disk (a real 64 MiB tmpfs) never publishes a torn block, leaves no temp files, and marks
 * the tier degraded until a write lands again. Needs root for the mount (the test machine runs as root).
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import { checksum } from '../connector/checksum.js';
import { lruPolicy } from '../connector/tiers/policy.js';
import type { StorageDriver } from '../connector/storage/driver.js';
import { FileDriver, parseFileConfig } from '../connector/storage/file.js';
import { MemoryDriver } from '../connector/storage/memory.js';
import { SegmentDriver, parseSegmentConfig } from '../connector/storage/segment.js';
import { TierStack } from '../connector/tiers/tier-stack.js';
import { tempDir } from './helpers/sidecar.js';

const MiB = 2 ** 20;
const NS = 'c'.repeat(32);
const key = (i: number) => `${NS}/${i.toString(16).padStart(64, '0')}`;
const val = (i: number) => Buffer.alloc(2 * MiB + 123, i & 0xff);

function tmpfs(t: { teardown(fn: () => void): void }): string {
  const dir = tempDir('kvstash-full-');
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', dir]);
  t.teardown(() => {
    execFileSync('umount', ['-l', dir]);
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

/** Put until the disk refuses; returns the acknowledged indexes and the first error. */
async function fill(d: StorageDriver): Promise<{ acked: number[]; err: { code?: string } | undefined }> {
  const acked: number[] = [];
  for (let i = 0; i < 64; i++) {
    try {
      await d.put(key(i), val(i), { checksum: checksum(val(i)) });
      acked.push(i);
    } catch (err) {
      return { acked, err: err as { code?: string } };
    }
  }
  return { acked, err: undefined };
}

async function expectAllWhole(t: { is: (a: unknown, b: unknown, m?: string) => void }, d: StorageDriver, acked: number[]) {
  const listed = new Map<string, number>();
  for await (const it of d.list()) listed.set(it.key, it.size);
  for (const [k, size] of listed) t.is(size, val(0).length, `${k} listed with a torn size`);
  for (const i of acked) t.is((await d.get(key(i)))?.meta.checksum === checksum(val(i)) && (await d.get(key(i)))!.value.equals(val(i)), true, `acknowledged block ${i}`);
}

test('storage-disk-full - file: a full disk fails the put with KVS_STORAGE, removes its temp file, publishes nothing torn', async (t) => {
  const root = tmpfs(t);
  const d = new FileDriver(parseFileConfig({ root }));
  await d.open();
  const { acked, err } = await fill(d);
  t.is(err?.code, 'KVS_STORAGE');
  t.true(acked.length > 10 && acked.length < 32, `${acked.length} puts fit`);
  t.deepEqual(readdirSync(`${root}/tmp`), []);
  const d2 = new FileDriver(parseFileConfig({ root }));
  await d2.open();
  await expectAllWhole(t, d2, acked);
  t.is(d2.stats().orphansSwept, 0);
});

test('storage-disk-full - segment: a failed append is taken back; every acknowledged block survives a reopen', async (t) => {
  const root = tmpfs(t);
  const config = { root, segmentBytes: 8 * MiB };
  const d = new SegmentDriver(parseSegmentConfig(config));
  await d.open();
  const { acked, err } = await fill(d);
  t.is(err?.code, 'KVS_STORAGE');
  t.true(acked.length > 10, `${acked.length} puts fit`);
  await expectAllWhole(t, d, acked);
  await d.close();
  const d2 = new SegmentDriver(parseSegmentConfig(config));
  await d2.open();
  t.is(d2.stats().tornTails, 0, 'the failed append was truncated away before it could tear the tail');
  await expectAllWhole(t, d2, acked);
  // Space freed: appends work again.
  for (const i of acked.slice(0, 8)) await d2.delete(key(i));
  await d2.settle();
  await d2.put(key(100), val(100), { checksum: checksum(val(100)) });
  t.true((await d2.get(key(100)))!.value.equals(val(100)));
  await d2.close();
});

test('storage-disk-full - tier stack: write errors are counted and mark the tier degraded until a write lands', async (t) => {
  const root = tmpfs(t);
  const q = { maxItems: 1000, maxBytes: 2 ** 30, concurrency: 2 };
  const s = new TierStack({
    tiers: [
      { name: 'dram', medium: 'CPU', driver: new MemoryDriver(), budgetBytes: 256 * MiB, writeMode: 'through', admitAfter: 1, queue: q, initialReadBps: 1e10 },
      { name: 'ssd', medium: 'DISK', driver: new FileDriver(parseFileConfig({ root })), budgetBytes: 2 ** 40, writeMode: 'through', admitAfter: 1, queue: q, initialReadBps: 1e9 },
    ],
    policy: lruPolicy, halfLifeMs: 60_000, promoteOnHit: true,
  });
  t.teardown(() => s.close().catch(() => undefined));
  await s.open();
  for (let i = 0; i < 40; i++) s.put(key(i), val(i));
  await s.drain();
  let ssd = s.stats()[1]!;
  t.true(ssd.writeErrors > 0);
  t.regex(ssd.degraded ?? '', /ENOSPC|short write|no space/i);
  t.deepEqual(readdirSync(`${root}/tmp`), []);
  // Every block is still readable (DRAM); the ones the disk took are whole there.
  t.is((await s.get([...Array(40).keys()].map(key))).filter((v, i) => v?.equals(val(i))).length, 40);
  s.delete([...Array(20).keys()].map(key));
  await new Promise<void>((resolve) => { const poll = () => (readdirSync(`${root}/v1/${NS}/00`).length <= 20 ? resolve() : setTimeout(poll, 20)); poll(); });
  s.put(key(200), val(200));
  await s.drain();
  ssd = s.stats()[1]!;
  t.is(ssd.degraded, undefined, 'a write that lands clears the degraded mark');
});
