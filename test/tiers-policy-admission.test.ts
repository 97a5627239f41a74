import test from 'ava';
import { createHash } from 'node:crypto';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../connector/config.js';
import { admissionFilter, heatPolicy, lruPolicy } from '../connector/tiers/policy.js';
import { buildTierStack } from '../connector/tiers/build-stack.js';
import { FileDriver, parseFileConfig } from '../connector/storage/file.js';
import { MemoryDriver } from '../connector/storage/memory.js';
import { NfsDriver, parseNfsConfig } from '../connector/storage/nfs.js';
import { defaultRegistry } from '../connector/storage/registry.js';
import { TierStack, type TierSpec } from '../connector/tiers/tier-stack.js';
import { tempDir } from './helpers/sidecar.js';

const KiB = 1024;
const NS = 'f'.repeat(32);
// Realistic (hash-like) keys: the fast LOOKUP index tells keys apart by their first 60 bits.
const key = (i: number) => `${NS}/${createHash('sha256').update(`block ${i}`).digest('hex')}`;
const raw = (i: number) => Buffer.from(key(i).slice(33), 'hex');
const block = (i: number, size = 16 * KiB) => Buffer.alloc(size, `b${i}:`);
const queue = { maxItems: 1000, maxBytes: 1 << 30, concurrency: 2 };
const dram = (budget: number): TierSpec => ({ name: 'dram', medium: 'CPU', driver: new MemoryDriver(), budgetBytes: budget, writeMode: 'through', admitAfter: 1, queue, initialReadBps: 1e10 });

test('tiers-policy - admission filter: seen, decayed heat (on the stack clock) and size', (t) => {
  const f = admissionFilter({ minSeen: 2, minHeat: 1.5, maxBlockBytes: 1000 }, 1000);
  t.is(f.name, 'seen≥2,heat≥1.5,size≤1000');
  t.true(f.admit({ seen: 2, size: 1000, heat: 2, heatAt: 0 }, 0));
  t.false(f.admit({ seen: 1, size: 10, heat: 2, heatAt: 0 }, 0), 'seen once');
  t.false(f.admit({ seen: 3, size: 1001, heat: 2, heatAt: 0 }, 0), 'too big');
  t.false(f.admit({ seen: 3, size: 10, heat: 2, heatAt: 0 }, 1000), 'heat halved to 1 after one half-life');
  t.is(admissionFilter({}, 1000).name, 'all');
});

test('tiers-policy - heat decays on the injected clock: a block hot long ago loses to a recently warm one', async (t) => {
  let now = 0;
  const s = new TierStack({ tiers: [dram(3 * 16 * KiB)], policy: heatPolicy(1000, 8), halfLifeMs: 1000, promoteOnHit: true, now: () => now });
  await s.open();
  s.put(key(1), block(1));
  for (let i = 0; i < 8; i++) await s.get([key(1)]); // heat 9 at t=0
  now = 20_000; // 20 half-lives later: heat ≈ 0
  s.put(key(2), block(2));
  s.put(key(3), block(3));
  await s.get([key(2)]);
  await s.get([key(3)]);
  await s.get([key(1)]); // most recent, but its heat is ~1 while 2 and 3 have ~2
  now = 20_001;
  s.put(key(4), block(4));
  t.deepEqual(s.exists([1, 2, 3, 4].map(key)), [false, true, true, true], 'the decayed block went, although it was the most recent');
});

test('tiers-policy - a read error in a lower tier is not a miss: the block stays indexed and is served once the tier recovers', async (t) => {
  const root = tempDir();
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const file = new FileDriver(parseFileConfig({ root }));
  const s = new TierStack({
    tiers: [dram(16 * KiB), { name: 'file', medium: 'DISK', driver: file, budgetBytes: 1 << 20, writeMode: 'through', admitAfter: 1, queue, initialReadBps: 1e9 }],
    policy: lruPolicy, halfLifeMs: 1000, promoteOnHit: true,
  });
  await s.open();
  s.put(key(1), block(1));
  s.put(key(2), block(2));
  await s.drain();
  const realGet = file.get.bind(file);
  const realInto = file.readInto.bind(file);
  // The stack's hit path reads with readInto (a failed item) and falls back to get: both fail, as a dead disk would.
  file.get = async () => { throw Object.assign(new Error('EIO'), { code: 'KVS_STORAGE' }); };
  file.readInto = async (items) => items.map(() => 'failed' as const);
  t.deepEqual(await s.get([key(1)]), [undefined]);
  t.is(s.entry(key(1))?.where, 2, 'still indexed in the file tier');
  t.is(s.stats()[1]!.readErrors, 1);
  file.get = realGet;
  file.readInto = realInto;
  const [v] = await s.get([key(1)]);
  t.true(v!.equals(block(1)));
});

