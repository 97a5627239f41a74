/**
 * vLLM connector against a real sidecar: the Python harness (test/integration/py/vllm_harness.py) runs an
 * emulated vLLM engine — scheduler process + worker process with real paged KV tensors — in vLLM's call
 * order. Engine A computes and saves; engine B (fresh processes, other block placement, possibly another
 * tensor layout) looks up and loads, and every byte of its cache is checked against the deterministic KV.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import test from 'ava';
import { loadConfig } from '../../connector/config.js';
import { blockHashes } from '../../connector/keys.js';
import { Sidecar } from '../../connector/server/sidecar.js';
import { killAndWait, repoRoot, fixturesDir, spawnSidecar, startSidecar, tempDir, uniqueIpc } from '../helpers/sidecar.js';
import { assertClean, BS, expectedHit, range, runHarness, tokens } from '../helpers/vllm-harness.js';

const py = process.env.KVSTASH_PYTHON || '/usr/bin/python3';

const shared = tokens(1, 50);
const A_PROMPTS = [
  range(1, 70), // tokens 1..70: block 0/1 are the vLLM sha256_cbor vectors
  [...shared, ...tokens(2, 40)],
  [...shared, ...tokens(3, 27)],
  tokens(4, 33),
];
const B_PROMPTS = [
  range(1, 70), // same prompt: (70 - 1) // 16 = 4 blocks
  [...shared, ...tokens(9, 30)], // shares 50 tokens → 3 blocks
  [...tokens(4, 33)], // same: 2 blocks (32 tokens would leave no token to compute)
  [...tokens(4, 20), ...tokens(11, 30)], // shares 20 → 1 block
  tokens(12, 40), // nothing shared
];

for (const [name, layouts, dtype] of [
  ['old 5-D → v0.23 5-D → HND', ['kv_first', 'blocks_first', 'hnd'], 'bfloat16'],
  ['HND → old 5-D (float32)', ['hnd', 'kv_first'], 'float32'],
  ['MLA → MLA (float16)', ['mla', 'mla'], 'float16'],
] as const) {
  test(`vllm-connector - ${name}: engines load exactly the saved blocks, bit for bit`, async (t) => {
    const sc = await startSidecar();
    t.teardown(() => sc.stop());
    const base = { endpoint: sc.endpoint, dtype, head_size: layouts[0] === 'mla' ? 48 : 32 };
    const a = await runHarness({ ...base, layout: layouts[0], seed: 1, prompts: A_PROMPTS });
    assertClean(t, a);
    t.true(Object.values(a.results).every((r) => r.ext_tokens === 0));
    t.true(a.counters.saved_blocks! >= 9, `A saved ${a.counters.saved_blocks} blocks`);
    const saved = [...A_PROMPTS];
    for (const [i, layout] of layouts.slice(1).entries()) {
      const b = await runHarness({ ...base, layout, seed: 10 + i, prompts: B_PROMPTS, extra: { load_kv_async: layout === 'mla' } });
      assertClean(t, b);
      B_PROMPTS.forEach((p, j) => {
        const r = b.results[`req-${j}`]!;
        t.is(r.local_tokens + r.ext_tokens, expectedHit(p, saved), `B(${layout}) prompt ${j}: local ${r.local_tokens} + kvstash ${r.ext_tokens}`);
        t.is(r.load_errors, 0);
        if (r.ext_tokens) t.is(r.async, layout === 'mla');
      });
      t.true(b.counters.loaded_blocks! >= 6, `B loaded ${b.counters.loaded_blocks} blocks`);
      saved.push(...B_PROMPTS); // B saved what it computed
    }
  });
}

test('vllm-connector - KV events announce saved blocks with vLLM hashes and the DRAM tier as medium', async (t) => {
  const sc = await startSidecar();
  t.teardown(() => sc.stop());
  const a = await runHarness({ endpoint: sc.endpoint, layout: 'blocks_first', seed: 3, prompts: A_PROMPTS, idle_steps: 3, kv_events: true });
  assertClean(t, a);
  const vec = JSON.parse(readFileSync(path.join(fixturesDir, 'vllm-kv-events', 'hash-vectors.json'), 'utf8')) as {
    vectors: { algorithm: string; blocks: { name: string; event_int: string }[] }[];
  };
  const cbor = vec.vectors.find((v) => v.algorithm === 'sha256_cbor')!.blocks;
  const all = a.events.flatMap((e) => e.block_hashes);
  t.is(new Set(all).size, all.length, 'each block announced once');
  t.is(all.length, a.counters.saved_blocks, 'every stored block is announced');
  const first = a.events.find((e) => e.parent === null && e.token_ids[0] === 1)!;
  t.deepEqual(first.block_hashes.slice(0, 2), [cbor.find((b) => b.name === 'block0')!.event_int, cbor.find((b) => b.name === 'block1')!.event_int]);
  for (const e of a.events) {
    t.is(e.medium, 'CPU');
    t.is(e.token_ids.length, e.block_hashes.length * BS);
  }
});

test('vllm-connector - tensor parallel: each rank stores its own shard; the hit is the smallest over the ranks', async (t) => {
  const sc = await startSidecar();
  t.teardown(() => sc.stop());
  const P = tokens(51, 100); // 6 full blocks, and 102 tokens after 2 decode steps
  const base = { endpoint: sc.endpoint, layout: 'blocks_first', tp: 2 };
  const a = await runHarness({ ...base, seed: 1, prompts: [P] });
  assertClean(t, a);
  t.is(a.counters.saved_blocks, 12, 'six blocks per rank, each in its rank\'s namespace');
  const b = await runHarness({ ...base, layout: 'hnd', seed: 2, prompts: [P] });
  assertClean(t, b); // each rank's KV differs: a shard loaded into the wrong rank would not match
  t.is(b.results['req-0']!.ext_tokens, 96);
  t.is(b.counters.loaded_blocks, 12);
  const c = await runHarness({ ...base, seed: 3, prompts: [P], delete_at_start: { rank: 1, keys: [blockHashes(P, BS)[3]!.toString('hex')] } });
  assertClean(t, c);
  t.is(c.results['req-0']!.ext_tokens, 48, 'rank 1 lacks block 3, so only blocks 0-2 load on both ranks');
  t.is(c.counters.present_blocks, 5, 'rank 0 still had blocks 3-5, rank 1 blocks 4-5');
});

test('vllm-connector - a failed load is reported and the poisoned tokens of that step are never saved', async (t) => {
  const sc = await startSidecar();
  t.teardown(() => sc.stop());
  const P = tokens(21, 70);
  const Q = [...P.slice(0, 64), ...tokens(22, 40)]; // loads blocks 0-3, computes blocks 4-5 in the same step
  const base = { endpoint: sc.endpoint, layout: 'kv_first', token_budget: 128 };
  await runHarness({ ...base, seed: 1, prompts: [P] });
  const k2 = blockHashes(P, BS)[2]!.toString('hex');
  const b1 = await runHarness({ ...base, seed: 2, prompts: [Q], delete_before_load: [k2] });
  assertClean(t, b1);
  const r1 = b1.results['req-0']!;
  t.is(r1.ext_tokens, 64);
  t.is(r1.load_errors, 2, 'blocks 2 and 3 reported (the missing block and the one after it)');
  t.is(r1.poisoned, 1, 'the harness saw wrong KV in that step');
  const c = await runHarness({ ...base, seed: 3, prompts: [Q] });
  t.is(c.results['req-0']!.ext_tokens, 32, 'block 2 is gone, so the hit stops there');
  // C saves blocks 2-5: block 3 is still there from A; blocks 4-5 must be new, or B1 stored poisoned KV
  t.is(c.counters.present_blocks, 1, 'only block 3 was already stored');
  t.is(c.counters.saved_blocks, 3, 'blocks 2, 4 and 5 were stored by C, not by the failing engine');
  const d = await runHarness({ ...base, seed: 4, prompts: [Q] });
  t.is(d.results['req-0']!.ext_tokens, 96);
  assertClean(t, d);
  // asynchronous loading: the failure is reported in the same pass as get_finished
  const e = await runHarness({ ...base, seed: 5, prompts: [Q], delete_before_load: [blockHashes(Q, BS)[4]!.toString('hex')], extra: { load_kv_async: true } });
  assertClean(t, e);
  t.true(e.results['req-0']!.async);
  t.is(e.results['req-0']!.load_errors, 2, 'block 4 (missing) and block 5 after it');
});

test('vllm-connector - sidecar killed between lookup and load: errors reported within the deadline, engine goes on', async (t) => {
  const dir = tempDir();
  const endpoint = uniqueIpc(dir);
  const { proc } = await spawnSidecar(['--endpoints', endpoint, '--file-root', '', '--dram-bytes', '64MiB']);
  t.teardown(() => killAndWait(proc));
  const P = tokens(31, 100);
  const base = { endpoint, layout: 'hnd', extra: { load_timeout_ms: 800, save_timeout_ms: 800 } };
  await runHarness({ ...base, seed: 1, prompts: [P] });
  const b = await runHarness({ ...base, seed: 2, prompts: [P, tokens(32, 40)], pause_before_load: true }, { onPaused: () => killAndWait(proc) });
  assertClean(t, b);
  const r = b.results['req-0']!;
  t.is(r.ext_tokens, 96);
  t.is(r.load_errors, 6, 'all six blocks of the load failed');
  t.true(b.max_step_s < 0.8 + 1.5, `slowest step ${b.max_step_s.toFixed(2)} s`);
  t.true(b.shutdown_s < 0.8 + 1.5, `shutdown ${b.shutdown_s.toFixed(2)} s`);
});

test('vllm-connector - sidecar absent at start-up: 0 hits, no exception, no stall', async (t) => {
  const endpoint = uniqueIpc();
  const b = await runHarness({ endpoint, layout: 'mla', head_size: 48, seed: 1, prompts: [tokens(41, 80), tokens(42, 70), tokens(43, 50)],
    extra: { lookup_timeout_ms: 100, save_timeout_ms: 300, retry_interval_ms: 60_000 } });
  assertClean(t, b);
  t.true(Object.values(b.results).every((r) => r.ext_tokens === 0 && r.load_errors === 0));
  t.true(b.lookup_s < 0.6, `lookups took ${b.lookup_s.toFixed(2)} s in all (one deadline, then skipped)`);
  t.is(b.counters.saved_blocks, 0);
  t.true(b.shutdown_s < 1.5);
});

test('vllm-connector - python client: ops, batches, error codes, deadlines, threads, re-HELLO after a sidecar restart', async (t) => {
  const endpoint = uniqueIpc();
  const config = () => loadConfig({ endpoints: [endpoint], fileRoot: '', dramBytes: '64MiB', logLevel: 'silent' }, {});
  let sidecar = new Sidecar(config());
  await sidecar.start();
  t.teardown(() => sidecar.stop());
  const proc = spawn(py, [path.join(repoRoot, 'adapters', 'python', 'tests', 'test_client.py'), endpoint], {
    cwd: repoRoot, env: { ...process.env, PYTHONPATH: path.join(repoRoot, 'adapters', 'python') }, stdio: ['pipe', 'pipe', 'pipe'],
  });
  t.teardown(() => { proc.kill('SIGKILL'); });
  let out = '';
  let err = '';
  proc.stderr.on('data', (d) => { err += d; });
  const code = await new Promise<number | null>((resolve) => {
    const timer = setTimeout(() => { proc.kill('SIGKILL'); }, 30_000);
    proc.stdout.on('data', (d) => {
      out += d;
      if (/READY [0-9a-f]{32}\n/.test(out) && !out.includes('restarted')) {
        out += 'restarted\n';
        void (async () => {
          await sidecar.stop(); // no file tier: the namespace registry is gone with it
          sidecar = new Sidecar(config());
          await sidecar.start();
          proc.stdin.write('go\n');
        })();
      }
    });
    proc.on('exit', (c) => { clearTimeout(timer); resolve(c); });
  });
  t.is(code, 0, `${out}\n${err}`);
  t.regex(out, /\nOK\n/);
  t.log(/timeouts after restart: \d+/.exec(out)?.[0]);
  t.is(sidecar.stats().namespaces, 1, 're-registered by the client');
});

test('vllm-connector - python units: layout detection, save plan limits, roles, HMA groups, disabled worker', (t) => {
  const r = spawnSync(py, [path.join(repoRoot, 'adapters', 'python', 'tests', 'test_vllm_units.py')], {
    cwd: repoRoot, env: { ...process.env, PYTHONPATH: path.join(repoRoot, 'adapters', 'python') }, encoding: 'utf8', timeout: 60_000,
  });
  t.is(r.status, 0, `${r.stdout}\n${r.stderr}`);
  t.regex(r.stderr, /Ran ([5-9]|\d\d+) tests/);
});
