import test from 'ava';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import path from 'node:path';
import fc from 'fast-check';
import { beladyHits, lruHits, type TraceRequest } from '../connector/trace/belady.js';
import { AccessHistory, lruPolicy } from '../connector/tiers/policy.js';
import { MemoryDriver } from '../connector/storage/memory.js';
import { TierStack } from '../connector/tiers/tier-stack.js';
import { repoRoot } from './helpers/sidecar.js';

const req = (...ids: number[]): TraceRequest => ({ timestamp: 0, hash_ids: ids });

test('tiers-policy - Belady skips a block used never again; LRU evicts the one that comes back', (t) => {
  const tr = [req(10), req(11), req(10)];
  t.is(beladyHits(tr, 1).hits, 1);
  t.is(lruHits(tr, 1).hits, 0);
});

test('tiers-policy - prefix semantics: only the leading cached run counts; Belady keeps the chain whole', (t) => {
  const tr = [req(0, 1), req(0, 2), req(0, 1)];
  t.deepEqual(beladyHits(tr, 2), { blocks: 6, hits: 3, inserts: 2 });
  t.is(lruHits(tr, 2).hits, 2);
  // A cached block after a miss is not reused: [5] cached, request [4, 5] reuses nothing.
  t.is(beladyHits([req(5), req(4, 5)], 10).hits, 0);
});

/**
 * Random prefix-structured traces: each request extends one of a few roots with one of a few chains. As in the real
 * trace an id encodes its whole prefix, so it always sits at the same depth (the premise of Belady's optimality here).
 */
const traces = fc.array(fc.tuple(fc.integer({ min: 0, max: 5 }), fc.integer({ min: 1, max: 6 }), fc.integer({ min: 0, max: 3 })), { minLength: 1, maxLength: 60 })
  .map((xs) => xs.map(([root, len, variant]) => req(...Array.from({ length: len }, (_, d) => (d === 0 ? root : 10_000 + root * 1000 + variant * 100 + d)))));

test('tiers-policy - Belady is an upper bound of LRU, monotone in capacity, and equals the unbounded cache at full size', (t) => {
  fc.assert(fc.property(traces, fc.integer({ min: 0, max: 30 }), (tr, cap) => {
    const b = beladyHits(tr, cap).hits;
    if (b < lruHits(tr, cap).hits) return false;
    if (beladyHits(tr, cap + 1).hits < b) return false;
    const unique = new Set(tr.flatMap((r) => r.hash_ids)).size;
    return beladyHits(tr, unique).hits === lruHits(tr, unique).hits;
  }), { numRuns: 300 });
  t.pass();
});

test('tiers-policy - AccessHistory never undercounts and halves with age', (t) => {
  const h = new AccessHistory(1 << 10);
  const k = (i: number) => `${'a'.repeat(32)}/${createHash('sha256').update(String(i)).digest('hex')}`;
  for (let i = 0; i < 50; i++) for (let j = 0; j <= i % 5; j++) h.add(k(i));
  for (let i = 0; i < 50; i++) t.true(h.estimate(k(i)) >= (i % 5) + 1);
  t.is(h.estimate(k(999)) <= 5, true);
  const fresh = new AccessHistory(1 << 10);
  for (let i = 0; i < 8; i++) fresh.add(k(4));
  t.is(fresh.estimate(k(4)), 8);
  for (let i = 0; i < 10 * (1 << 10) - 8; i++) fresh.add(k(77)); // the 10×width-th addition halves every counter
  t.is(fresh.estimate(k(4)), 4, 'old counts halved');
});

test('tiers-policy - admission counts survive eviction: a block evicted before its 2nd access is admitted on the 3rd put', async (t) => {
  const queue = { maxItems: 100, maxBytes: 1 << 30, concurrency: 1 };
  const low = new MemoryDriver();
  const s = new TierStack({
    tiers: [
      { name: 'dram', medium: 'CPU', driver: new MemoryDriver(), budgetBytes: 1000, writeMode: 'through', admitAfter: 1, queue, initialReadBps: 1e9 },
      { name: 'low', medium: 'X', driver: low as never, budgetBytes: 1 << 20, writeMode: 'through', admitAfter: 2, queue, initialReadBps: 1e9 },
    ],
    policy: lruPolicy, halfLifeMs: 1000, promoteOnHit: true,
  });
  (low as { name: string }).name = 'memory2';
  await s.open();
  const k = (i: number) => `${'b'.repeat(32)}/${createHash('sha256').update(`k${i}`).digest('hex')}`;
  s.put(k(1), Buffer.alloc(600));
  s.put(k(2), Buffer.alloc(600)); // evicts 1 (seen once, not admitted below: gone)
  await s.drain();
  t.is(s.entry(k(1)), undefined);
  s.put(k(1), Buffer.alloc(600)); // second access, remembered across the eviction
  await s.drain();
  t.is(s.entry(k(1))!.where, 3, 'written through to the tier that wants two accesses');
});

test('tiers-policy - `kvstash bench trace` replays the shared trace against the real stack and prints the comparison', (t) => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'cli', 'kvstash.ts'), 'bench', 'trace', '--workloads', 'mooncake,rag@heldout', '--limit', '300',
    '--capacities', '64', '--dram', '4GiB', '--ssd', '32GiB', '--ssd-driver', 'file', '--json'], { cwd: repoRoot, encoding: 'utf8', timeout: 200_000 });
  t.is(r.status, 0, r.stderr);
  type Row = { workload: string; run: string; policy: string; hits: number; blocks: number; badReads: number; dramHits: number; beladyHits: number; lruHits: number; ssdModelBytesWritten: number };
  const out = JSON.parse(r.stdout) as { workloads: { name: string; requests: number }[]; rows: Row[]; options: { trace: string } };
  t.deepEqual(out.workloads.map((w) => [w.name, w.requests]), [['mooncake', 300], ['rag@heldout', 300]]);
  t.is(path.resolve(out.options.trace), path.join(repoRoot, 'bench', 'traces', 'mooncake-conversation.jsonl'), 'default trace path');
  for (const w of ['mooncake', 'rag@heldout']) {
    for (const run of ['one level', 'split']) {
      const rows = out.rows.filter((x) => x.workload === w && x.run === run);
      t.deepEqual(rows.map((x) => x.policy).slice(0, 2), ['kvstash (lfuda)', run === 'split' ? 'kvstash (lfuda), SSD admits seen ≥ 2' : 'LRU']);
      for (const x of rows) {
        t.is(x.badReads, 0);
        t.true(x.hits > 0 && x.hits <= x.beladyHits, `${w} ${run} ${x.policy}: bounded by Belady`);
        t.true(x.dramHits <= x.hits);
        if (run === 'split') t.true(x.ssdModelBytesWritten > 0);
      }
    }
  }
});
