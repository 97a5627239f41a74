import test from 'ava';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { heatPolicy, lruPolicy, type EvictionPolicy } from '../connector/tiers/policy.js';
import { FileDriver } from '../connector/storage/file.js';
import { MemoryDriver } from '../connector/storage/memory.js';
import { TierStack, type TierSpec } from '../connector/tiers/tier-stack.js';
import { tempDir } from './helpers/sidecar.js';
import { PutResult } from '../protocol/wire.js';

const MiB = 1 << 20;
const NS = 'b'.repeat(32);
const key = (i: number) => `${NS}/${i.toString(16).padStart(64, '0')}`;
const block = (i: number, size = MiB) => Buffer.alloc(size, i & 0xff);

function stack(opts: { dram: number; file?: number; root?: string; policy?: EvictionPolicy; queueItems?: number; concurrency?: number; writeMode?: 'through' | 'back' } ) {
  const root = opts.root ?? tempDir();
  const queue = { maxItems: opts.queueItems ?? 1000, maxBytes: 1 << 30, concurrency: opts.concurrency ?? 2 };
  const tiers: TierSpec[] = [{ name: 'dram', medium: 'CPU', driver: new MemoryDriver(), budgetBytes: opts.dram, writeMode: 'through' as const, admitAfter: 1, queue, initialReadBps: 1e10 }];
  if (opts.file !== undefined) {
    tiers.push({ name: 'file', medium: 'DISK', driver: new FileDriver({ root, fsync: false, maxValueBytes: 1 << 30 }), budgetBytes: opts.file, writeMode: opts.writeMode ?? 'through', admitAfter: 1, queue, initialReadBps: 1e9 });
  }
  const s = new TierStack({ tiers, policy: opts.policy ?? lruPolicy, halfLifeMs: 60_000, promoteOnHit: true });
  return { s, root };
}

test('tiers - DRAM budget is enforced and evicted blocks are demoted to the file tier', async (t) => {
  const { s, root } = stack({ dram: 3 * MiB, file: 100 * MiB, writeMode: 'back' });
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  await s.open();
  for (let i = 0; i < 5; i++) t.is(s.put(key(i), block(i)), PutResult.STORED);
  await s.drain();
  const [dram, file] = s.stats();
  t.true(dram!.bytes <= 3 * MiB);
  t.is(dram!.blocks, 3);
  t.is(file!.blocks, 2, 'the two evicted blocks were demoted');
  t.is(dram!.demotions, 2);
  t.deepEqual(s.lookup([0, 1, 2, 3, 4].map(key)).tiers, { dram: 3, file: 2 });
});

test('tiers - a file-tier hit is verified, served and promoted to DRAM', async (t) => {
  const { s, root } = stack({ dram: 2 * MiB, file: 100 * MiB });
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  await s.open();
  for (let i = 0; i < 4; i++) s.put(key(i), block(i));
  await s.drain();
  t.is(s.getDram(key(0)), undefined);
  const [v] = await s.get([key(0)]);
  t.true(v!.equals(block(0)));
  t.truthy(s.getDram(key(0)), 'promoted');
  t.is(s.stats()[1]!.promotions, 1);
  t.is(s.stats()[1]!.hits, 1);
});

test('tiers - LRU evicts the deepest block of a chain first because chains are touched deepest-first', async (t) => {
  const { s } = stack({ dram: 4 * MiB, policy: lruPolicy });
  await s.open();
  const chain = [0, 1, 2, 3].map(key);
  chain.forEach((k, i) => s.put(k, block(i)));
  await s.get(chain); // touches 3,2,1,0 → block 0 most recent
  s.put(key(10), block(10));
  t.deepEqual(s.exists(chain), [true, true, true, false]);
  s.put(key(11), block(11));
  t.deepEqual(s.exists(chain), [true, true, false, false]);
  t.is(s.lookup(chain).hit, 2, 'the remaining blocks are still a usable prefix');
});

test('tiers - heat policy keeps a hot block over a colder, less recent one', async (t) => {
  const { s } = stack({ dram: 3 * MiB, policy: heatPolicy(60_000, 8) });
  await s.open();
  s.put(key(1), block(1)); // will be hot
  s.put(key(2), block(2));
  for (let i = 0; i < 5; i++) await s.get([key(1)]);
  s.put(key(3), block(3));
  await s.get([key(2)]);
  await s.get([key(3)]);
  // Recency order now: 1 (oldest) … 3; LRU would evict 1, heat evicts the coldest of the window.
  s.put(key(4), block(4));
  t.true(s.exists([key(1)])[0], 'hot block kept');
  t.is(s.stats()[0]!.evictions, 1);
});

