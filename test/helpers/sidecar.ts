/** Test helpers: a real sidecar in-process or as a child process, on unique ipc paths and temp folders. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { KvstashClient } from '../../connector/client.js';
import { loadConfig, type Config } from '../../connector/config.js';
import { Sidecar } from '../../connector/server/sidecar.js';
import type { NamespaceDescriptor } from '../../protocol/wire.js';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const fixturesDir = path.resolve(repoRoot, 'test', 'fixtures');

let counter = 0;
export function tempDir(prefix = 'kvstash-test-'): string {
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}
export function uniqueIpc(dir?: string): string {
  return `ipc://${path.join(dir ?? tempDir(), `s-${process.pid}-${counter++}.sock`)}`;
}

export const NS: NamespaceDescriptor = {
  model: 'test/model', engine: 'vllm', layout: 'bf16;bs=16;L=2;H=2;D=8;NHD', tp_rank: 0, tp_size: 1, pp_rank: 0, pp_size: 1, tenant: 'default',
};

export interface Running {
  sidecar: Sidecar;
  endpoint: string;
  dir: string;
  client: (timeoutMs?: number) => KvstashClient;
  stop: () => Promise<void>;
}

/** Start an in-process sidecar; `over` overrides settings (byte sizes as strings or numbers). */
export async function startSidecar(over: Record<string, unknown> = {}): Promise<Running> {
  const dir = tempDir();
  const endpoint = uniqueIpc(dir);
  const config: Config = loadConfig({ endpoints: [endpoint], fileRoot: path.join(dir, 'tier'), dramBytes: '64MiB', fileBytes: '256MiB', logLevel: 'silent', ...over }, {});
  const sidecar = new Sidecar(config);
  await sidecar.start();
  const clients: KvstashClient[] = [];
  return {
    sidecar, endpoint, dir,
    client: (timeoutMs = 5000) => {
      const c = new KvstashClient(endpoint, { timeoutMs });
      clients.push(c);
      return c;
    },
    stop: async () => {
      for (const c of clients) c.close();
      await sidecar.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Start `kvstash serve` as a child process (through tsx); resolves once it prints its endpoints. */
export interface SpawnedSidecar {
  proc: ChildProcess;
  output: () => string;
  /** Resolves with the first match of `re` in stdout+stderr (log lines on stderr may trail stdout), or rejects at the deadline. */
  waitFor: (re: RegExp, deadlineMs?: number) => Promise<RegExpExecArray>;
}

export function spawnSidecar(args: string[], env: NodeJS.ProcessEnv = {}, deadlineMs = 60_000): Promise<SpawnedSidecar> {
  // gRPC and metrics default to fixed loopback ports: off unless a test asks for them (later flags win).
  const proc = spawn(process.execPath, ['--import=tsx', path.join(repoRoot, 'cli', 'kvstash.ts'), 'serve', '--grpc', '', '--metrics', '', ...args], {
    cwd: repoRoot, env: { ...process.env, KVSTASH_LOG_LEVEL: 'warn', ...env }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout!.on('data', (d) => { out += d; });
  proc.stderr!.on('data', (d) => { out += d; });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error(`sidecar did not start within ${deadlineMs} ms:\n${out}`)); }, deadlineMs);
    proc.stdout!.on('data', () => {
      if (out.includes('index rebuilt from disk')) {
        clearTimeout(timer);
        const waitFor = async (re: RegExp, ms = 10_000): Promise<RegExpExecArray> => {
          const until = Date.now() + ms;
          for (;;) {
            const m = re.exec(out);
            if (m) return m;
            if (Date.now() > until) throw new Error(`no ${re} in the sidecar's output within ${ms} ms:\n${out}`);
            await new Promise((r) => setTimeout(r, 25));
          }
        };
        resolve({ proc, output: () => out, waitFor });
      }
    });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`sidecar exited with ${code}:\n${out}`)); });
  });
}

export function killAndWait(proc: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    proc.once('exit', () => resolve());
    proc.kill(signal);
  });
}

/** Deterministic block content derived from a key, so any served block can be checked. */
export function blockFor(key: Buffer, size: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  for (let off = 0; off < size; off += 32) key.copy(b, off, 0, Math.min(32, size - off));
  if (size >= 4) b.writeUInt32LE(size, 0);
  return b;
}
