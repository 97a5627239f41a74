import test from 'ava';
import fc from 'fast-check';
import { lruHits, type TraceRequest } from '../connector/trace/belady.js';
import { LfuBuckets, LfudaOrder } from '../connector/tiers/lfuda.js';
import { lfudaPolicy, lruPolicy, type EvictionPolicy, type PolicyEntry } from '../connector/tiers/policy.js';
import { MemoryDriver } from '../connector/storage/memory.js';
import { TierStack } from '../connector/tiers/tier-stack.js';
import { WORKLOADS, HELD_OUT_SEED } from '../connector/trace/workloads.js';

const NS = 'c'.repeat(32);
/** A storage key per small id, its hash bytes spread (the fast index and the duel sampler read them). */
const key = (id: number) => {
  const h1 = (Math.imul(id ^ 0x5bd1e995, 0x9e3779b1) >>> 0).toString(16).padStart(8, '0');
  const h2 = (Math.imul(id ^ 0x85ebca6b, 0xc2b2ae35) >>> 0).toString(16).padStart(8, '0');
  return `${NS}/${h1}${h2}${id.toString(16).padStart(48, '0')}`;
};

/** Replay requests through a one-level TierStack of `cap` blocks, as the trace bench does; returns prefix hits. */
async function replay(reqs: TraceRequest[], cap: number, policy: EvictionPolicy): Promise<{ hits: number; stack: TierStack }> {
  const stack = new TierStack({
    tiers: [{ name: 'dram', medium: 'CPU', driver: new MemoryDriver(), budgetBytes: cap * 8, writeMode: 'through', admitAfter: 1, queue: { maxItems: 1, maxBytes: 1, concurrency: 1 }, initialReadBps: 1e10 }],
    policy, halfLifeMs: 60_000, promoteOnHit: true,
  });
  await stack.open();
  let hits = 0;
  for (const r of reqs) {
    const keys = r.hash_ids.map(key);
    const l = stack.lookup(keys);
    hits += l.hit;
    if (l.hit) {
      const got = stack.getResident(keys.slice(0, l.hit))!;
      for (let j = 0; j < l.hit; j++) if (got[j]!.readUInt32LE(0) !== r.hash_ids[j]) throw new Error('wrong bytes served');
    }
    for (let j = keys.length - 1; j >= l.hit; j--) { // deepest first, as the sidecar's PUT does
      const v = Buffer.alloc(8);
      v.writeUInt32LE(r.hash_ids[j]!, 0);
      stack.put(keys[j]!, v);
    }
  }
  return { hits, stack };
}

const req = (...ids: number[]): TraceRequest => ({ timestamp: 0, hash_ids: ids });
const traces = fc.array(fc.tuple(fc.integer({ min: 0, max: 5 }), fc.integer({ min: 1, max: 6 }), fc.integer({ min: 0, max: 3 })), { minLength: 1, maxLength: 80 })
  .map((xs) => xs.map(([root, len, variant]) => req(...Array.from({ length: len }, (_, d) => (d === 0 ? root : 10_000 + root * 1000 + variant * 100 + d)))));

test('tiers-policy-lfuda - buckets evict in (priority, age) order, like a sorted reference', (t) => {
  const op = fc.oneof(
    fc.record({ k: fc.integer({ min: 0, max: 20 }), f: fc.integer({ min: 0, max: 20 }), cap: fc.constantFrom(1, 15), t: fc.constant('set' as const) }),
    fc.record({ k: fc.integer({ min: 0, max: 20 }), t: fc.constant('del' as const) }),
    fc.record({ t: fc.constant('evict' as const) }),
  );
  fc.assert(fc.property(fc.array(op, { maxLength: 200 }), (ops) => {
    const b = new LfuBuckets<number, number>();
    const ref = new Map<number, { p: number; seq: number }>();
    let L = 0;
    let seq = 0;
    const order = () => [...ref].sort((x, y) => x[1].p - y[1].p || x[1].seq - y[1].seq).map(([k]) => k);
    for (const o of ops) {
      if (o.t === 'set') {
        b.set(o.k, o.k, o.f, o.cap);
        ref.set(o.k, { p: L + Math.max(1, Math.min(o.f, o.cap)), seq: seq++ });
      } else if (o.t === 'del') {
        if (b.delete(o.k) !== ref.delete(o.k)) return false;
      } else {
        const first = b.victims().next();
        const want = order()[0];
        if ((first.done ? undefined : first.value[0]) !== want) return false;
        if (want !== undefined) {
          L = Math.max(L, ref.get(want)!.p);
          ref.delete(want);
          b.evicted(want);
        }
      }
      if (JSON.stringify([...b.victims()].map(([k]) => k)) !== JSON.stringify(order()) || b.L !== L) return false;
    }
    return true;
  }), { numRuns: 300 });
  t.pass();
});

