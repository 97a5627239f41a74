/**
 * SGLang HiCache backend (adapters/python/kvstash/sglang.py) against a real sidecar, driven by
 * test/integration/py/sglang_harness.py the way SGLang's cache controller drives it (128-page batches,
 * prefetch with a threshold, backup stopping at the first failed batch) over an emulated torch host pool.
 * Writer and reader are separate Python processes ("two instances").
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { repoRoot, startSidecar, tempDir, uniqueIpc } from '../helpers/sidecar.js';

const python = process.env.KVSTASH_PYTHON || '/usr/bin/python3';
const harness = path.join(repoRoot, 'test', 'integration', 'py', 'sglang_harness.py');

interface Case { layout: string; pages: number; pool_pages: number; page_size: number; layers: number; heads: number; dim: number; seed: number; [k: string]: unknown }
type Result = Record<string, unknown> & { stats: Record<string, number> };

function runHarness(mode: string, endpoint: string, cases: Case[], timeoutMs = 5000, deadlineMs = 60_000): Promise<Result[]> {
  return new Promise((resolve, reject) => {
    const p = spawn(python, [harness], { env: { ...process.env, PYTHONPATH: path.join(repoRoot, 'adapters', 'python') }, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => { p.kill('SIGKILL'); reject(new Error(`harness ${mode} passed its ${deadlineMs} ms deadline:\n${err}`)); }, deadlineMs);
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { err += d; });
    p.on('error', (e) => { clearTimeout(timer); reject(e); });
    p.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`harness ${mode} exited ${code}:\n${err}`));
      resolve((JSON.parse(out) as { results: Result[] }).results);
    });
    p.stdin.end(JSON.stringify({ mode, endpoint, timeout_ms: timeoutMs, cases }));
  });
}

const mha = (layout: string, pages: number, seed: number, extra: Record<string, unknown> = {}): Case =>
  ({ layout, pages, pool_pages: pages + 20, page_size: 16, layers: 4, heads: 2, dim: 32, seed, ...extra });
const mla = (layout: string, pages: number, seed: number, extra: Record<string, unknown> = {}): Case =>
  ({ layout, pages, pool_pages: pages + 8, page_size: 16, layers: 4, heads: 1, dim: 64, seed, mla: true, tp_size: 2, ...extra });

test('sglang - pages backed up by one process load bitwise into another (layer_first, page_first, page_first_direct; MHA, MLA, generic path)', async (t) => {
  const r = await startSidecar();
  t.teardown(r.stop);
  const cases = [
    mha('layer_first', 300, 101), mha('page_first', 300, 102), mha('page_first_direct', 300, 103),
    mla('layer_first', 40, 104, { rank: 0 }), mla('page_first', 40, 105, { rank: 0 }), mla('page_first_direct', 40, 106, { rank: 0 }),
    mha('page_first', 50, 107, { v1: false }),
  ];
  const written = await runHarness('write', r.endpoint, cases);
  written.forEach((w, i) => t.is(w.written, cases[i]!.pages, `written ${cases[i]!.layout}`));
  const existsBefore = r.sidecar.counters.byOp.LOOKUP ?? 0;
  // MLA pages are read by TP rank 1: same keys, no rank suffix.
  const read = await runHarness('read', r.endpoint, cases.map((c) => (c.mla ? { ...c, rank: 1 } : c)));
  read.forEach((x, i) => {
    const c = cases[i]!;
    const label = `${c.mla ? 'MLA' : 'MHA'} ${c.layout}${c.v1 === false ? ' generic' : ''}`;
    t.is(x.exists, c.pages, label);
    t.is(x.loaded, c.pages, label);
    t.true(x.bitwise as boolean, `${label}: bitwise round trip`);
    t.is(x.pages_equal, c.pages, label);
    t.true(x.untouched_zero as boolean, label);
    t.is(x.stats.get_hits, c.pages, label);
    t.is(x.stats.errors, 0, label);
  });
  // batch_exists is one LOOKUP round trip per batch of at most 128 pages (LOOKUP: tiers for load-or-recompute).
  const batches = cases.reduce((n, c) => n + Math.ceil(c.pages / 128), 0);
  t.is((r.sidecar.counters.byOp.LOOKUP ?? 0) - existsBefore, batches);
});

test('sglang - leading-hit counts, prefetch threshold, MHA rank isolation and the single MLA writer', async (t) => {
  const r = await startSidecar();
  t.teardown(r.stop);
  const cases = [
    mha('page_first', 300, 201, { write_pages: 200 }), // 128 + 72: the controller stops after the second batch
    mha('layer_first', 10, 202, { write_pages: 3, threshold: 64 }), // 3 pages = 48 tokens < 64: nothing loaded
    mha('page_first_direct', 20, 203, { tp_size: 2, rank: 0 }),
    mla('page_first', 20, 204, { rank: 1 }), // MLA rank 1 does not write
  ];
  const written = await runHarness('write', r.endpoint, cases);
  t.deepEqual(written.map((w) => w.written), [200, 3, 20, 20]);
  t.is(written[3]!.stats.set_stored, 0, 'MLA rank 1 sent nothing');
  const read = await runHarness('read', r.endpoint, [cases[0]!, cases[1]!, { ...cases[2]!, rank: 1 }, { ...cases[3]!, rank: 0 }]);
  t.deepEqual(read.map((x) => [x.exists, x.loaded]), [[200, 200], [3, 0], [0, 0], [0, 0]]);
  t.true(read[0]!.bitwise as boolean);
  t.true(read[0]!.untouched_zero as boolean);
  t.is(read[1]!.stats.get_pages, 0, 'below the threshold no page is read');
});

test('sglang - pages the sidecar refuses become False entries; the backup stops; nothing is raised', async (t) => {
  const r = await startSidecar({ maxBlockBytes: '8KiB' }); // a page here is 16 KiB
  t.teardown(r.stop);
  const [w] = await runHarness('write', r.endpoint, [mha('page_first', 300, 301)]);
  t.is(w!.written, 0);
  t.is(w!.stats.set_failed, 128, 'only the first batch was tried');
  t.true(w!.stats.errors > 0);
  const [x] = await runHarness('read', r.endpoint, [mha('page_first', 300, 301)]);
  t.deepEqual([x!.exists, x!.loaded], [0, 0]);
});

test('sglang - with the sidecar down every call answers False/0/None within its deadline, then fails fast', async (t) => {
  const endpoint = uniqueIpc(tempDir('kvstash-sglang-down-'));
  const deadline = 600;
  const [d] = await runHarness('down', endpoint, [mha('page_first', 8, 1, { sleep_s: 0 })], deadline, 120_000);
  const calls = Object.entries(d!).filter(([k]) => k.includes(':')) as [string, { ms: number; error: string | null; result: unknown }][];
  t.is(calls.length, 16);
  for (const [name, c] of calls) {
    t.is(c.error, null, name);
    t.true(c.ms < deadline + 1500, `${name} took ${c.ms} ms`); // slack for a loaded machine
    const res = c.result;
    const falsy = res === false || res === 0 || res === null || (Array.isArray(res) && res.every((x) => x === false || x === null));
    t.true(falsy, `${name} returned ${JSON.stringify(res)}`);
    if (name.startsWith('again:')) t.true(c.ms < deadline / 4, `${name} should fail fast, took ${c.ms} ms`);
  }
  t.true(d!.stats.fast_fails > 0);
});

test('sglang - the example extra-config loads the class the way the dynamic backend does', async (t) => {
  const cfgFile = path.join(repoRoot, 'examples', 'sglang', 'kvstash-hicache.json');
  const script = [
    'import importlib, json, sys, types',
    'cfg = json.load(open(sys.argv[1]))',
    'cls = getattr(importlib.import_module(cfg["module_path"]), cfg["class_name"])',
    'sc = types.SimpleNamespace(tp_rank=1, tp_size=2, is_mla_model=False, model_name="m", extra_config=cfg)',
    'b = cls(sc, cfg)',
    'print(json.dumps({"name": cfg["backend_name"], "v1": cfg["interface_v1"], "endpoint": b.endpoint, "timeout": b.timeout_ms, "desc": b.descriptor()}))',
    'b.close()',
  ].join('\n');
  const out = await new Promise<string>((resolve, reject) => {
    const p = spawn(python, ['-c', script, cfgFile], { env: { ...process.env, PYTHONPATH: path.join(repoRoot, 'adapters', 'python') } });
    let o = '';
    let e = '';
    const timer = setTimeout(() => { p.kill('SIGKILL'); reject(new Error('timed out')); }, 20_000);
    p.stdout.on('data', (d) => { o += d; });
    p.stderr.on('data', (d) => { e += d; });
    p.on('close', (code) => { clearTimeout(timer); if (code === 0) resolve(o); else reject(new Error(e)); });
  });
  const r = JSON.parse(out) as { name: string; v1: number; endpoint: string; timeout: number; desc: Record<string, unknown> };
  t.deepEqual([r.name, r.v1, r.endpoint, r.timeout], ['kvstash', 1, 'ipc:///tmp/kvstash.sock', 2000]);
  t.like(r.desc, { model: 'm', engine: 'sglang', tp_rank: 1, tp_size: 2, tenant: 'default' });
});

function runV2(req: Record<string, unknown>, deadlineMs = 60_000): Promise<Record<string, any>> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const script = path.join(repoRoot, 'test', 'integration', 'py', 'sglang_v2_harness.py');
  return new Promise((resolve, reject) => {
    const p = spawn(python, [script], { env: { ...process.env, PYTHONPATH: path.join(repoRoot, 'adapters', 'python') }, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => { p.kill('SIGKILL'); reject(new Error(`v2 harness passed its ${deadlineMs} ms deadline:\n${err}`)); }, deadlineMs);
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { err += d; });
    p.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`v2 harness exited ${code}:\n${err}`));
      resolve(JSON.parse(out) as Record<string, unknown>);
    });
    p.stdin.end(JSON.stringify(req));
  });
}

test('sglang - hybrid models: the v2 API moves KV, Mamba, sliding-window and indexer pools; hit policies shrink the prefix', async (t) => {
  const sc = await startSidecar();
  t.teardown(() => sc.stop());
  const w = await runV2({ mode: 'write', endpoint: sc.endpoint, seed: 5, pages: 6, window: 2 });
  t.deepEqual(w.set, { kv: Array(6).fill(true), mamba: [true], swa: [true, true], indexer: Array(6).fill(true) });
  const r = await runV2({ mode: 'read', endpoint: sc.endpoint, seed: 5, pages: 6, window: 2 });
  t.deepEqual(r.exists_full, [6, { kv: 6, mamba: 6, swa: 6, indexer: 6 }]);
  t.is(r.exists_longer[0], 6, 'a page more: the KV prefix stops at 6 and the state of page 6 serves it');
  t.deepEqual(r.exists_shorter, [0, { kv: 5 }], 'no Mamba state was saved at page 5: nothing is usable (later pools are not asked)');
  t.deepEqual(r.get, { kv: Array(6).fill(true), mamba: [true], swa: [true, true], indexer: Array(6).fill(true) });
  t.deepEqual(r.same, { kv: true, mamba: true, swa: true, indexer: true }, 'every pool reads back bit for bit');
});

test('sglang - no exception from a backend call reaches SGLang\'s thread: malformed calls answer their failure values', async (t) => {
  const sc = await startSidecar();
  t.teardown(() => sc.stop());
  const g = await runV2({ mode: 'guard', endpoint: sc.endpoint });
  t.true(g.done, 'the calling thread ran to its end');
  t.false(g.thread_alive_after);
  t.deepEqual(g.batch_get_v1, []);
  t.false(g.batch_set);
  t.deepEqual(g.batch_get_v2, { nosuchpool: [false] });
  t.deepEqual(g.batch_set_v2, { swa: [false] });
  t.is(g.batch_exists_v2, 0);
});
