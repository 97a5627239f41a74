import test from 'ava';
import fc from 'fast-check';
import { FastIndex } from '../connector/tiers/fast-index.js';
import type { BlockEntry } from '../connector/tiers/tier-types.js';

const entry = (ns: string, hash: Buffer, where = 1, size = 100): BlockEntry =>
  ({ key: `${ns}/${hash.toString('hex')}`, fslot: -1, id: -1, size, checksum: '', where, pending: 0, seen: 1, pins: 0, heat: 0, heatAt: 0 });

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
    const f = new FastIndex();
    const ref = new Map<string, BlockEntry>();
    for (const o of ops) {
      const key = `${NS[o.ns]}/${o.hash.toString('hex')}`;
      const e = ref.get(key);
      if (o.kind === 'add' && !e) { const n = entry(NS[o.ns]!, o.hash, o.where); ref.set(key, n); f.add(n); }
      else if (o.kind === 'drop' && e) { ref.delete(key); f.drop(e); }
      else if (o.kind === 'sync' && e) { e.where = o.where; f.sync(e); }
    }
    for (const ns of NS) {
      for (let x = 0; x <= 40; x++) for (let y = 0; y <= 3; y++) {
        const h = Buffer.alloc(32, 0); h[0] = x; h[5] = y; h[31] = x ^ y;
        const want = ref.get(`${ns}/${h.toString('hex')}`);
        const slot = f.namespace(ns) === undefined ? -1 : f.find(f.namespace(ns)!, h, 0);
        if ((slot !== -1) !== (want !== undefined)) return false;
        if (want && (f.entry(slot) !== want || f.where(slot) !== want.where || f.size(slot) !== want.size || want.fslot !== slot)) return false;
      }
    }
    return true;
  }), { numRuns: 60 });
  t.pass();
});

test('fast-index - 200,000 entries grow the table; after deleting half, the rest stay findable', (t) => {
  const f = new FastIndex();
  const ns = 'c'.repeat(32);
  const es: BlockEntry[] = [];
  for (let i = 0; i < 200_000; i++) {
    const h = Buffer.alloc(32);
    h.writeUInt32BE(Math.imul(i, 2654435761) >>> 0, 0);
    h.writeUInt32BE(i, 4);
    const e = entry(ns, h, 1 + (i % 3), i);
    es.push(e);
    f.add(e);
  }
  for (let i = 0; i < es.length; i += 2) f.drop(es[i]!);
  const slot = f.namespace(ns)!;
  let ok = 0;
  for (let i = 0; i < es.length; i++) {
    const k = Buffer.from(es[i]!.key.slice(33), 'hex');
    const s = f.find(slot, k, 0);
    if (i % 2 === 0 ? s === -1 : f.entry(s) === es[i] && f.size(s) === i) ok++;
  }
  t.is(ok, es.length);
});

test('fast-index - the same hash in two namespaces is two slots; where bits of one never leak into the other', (t) => {
  const f = new FastIndex();
  const h = Buffer.alloc(32, 0x5a);
  const a = entry('a'.repeat(32), h, 0b101, 7);
  const b = entry('b'.repeat(32), h, 0b010, 9);
  f.add(a);
  f.add(b);
  const sa = f.find(f.namespace('a'.repeat(32))!, h, 0);
  const sb = f.find(f.namespace('b'.repeat(32))!, h, 0);
  t.not(sa, sb);
  t.is(f.entry(sa), a);
  t.is(f.entry(sb), b);
  a.where = 0xff;
  f.sync(a);
  t.deepEqual([f.where(sa), f.where(sb), f.size(sa), f.size(sb)], [0xff, 0b010, 7, 9]);
  a.where = 0;
  f.sync(a);
  t.is(f.find(f.namespace('a'.repeat(32))!, h, 0), sa, 'a block with no copies stays findable until dropped');
  t.is(f.where(sa), 0);
  f.drop(a);
  t.is(f.find(f.namespace('a'.repeat(32))!, h, 0), -1);
  t.is(f.entry(f.find(f.namespace('b'.repeat(32))!, h, 0)), b);
  t.is(f.namespace('c'.repeat(32)), undefined);
});

test('fast-index - the table grows past 70 % load, 24 bytes a slot, and stays linear in blocks', (t) => {
  const f = new FastIndex();
  t.is(f.capacity, 1024);
  const ns = 'e'.repeat(32);
  for (let i = 0; i < 716; i++) { const h = Buffer.alloc(32); h.writeUInt32BE(i * 977, 0); f.add(entry(ns, h)); }
  t.is(f.capacity, 1024, '716 blocks fit in 1,024 slots (≤ 70 %)');
  const h = Buffer.alloc(32); h.writeUInt32BE(0xfffffff0, 0); f.add(entry(ns, h));
  t.is(f.capacity, 2048, 'the 717th grows the table');
  for (let i = 0; i < 716; i++) { const k = Buffer.alloc(32); k.writeUInt32BE(i * 977, 0); if (f.find(f.namespace(ns)!, k, 0) === -1) t.fail(`lost block ${i} in growth`); }
});