test('tiers-policy-lfuda - with cap 1 the stack is exactly the LRU stack on random prefix traces', async (t) => {
  await fc.assert(fc.asyncProperty(traces, fc.integer({ min: 1, max: 25 }), async (tr, cap) => {
    const { hits } = await replay(tr, cap, lfudaPolicy({ cap: 1 }));
    return hits === (await replay(tr, cap, lruPolicy)).hits;
  }), { numRuns: 150 });
  // Enough room for every block: both are the unbounded cache (offline reference).
  for (const tr of fc.sample(traces, { seed: 7, numRuns: 20 })) {
    t.is((await replay(tr, 10_000, lfudaPolicy())).hits, lruHits(tr, 10_000).hits);
  }
  t.pass();
});

test('tiers-policy-lfuda - a hot chain survives a flood of one-time chains that flushes LRU', async (t) => {
  const reqs: TraceRequest[] = [];
  let fresh = 1000;
  for (let i = 0; i < 400; i++) {
    reqs.push(req(1, 2, 3, 4)); // the hot chain, every 5th request
    for (let k = 0; k < 4; k++) reqs.push(req(fresh++, fresh++, fresh++, fresh++, fresh++, fresh++));
  }
  const lfuda = (await replay(reqs, 20, lfudaPolicy({ cap: 15 }))).hits;
  const lru = (await replay(reqs, 20, lruPolicy)).hits;
  t.is(lru, 0, 'LRU: 24 blocks of one-time chains between two uses of the hot chain flush it');
  t.true(lfuda >= 4 * 390, `lfuda keeps the hot chain: ${lfuda}`);
});

test('tiers-policy-lfuda - the duel picks frequency where it wins and LRU where it does not', (t) => {
  const entry = (id: number, seen: number): PolicyEntry => ({ id, key: key(id), seen, size: 1, pins: 0, heat: 0, heatAt: 0 });
  const run = (next: (i: number) => [number, number]) => {
    const cap = 512;
    const inCache = new Map<number, PolicyEntry>();
    const o = new LfudaOrder((id) => inCache.get(id)!);
    for (let i = 0; i < 200_000; i++) {
      const [id, seen] = next(i);
      const had = inCache.get(id);
      const e = entry(id, seen);
      if (had) { o.remove(had); o.touch(e); } else o.add(e);
      inCache.set(id, e);
      while (inCache.size > cap) {
        const v = o.victims().next().value!;
        o.evicted(v);
        o.remove(v);
        inCache.delete(Number.parseInt(v.key.slice(-48), 16));
      }
    }
    return o.cap;
  };
  // Frequency wins: 256 hot ids (seen many times) under a stream of one-time ids.
  t.is(run((i) => (i % 3 === 0 ? [i % 256, 15] : [1_000_000 + i, 1])), 15);
  // Recency wins: a working set of 400 ids that shifts slowly; ids of the old sets carry high counts.
  t.is(run((i) => { const base = Math.floor(i / 5000) * 200; const id = base + (i * 7919) % 400; return [id, id < base + 200 ? 15 : 1]; }), 1);
});

