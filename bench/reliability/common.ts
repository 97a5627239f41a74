/**
 * Shared parts of the reliability suite (`npm run reliability`, bench/reliability/run.ts): a real `kvstash serve`
 * child process per attack (so its peak RSS, /proc VmHWM, is the attack's alone), deterministic block contents
 * (every served byte can be checked), and condition waits with hang guards.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { NamespaceDescriptor } from '../../protocol/wire.js';

export const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const MiB = 2 ** 20;

/** One line of the table. `lost`: acknowledged-and-durable data not readable afterwards (blocks). */
export interface Row {
  attack: string;
  count: number;
  wrongBytes: number;
  lost: number | '-';
  peakRssMiB: number;
  verdict: 'PASS' | 'FAIL' | 'SKIP';
  note: string;
}

export const NS: NamespaceDescriptor = {
  model: 'reliability/model', engine: 'vllm', layout: 'bf16;bs=16', tp_rank: 0, tp_size: 1, pp_rank: 0, pp_size: 1, tenant: 'default',
};

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function until(cond: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`no ${what} within ${ms} ms`);
    await sleep(20);
  }
}

export function tempDir(tag: string): string {
  return mkdtempSync(path.join(os.tmpdir(), `kvstash-rel-${tag}-`));
}

/** Deterministic 32-byte key number i of a seed. */
export function keyOf(seed: string, i: number): Buffer {
  return createHash('sha256').update(`${seed}/${i}`).digest();
}

/** Deterministic content of a block: derived from its key, so any served block can be checked byte by byte. */
export function blockFor(key: Buffer, size: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  let h = key;
  for (let off = 0; off < size; off += 32) {
    h.copy(b, off, 0, Math.min(32, size - off));
    if ((off & 4095) === 4064) h = createHash('sha256').update(h).digest();
  }
  return b;
}

/** Bytes that differ (a served block of the wrong length counts all its bytes). */
export function wrongBytes(got: Buffer, want: Buffer): number {
  if (got.length !== want.length) return Math.max(got.length, 1);
  if (got.equals(want)) return 0;
  let n = 0;
  for (let i = 0; i < got.length; i++) if (got[i] !== want[i]) n++;
  return n;
}

/** VmRSS and VmHWM (peak) of a process, MiB. */
export function rssOf(pid: number): { rss: number; peak: number } {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(s)?.[1] ?? 0);
    return { rss: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 };
  } catch {
    return { rss: 0, peak: 0 };
  }
}

export interface Served {
  proc: ChildProcess;
  pid: number;
  endpoint: string;
  out: () => string;
  waitFor: (re: RegExp, ms?: number) => Promise<RegExpExecArray>;
  /** SIGTERM (drains write-behind) and wait for the exit. */
  stop: () => Promise<void>;
  kill9: () => Promise<void>;
  peakMiB: () => number;
}

/** Start `kvstash serve` (through tsx) on an ipc endpoint in `dir`; resolves once it serves. */
export async function serve(dir: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Served> {
  const endpoint = `ipc://${path.join(dir, 'kvstash.sock')}`;
  const proc = spawn(process.execPath, ['--import=tsx', path.join(repo, 'cli', 'kvstash.ts'), 'serve', '--endpoints', endpoint,
    '--grpc', '', '--metrics', '', ...args], { cwd: repo, env: { ...process.env, KVSTASH_LOG_LEVEL: 'warn', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let peak = 0;
  proc.stdout!.on('data', (d) => { out += d; });
  proc.stderr!.on('data', (d) => { out += d; if (out.length > 1 << 20) out = out.slice(-(1 << 19)); });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const sampler = setInterval(() => { peak = Math.max(peak, rssOf(proc.pid!).peak); }, 200);
  sampler.unref();
  void exited.then(() => clearInterval(sampler));
  const waitFor = async (re: RegExp, ms = 120_000) => {
    const end = Date.now() + ms;
    for (;;) {
      const m = re.exec(out);
      if (m) return m;
      if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`sidecar exited:\n${out.slice(-4000)}`);
      if (Date.now() > end) throw new Error(`no ${re} from the sidecar within ${ms} ms:\n${out.slice(-4000)}`);
      await sleep(20);
    }
  };
  await waitFor(/index rebuilt from disk: \d+ blocks/);
  const gone = () => proc.exitCode !== null || proc.signalCode !== null;
  return {
    proc, pid: proc.pid!, endpoint, out: () => out, waitFor,
    stop: async () => { peak = Math.max(peak, rssOf(proc.pid!).peak); if (!gone()) proc.kill('SIGTERM'); await exited; },
    kill9: async () => { peak = Math.max(peak, rssOf(proc.pid!).peak); if (!gone()) proc.kill('SIGKILL'); await exited; },
    peakMiB: () => Math.max(peak, gone() ? 0 : rssOf(proc.pid!).peak),
  };
}

export function verdict(ok: boolean): 'PASS' | 'FAIL' {
  return ok ? 'PASS' : 'FAIL';
}

/** Fixed-seed PRNG (mulberry32), so a failing fuzz run can be replayed with the same RELIABILITY_SEED. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
