/**
 * Tier semantics across a real 3-tier stack: DRAM → file (temp folder) → S3 (a real s3rver process).
 * s3rver laxness (no signature check, no conditional writes) plays no part here.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { rmSync } from 'node:fs';
import { lruPolicy, admissionFilter, heatPolicy, type EvictionPolicy } from '../connector/tiers/policy.js';
import { FileDriver, parseFileConfig } from '../connector/storage/file.js';
import { MemoryDriver } from '../connector/storage/memory.js';
import { S3Driver } from '../connector/storage/s3.js';
import { parseS3Config } from '../connector/storage/s3-config.js';
import { TierStack, type TierSpec } from '../connector/tiers/tier-stack.js';
import { startS3rver, type S3rverProcess } from './helpers/s3rver.js';
import { tempDir } from './helpers/sidecar.js';

const KiB = 1024;
const NS = 'e'.repeat(32);
// Realistic (hash-like) keys: the fast LOOKUP index tells keys apart by their first 60 bits.
const key = (i: number) => `${NS}/${createHash('sha256').update(`block ${i}`).digest('hex')}`;
const block = (i: number, size = 64 * KiB) => Buffer.alloc(size, `blk${i}-`);
const queue = { maxItems: 1000, maxBytes: 1 << 30, concurrency: 2 };

let s3: S3rverProcess;
let prefixN = 0;
test.before(async () => { s3 = await startS3rver(); });
test.after.always(async () => { await s3?.stop(); });

interface Opts { dram: number; file: number; s3: number; fileMode?: 'through' | 'back'; s3Mode?: 'through' | 'back'; s3Admit?: number; policy?: EvictionPolicy; s3Bps?: number }

async function stack3(t: { teardown(fn: () => unknown): void }, o: Opts) {
  const root = tempDir('kvstash-3tier-');
  const s3d = new S3Driver(parseS3Config({ ...s3.config, prefix: `p${process.pid}-${prefixN++}/`, retries: 0 }));
  const tiers: TierSpec[] = [
    { name: 'dram', medium: 'CPU', driver: new MemoryDriver(), budgetBytes: o.dram, writeMode: 'through', admitAfter: 1, queue, initialReadBps: 1e10 },
    { name: 'file', medium: 'DISK', driver: new FileDriver(parseFileConfig({ root })), budgetBytes: o.file, writeMode: o.fileMode ?? 'back', admitAfter: 1, queue, initialReadBps: 1e9 },
    {
      name: 's3', medium: 'S3', driver: s3d, budgetBytes: o.s3, writeMode: o.s3Mode ?? 'back', admitAfter: 1, queue, initialReadBps: o.s3Bps ?? 1e8,
      admit: o.s3Admit ? admissionFilter({ minSeen: o.s3Admit }, 60_000) : undefined,
    },
  ];
  const s = new TierStack({ tiers, policy: o.policy ?? lruPolicy, halfLifeMs: 60_000, promoteOnHit: true });
  await s.open();
  t.teardown(async () => { await s.close(); rmSync(root, { recursive: true, force: true }); });
  return { s, s3d };
}

const where = (s: TierStack, i: number) => s.entry(key(i))?.where ?? 0;

test('tiers-policy - demotion chain: DRAM evictions go to file, file evictions go on to S3, and S3 copies read back', async (t) => {
  const { s, s3d } = await stack3(t, { dram: 2 * 64 * KiB, file: 2 * 64 * KiB, s3: 100 * 64 * KiB });
  for (let i = 0; i < 6; i++) {
    s.put(key(i), block(i));
    await s.drain();
  }
  await s.drain();
  const [dram, file, s3t] = s.stats();
  t.is(dram!.blocks, 2);
  t.is(file!.blocks, 2);
  t.is(s3t!.blocks, 2);
  t.deepEqual([0, 1, 2, 3, 4, 5].map((i) => where(s, i)), [4, 4, 2, 2, 1, 1], 'oldest in S3 only, then file only, newest in DRAM');
  const stored = await s3d.get(key(0));
  t.true(stored!.value.equals(block(0)), 'the bytes on the S3 server are the block');
  t.is(file!.demotions, 2);
  t.is(dram!.demotions, 4);
});

test('tiers-policy - promotion: an S3 hit is verified, served and copied into DRAM', async (t) => {
  const { s } = await stack3(t, { dram: 2 * 64 * KiB, file: 64 * KiB, s3: 100 * 64 * KiB });
  for (let i = 0; i < 5; i++) {
    s.put(key(i), block(i));
    await s.drain();
  }
  t.is(where(s, 0), 4);
  const [v] = await s.get([key(0)]);
  t.true(v!.equals(block(0)));
  t.truthy(where(s, 0) & 1, 'now in DRAM');
  t.is(s.stats()[2]!.promotions, 1);
  t.is(s.stats()[2]!.hits, 1);
});

test('tiers-policy - admission: S3 (write-through, minSeen 2) takes only blocks accessed twice, including on a later hit', async (t) => {
  const { s, s3d } = await stack3(t, { dram: 100 * 64 * KiB, file: 100 * 64 * KiB, fileMode: 'through', s3: 100 * 64 * KiB, s3Mode: 'through', s3Admit: 2 });
  for (let i = 0; i < 4; i++) s.put(key(i), block(i));
  await s.drain();
  t.deepEqual([0, 1, 2, 3].map((i) => where(s, i)), [3, 3, 3, 3], 'seen once: DRAM and file, not S3');
  t.false(await s3d.has(key(0)));
  await s.get([key(0), key(1)]); // second access
  s.put(key(2), block(2)); // a repeated put is an access too
  await s.drain();
  t.deepEqual([0, 1, 2, 3].map((i) => where(s, i)), [7, 7, 7, 3]);
  t.true(await s3d.has(key(1)));
  t.is(s.stats()[2]!.bytesWritten, 3 * 64 * KiB, 'S3 wrote only the three admitted blocks');
});

test('tiers-policy - admission on demotion: a block seen once skips the S3 tier that wants two accesses', async (t) => {
  const { s } = await stack3(t, { dram: 64 * KiB, file: 64 * KiB, s3: 100 * 64 * KiB, s3Admit: 2 });
  s.put(key(0), block(0));
  await s.get([key(0)]); // seen 2
  s.put(key(1), block(1)); // seen 1
  await s.drain();
  s.put(key(2), block(2)); // DRAM: 1 → file; file: 0 → S3 (admitted)
  await s.drain();
  s.put(key(3), block(3)); // DRAM: 2 → file; file: 1 → S3 refuses (seen once): dropped
  await s.drain();
  t.is(where(s, 0), 4);
  t.is(s.entry(key(1)), undefined, 'block 1 was not admitted below and left the stack');
  t.is(where(s, 2), 2);
});

test('tiers-policy - prefetch on LOOKUP makes the following GET a DRAM hit', async (t) => {
  const { s } = await stack3(t, { dram: 4 * 64 * KiB, file: 64 * KiB, s3: 100 * 64 * KiB });
  for (let i = 0; i < 8; i++) {
    s.put(key(i), block(i));
    await s.drain();
  }
  const chain = [0, 1, 2].map(key);
  const r = s.lookup(chain, true);
  t.is(r.hit, 3);
  t.is(r.tiers.s3, 3, 'all three in S3 only before the prefetch');
  t.true(r.loadMs.s3! > 0);
  for (let i = 0; i < 200 && ![0, 1, 2].every((b) => where(s, b) & 1); i++) await new Promise((res) => setTimeout(res, 10));
  const before = s.stats();
  const vals = s.getResident(chain);
  t.truthy(vals, 'every block is resident: the GET is answered from DRAM synchronously');
  t.true(vals!.every((v, j) => v!.equals(block(j))));
  const after = s.stats();
  t.is(after[0]!.hits - before[0]!.hits, 3);
  t.is(after[2]!.hits, before[2]!.hits, 'no S3 read during the GET');
  t.is(s.lookup(chain).tiers.dram, 3);
});

test('tiers-policy - pinned blocks are never evicted from DRAM, whatever the policy', async (t) => {
  for (const policy of [lruPolicy, heatPolicy(60_000, 8)]) {
    const { s } = await stack3(t, { dram: 3 * 64 * KiB, file: 100 * 64 * KiB, s3: 100 * 64 * KiB, policy });
    s.put(key(0), block(0));
    t.is(s.pin([key(0)], 'test').pinned, 1);
    for (let i = 1; i < 20; i++) s.put(key(i), block(i));
    await s.drain();
    t.truthy(where(s, 0) & 1, `${policy.name}: pinned block still in DRAM`);
    t.true(s.stats()[0]!.bytes <= 3 * 64 * KiB);
    t.true(s.stats()[0]!.evictions >= 17);
  }
});

test('tiers-policy - the per-tier read bandwidth estimate moves with measured S3 reads and drives load_ms', async (t) => {
  const { s } = await stack3(t, { dram: 64 * KiB, file: 64 * KiB, s3: 100 * 64 * KiB, s3Bps: 1e12 });
  for (let i = 0; i < 20; i++) {
    s.put(key(i), block(i));
    await s.drain();
  }
  const est0 = s.lookup([key(0)]).loadMs.s3!;
  t.is(est0, ((64 * KiB) / 1e12) * 1000, 'before any read: the configured initial bandwidth');
  let reads = 0;
  for (let i = 0; i < 20 && reads < 12; i++) {
    if (where(s, i) !== 4) continue; // only blocks held by S3 alone, so the read goes to S3
    await s.get([key(i)]);
    await s.drain();
    reads++;
  }
  t.is(reads, 12);
  const bps = s.stats()[2]!.readBps;
  t.true(bps < 1e11, `estimate moved from 1e12 B/s towards the measured rate: ${bps}`);
  const k = [...Array(20).keys()].find((i) => where(s, i) === 4)!;
  const est = s.lookup([key(k)]).loadMs.s3!;
  t.true(Math.abs(est - ((64 * KiB) / bps) * 1000) / est < 0.01, 'load_ms = bytes / estimated bandwidth');
  t.true(est > est0 * 10);
});

test('tiers-policy - an S3 tier whose circuit is open leaves lookups and reads; DRAM and file keep serving', async (t) => {
  const { s, s3d } = await stack3(t, { dram: 64 * KiB, file: 64 * KiB, s3: 100 * 64 * KiB });
  for (let i = 0; i < 4; i++) {
    s.put(key(i), block(i));
    await s.drain();
  }
  t.deepEqual([0, 1, 2, 3].map((i) => where(s, i)), [4, 4, 2, 1]);
  for (let i = 0; i < 5; i++) s3d.breaker.failure(); // as after five failed requests
  t.false(s3d.available());
  t.is(s.lookup([3, 2].map(key)).hit, 2);
  t.is(s.lookup([0, 1].map(key)).hit, 0, 'S3-only blocks are not offered while the circuit is open');
  const [v0, v2] = await s.get([key(0), key(2)]);
  t.is(v0, undefined);
  t.true(v2!.equals(block(2)));
  t.is(where(s, 0), 4, 'the index still knows the S3 copy');
  t.false(s.stats()[2]!.available);
  s3d.breaker.success();
  const [again] = await s.get([key(0)]);
  t.true(again!.equals(block(0)), 'served from S3 again once the circuit closes');
});
