/**
 * Folder janitor (--adopt-dir): a vLLM `fs`-tier folder and an SGLang `file`-backend folder laid out as those
 * engines write them; reads seen through inotify heat files; over budget the coldest files go, files of other
 * names (config, temp, foreign) and young files are never touched; the report says what was done.
 */
import test from 'ava';
import { existsSync, mkdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Publisher } from 'zeromq';
import { FolderJanitor, parseAdoptSpec } from '../../adapters/janitor/janitor.js';
import { VllmEventsPlugin } from '../../adapters/vllm/events-plugin.js';
import { loadConfig } from '../../connector/config.js';
import { Sidecar } from '../../connector/server/sidecar.js';
import { encodeEventBatch, encodeSeq, type KvEventBatch } from '../../protocol/vllm-events.js';
import { tempDir, uniqueIpc } from '../helpers/sidecar.js';

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function put(file: string, bytes: number, ageMs: number): void {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, Buffer.alloc(bytes, 1));
  const t = (Date.now() - ageMs) / 1000;
  utimesSync(file, t, t);
}

test.serial('janitor - vllm-fs folder: reads heat files, the coldest go over budget; other names and young files stay', async (t) => {
  const dir = tempDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const base = path.join(dir, 'org_model_0123456789ab_r0');
  const block = (i: number) => path.join(base, 'a1b', `2c_g0`, `a1b2c${String(i).padStart(59, '0')}.bin`);
  for (let i = 0; i < 6; i++) put(block(i), 1000, 3_600_000);
  const others = [path.join(dir, 'org_model_0123456789ab', 'config.json'), block(0) + '.tmp', path.join(dir, 'notes.txt'), path.join(base, 'a1b', '2c_g0', 'short.bin')];
  for (const f of others) put(f, 5000, 3_600_000);
  const j = new FolderJanitor({ ...parseAdoptSpec(`${dir}:vllm-fs`), budgetBytes: 1e12, minAgeMs: 30_000, scanMs: 3_600_000 });
  t.teardown(() => j.stop());
  await j.start();
  t.like(j.stats(), { files: 6, bytes: 6000, ignored: 4, evicted: 0 });
  // The engine reads blocks 0..2 (three times each): inotify sees it.
  for (let n = 0; n < 3; n++) for (let i = 0; i < 3; i++) readFileSync(block(i));
  await until(() => j.counters.accesses >= 9, 10_000, 'inotify access events');
  // A block written just now (the engine may still be writing it).
  put(block(6), 1000, 0);
  j.opts.budgetBytes = 3500;
  await j.scan();
  // Coldest first: the three unread blocks, then (the young block skipped) the least recently read hot one.
  for (let i = 3; i < 6; i++) t.false(existsSync(block(i)), `cold block ${i} evicted`);
  t.true(existsSync(block(6)), 'young block kept');
  t.false(existsSync(block(0)), 'the least recently read hot block goes last');
  for (let i = 1; i < 3; i++) t.true(existsSync(block(i)), `hot block ${i} kept`);
  for (const f of others) t.true(existsSync(f), `${path.relative(dir, f)} untouched`);
  const st = j.stats();
  t.like(st, { files: 3, bytes: 3000, evicted: 4, evictedBytes: 4000, unlinkErrors: 0 });
  t.true((st.skippedYoung as number) >= 1);
});

test.serial('janitor - vllm-fs folder without inotify: blocks vLLM reports stored (KV events over ZeroMQ) heat their files; the others go', async (t) => {
  const dir = tempDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // vLLM's fs tier names a file by its block hash's hex; the events carry the hash's last 8 bytes as an int.
  const hash = (i: number) => 'ab'.repeat(24) + (0x5eed0000n + BigInt(i)).toString(16).padStart(16, '0');
  const block = (i: number) => path.join(dir, 'org_model_0123456789ab_r0', hash(i).slice(0, 3), `${hash(i).slice(3, 5)}_g0`, `${hash(i)}.bin`);
  for (let i = 0; i < 6; i++) put(block(i), 1000, 3_600_000 - i * 1000); // block 0 oldest
  const events = uniqueIpc(dir);
  const pub = new Publisher();
  await pub.bind(events);
  t.teardown(() => pub.close());
  const config = loadConfig({ endpoints: [uniqueIpc(dir)], fileRoot: '', dramBytes: '16MiB', logLevel: 'silent' }, {});
  const j = new FolderJanitor({ ...parseAdoptSpec(`${dir}:vllm-fs`), budgetBytes: 1e12, minAgeMs: 30_000, scanMs: 3_600_000, watch: false });
  const sidecar = new Sidecar(config).use(new VllmEventsPlugin({ publishers: [{ endpoint: events }] })).use(j);
  await sidecar.start();
  t.teardown(() => sidecar.stop());
  t.like(j.stats(), { files: 6, eventAccesses: 0 });
  // The engine stores blocks 0..2 (GPU medium: computed or loaded), and a block the folder does not hold.
  const batch: KvEventBatch = {
    ts: Date.now() / 1000, data_parallel_rank: 0, events: [{
      type: 'BlockStored', block_hashes: [0, 1, 2, 99].map((i) => 0x5eed0000n + BigInt(i)), parent_block_hash: null, token_ids: Array.from({ length: 64 }, (_, i) => i),
      block_size: 16, lora_id: null, medium: 'GPU', lora_name: null, extra_keys: null, group_idx: 0, kv_cache_spec_kind: null, kv_cache_spec_sliding_window: null,
    }],
  };
  // A SUB joins a PUB asynchronously: publish (seq 0, 1, …) until the janitor has seen the three blocks.
  let seq = 0n;
  await until(() => {
    void pub.send(['', encodeSeq(seq++), encodeEventBatch(batch)]);
    return (j.counters.eventAccesses >= 3);
  }, 20_000, 'KV-event accesses');
  t.is(j.counters.eventAccesses % 3, 0, 'only the three blocks the folder holds');
  t.is(j.counters.accesses, 0, 'no inotify');
  j.opts.budgetBytes = 3500;
  await j.scan();
  for (let i = 0; i < 3; i++) t.true(existsSync(block(i)), `block ${i}, stored by the engine, kept`);
  for (let i = 3; i < 6; i++) t.false(existsSync(block(i)), `block ${i} evicted`);
  t.like(j.stats(), { files: 3, evicted: 3 });
});

test.serial('janitor - sglang-file folder and spec parsing', async (t) => {
  const dir = tempDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const f = (k: string) => path.join(dir, `${k}_Qwen-Qwen2.5-0.5B_0_1.bin`);
  for (const k of ['aa', 'bb', 'cc']) put(f(k), 2000, 3_600_000);
  put(path.join(dir, 'sub', 'x.bin'), 2000, 3_600_000); // not the layout: SGLang writes the folder flat
  const j = new FolderJanitor({ dir, layout: 'sglang-file', budgetBytes: 4000, minAgeMs: 1000, scanMs: 3_600_000 });
  t.teardown(() => j.stop());
  await j.start();
  t.like(j.stats(), { files: 2, bytes: 4000, evicted: 1, ignored: 1 });
  t.true(existsSync(path.join(dir, 'sub', 'x.bin')));
  for (const bad of ['relative/dir:vllm-fs', '/abs/dir:nope', '/abs/dir']) t.throws(() => parseAdoptSpec(bad), { message: /adoptDir: expected/ });
  t.deepEqual(parseAdoptSpec('/a/b:c:sglang-file'), { dir: '/a/b:c', layout: 'sglang-file' });
});
