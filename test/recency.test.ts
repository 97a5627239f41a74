import test from 'ava';
import fc from 'fast-check';
import { BlockIds, RecencyList } from '../connector/tiers/recency.js';
import type { BlockEntry } from '../connector/tiers/tier-types.js';

const entry = (key: string): BlockEntry =>
  ({ key, fslot: -1, id: -1, size: 1, checksum: '', where: 0, pending: 0, seen: 1, pins: 0, heat: 0, heatAt: 0 });

test('recency - property: two lists over shared, reused ids keep exactly the order of a Map (delete + set on touch)', (t) => {
  const op = fc.record({ kind: fc.constantFrom('push', 'touch', 'remove', 'release'), list: fc.integer({ min: 0, max: 1 }), k: fc.integer({ min: 0, max: 60 }) });
  fc.assert(fc.property(fc.array(op, { maxLength: 2000 }), (ops) => {
    const ids = new BlockIds();
    const lists = [new RecencyList(ids), new RecencyList(ids)];
    const refs = [new Map<string, BlockEntry>(), new Map<string, BlockEntry>()];
    const live = new Map<string, BlockEntry>();
    for (const o of ops) {
      const key = `k${o.k}`;
      const l = lists[o.list]!;
      const ref = refs[o.list]!;
      let e = live.get(key);
      if (o.kind === 'push') {
        if (!e) live.set(key, (e = entry(key)));
        ids.give(e);
        l.push(e.id);
        if (!ref.has(key)) ref.set(key, e);
      } else if (o.kind === 'touch' && e && ref.has(key)) {
        l.touch(e.id); ref.delete(key); ref.set(key, e);
      } else if (o.kind === 'remove' && e && ref.has(key)) {
        l.remove(e.id); ref.delete(key);
      } else if (o.kind === 'release' && e && !refs[0]!.has(key) && !refs[1]!.has(key)) {
        ids.release(e); live.delete(key); // a new entry under this key gets a recycled id
        if (e.id !== -1) return false;
      }
    }
    for (let i = 0; i < 2; i++) {
      const got = [...lists[i]!.values()];
      const want = [...refs[i]!.values()];
      if (got.length !== want.length || lists[i]!.size !== want.length || got.some((g, j) => g !== want[j])) return false;
    }
    return ids.live === live.size || [...live.values()].some((e) => e.id === -1);
  }), { numRuns: 100 });
  t.pass();
});

test('recency - released ids are reused, so columns stay as long as the most blocks held at once', (t) => {
  const ids = new BlockIds();
  const l = new RecencyList(ids);
  const a = Array.from({ length: 5000 }, (_, i) => entry(`a${i}`));
  for (const e of a) { ids.give(e); l.push(e.id); }
  for (const e of a) { l.remove(e.id); ids.release(e); }
  t.is(l.size, 0);
  t.is(ids.live, 0);
  const b = Array.from({ length: 5000 }, (_, i) => entry(`b${i}`));
  for (const e of b) { ids.give(e); l.push(e.id); }
  t.true(b.every((e) => e.id < 5000), 'every id recycled');
  t.deepEqual([...l.values()].map((e) => e.key), b.map((e) => e.key));
  l.push(b[0]!.id);
  t.is(l.values().next().value, b[0], 'push of a member keeps its place (Map.set semantics)');
});
