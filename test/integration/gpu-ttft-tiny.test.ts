/**
 * bench/gpu-ttft.py's CPU smoke mode (--tiny), with the blocks inline and in a same-host arena file (--arena):
 * the real vLLM connector worker loads a toy model's prefix KV, bit for bit, and the suffix computed over it
 * matches the full prefill. Keeps the GPU bench runnable between the sessions that have a GPU.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { repoRoot } from '../helpers/sidecar.js';

const py = process.env.KVSTASH_PYTHON || '/usr/bin/python3';

function run(args: string[]): Promise<{ code: number | null; out: string }> {
  const p = spawn(py, [path.join(repoRoot, 'bench', 'gpu-ttft.py'), '--tiny', ...args], {
    cwd: repoRoot, env: { ...process.env, PYTHONPATH: path.join(repoRoot, 'adapters', 'python') },
  });
  let out = '';
  p.stdout.on('data', (d) => { out += d; });
  p.stderr.on('data', (d) => { out += d; });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { p.kill('SIGKILL'); reject(new Error(`gpu-ttft --tiny past its deadline:\n${out}`)); }, 180_000);
    p.on('close', (code) => { clearTimeout(timer); resolve({ code, out }); });
  });
}

for (const mode of [[], ['--arena']]) {
  test(`gpu-ttft - --tiny ${mode.join(' ') || '(inline blocks)'}: loads bit for bit and the TTFT table prints`, async (t) => {
    const r = await run(mode);
    t.is(r.code, 0, r.out);
    const rows = r.out.split('\n').filter((l) => /^\s+(64|128)\s+\d+/.test(l));
    t.is(rows.length, 2, r.out);
    t.true(rows.every((l) => l.trim().endsWith('yes')), r.out);
  });
}