test('tiers - pinned blocks are never evicted', async (t) => {
  const { s } = stack({ dram: 2 * MiB });
  await s.open();
  s.put(key(1), block(1));
  s.entry(key(1))!.pins = 1;
  for (let i = 2; i < 6; i++) s.put(key(i), block(i));
  t.true(s.exists([key(1)])[0]);
  t.true(s.stats()[0]!.bytes <= 2 * MiB);
});

test('tiers - a full write-behind queue drops saves and counts them; reads still answer', async (t) => {
  const { s, root } = stack({ dram: 64 * MiB, file: 1 << 30, queueItems: 2, concurrency: 1 });
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  await s.open();
  for (let i = 0; i < 20; i++) s.put(key(i), block(i));
  const st = s.stats()[1]!;
  t.true(st.droppedSaves > 0, `dropped ${st.droppedSaves}`);
  const vals = await s.get([0, 5, 19].map(key)); // DRAM still serves every block
  t.true(vals.every((v, j) => v!.equals(block([0, 5, 19][j]!))));
  await s.drain();
  t.is(s.stats()[1]!.blocks, 20 - st.droppedSaves);
});

test('tiers - the file tier enforces its own budget and deletes evicted files', async (t) => {
  const { s, root } = stack({ dram: 1 * MiB, file: 3 * MiB + 1000 });
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  await s.open();
  for (let i = 0; i < 6; i++) {
    s.put(key(i), block(i));
    await s.drain();
  }
  await s.drain();
  const file = s.stats()[1]!;
  t.true(file.bytes <= 3 * MiB + 1000);
  t.is(file.blocks, 3);
  await new Promise((r) => setTimeout(r, 50));
  const dir = path.join(root, 'v1', NS);
  const files = readdirSync(dir).flatMap((f) => readdirSync(path.join(dir, f)));
  t.is(files.length, 3, 'evicted files were deleted from disk');
});

test('tiers - a block larger than DRAM goes straight to the file tier', async (t) => {
  const { s, root } = stack({ dram: 1 * MiB, file: 100 * MiB });
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  await s.open();
  t.is(s.put(key(1), block(1, 2 * MiB)), PutResult.STORED);
  await s.drain();
  t.deepEqual(s.lookup([key(1)]).tiers, { dram: 0, file: 1 });
  t.true((await s.get([key(1)]))[0]!.equals(block(1, 2 * MiB)));
});

test('tiers - without a lower tier, a block larger than DRAM is dropped', async (t) => {
  const { s } = stack({ dram: 1 * MiB });
  await s.open();
  t.is(s.put(key(1), block(1, 2 * MiB)), PutResult.DROPPED);
  t.false(s.exists([key(1)])[0]);
});

test('tiers - the index is rebuilt from the file tier on start-up', async (t) => {
  const root = tempDir();
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const a = stack({ dram: 8 * MiB, file: 100 * MiB, root });
  await a.s.open();
  for (let i = 0; i < 5; i++) a.s.put(key(i), block(i, 100_000 + i));
  await a.s.close();
  const b = stack({ dram: 8 * MiB, file: 100 * MiB, root });
  const { rebuilt } = await b.s.open();
  t.is(rebuilt, 5);
  t.deepEqual(b.s.lookup([0, 1, 2, 3, 4].map(key)).tiers, { dram: 0, file: 5 });
  const vals = await b.s.get([0, 1, 2, 3, 4].map(key));
  vals.forEach((v, i) => t.true(v!.equals(block(i, 100_000 + i))));
  t.true(existsSync(path.join(root, 'tmp')));
});

test('tiers - lookup counts the leading present blocks per fastest tier and stops at the first miss', async (t) => {
  const { s, root } = stack({ dram: 2 * MiB, file: 100 * MiB });
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  await s.open();
  for (const i of [0, 1, 2, 4]) s.put(key(i), block(i));
  await s.drain();
  const r = s.lookup([0, 1, 2, 3, 4].map(key));
  t.is(r.hit, 3);
  t.is(r.tiers.dram! + r.tiers.file!, 3);
  t.true(r.loadMs.file! > 0);
});

test('tiers - delete removes a block from every tier', async (t) => {
  const { s, root } = stack({ dram: 8 * MiB, file: 100 * MiB });
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  await s.open();
  s.put(key(1), block(1));
  await s.drain();
  t.is(s.delete([key(1), key(2)]), 1);
  t.deepEqual(s.exists([key(1)]), [false]);
  t.deepEqual(await s.get([key(1)]), [undefined]);
});

