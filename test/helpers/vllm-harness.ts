/**
 * Drives test/integration/py/vllm_harness.py (an emulated vLLM engine: scheduler process + worker processes with
 * real paged KV tensors, in vLLM's call order) and reads its RESULT line. Shared by the vllm-*.test.ts suites.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import { repoRoot } from './sidecar.js';

export const py = process.env.KVSTASH_PYTHON || '/usr/bin/python3';
export const harness = path.join(repoRoot, 'test', 'integration', 'py', 'vllm_harness.py');
export const BS = 16;

export interface Res { ext_tokens: number; local_tokens: number; async: boolean; load_errors: number; poisoned: number; lookup_step?: number }
export interface Ev { block_hashes: string[]; parent: string | null; token_ids: number[]; block_size: number; medium: string }
export interface Result {
  steps: number; results: Record<string, Res>; check: { mismatched_bytes: number; bad_loads: number };
  counters: Record<string, number>; events: Ev[]; lookup_s: number; max_step_s: number; elapsed_s: number;
  shutdown_s: number; scheduler_imported_torch: boolean;
  lookups: [number, boolean][]; take_events_max_s: number; scheduler_counters: Record<string, number>;
}

export const range = (a: number, n: number) => Array.from({ length: n }, (_, i) => a + i);
/** Deterministic pseudo-random tokens. */
export function tokens(seed: number, n: number): number[] {
  let x = seed * 2654435761 % 2 ** 32;
  return Array.from({ length: n }, () => (x = (x * 1103515245 + 12345) % 2 ** 31) % 32000);
}

export interface HarnessOpts { onPaused?: () => Promise<void>; deadlineMs?: number; expectFailure?: boolean }

/** Run one emulated engine. `expectFailure`: resolve with the stderr of a harness that exits non-zero. */
export function runHarness(scenario: Record<string, unknown>, opts: HarnessOpts = {}): Promise<Result> {
  return run(scenario, opts) as Promise<Result>;
}
export function runHarnessFailing(scenario: Record<string, unknown>, opts: HarnessOpts = {}): Promise<string> {
  return run(scenario, { ...opts, expectFailure: true }) as Promise<string>;
}

function run(scenario: Record<string, unknown>, opts: HarnessOpts): Promise<Result | string> {
  const proc = spawn(py, [harness], {
    cwd: repoRoot, env: { ...process.env, PYTHONPATH: path.join(repoRoot, 'adapters', 'python') }, stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stderr.on('data', (d) => { err += d; });
  // A generous lookup deadline: this suite runs many processes on 2 cores (the default is 50 ms).
  const extra = { lookup_timeout_ms: 3000, ...(scenario.extra as object | undefined) };
  proc.stdin.write(JSON.stringify({ layers: 4, block_size: BS, heads: 2, head_size: 32, num_blocks: 160, token_budget: 64, decode_steps: 2, dtype: 'bfloat16', ...scenario, extra }) + '\n');
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error(`harness past its deadline\n${out}\n${err}`)); }, opts.deadlineMs ?? 180_000);
    proc.stdout.on('data', (d) => {
      out += d;
      if (out.includes('"PAUSED"') && opts.onPaused) {
        const f = opts.onPaused;
        opts.onPaused = undefined;
        void f().then(() => proc.stdin.write('go\n'));
      }
    });
    proc.on('close', (code) => { // close, not exit: stdout may still hold the RESULT line at exit
      clearTimeout(timer);
      const last = out.trim().split('\n').pop() ?? '';
      if (opts.expectFailure) {
        if (code !== 0) resolve(err);
        else reject(new Error(`harness was expected to fail\n${out}\n${err}`));
      } else if (code !== 0 || !last.includes('"RESULT"')) reject(new Error(`harness exited ${code}\n${out}\n${err}`));
      else resolve(JSON.parse(last) as Result);
    });
  });
}

/** Tokens kvstash can supply for `p` given the saved sequences (full blocks, never the last token). */
export function expectedHit(p: number[], saved: number[][]): number {
  let lcp = 0;
  for (const s of saved) {
    let i = 0;
    while (i < p.length && i < s.length && p[i] === s[i]) i++;
    lcp = Math.max(lcp, i);
  }
  return Math.floor(Math.min(lcp, p.length - 1) / BS) * BS;
}

export function assertClean(t: ExecutionContext, r: Result): void {
  t.is(r.check.mismatched_bytes, 0, 'every byte of the KV cache is what it should be');
  t.is(r.check.bad_loads, 0, 'no load reported fine whose slots were wrong at wait_for_layer_load');
  t.false(r.scheduler_imported_torch, 'the scheduler side does not import torch');
}
