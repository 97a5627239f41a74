/**
 * Same-host arena: the ArenaStore as a DRAM driver (conformance kit), its allocator, and the wire ops (HELLO shm,
 * ATTACH, GET lease, RELEASE, ALLOC, COMMIT) against a real sidecar, reading and writing the arena file the way an
 * engine process does through its mapping (positional I/O on the same tmpfs file: the same pages).
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, openSync, closeSync, readSync, writeSync, statSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { ArenaFile } from '../connector/storage/arena-file.js';
import { ArenaStore } from '../connector/storage/arena.js';
import { PAGE, SlotState } from '../connector/storage/arena-layout.js';
import { driverConformance } from '../connector/storage/conformance.js';
import type { KvstashClient } from '../connector/client.js';
import { NS, blockFor, killAndWait, spawnSidecar, startSidecar, tempDir, uniqueIpc } from './helpers/sidecar.js';

const shm = existsSync('/dev/shm') ? '/dev/shm' : tempDir();
const arenaCfg = (dir = shm) => ({
  dir, bytes: 256 * 2 ** 20, chunkBytes: 16 * 2 ** 20, maxValueBytes: 72 * 2 ** 20, leaseMs: 5000, commitMs: 5000, fileMode: 0o600, tenantGroups: {},
});

driverConformance(test, () => new ArenaStore(arenaCfg()), { prefix: 'arena-driver', skip: ['crash-mid-put', 'persistence'] });

test('arena - allocator hands out consecutive slots of one stride, reuses freed ones and returns empty chunks', (t) => {
  const dir = tempDir();
  const a = new ArenaFile({ path: path.join(dir, 'x.arena'), bytes: 64 * 2 ** 20, chunkBytes: 16 * 2 ** 20, mode: 0o600, tenant: 't' });
  const s = [0, 1, 2, 3].map(() => a.alloc(256 * 1024)!);
  t.is(s[1]!.off - s[0]!.off, s[0]!.stride, 'consecutive');
  t.is(s[0]!.stride, 256 * 1024 + PAGE);
  t.is(s[0]!.off % PAGE, 0, 'data is page-aligned');
  a.release(s[1]!);
  t.is(a.alloc(256 * 1024)!.off, s[1]!.off, 'a freed slot is reused');
  // Slots freed in any order come back lowest first: a batch gets ascending, evenly spaced offsets (one strided
  // run for a reader's copy), not the descending order of a last-in-first-out list.
  const more = [0, 1, 2, 3].map(() => a.alloc(256 * 1024)!);
  for (const x of [...more, s[3]!, s[2]!]) a.release(x);
  const slots = [0, 1, 2, 3, 4, 5].map(() => a.alloc(256 * 1024)!);
  const again = slots.map((x) => x.off);
  t.deepEqual(again, [...again].sort((x, y) => x - y), 'ascending');
  t.true(again.every((o, i) => i === 0 || o - again[i - 1]! === s[0]!.stride), 'evenly spaced');
  for (const x of slots) a.release(x);
  const big = a.alloc(20 * 2 ** 20)!; // more than a quarter chunk: whole chunks of its own
  t.truthy(big);
  t.is(a.alloc(40 * 2 ** 20), undefined, 'no room left for two more chunks');
  a.release(big);
  t.truthy(a.alloc(40 * 2 ** 20), 'released chunks return to the pool');
  t.is(statSync(path.join(dir, 'x.arena')).mode & 0o777, 0o600);
  a.close();
});

test('arena - puts: one pwritev publishes LIVE, a reused slot too (newer generation, the put buffer is free at once); a freed slot says FREE once the task ends', async (t) => {
  const store = new ArenaStore(arenaCfg());
  await store.open();
  t.teardown(() => store.close());
  const ns = 'ab'.repeat(16);
  const key = (i: number) => `${ns}/${i.toString(16).padStart(64, '0')}`;
  const v1 = randomBytes(4096);
  t.true(store.putSync(key(1), v1, { checksum: 'x' }));
  const a = store.arenaOfNs(ns);
  const fd = openSync(a.opts.path, 'r');
  t.teardown(() => closeSync(fd));
  const [off1, gen1] = store.lease('p', [key(1)]).slots[0]!;
  let r = readSync_(fd, off1, 4096);
  t.is(r.state, SlotState.LIVE, 'a fresh slot is written and published at once');
  t.is(r.gen, gen1);
  t.deepEqual(r.data, v1);
  t.is(r.key.toString('hex'), key(1).slice(33));
  store.release('p', [1]);
  // Replace the value: the freed slot is reused and written before putSync returns; the caller's buffer is not kept.
  const v2 = randomBytes(4096);
  const mine = Buffer.from(v2);
  t.true(store.deleteSync(key(1)));
  t.true(store.putSync(key(1), mine, { checksum: 'x' }));
  mine.fill(0);
  r = readSync_(fd, off1, 4096);
  t.is(r.state, SlotState.LIVE);
  t.true(r.gen > gen1, 'a reused slot has a newer generation');
  t.deepEqual(r.data, v2, 'written at once');
  t.deepEqual(store.getSync(key(1))!.value, v2);
  const into = Buffer.alloc(4096);
  t.true(store.copySyncInto(key(1), into));
  t.deepEqual(into, v2);
  const [off2, gen2] = store.lease('p', [key(1)]).slots[0]!;
  t.is(off2, off1, 'the slot was reused');
  t.is(gen2, r.gen);
  store.release('p', [2]);
  // A delete: FREE with a newer generation once the task ends.
  t.true(store.deleteSync(key(1)));
  await Promise.resolve();
  r = readSync_(fd, off1, 4096);
  t.is(r.state, SlotState.FREE);
  t.true(r.gen > gen2);
});

test('arena - an emptied chunk stays with its size class; the pool gets it back when another class needs room', (t) => {
  const dir = tempDir();
  const a = new ArenaFile({ path: path.join(dir, 'y.arena'), bytes: 2 * 16 * 2 ** 20, chunkBytes: 16 * 2 ** 20, mode: 0o600, tenant: 't' });
  t.teardown(() => a.close());
  const s1 = a.alloc(4096)!;
  a.release(s1);
  const s2 = a.alloc(8192)!; // another class: the second chunk
  t.not(s2.chunk, s1.chunk);
  t.is(a.alloc(4096)!.off, s1.off, 'the 4 KiB class reuses its emptied chunk');
  const s3 = a.alloc(4096)!;
  a.release(s3);
  a.release({ ...s1 });
  a.release(s2);
  t.truthy(a.alloc(20 * 2 ** 20) ?? undefined, 'no free chunk run until the kept chunks go back to the pool');
});

// ---- wire ops against a real sidecar ---------------------------------------------------------------------

interface Arena { id: string; path: string; bytes: number }

async function attach(c: KvstashClient, tenant = 'default'): Promise<{ ns: string; arena: Arena; fd: number }> {
  const r = await c.request({ op: 'HELLO', namespace: { ...NS, tenant }, shm: true });
  const arena = r.header.arena as Arena;
  const fd = openSync(arena.path, 'r+');
  const token = Buffer.alloc(16);
  readSync(fd, token, 0, 16, 16);
  await c.request({ op: 'ATTACH', ns: r.header.ns, token });
  return { ns: r.header.ns as string, arena, fd };
}

const readSync_ = (fd: number, off: number, size: number) => readSlot(fd, off, size);

function readSlot(fd: number, off: number, size: number): { data: Buffer; state: number; gen: number; key: Buffer } {
  const h = Buffer.alloc(96);
  readSync(fd, h, 0, 96, off - PAGE);
  const data = Buffer.alloc(size);
  readSync(fd, data, 0, size, off);
  return { data, state: h.readUInt32LE(4), gen: h.readUInt32LE(8) + h.readUInt32LE(12) * 2 ** 32, key: h.subarray(32, 64) };
}

test('arena - GET with a lease describes DRAM blocks in place; the copy checks out; a reused slot changes generation', async (t) => {
  const s = await startSidecar({ arenaDir: shm, arenaLeaseMs: 60_000, dramBytes: '8MiB', fileRoot: '' });
  t.teardown(() => s.stop());
  const c = s.client();
  const { ns, arena, fd } = await attach(c);
  t.teardown(() => closeSync(fd));
  t.true(arena.path.startsWith(shm));
  t.is(statSync(arena.path).mode & 0o777, 0o600, 'only the sidecar user maps it by default');
  const keys = [randomBytes(32), randomBytes(32), randomBytes(32)];
  const blocks = keys.map((k) => blockFor(k, 1 << 20));
  await c.put(ns, keys.slice(0, 2), blocks.slice(0, 2));
  const r = await c.request({ op: 'GET', ns, keys: Buffer.concat(keys), lease: true });
  t.deepEqual(r.header.sizes, [1 << 20, 1 << 20, -1]);
  t.is(r.blocks.length, 0, 'no bytes crossed the socket');
  const slots = r.header.slots as ([number, number] | null)[];
  t.is(slots[2], null);
  for (let i = 0; i < 2; i++) {
    const got = readSlot(fd, slots[i]![0], 1 << 20);
    t.true(got.data.equals(blocks[i]!), `block ${i} in place`);
    t.is(got.state, SlotState.LIVE);
    t.is(got.gen, slots[i]![1]);
    t.true(got.key.equals(keys[i]!));
  }
  // Delete while leased: the slot is not reused until the lease ends (RELEASE, or lease_ms).
  await c.delete(ns, keys.slice(0, 1));
  await c.put(ns, [keys[2]!], [blocks[2]!]);
  t.is(readSlot(fd, slots[0]![0], 16).gen, slots[0]![1], 'still the leased generation');
  const rel = await c.request({ op: 'RELEASE', leases: [r.header.lease] });
  t.is(rel.header.released, 1);
  const after = readSlot(fd, slots[0]![0], 16);
  t.not(after.gen, slots[0]![1], 'freed after release: a late reader sees another generation');
  t.not(after.state, SlotState.LIVE);
  // An unreleased lease ends by itself (a sidecar with a short lease).
  const s2 = await startSidecar({ arenaDir: shm, arenaLeaseMs: 200, fileRoot: '' });
  t.teardown(() => s2.stop());
  const c2 = s2.client();
  const { ns: ns2, fd: fd2 } = await attach(c2);
  t.teardown(() => closeSync(fd2));
  await c2.put(ns2, [keys[1]!], [blocks[1]!]);
  const r2 = await c2.request({ op: 'GET', ns: ns2, keys: keys[1]!, lease: true });
  await c2.delete(ns2, [keys[1]!]);
  const slot = (r2.header.slots as [number, number][])[0]!;
  const until = Date.now() + 10_000;
  while (readSlot(fd2, slot[0], 16).gen === slot[1] && Date.now() < until) await new Promise((res) => setTimeout(res, 20));
  t.not(readSlot(fd2, slot[0], 16).gen, slot[1], 'the expired lease let the slot go');
  t.true(((s2.sidecar.tiers.dram.stats() as Record<string, number>).lease_expired ?? 0) >= 1);
});

test('arena - ALLOC, write in place, COMMIT: the block is served inline and by lease; uncommitted slots are reclaimed', async (t) => {
  const s = await startSidecar({ arenaDir: shm, arenaCommitMs: 60_000 });
  t.teardown(() => s.stop());
  const c = s.client();
  const { ns, fd } = await attach(c);
  t.teardown(() => closeSync(fd));
  const keys = [randomBytes(32), randomBytes(32), randomBytes(32)];
  const blocks = keys.map((k) => blockFor(k, 300_000));
  await c.put(ns, [keys[2]!], [blocks[2]!]);
  const a = await c.request({ op: 'ALLOC', ns, keys: Buffer.concat(keys), sizes: [300_000, 300_000, 300_000] });
  const slots = a.header.slots as ([number, number] | null)[];
  t.deepEqual(a.header.present, [false, false, true]);
  t.is(slots[2], null, 'present keys get no slot');
  t.true(slots[1]![0] - slots[0]![0] >= 300_000 + PAGE && slots[1]![0] - slots[0]![0] < 400_000, 'slots of one request are consecutive');
  for (let i = 0; i < 2; i++) writeSync(fd, blocks[i]!, 0, blocks[i]!.length, slots[i]![0]);
  const cm = await c.request({ op: 'COMMIT', ns, alloc: a.header.alloc, written: [true, false, false] });
  t.deepEqual(cm.header.results, [0, 2, 2], 'written → stored; not written → dropped');
  const got = await c.get(ns, keys);
  t.true(got[0]!.equals(blocks[0]!), 'committed bytes served inline');
  t.is(got[1], undefined, 'an unwritten slot is never served');
  t.true(got[2]!.equals(blocks[2]!));
  const e = await t.throwsAsync(c.request({ op: 'COMMIT', ns, alloc: a.header.alloc }));
  t.is((e as { code?: string }).code, 'KVS_ARENA', 'an allocation commits once');
  // An abandoned allocation (the writer died) is reclaimed after twice commit_ms (a sidecar with a short one).
  const s2 = await startSidecar({ arenaDir: shm, arenaCommitMs: 100, fileRoot: '' });
  t.teardown(() => s2.stop());
  const c2 = s2.client();
  const { ns: ns2, fd: fd2 } = await attach(c2);
  t.teardown(() => closeSync(fd2));
  const b = await c2.request({ op: 'ALLOC', ns: ns2, keys: randomBytes(32), sizes: [4096] });
  const slot = (b.header.slots as [number, number][])[0]!;
  const until = Date.now() + 10_000;
  while (readSlot(fd2, slot[0], 0).gen === slot[1] && Date.now() < until) await new Promise((res) => setTimeout(res, 20));
  t.is(readSlot(fd2, slot[0], 0).state, SlotState.FREE);
  t.is((await t.throwsAsync(c2.request({ op: 'COMMIT', ns: ns2, alloc: b.header.alloc })) as { code?: string }).code, 'KVS_ARENA');
});

test('arena - tenants get separate files; another tenant\'s token, a wrong token, or no ATTACH give no descriptors', async (t) => {
  const s = await startSidecar({ arenaDir: shm });
  t.teardown(() => s.stop());
  const c = s.client();
  const a = await attach(c, 'alpha');
  const b = await c.request({ op: 'HELLO', namespace: { ...NS, tenant: 'beta' }, shm: true });
  t.teardown(() => closeSync(a.fd));
  t.not((b.header.arena as Arena).path, a.arena.path, 'one arena file per tenant');
  const token = Buffer.alloc(16);
  readSync(a.fd, token, 0, 16, 16);
  const e = await t.throwsAsync(c.request({ op: 'ATTACH', ns: b.header.ns, token }));
  t.is((e as { code?: string }).code, 'KVS_ARENA', "alpha's token does not open beta's arena");
  await c.put(b.header.ns as string, [randomBytes(32)], [Buffer.alloc(8192, 7)]);
  const other = s.client();
  const k = randomBytes(32);
  await other.put(a.ns, [k], [Buffer.alloc(8192, 9)]);
  const r = await other.request({ op: 'GET', ns: a.ns, keys: k, lease: true });
  t.is(r.blocks.length, 1, 'a client that did not attach gets bytes inline');
  t.is(r.header.slots, undefined);
  t.is((await t.throwsAsync(other.request({ op: 'ALLOC', ns: a.ns, keys: k, sizes: [1] })) as { code?: string }).code, 'KVS_ARENA');
  const r2 = await c.request({ op: 'GET', ns: b.header.ns, keys: k, lease: true });
  t.deepEqual(r2.header.sizes, [-1], "beta's namespace does not see alpha's block");
});

test('arena - a sidecar killed with -9 leaves its arena folder; the next one on the host removes it', async (t) => {
  const dir = tempDir();
  const arenaDir = path.join(dir, 'shm');
  mkdirSync(arenaDir);
  const args = ['--endpoints', uniqueIpc(dir), '--file-root', '', '--arena-dir', arenaDir, '--dram-bytes', '16MiB'];
  const first = await spawnSidecar(args);
  t.teardown(() => killAndWait(first.proc));
  const owned = readdirSync(arenaDir);
  t.is(owned.length, 1);
  await killAndWait(first.proc, 'SIGKILL');
  t.deepEqual(readdirSync(arenaDir), owned, 'left behind by kill -9');
  const second = await spawnSidecar(['--endpoints', uniqueIpc(dir), '--file-root', '', '--arena-dir', arenaDir, '--dram-bytes', '16MiB']);
  t.teardown(() => killAndWait(second.proc, 'SIGTERM'));
  const now = readdirSync(arenaDir);
  t.is(now.length, 1);
  t.false(now.includes(owned[0]!), 'the dead sidecar\'s arena was reclaimed');
});
