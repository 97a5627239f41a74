import test from 'ava';
import fc from 'fast-check';
import { FastIndex } from '../connector/tiers/fast-index.js';
import { BlockTable } from '../connector/tiers/block-table.js';

/** A row for `hash` in namespace `ns` with tier bits `where`, not yet indexed. */
const row = (rows: BlockTable, ns: string, hash: Buffer, where = 1, size = 100): number => {
  const id = rows.alloc(`${ns}/${hash.toString('hex')}`, size);
  rows.where[id] = where;
  return id;
};

test('fast-index - property: inserts, deletes, where updates and growth agree with a Map', (t) => {
  const NS = ['a'.repeat(32), 'b'.repeat(32)];
  // Few distinct first bytes so probe runs collide, wrap around and get shifted back by deletions.
  const hashArb = fc.tuple(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 3 })).map(([x, y]) => {
    const b = Buffer.alloc(32, 0);
    b[0] = x; b[5] = y; b[31] = x ^ y;
    return b;
  });
  const op = fc.record({ kind: fc.constantFrom('add', 'drop', 'sync'), ns: fc.integer({ min: 0, max: 1 }), hash: hashArb, where: fc.integer({ min: 0, max: 7 }) });
  fc.assert(fc.property(fc.array(op, { maxLength: 1500 }), (ops) => {
    const rows = new BlockTable(false);
    const f = new FastIndex(rows);
    const ref = new Map<string, number>();
    for (const o of ops) {
      const key = `${NS[o.ns]}/${o.hash.toString('hex')}`;
      const id = ref.get(key);
      if (o.kind === 'add' && id === undefined) { const n = row(rows, NS[o.ns]!, o.hash, o.where); ref.set(key, n); f.add(n); }
      else if (o.kind === 'drop' && id !== undefined) { ref.delete(key); f.drop(id); rows.release(id); }
      else if (o.kind === 'sync' && id !== undefined) { rows.where[id] = o.where; f.sync(id); }
    }
    if (f.count !== ref.size) return false;
    for (const ns of NS) { // per-namespace counts and the filtered row listing agree with the model
      const slot = rows.nsSlot(ns);
      const want = [...ref].filter(([k]) => k.startsWith(ns)).map(([, id]) => id).sort((x, y) => x - y);
      if (slot === undefined) { if (want.length) return false; continue; }
      const got = [...f.rowIds(new Set([slot]))].sort((x, y) => x - y);
      if (f.countIn(slot) !== want.length || got.join() !== want.join()) return false;
    }
    for (const ns of NS) {
      for (let x = 0; x <= 40; x++) for (let y = 0; y <= 3; y++) {
        const h = Buffer.alloc(32, 0); h[0] = x; h[5] = y; h[31] = x ^ y;
        const want = ref.get(`${ns}/${h.toString('hex')}`);
        const nsSlot = rows.nsSlot(ns);
        const slot = nsSlot === undefined ? -1 : f.find(nsSlot, h, 0);
        const exact = nsSlot === undefined ? -1 : f.findKey(nsSlot, h, 0);
        if ((slot !== -1) !== (want !== undefined) || exact !== (want ?? -1)) return false;
        if (want !== undefined && (f.id(slot) !== want || f.where(slot) !== rows.where[want] || f.size(slot) !== 100 || f.slotOf(want) !== slot)) return false;
      }
    }
    return true;
  }), { numRuns: 60 });
  t.pass();
});

