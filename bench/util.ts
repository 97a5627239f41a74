/** Shared helpers for the benchmarks: timing, percentiles, a table printer, child processes. */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export { formatTable, humanBytes } from '../connector/table.js';
export const here = path.dirname(fileURLToPath(import.meta.url));
export const quick = process.argv.includes('--quick');

export function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
}

export function median(xs: number[]): number {
  return pct(xs, 50);
}

/** Start a node script as a child process and wait until it prints `ready`. */
export function startChild(script: string, args: string[], readyRe: RegExp, env: NodeJS.ProcessEnv = {}): Promise<{ proc: ChildProcess; out: () => string }> {
  const proc = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, KVSTASH_LOG_LEVEL: 'warn', ...env } });
  let out = '';
  proc.stdout!.on('data', (d) => { out += d; });
  proc.stderr!.on('data', (d) => { out += d; });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error(`${script} did not start:\n${out}`)); }, 30_000);
    proc.stdout!.on('data', () => { if (readyRe.test(out)) { clearTimeout(timer); resolve({ proc, out: () => out }); } });
    proc.on('exit', (c) => { clearTimeout(timer); reject(new Error(`${script} exited ${c}:\n${out}`)); });
  });
}

export const ratio = (x: number, ceiling: number) => (ceiling > 0 ? (x / ceiling).toFixed(2) : 'n/a');
