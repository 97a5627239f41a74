/**
 * vLLM OffloadingConnector secondary tier: kvstash.vllm_offload driven as vLLM's tiering manager drives it
 * (test/integration/py/vllm_offload_harness.py), against `kvstash serve --vllm-offload` (a child process) that
 * reads and writes the rows of a stand-in primary-tier file itself. Bitwise round trips; blocks survive a sidecar
 * restart through the file tier; with the sidecar down, lookups miss and jobs fail without blocking; a path
 * outside the allowed prefixes is refused.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { KvstashClient } from '../../connector/client.js';
import { killAndWait, repoRoot, spawnSidecar, tempDir, uniqueIpc } from '../helpers/sidecar.js';

const run = promisify(execFile);
const python = process.env.KVSTASH_PYTHON || '/usr/bin/python3';
const harness = path.join(repoRoot, 'test/integration/py/vllm_offload_harness.py');

async function drive(endpoint: string, file: string, mode: string): Promise<Record<string, unknown>> {
  const { stdout } = await run(python, [harness, endpoint, file, mode], { timeout: 60_000 });
  return JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, unknown>;
}

test.serial('vllm offload - store, lookup and load are bitwise; blocks survive a sidecar restart; sidecar down fails jobs without blocking', async (t) => {
  const dir = tempDir();
  const file = `/dev/shm/vllm_offload_kvstash-test-${process.pid}.mmap`;
  t.teardown(() => {
    rmSync(dir, { recursive: true, force: true });
    rmSync(file, { force: true });
  });
  const endpoint = uniqueIpc(dir);
  const args = ['--endpoints', endpoint, '--file-root', path.join(dir, 'tier'), '--dram-bytes', '64MiB', '--vllm-offload', '/dev/shm/vllm_offload_'];
  const a = await spawnSidecar(args, {}, 90_000);
  t.teardown(() => killAndWait(a.proc));
  const first = await drive(endpoint, file, 'store');
  t.like(first, { store_ok: true, unknown_lookup: false, load_ok: true, bitwise: true, missing_load_ok: false });
  t.deepEqual(first.lookups, Array(8).fill(true));
  // The sidecar read the rows itself: its counters say so (no KV bytes were sent).
  const c = new KvstashClient(endpoint, { timeoutMs: 10_000 });
  const st = (await c.request({ op: 'OFFLOAD_STATS' })).header as unknown as { offload: Record<string, number> };
  c.close();
  t.like(st.offload, { rowsRead: 8, rowsWritten: 8 });
  await killAndWait(a.proc, 'SIGTERM');
  // A fresh sidecar on the same folder: the blocks come back from the file tier, checksum-verified.
  const b = await spawnSidecar(args, {}, 90_000);
  t.teardown(() => killAndWait(b.proc));
  const again = await drive(endpoint, file, 'reload');
  t.like(again, { load_ok: true, bitwise: true });
  t.deepEqual(again.lookups, Array(8).fill(true));
  await killAndWait(b.proc);
  const down = await drive(endpoint, file, 'down');
  t.like(down, { lookup: false, lookup2: false, store_ok: false, load_ok: false });
  for (const k of ['lookup_ms', 'lookup2_ms', 'store_ms', 'load_ms']) t.true((down[k] as number) < 100, `${k} = ${down[k]} ms`);
  t.true((down.jobs_failed_within_ms as number) < 1000);
});

test.serial('vllm offload - a primary-tier path outside the allowed prefixes is refused', async (t) => {
  const dir = tempDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const endpoint = uniqueIpc(dir);
  const sc = await spawnSidecar(['--endpoints', endpoint, '--file-root', '', '--vllm-offload', '/dev/shm/vllm_offload_'], {}, 90_000);
  t.teardown(() => killAndWait(sc.proc));
  const c = new KvstashClient(endpoint, { timeoutMs: 10_000 });
  t.teardown(() => c.close());
  const ns = { model: 'm', engine: 'vllm-offload', layout: 'x', tp_rank: 0, tp_size: 1, pp_rank: 0, pp_size: 1, tenant: 'default' };
  for (const p of ['/etc/passwd', '/dev/shm/vllm_offload_/../../etc/passwd']) {
    const err = await t.throwsAsync(c.request({ op: 'OFFLOAD_LOAD', path: p, row_stride: 4096, num_blocks: 1, namespace: ns, keys: [Buffer.from('k')], block_ids: [0] }));
    t.is((err as { code?: string }).code, 'KVS_PERMISSION_DENIED');
  }
});
