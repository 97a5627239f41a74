/**
 * A sidecar stalled with SIGSTOP behind kvstash's vLLM scheduler connector: every lookup must come back (as
 * "0 tokens") within 50 ms, so the engine's scheduler loop never waits on a stuck cache. Measures the connector
 * as shipped (its lookup deadline is adapters/python/kvstash/vllm_scheduler.py's `lookup_timeout_ms`); this
 * suite does not tune it.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { repo, serve, tempDir, verdict, type Row } from './common.js';

const TARGET_MS = 50;

export async function sigstop(): Promise<Row> {
  const dir = tempDir('sigstop');
  const s = await serve(dir, ['--file-root', '', '--dram-bytes', '64MiB']);
  const py = process.env.KVSTASH_PYTHON || '/usr/bin/python3';
  const child = spawn(py, [path.join(repo, 'bench', 'reliability', 'scheduler_lookup.py'), s.endpoint, '40', '50'], {
    cwd: repo, env: { ...process.env, PYTHONPATH: path.join(repo, 'adapters', 'python') }, stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { err += d; });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const guard = setTimeout(() => child.kill('SIGKILL'), 120_000);
  try {
    while (!out.includes('ready')) {
      if (child.exitCode !== null) throw new Error(`scheduler driver exited: ${err.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    process.kill(s.pid, 'SIGSTOP');
    child.stdin.write('go\n');
    await exited;
  } finally {
    clearTimeout(guard);
    process.kill(s.pid, 'SIGCONT');
    await s.stop();
  }
  const res = JSON.parse(out.slice(out.indexOf('{'))) as { stalled_ms: number[]; warm_ms: number[]; lookup_timeout_ms: number; retry_interval_ms: number; failures: number };
  const sorted = [...res.stalled_ms].sort((a, b) => a - b);
  const max = sorted[sorted.length - 1]!;
  const over = sorted.filter((x) => x > TARGET_MS).length;
  return {
    attack: 'sidecar SIGSTOPped under the vLLM scheduler', count: sorted.length, wrongBytes: 0, lost: '-', peakRssMiB: s.peakMiB(),
    verdict: verdict(max <= TARGET_MS),
    note: `lookup answer p50 ${sorted[sorted.length >> 1]!.toFixed(1)} ms, max ${max.toFixed(1)} ms, ${over} over ${TARGET_MS} ms ` +
      `(connector lookup_timeout_ms ${res.lookup_timeout_ms}, retry_interval_ms ${res.retry_interval_ms}: ${res.failures} lookups hit the deadline, the rest skipped); ` +
      `before the stop: max ${Math.max(...res.warm_ms).toFixed(1)} ms`,
  };
}