test('tiers-policy-lfuda - pinned blocks are never evicted', async (t) => {
  const { stack } = await replay([req(1, 2)], 4, lfudaPolicy());
  t.is(stack.pin([key(1), key(2)], 'keep').pinned, 2);
  let fresh = 100;
  for (let i = 0; i < 50; i++) { const v = Buffer.alloc(8); stack.put(key(fresh++), v); }
  t.deepEqual(stack.exists([key(1), key(2)]), [true, true]);
  t.is(stack.stats()[0]!.blocks, 4);
});

test('tiers-policy-lfuda - workload generators are deterministic and keep prefix semantics (an id has one parent)', (t) => {
  for (const [name, g] of Object.entries(WORKLOADS)) {
    const a = g(HELD_OUT_SEED, 500);
    t.deepEqual(a, g(HELD_OUT_SEED, 500), name);
    t.notDeepEqual(a, g(HELD_OUT_SEED + 1, 500), name);
    t.is(a.length, 500);
    const parent = new Map<number, number>();
    for (const r of a) {
      t.true(r.hash_ids.length > 0);
      r.hash_ids.forEach((id, j) => {
        const p = j === 0 ? -1 : r.hash_ids[j - 1]!;
        if (parent.has(id) && parent.get(id) !== p) t.fail(`${name}: id ${id} under two parents`);
        parent.set(id, p);
      });
    }
  }
});

test('tiers-policy-lfuda - an SSD hit enters a full DRAM only past its next victim; with room it always does', async (t) => {
  const queue = { maxItems: 100, maxBytes: 1 << 20, concurrency: 1 };
  const stack = new TierStack({
    tiers: [
      { name: 'dram', medium: 'CPU', driver: new MemoryDriver(), budgetBytes: 4 * 8, writeMode: 'through', admitAfter: 1, queue, initialReadBps: 1e10 },
      { name: 'ssd', medium: 'DISK', driver: new MemoryDriver(), budgetBytes: 1 << 20, writeMode: 'through', admitAfter: 1, queue, initialReadBps: 1e9 },
    ],
    policy: lfudaPolicy({ cap: 15 }), halfLifeMs: 60_000, promoteOnHit: true,
  });
  await stack.open();
  const val = (id: number) => { const v = Buffer.alloc(8); v.writeUInt32LE(id, 0); return v; };
  stack.put(key(9), val(9)); // the cold block: on the SSD only
  await stack.drain();
  t.is(stack.evictFrom(key(9), 0), 'evicted');
  for (let id = 1; id <= 4; id++) stack.put(key(id), val(id));
  for (let i = 0; i < 8; i++) stack.getResident([1, 2, 3, 4].map(key));
  await stack.drain();
  const [cold] = await stack.get([key(9)]);
  t.is(cold!.readUInt32LE(0), 9, 'served from the SSD');
  t.is(stack.entry(key(9))!.where & 1, 0, 'not promoted over four hot blocks');
  t.deepEqual(stack.exists([1, 2, 3, 4].map(key)), [true, true, true, true]);
  t.is(stack.evictFrom(key(4), 0), 'evicted'); // room in DRAM now
  await stack.get([key(9)]);
  t.is(stack.entry(key(9))!.where & 1, 1, 'promoted once DRAM has room');
  await stack.close();
});

test('tiers-policy-lfuda - rebasing priorities (past 2^30 in production) leaves the eviction order unchanged', (t) => {
  const op = fc.oneof(
    fc.record({ t: fc.constant('set' as const), id: fc.integer({ min: 0, max: 30 }), seen: fc.integer({ min: 1, max: 20 }) }),
    fc.record({ t: fc.constant('del' as const), id: fc.integer({ min: 0, max: 30 }) }),
    fc.record({ t: fc.constant('evict' as const) }),
  );
  let rebases = 0;
  fc.assert(fc.property(fc.array(op, { minLength: 300, maxLength: 600 }), (ops) => {
    const seen = new Map<number, number>();
    const view = (id: number): PolicyEntry => ({ id, key: key(id), seen: seen.get(id) ?? 1, size: 1, pins: 0, heat: 0, heatAt: 0 });
    const plain = new LfudaOrder(view, { cap: 15 });
    const rebased = new LfudaOrder(view, { cap: 15, rebaseAt: 40 });
    for (const o of ops) {
      if (o.t === 'set') { seen.set(o.id, o.seen); for (const x of [plain, rebased]) x.touch(view(o.id)); }
      else if (o.t === 'del') for (const x of [plain, rebased]) x.remove(view(o.id));
      else {
        const a = plain.first();
        const b = rebased.first();
        if (a?.id !== b?.id) return false;
        if (a) { const before = rebased.L; plain.evicted(a); rebased.evicted(b!); if (rebased.L < before) rebases++; }
      }
      if (plain.size !== rebased.size || plain.outranksVictim(7) !== rebased.outranksVictim(7)) return false;
      if ([...plain.victims()].map((e) => e.id).join() !== [...rebased.victims()].map((e) => e.id).join()) return false;
    }
    return rebased.L <= 40 + 16;
  }), { numRuns: 200 });
  t.true(rebases > 100, `priorities were rebased ${rebases} times`);
});

