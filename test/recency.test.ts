import test from 'ava';
import fc from 'fast-check';
import { RecencyList } from '../connector/tiers/recency.js';
import { BlockTable } from '../connector/tiers/block-table.js';

const NS = 'f'.repeat(32);
const key = (k: number) => `${NS}/${k.toString(16).padStart(64, '0')}`;

test('recency - property: two lists over shared, reused row ids keep exactly the order of a Map (delete + set on touch)', (t) => {
  const op = fc.record({ kind: fc.constantFrom('push', 'touch', 'remove', 'release'), list: fc.integer({ min: 0, max: 1 }), k: fc.integer({ min: 0, max: 60 }) });
  fc.assert(fc.property(fc.array(op, { maxLength: 2000 }), (ops) => {
    const rows = new BlockTable(false);
    const lists = [new RecencyList(), new RecencyList()];
    const refs = [new Map<number, number>(), new Map<number, number>()];
    const live = new Map<number, number>(); // k → row id
    for (const o of ops) {
      const l = lists[o.list]!;
      const ref = refs[o.list]!;
      let id = live.get(o.k);
      if (o.kind === 'push') {
        if (id === undefined) live.set(o.k, (id = rows.alloc(key(o.k), 1)));
        l.push(id);
        if (!ref.has(o.k)) ref.set(o.k, id);
      } else if (o.kind === 'touch' && id !== undefined && ref.has(o.k)) {
        l.touch(id); ref.delete(o.k); ref.set(o.k, id);
      } else if (o.kind === 'remove' && id !== undefined && ref.has(o.k)) {
        l.remove(id); ref.delete(o.k);
      } else if (o.kind === 'release' && id !== undefined && !refs[0]!.has(o.k) && !refs[1]!.has(o.k)) {
        rows.release(id); live.delete(o.k); // a new block under this key gets a recycled row
      }
    }
    for (let i = 0; i < 2; i++) {
      const got = [...lists[i]!.ids()];
      const want = [...refs[i]!.values()];
      if (got.length !== want.length || lists[i]!.size !== want.length || got.some((g, j) => g !== want[j])) return false;
    }
    return rows.live === live.size;
  }), { numRuns: 100 });
  t.pass();
});

test('recency - released rows are reused, so columns stay as long as the most blocks held at once', (t) => {
  const rows = new BlockTable(false);
  const l = new RecencyList();
  const a = Array.from({ length: 5000 }, (_, i) => rows.alloc(key(i), 1));
  for (const id of a) l.push(id);
  for (const id of a) { l.remove(id); rows.release(id); }
  t.is(l.size, 0);
  t.is(rows.live, 0);
  const b = Array.from({ length: 5000 }, (_, i) => rows.alloc(key(10_000 + i), 1));
  for (const id of b) l.push(id);
  t.true(b.every((id) => id < 5000), 'every row recycled');
  t.deepEqual([...l.ids()].map((id) => rows.keyOf(id)), b.map((id) => rows.keyOf(id)));
  l.push(b[0]!);
  t.is(l.ids().next().value, b[0], 'push of a member keeps its place (Map.set semantics)');
});

test('block-table - keys, sizes and checksums round-trip; a stale view reads as absent and writes nothing', (t) => {
  const rows = new BlockTable(true, 1_000_000);
  const k = `${'a'.repeat(32)}/${'0123456789abcdef'.repeat(4)}`;
  const id = rows.alloc(k, 0xffffffff);
  const v = rows.view(id);
  t.is(v.key, k);
  t.is(v.size, 0xffffffff);
  t.is(v.checksum, '');
  v.checksum = '00ff00ff00ff00ff';
  t.is(rows.view(id).checksum, '00ff00ff00ff00ff');
  v.checksum = 'sha256:not-xxh64'; // a form some driver listed: kept as is
  t.is(rows.view(id).checksum, 'sha256:not-xxh64');
  v.where = 3; v.pins = 2; v.seen = 300;
  v.heat = 1.5; v.heatAt = 1_000_500;
  t.deepEqual([v.where, v.pins, v.seen, v.heat, v.heatAt], [3, 2, 255, 1.5, 1_000_500]);
  rows.release(id);
  t.false(v.live);
  const id2 = rows.alloc(`${'b'.repeat(32)}/${'f'.repeat(64)}`, 5);
  t.is(id2, id, 'the row is reused');
  v.where = 7; v.pending = 1; v.checksum = '1111111111111111';
  const w = rows.view(id2);
  t.deepEqual([w.where, w.pending, w.checksum, v.where, v.pins], [0, 0, '', 0, 0], 'the stale view neither reads nor writes the new block');
  t.false(v.same(w));
  t.true(w.same(rows.view(id2)));
  t.throws(() => rows.alloc(`${'a'.repeat(32)}/${'0123456789ABCDEF'.repeat(4)}`, 1), { message: /lowercase hex/ });
  t.throws(() => rows.alloc('short', 1), { message: /namespace/ });
  t.throws(() => rows.alloc(`${'a'.repeat(32)}/${'0'.repeat(64)}`, 2 ** 32), { instanceOf: RangeError });
  const plain = new BlockTable(false);
  const p = plain.view(plain.alloc(k, 1));
  p.heat = 3;
  t.is(p.heat, 0, 'heat is not kept unless asked for');
});
