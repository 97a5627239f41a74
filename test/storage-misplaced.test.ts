/**
 * Issue 9 item 2: every stored block carries its key, checked against the key asked for. A block file copied or
 * moved to another key's name is never served as that key's block — not before a restart, not after one.
 */
import test from 'ava';
import { copyFileSync, existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { checksum } from '../connector/checksum.js';
import { lruPolicy } from '../connector/tiers/policy.js';
import type { StorageDriver } from '../connector/storage/driver.js';
import { FileDriver, parseFileConfig } from '../connector/storage/file.js';
import { MemoryDriver } from '../connector/storage/memory.js';
import { NfsDriver, parseNfsConfig } from '../connector/storage/nfs.js';
import { TierStack } from '../connector/tiers/tier-stack.js';
import { tempDir } from './helpers/sidecar.js';

const NS = 'b'.repeat(32);
const key = (c: string) => `${NS}/${c.repeat(64)}`;
const q = { maxItems: 100, maxBytes: 2 ** 30, concurrency: 2 };

function stack(driver: StorageDriver): TierStack {
  return new TierStack({
    tiers: [
      { name: 'dram', medium: 'CPU', driver: new MemoryDriver(), budgetBytes: 2 ** 30, writeMode: 'through', admitAfter: 1, queue: q, initialReadBps: 1e10 },
      { name: 'ssd', medium: 'DISK', driver, budgetBytes: 2 ** 40, writeMode: 'through', admitAfter: 1, queue: q, initialReadBps: 1e9 },
    ],
    policy: lruPolicy, halfLifeMs: 60_000, promoteOnHit: true,
  });
}

const cases: [string, (root: string) => StorageDriver, (root: string, k: string) => string][] = [
  ['file', (root) => new FileDriver(parseFileConfig({ root })), (root, k) => path.join(root, 'v1', NS, k.slice(33, 35), `${k.slice(33)}.kvb`)],
  ['nfs', (root) => new NfsDriver(parseNfsConfig({ root, fsync: false })), (root, k) => path.join(root, 'nfs-v1', NS, k.slice(33, 35), k.slice(35, 37), `${k.slice(33)}.kvb`)],
];

for (const [name, make, fileOf] of cases) {
  test(`storage-misplaced - ${name}: a block file copied or moved to another key's name is a miss after a restart, and counted`, async (t) => {
    const root = tempDir('kvstash-misplaced-');
    t.teardown(() => rmSync(root, { recursive: true, force: true }));
    const s1 = stack(make(root));
    await s1.open();
    const a = Buffer.alloc(70_000, 1);
    const b = Buffer.alloc(70_000, 2);
    s1.put(key('a'), a);
    s1.put(key('b'), b);
    s1.put(key('d'), Buffer.alloc(70_000, 4));
    await s1.close();
    copyFileSync(fileOf(root, key('a')), fileOf(root, key('b'))); // a's block under b's name (same size, valid checksum)
    mkdirSync(path.dirname(fileOf(root, key('c'))), { recursive: true });
    renameSync(fileOf(root, key('d')), fileOf(root, key('c'))); // d's block moved to c's name
    const junk = fileOf(root, key('a')).replace(/a+\.kvb$/, 'f'.repeat(64) + '.kvb');
    writeFileSync(junk, 'not a block file, just some bytes of junk for the sweep');

    // The driver alone: a read of the misplaced name is a miss, counted.
    const d = make(root);
    await d.open();
    t.is(await d.get(key('b')), undefined);
    t.is(await d.get(key('c')), undefined);
    t.deepEqual((await d.get(key('a')))?.value, a);
    t.is(d.stats().misplaced, 2);
    await d.close();

    // Restart the stack: rebuild leaves the misplaced blocks out; GET is a miss; the right block is still served.
    const s2 = stack(make(root));
    await s2.open();
    const [ga, gb, gc] = await s2.get([key('a'), key('b'), key('c')]);
    t.deepEqual(ga, a);
    t.is(gb, undefined);
    t.is(gc, undefined);
    t.is(s2.lookup([key('b')]).hit, 0);
    const st = s2.tiers[1]!.driver.stats();
    t.is(name === 'file' ? st.orphansSwept : st.orphans, 3, JSON.stringify(st)); // two misplaced, one junk
    if (name === 'file') t.false(existsSync(fileOf(root, key('b'))), 'the local tier removes orphans at start-up');
    else t.true(existsSync(fileOf(root, key('b'))), 'a shared tier counts orphans but leaves them');
    // b can be stored again, correctly.
    s2.put(key('b'), b);
    await s2.drain();
    const d3 = make(root);
    await d3.open();
    t.is((await d3.get(key('b')))?.meta.checksum, checksum(b));
    await s2.close();
    await d3.close();
  });
}
