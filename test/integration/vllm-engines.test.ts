/**
 * vLLM connector against what real vLLM deployments do (issue 14): the load-failure policy, leases on promised
 * blocks, a worker that switched itself off, the newest worker lifecycle, take_events off the step, and a
 * dead sidecar at the default lookup deadline. Every case runs the emulated engine of
 * test/integration/py/vllm_harness.py against a real sidecar.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import test from 'ava';
import { blockHashes } from '../../connector/keys.js';
import { killAndWait, NS, repoRoot, spawnSidecar, startSidecar, tempDir, uniqueIpc } from '../helpers/sidecar.js';
import { assertClean, BS, expectedHit, py, runHarness, runHarnessFailing, tokens } from '../helpers/vllm-harness.js';

test('vllm-engines - kv_load_failure_policy "fail" is refused with one line naming the setting, unless allowed', async (t) => {
  const sc = await startSidecar();
  t.teardown(() => sc.stop());
  const base = { endpoint: sc.endpoint, layout: 'blocks_first', seed: 1, prompts: [tokens(1, 40)], failure_policy: 'fail' };
  const err = await runHarnessFailing(base);
  t.regex(err, /KVS_CONFIG: kv_transfer_config\.kv_load_failure_policy is "fail"/);
  t.regex(err, /"kv_load_failure_policy":"recompute"/);
  const ok = await runHarness({ ...base, extra: { allow_fail_policy: true } });
  assertClean(t, ok);
});

test('vllm-engines - blocks a lookup promised stay in the sidecar until the worker loaded them (lease)', async (t) => {
  // DRAM only (LRU), room for ~12 blocks of 16 KiB: a burst of other saves between lookup and load evicts all
  const sc = await startSidecar({ fileRoot: '', dramBytes: '200KiB', policy: 'lru' });
  t.teardown(() => sc.stop());
  const P = tokens(61, 100); // 6 full blocks
  const base = { endpoint: sc.endpoint, layout: 'blocks_first', token_budget: 128 };
  const a = await runHarness({ ...base, seed: 1, prompts: [P] });
  t.is(a.counters.saved_blocks, 6);
  const flood = async () => {
    const c = sc.client();
    const ns = await c.namespace({ ...NS, model: 'flood' });
    for (let i = 0; i < 8; i++) {
      const keys = Array.from({ length: 4 }, () => randomBytes(32));
      await c.put(ns, keys, keys.map(() => randomBytes(16 << 10)));
    }
  };
  const withLease = await runHarness({ ...base, seed: 2, prompts: [P], pause_before_load: true }, { onPaused: flood });
  assertClean(t, withLease);
  t.is(withLease.results['req-0']!.ext_tokens, 96);
  t.is(withLease.results['req-0']!.load_errors, 0, 'the leased blocks survived the flood');
  t.is(withLease.counters.loaded_blocks, 6);
  t.is(sc.sidecar.leases.live, 0, 'the worker released its lease after loading');
  // the same without a lease: the flood evicts the promised blocks and the load fails (recomputed)
  await runHarness({ ...base, seed: 3, prompts: [P] });
  const noLease = await runHarness({ ...base, seed: 4, prompts: [P], pause_before_load: true, extra: { lease_ms: 0 } }, { onPaused: flood });
  assertClean(t, noLease);
  t.is(noLease.results['req-0']!.ext_tokens, 96);
  t.true(noLease.results['req-0']!.load_errors > 0, 'without the lease the flood turns the hit into load errors');
});

test('vllm-engines - a worker that cannot use its KV layout tells the scheduler within one step: 0 hits after', async (t) => {
  const sc = await startSidecar();
  t.teardown(() => sc.stop());
  const shared = tokens(71, 64);
  const prompts = [0, 1, 2, 3].map((i) => [...shared, ...tokens(72 + i, 20)]);
  const base = { endpoint: sc.endpoint, layout: 'blocks_first', lifecycle: 'new', token_budget: 24 };
  await runHarness({ ...base, seed: 1, prompts: [prompts[0]] });
  const b = await runHarness({ ...base, seed: 2, prompts, break_layout: true });
  assertClean(t, b);
  t.is(b.scheduler_counters.worker_disabled, 1, 'logged once, counted once');
  const later = Object.values(b.results).filter((r) => (r.lookup_step ?? 0) >= 2);
  t.true(later.length >= 2, `${later.length} requests were looked up after the first step`);
  for (const r of later) t.is(r.ext_tokens, 0, 'no hit promised once the scheduler knows');
  t.is(b.counters.loaded_blocks ?? 0, 0);
});

for (const async of [false, true]) {
  test(`vllm-engines - newest worker lifecycle (has_sync_kv_loads, get_transfer_results), ${async ? 'asynchronous' : 'synchronous'} loads`, async (t) => {
    const sc = await startSidecar();
    t.teardown(() => sc.stop());
    const A = [tokens(81, 70), [...tokens(82, 40), ...tokens(83, 30)]];
    const B = [tokens(81, 70), [...tokens(82, 40), ...tokens(84, 20)], tokens(85, 30)];
    const base = { endpoint: sc.endpoint, layout: 'hnd', lifecycle: 'new', extra: { load_kv_async: async } };
    const a = await runHarness({ ...base, seed: 1, prompts: A });
    assertClean(t, a);
    const b = await runHarness({ ...base, seed: 2, prompts: B });
    assertClean(t, b);
    B.forEach((p, j) => t.is(b.results[`req-${j}`]!.ext_tokens, expectedHit(p, A) - b.results[`req-${j}`]!.local_tokens));
    t.true(b.counters.loaded_blocks! >= 6);
    // a failed asynchronous load is finished and failed in the same pass; its blocks are reported
    const P = tokens(86, 100);
    await runHarness({ ...base, seed: 3, prompts: [P] });
    const c = await runHarness({ ...base, seed: 4, prompts: [P], delete_before_load: [blockHashes(P, BS)[2]!.toString('hex')] });
    assertClean(t, c);
    t.is(c.results['req-0']!.load_errors, 4, 'block 2 (deleted) and the three after it');
  });
}

test('vllm-engines - take_events: nothing without kv_events_config, and never waits for the sidecar', async (t) => {
  const dir = tempDir();
  const endpoint = uniqueIpc(dir);
  const { proc } = await spawnSidecar(['--endpoints', endpoint, '--file-root', '', '--dram-bytes', '64MiB'], {}, 90_000);
  t.teardown(async () => { proc.kill('SIGCONT'); await killAndWait(proc); });
  const P = tokens(91, 100);
  const base = { endpoint, layout: 'blocks_first' };
  const off = await runHarness({ ...base, seed: 1, prompts: [P] });
  t.true(off.counters.saved_blocks! > 0);
  t.deepEqual(off.events, [], 'events are off in vLLM: none announced');
  t.is(off.scheduler_counters.event_lookups, 0, 'and no LOOKUP spent on them');
  // events on, sidecar frozen after the first lookup: the confirming LOOKUPs hang, take_events must not
  const on = await runHarness({ ...base, seed: 2, prompts: [P, tokens(92, 50)], kv_events: true, pause_before_load: true,
    extra: { lookup_timeout_ms: 1500, load_timeout_ms: 500, save_timeout_ms: 500 } },
  { onPaused: async () => { proc.kill('SIGSTOP'); }, deadlineMs: 90_000 });
  t.log(`slowest take_events with the sidecar frozen: ${(on.take_events_max_s * 1000).toFixed(2)} ms (lookup deadline 1500 ms)`);
  t.true(on.take_events_max_s < 0.05, `slowest take_events ${(on.take_events_max_s * 1000).toFixed(1)} ms`);
});

test('vllm-engines - sidecar dies: every later lookup answers 0 within 50 ms at the default deadline', async (t) => {
  const dir = tempDir();
  const endpoint = uniqueIpc(dir);
  const { proc } = await spawnSidecar(['--endpoints', endpoint, '--file-root', '', '--dram-bytes', '64MiB'], {}, 90_000);
  t.teardown(() => killAndWait(proc));
  const P = tokens(95, 100);
  const base = { endpoint, layout: 'blocks_first', extra: { lookup_timeout_ms: undefined, load_timeout_ms: 500, save_timeout_ms: 500 } };
  await runHarness({ ...base, seed: 1, prompts: [P, ...[1, 2, 3].map((i) => [...P.slice(0, 48), ...tokens(95 + i, 30)])] });
  const later = [1, 2, 3, 4].map((i) => [...P.slice(0, 48), ...tokens(95 + i, 30)]);
  const b = await runHarness({ ...base, seed: 2, prompts: [P, ...later], token_budget: 8, pause_before_load: true },
    { onPaused: () => killAndWait(proc) });
  assertClean(t, b);
  const after = b.lookups.filter(([, paused]) => paused).map(([s]) => s);
  t.true(after.length >= 3, `${after.length} lookups after the sidecar died`);
  t.log(`lookups after the death: slowest ${(Math.max(...after) * 1000).toFixed(2)} ms of ${after.length} (default deadline 50 ms)`);
  t.true(Math.max(...after) <= 0.05, `slowest lookup after the death ${(Math.max(...after) * 1000).toFixed(1)} ms`);
  for (const r of Object.values(b.results).filter((x) => (x.lookup_step ?? 0) > 1)) t.is(r.ext_tokens, 0);
});

test('vllm-engines - layouts of every backend: CPU (heads before slots) and per-token-head-scale (padded head dim) round trips', async (t) => {
  const sc = await startSidecar();
  t.teardown(() => sc.stop());
  const A = [tokens(101, 70), tokens(102, 50)];
  for (const [w, r] of [['cpu', 'blocks_first'], ['pad', 'pad']] as const) {
    const base = { endpoint: sc.endpoint, model: `layouts/${w}` };
    const a = await runHarness({ ...base, layout: w, seed: 1, prompts: A });
    assertClean(t, a);
    t.true(a.counters.saved_blocks! >= 7, `${w}: saved ${a.counters.saved_blocks}`);
    const b = await runHarness({ ...base, layout: r, seed: 2, prompts: A });
    assertClean(t, b);
    t.is(b.results['req-0']!.ext_tokens, 64, `${w} → ${r}`);
    t.is(b.results['req-1']!.ext_tokens, 48);
    t.is(b.counters.loaded_blocks, 7);
  }
});

test('vllm-engines - support matrix: the connector matches every recorded vLLM base class (test/fixtures/vllm-base)', (t) => {
  const r = spawnSync(py, [path.join(repoRoot, 'adapters', 'python', 'tests', 'test_vllm_support_matrix.py')], {
    cwd: repoRoot, env: { ...process.env, PYTHONPATH: path.join(repoRoot, 'adapters', 'python') }, encoding: 'utf8', timeout: 60_000,
  });
  t.is(r.status, 0, `${r.stdout}\n${r.stderr}`);
  t.regex(r.stderr, /Ran 2 tests/);
});

test('vllm-engines - prefill/decode through the shared store: a kv_producer engine saves, a kv_consumer engine loads', async (t) => {
  const sc = await startSidecar();
  t.teardown(() => sc.stop());
  const prompts = [tokens(111, 90), [...tokens(111, 40), ...tokens(112, 45)], tokens(113, 33)];
  const base = { endpoint: sc.endpoint, decode_steps: 1 };
  // both engines at once, on one sidecar: the consumer's requests are the producer's, its lookups run while the
  // producer is still saving, so it asks again for the ones not there yet (a second consumer pass below)
  const [p, early] = await Promise.all([
    // a prefill-only engine never loads: vLLM's default kv_load_failure_policy "fail" is fine there
    runHarness({ ...base, layout: 'blocks_first', seed: 1, prompts, kv_role: 'kv_producer', failure_policy: 'fail' }),
    runHarness({ ...base, layout: 'hnd', seed: 2, prompts: [tokens(114, 40)], kv_role: 'kv_consumer' }),
  ]);
  assertClean(t, p);
  assertClean(t, early);
  t.true(Object.values(p.results).every((r) => r.ext_tokens === 0), 'the producer never loads');
  t.is(p.counters.saved_blocks, 5 + 2 + 5 - 2, 'prefill blocks saved (the shared 2 blocks once), nothing generated past the prompt');
  const d = await runHarness({ ...base, layout: 'hnd', seed: 3, prompts, kv_role: 'kv_consumer' });
  assertClean(t, d);
  prompts.forEach((q, j) => t.is(d.results[`req-${j}`]!.ext_tokens, expectedHit(q, prompts), `consumer prompt ${j}`));
  t.is(d.counters.saved_blocks ?? 0, 0, 'the consumer never saves');
  t.is(d.counters.loaded_blocks, 5 + 5 + 2);
});

test('vllm-engines - hybrid KV-cache manager: full-attention and sliding-window groups with per-group block ids', async (t) => {
  const sc = await startSidecar();
  t.teardown(() => sc.stop());
  const groups = [{ layers: [0, 2] }, { layers: [1, 3], window: 24 }];
  const A = [tokens(121, 100), [...tokens(121, 50), ...tokens(122, 40)]];
  const base = { endpoint: sc.endpoint, layout: 'blocks_first', groups, token_budget: 128 };
  const a = await runHarness({ ...base, seed: 1, prompts: A });
  assertClean(t, a);
  t.is(a.counters.saved_blocks, 2 * (6 + 5 - 3), 'every full block once per group (each group its own namespace)');
  for (const async of [false, true]) {
    const b = await runHarness({ ...base, seed: async ? 3 : 2, prompts: A, extra: { load_kv_async: async } });
    assertClean(t, b); // bit-exact, and every token a sliding-window layer attends to was loaded before its attention
    t.is(b.results['req-0']!.ext_tokens, 96);
    t.is(b.results['req-0']!.load_errors, 0);
    // full group: 6 blocks; window 24 tokens → ceil(23/16) + 1 = 3 blocks before the hit end
    t.true(b.counters.loaded_blocks! <= 6 + 3 + 5 + 3, `${b.counters.loaded_blocks} blocks loaded`);
    t.true(b.counters.loaded_blocks! >= 6 + 3, `${b.counters.loaded_blocks} blocks loaded`);
  }
  // a sliding-window block missing inside the window shrinks nothing silently: it is a miss for the lookup
  const P = A[0]!;
  const d = await runHarness({ ...base, seed: 4, prompts: [P], delete_at_start: { rank: 1 /* group 1, rank 0 */, keys: [blockHashes(P, BS)[5]!.toString('hex')] } });
  assertClean(t, d);
  t.is(d.results['req-0']!.ext_tokens, 80, 'the sliding-window group lacks block 5: the hit stops before it');
});