test('tiers-policy - tiers config: JSON stacks drivers with admission; bad entries are KVS_CONFIG naming the field', async (t) => {
  const dir = tempDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const cfg = (tiers: unknown) => loadConfig({ tiers: JSON.stringify(tiers), dramBytes: '1MiB', logLevel: 'silent' }, {});
  const s = buildTierStack(cfg([
    { name: 'ssd', driver: 'file', root: path.join(dir, 'a'), budget: '10MiB' },
    { name: 'shared', driver: 'nfs', root: path.join(dir, 'b'), budget: '1GiB', writeMode: 'back', admit: { minSeen: 2, maxBlockBytes: '64MiB' }, probe: { perSecond: 10 } },
  ]), defaultRegistry());
  t.deepEqual(s.tiers.map((x) => [x.name, x.driver.name, x.medium, x.budgetBytes, x.writeMode]), [
    ['dram', 'memory', 'CPU', 2 ** 20, 'through'], ['ssd', 'file', 'DISK', 10 * 2 ** 20, 'through'], ['shared', 'nfs', 'NFS', 2 ** 30, 'back'],
  ]);
  t.is(s.tiers[2]!.admit?.name, `seen≥2,size≤${64 * 2 ** 20}`);
  t.is(s.probe?.opts.perSecond, 10, 'the nfs tier is shared: the probe is on');
  const bad: [unknown, RegExp][] = [
    [[{ driver: 'nope', budget: 1 }], /unknown storage driver "nope"/],
    [[{ driver: 'file', root: dir }], /tiers\[0\]\.budget is required/],
    [[{ driver: 'file', root: dir, budget: 1, admit: { minSeen: 0 } }], /admit\.minSeen/],
    [[{ driver: 'file', root: dir, budget: 1, admit: { often: true } }], /unknown field\(s\) often/],
    [[{ driver: 'file', root: dir, budget: 1, writeMode: 'sideways' }], /writeMode/],
    [[{ driver: 'file', root: dir, budget: 1 }, { driver: 'file', root: dir, budget: 1 }], /duplicate tier name "file"/],
    [[{ driver: 's3', budget: 1 }], /s3\.bucket/],
  ];
  for (const [tiers, re] of bad) {
    const err = t.throws(() => buildTierStack(cfg(tiers), defaultRegistry())) as { code?: string; message: string };
    t.is(err.code, 'KVS_CONFIG');
    t.regex(err.message, re);
  }
});

function sharedStack(root: string, probe = {}) {
  const nfs = new NfsDriver(parseNfsConfig({ root, fsync: false }));
  return new TierStack({
    tiers: [dram(1 << 20), { name: 'nfs', medium: 'NFS', driver: nfs, budgetBytes: 1 << 30, writeMode: 'through', admitAfter: 1, queue, initialReadBps: 1e8 }],
    policy: lruPolicy, halfLifeMs: 1000, promoteOnHit: true, probe,
  });
}

test('tiers-policy - shared tier: a LOOKUP miss probes the tier and adopts blocks another host wrote; absent keys are cached', async (t) => {
  const root = tempDir();
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const a = sharedStack(root);
  const b = sharedStack(root, { negativeTtlMs: 60_000 });
  await a.open();
  await b.open();
  const chain = [0, 1, 2, 3];
  const rawKeys = Buffer.concat(chain.map(raw));
  for (const i of chain.slice(0, 3)) a.put(key(i), block(i));
  await a.drain();
  const r0 = b.lookupRaw(NS, rawKeys);
  t.is(r0.hit, 0, 'b has not heard of them');
  const r = await b.lookupShared(NS, rawKeys, r0);
  t.is(r.hit, 3);
  t.is(r.tiers.nfs, 3);
  t.deepEqual(b.probe!.stats().found, 3);
  t.is(b.probe!.stats().absent, 1, 'block 3 does not exist: probing stopped there');
  const [v] = await b.get([key(2)]);
  t.true(v!.equals(block(2)), 'b reads a block only a wrote');
  a.put(key(3), block(3));
  await a.drain();
  const again = await b.lookupShared(NS, rawKeys, b.lookupRaw(NS, rawKeys));
  t.is(again.hit, 3, 'block 3 is remembered as absent for negativeTtlMs');
  t.is(b.probe!.stats().cachedAbsent, 1);
  await a.close();
  await b.close();
});

test('tiers-policy - shared tier: the probe is rate-limited', async (t) => {
  const root = tempDir();
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const a = sharedStack(root);
  const b = sharedStack(root, { perSecond: 0.001, burst: 5 });
  await a.open();
  await b.open();
  const chain = [...Array(12).keys()];
  for (const i of chain) a.put(key(i), block(i));
  await a.drain();
  const rawKeys = Buffer.concat(chain.map(raw));
  const r = await b.lookupShared(NS, rawKeys, b.lookupRaw(NS, rawKeys));
  t.is(r.hit, 5, 'only the burst of 5 probes went out');
  t.is(b.probe!.stats().limited, 7);
  const r2 = await b.lookupShared(NS, rawKeys, b.lookupRaw(NS, rawKeys));
  t.is(r2.hit, 5, 'no tokens left: nothing more is probed');
  await a.close();
  await b.close();
});