test('fast-index - 200,000 blocks grow the table; after deleting half, the rest stay findable', (t) => {
  const rows = new BlockTable(false);
  const f = new FastIndex(rows);
  const ns = 'c'.repeat(32);
  const hashes: Buffer[] = [];
  const ids: number[] = [];
  for (let i = 0; i < 200_000; i++) {
    const h = Buffer.alloc(32);
    h.writeUInt32BE(Math.imul(i, 2654435761) >>> 0, 0);
    h.writeUInt32BE(i, 4);
    hashes.push(h);
    const id = row(rows, ns, h, 1 + (i % 3), i);
    ids.push(id);
    f.add(id);
  }
  for (let i = 0; i < ids.length; i += 2) f.drop(ids[i]!);
  const slot = rows.nsSlot(ns)!;
  let ok = 0;
  for (let i = 0; i < ids.length; i++) {
    const s = f.find(slot, hashes[i]!, 0);
    if (i % 2 === 0 ? s === -1 && !rows.indexed(ids[i]!) : f.id(s) === ids[i] && f.size(s) === i && f.findKey(slot, hashes[i]!, 0) === ids[i]) ok++;
  }
  t.is(ok, ids.length);
  t.is(f.count, 100_000);
});

test('fast-index - LOOKUP matches 60 bits, GET matches all 256: a key sharing the first 8 bytes is found only by find', (t) => {
  const rows = new BlockTable(false);
  const f = new FastIndex(rows);
  const ns = 'd'.repeat(32);
  const a = Buffer.alloc(32, 0x11);
  const b = Buffer.from(a);
  b[31] = 0x22; // same bytes 0–7
  f.add(row(rows, ns, a));
  const slot = rows.nsSlot(ns)!;
  t.not(f.find(slot, b, 0), -1, 'advisory LOOKUP over-reports');
  t.is(f.findKey(slot, b, 0), -1, 'exact match does not');
  const idB = row(rows, ns, b);
  f.add(idB);
  t.is(f.findKey(slot, b, 0), idB, 'both indexed: each found by its own key');
});

test('fast-index - the same hash in two namespaces is two slots; where bits of one never leak into the other', (t) => {
  const rows = new BlockTable(false);
  const f = new FastIndex(rows);
  const h = Buffer.alloc(32, 0x5a);
  const a = row(rows, 'a'.repeat(32), h, 0b101, 7);
  const b = row(rows, 'b'.repeat(32), h, 0b010, 9);
  f.add(a);
  f.add(b);
  const nsA = rows.nsSlot('a'.repeat(32))!;
  const nsB = rows.nsSlot('b'.repeat(32))!;
  const sa = f.find(nsA, h, 0);
  const sb = f.find(nsB, h, 0);
  t.not(sa, sb);
  t.is(f.id(sa), a);
  t.is(f.id(sb), b);
  rows.where[a] = 0xff;
  f.sync(a);
  t.deepEqual([f.where(sa), f.where(sb), f.size(sa), f.size(sb)], [0xff, 0b010, 7, 9]);
  rows.where[a] = 0;
  f.sync(a);
  t.is(f.find(nsA, h, 0), sa, 'a block with no copies stays findable until dropped');
  t.is(f.where(sa), 0);
  f.drop(a);
  t.is(f.find(nsA, h, 0), -1);
  t.is(f.id(f.find(nsB, h, 0)), b);
  t.is(rows.nsSlot('c'.repeat(32)), undefined);
});

test('fast-index - the table grows past 70 % load, 20 bytes a slot, and stays linear in blocks', (t) => {
  const rows = new BlockTable(false);
  const f = new FastIndex(rows);
  t.is(f.capacity, 1024);
  const ns = 'e'.repeat(32);
  for (let i = 0; i < 716; i++) { const h = Buffer.alloc(32); h.writeUInt32BE(i * 977, 0); f.add(row(rows, ns, h)); }
  t.is(f.capacity, 1024, '716 blocks fit in 1,024 slots (≤ 70 %)');
  const h = Buffer.alloc(32); h.writeUInt32BE(0xfffffff0, 0); f.add(row(rows, ns, h));
  t.is(f.capacity, 2048, 'the 717th grows the table');
  for (let i = 0; i < 716; i++) { const k = Buffer.alloc(32); k.writeUInt32BE(i * 977, 0); if (f.find(rows.nsSlot(ns)!, k, 0) === -1) t.fail(`lost block ${i} in growth`); }
});