test('tiers-policy-lfuda - the duel turns the admission window on where it wins (RAG, 1 k blocks) and keeps it off where it loses (agents)', async (t) => {
  const rag = WORKLOADS.rag!(HELD_OUT_SEED, 4000);
  const agent = WORKLOADS.agent!(HELD_OUT_SEED, 1500);
  const admitting = (s: TierStack) => (s.tiers[0]!.order as LfudaOrder).admitting;
  const withIt = await replay(rag, 1024, lfudaPolicy());
  const without = await replay(rag, 1024, lfudaPolicy({ admission: false }));
  t.true(admitting(withIt.stack), 'RAG at 1 k blocks: admission on');
  t.false(admitting(without.stack));
  t.true(withIt.hits > 1.05 * without.hits, `admission wins on RAG: ${withIt.hits} vs ${without.hits} hits`);
  const a = await replay(agent, 4096, lfudaPolicy());
  const lru = await replay(agent, 4096, lruPolicy);
  t.false(admitting(a.stack), 'agents at 4 k blocks: admission off');
  t.true(a.hits >= 0.995 * lru.hits, `agents: ${a.hits} vs LRU ${lru.hits}`);
});

test('tiers-policy-lfuda - with the window on, a new block enters the main order only past the victim; nothing is lost from the order', (t) => {
  const seen = new Map<number, number>();
  const view = (id: number): PolicyEntry => ({ id, key: key(id), seen: seen.get(id) ?? 1, size: 1, pins: 0, heat: 0, heatAt: 0 });
  const o = new LfudaOrder(view, { cap: 15, window: true }); // as if the duel said so (the duel is tested above)
  const inOrder = new Set<number>();
  const cap = 200;
  // 100 hot blocks (seen 9), then a stream of one-time blocks: the hot ones must survive in the main order.
  for (let id = 0; id < 100; id++) { seen.set(id, 9); o.add(view(id)); inOrder.add(id); }
  for (let id = 1000; id < 6000; id++) {
    if (inOrder.size >= cap) {
      const v = o.first()!;
      o.evicted(v);
      inOrder.delete(v.id);
    }
    o.add(view(id));
    inOrder.add(id);
    if (o.size !== inOrder.size) return t.fail(`order holds ${o.size}, expected ${inOrder.size}`);
  }
  for (let id = 0; id < 100; id++) if (!inOrder.has(id)) return t.fail(`hot block ${id} evicted by one-time blocks`);
  t.is(new Set([...o.victims()].map((e) => e.id)).size, o.size, 'victims() lists every block once');
  t.true(o.priority(5999) === -1 && o.priority(0)! > 0, 'the newest block waits in the window, the hot ones are in the main order');
  // Admission turned off (the duel's call): the window empties into the main order at the next eviction.
  (o as unknown as { fixedWindow: boolean }).fixedWindow = false;
  const v = o.first()!;
  t.true(inOrder.has(v.id) && o.priority(v.id)! > 0);
  t.is(o.priority(5999)! > 0, true, 'the window member moved into the main order');
  t.is(new Set([...o.victims()].map((e) => e.id)).size, inOrder.size, 'nothing dropped on the way');
});
