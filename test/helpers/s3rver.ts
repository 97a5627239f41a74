/**
 * A real s3rver PROCESS on a loopback port, for the S3 driver's tests and benchmarks (shared docs test-servers.md).
 * What s3rver does not do like AWS S3: it does not check signatures (only an unknown access key is refused), has no
 * conditional writes, and multipart ETags lack the "-N" suffix. Tests must not rely on any of that laxness.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';

const s3rverBin = path.join(path.dirname(createRequire(import.meta.url).resolve('s3rver/package.json')), 'bin', 's3rver.js');

export interface S3rverProcess {
  endpoint: string;
  port: number;
  dir: string;
  bucket: string;
  proc: ChildProcess;
  /** Driver config for this server (path-style, s3rver's credentials). */
  config: Record<string, unknown>;
  /** SIGKILL the server (data folder kept). */
  kill(): Promise<void>;
  /** Start it again on the same port and folder. */
  restart(): Promise<void>;
  /** Kill and remove the folder. */
  stop(): Promise<void>;
}

function launch(dir: string, port: number, bucket: string, extra: string[]): Promise<{ proc: ChildProcess; port: number }> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, ['--openssl-legacy-provider', s3rverBin, '-d', dir, '-a', '127.0.0.1', '-p', String(port), '--configure-bucket', bucket, ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    // A hang guard, not a timing check: a loaded machine may take far longer than the usual second to start node.
    const timer = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error(`s3rver did not start within 60 s: ${out}`)); }, 60_000);
    const onData = (b: Buffer) => {
      out += b.toString();
      const m = /listening on [^:]+:(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        proc.stdout!.off('data', onData);
        proc.stdout!.resume();
        proc.stderr!.resume();
        resolve({ proc, port: Number(m[1]) });
      }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', (b: Buffer) => { out += b.toString(); });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`s3rver exited with ${code}: ${out}`)); });
  });
}

function exited(p: ChildProcess): Promise<void> {
  return p.exitCode !== null || p.signalCode !== null ? Promise.resolve() : new Promise((r) => p.once('exit', () => r()));
}

export async function startS3rver(opts: { bucket?: string; port?: number; extraArgs?: string[] } = {}): Promise<S3rverProcess> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kvstash-s3rver-'));
  const bucket = opts.bucket ?? 'kvstash-test';
  const extra = opts.extraArgs ?? [];
  let { proc, port } = await launch(dir, opts.port ?? 0, bucket, extra);
  const s: S3rverProcess = {
    endpoint: `http://127.0.0.1:${port}`, port, dir, bucket, proc,
    config: { bucket, endpoint: `http://127.0.0.1:${port}`, forcePathStyle: true, region: 'us-east-1', accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    async kill() {
      proc.kill('SIGKILL');
      await exited(proc);
    },
    async restart() {
      await s.kill();
      for (let i = 0; ; i++) {
        try {
          ({ proc } = await launch(dir, port, bucket, extra));
          s.proc = proc;
          return;
        } catch (err) {
          if (i >= 20) throw err; // the port may linger a moment after the kill
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    },
    async stop() {
      await s.kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return s;
}