test('tiers - the fast LOOKUP/EXISTS index agrees with the string index, also on a 48-bit collision', async (t) => {
  const { s } = stack({ dram: 64 * MiB });
  await s.open();
  const hex = (b: Buffer) => b.toString('hex');
  const raw: Buffer[] = [];
  for (let i = 0; i < 200; i++) raw.push(Buffer.from(Array.from({ length: 32 }, (_, j) => (i * 31 + j * 7) & 0xff)));
  const twin = Buffer.from(raw[3]!);
  twin[20] ^= 0xff; // same fast-index bits as raw[3], differs later: GET must not confuse them
  const collide = Buffer.from(raw[5]!);
  collide[5] ^= 0x01; // same first 30 bits as raw[5] (same Map slot), different next 30
  raw.push(collide);
  raw.filter((_, i) => i % 3 !== 1).forEach((b) => s.put(`${NS}/${hex(b)}`, Buffer.alloc(8, 1)));
  const all = Buffer.concat(raw);
  const strKeys = raw.map((b) => `${NS}/${hex(b)}`);
  t.deepEqual(s.existsRaw(NS, all), s.exists(strKeys));
  t.deepEqual(s.existsRaw(NS, twin), [true], 'the fast index is advisory (documented)');
  t.deepEqual(s.lookupRaw(NS, all), s.lookup(strKeys));
  t.deepEqual(s.existsRaw(NS, collide), [true]);
  s.delete([`${NS}/${hex(raw[5]!)}`]);
  t.deepEqual(s.existsRaw(NS, Buffer.concat([raw[5]!, collide])), [false, true]);
  t.deepEqual(s.existsRaw('c'.repeat(32), raw[0]!), [false], 'other namespaces never match');
  t.deepEqual(await s.get([`${NS}/${hex(twin)}`]), [undefined]);
});

test('tiers - the checksum of a stored block is computed before it reaches a lower tier', async (t) => {
  const { s, root } = stack({ dram: 8 * MiB, file: 100 * MiB });
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  await s.open();
  s.put(key(1), block(1));
  await s.drain();
  const { checksum } = await import('../connector/checksum.js');
  t.is(s.entry(key(1))!.checksum, checksum(block(1)));
});

test('tiers - pinned blocks at the old end are skipped once, then no longer scanned by every eviction', async (t) => {
  const { s } = stack({ dram: 64 * MiB });
  await s.open();
  for (let i = 0; i < 40; i++) s.put(key(i), block(i));
  for (let i = 0; i < 30; i++) s.entry(key(i))!.pins = 1; // the 30 oldest are pinned
  for (let i = 40; i < 80; i++) s.put(key(i), block(i));
  const dram = s.tiers[0]!;
  t.true(dram.used <= 64 * MiB);
  for (let i = 0; i < 30; i++) t.true(s.exists([key(i)])[0], `pinned block ${i} kept`);
  t.is(s.index.table.pins[dram.lru!.ids().next().value!], 0, 'the least recent end holds an evictable block, not the pinned ones');
});

test('tiers - a lower tier listing objects that are not block keys: start-up skips them; a PUT of one is refused loudly', async (t) => {
  // A third-party driver whose list() lets foreign objects through (the driver contract says keys match
  // <32 hex>/<64 hex>; conforming drivers never list others).
  class Leaky extends MemoryDriver {
    override async *list() {
      yield* super.list();
      for (const k of ['README.txt', `${NS}/${'AB'.repeat(32)}`, `${NS}/${'0'.repeat(63)}`]) yield { key: k, size: 64, meta: { checksum: '0123456789abcdef' } };
    }
  }
  const lower = new Leaky();
  await lower.open();
  await lower.put(key(1), block(1, 64), { checksum: (await import('../connector/checksum.js')).checksum(block(1, 64)) });
  const queue = { maxItems: 10, maxBytes: 1 << 20, concurrency: 1 };
  const s = new TierStack({
    tiers: [
      { name: 'dram', medium: 'CPU', driver: new MemoryDriver(), budgetBytes: MiB, writeMode: 'through', admitAfter: 1, queue, initialReadBps: 1e10 },
      { name: 'ssd', medium: 'DISK', driver: lower, budgetBytes: MiB, writeMode: 'through', admitAfter: 1, queue, initialReadBps: 1e9 },
    ],
    policy: lruPolicy, halfLifeMs: 60_000, promoteOnHit: true,
  });
  t.deepEqual(await s.open(), { rebuilt: 1 });
  t.is(s.index.size, 1);
  t.true((await s.get([key(1)]))[0]!.equals(block(1, 64)));
  t.throws(() => s.put('README.txt', block(2, 64)), { message: /64 lowercase hex/ });
  t.is(s.entry(`${NS}/${'AB'.repeat(32)}`), undefined, 'upper-case hex is another key, never found');
  await s.close();
});
