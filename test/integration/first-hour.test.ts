/**
 * The first hour of a new user, one command each (issue 10's friction list): every mistake gets a coded message
 * that names what was wrong and what to do, never a silent rc 0 or a library's internals.
 */
import test from 'ava';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { KvstashClient } from '../../connector/client.js';
import { blockHashes } from '../../connector/keys.js';
import { killAndWait, repoRoot, spawnSidecar, tempDir } from '../helpers/sidecar.js';

interface Result { code: number; stdout: string; stderr: string }
const CLI = path.join(repoRoot, 'cli', 'kvstash.ts');
const cli = (args: string[], env: NodeJS.ProcessEnv = {}): Promise<Result> => new Promise((resolve) => {
  execFile(process.execPath, ['--import=tsx', CLI, ...args], { cwd: repoRoot, timeout: 40_000, env: { ...process.env, KVSTASH_GRPC: '', ...env } },
    (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }));
});
/** `cmd | head -1`, without a shell: the reader closes its end after the first line. */
const firstLineOnly = (args: string[]): Promise<Result> => new Promise((resolve) => {
  const p = spawn(process.execPath, ['--import=tsx', CLI, ...args], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
  const timer = setTimeout(() => p.kill('SIGKILL'), 40_000);
  let stdout = '';
  let stderr = '';
  p.stdout.on('data', (d: Buffer) => { stdout += d; if (stdout.includes('\n')) p.stdout.destroy(); });
  p.stderr.on('data', (d: Buffer) => { stderr += d; });
  p.on('close', (code) => { clearTimeout(timer); resolve({ code: code ?? -1, stdout, stderr }); });
});

test.serial('first hour - serve: a bad endpoint, a taken port, a file root under a file; a missing root is created and said so', async (t) => {
  t.timeout(120_000);
  const dir = tempDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const base = ['serve', '--grpc', '', '--metrics', '', '--dram-bytes', '8MiB', '--file-bytes', '16MiB'];
  const proto = await cli([...base, '--endpoints', 'foo://bar', '--file-root', '']);
  t.is(proto.code, 2);
  t.regex(proto.stderr, /KVS_CONFIG: endpoints: "foo:\/\/bar" is not a ZeroMQ endpoint; expected tcp:\/\/host:port/);
  const notDir = await cli([...base, '--endpoints', 'tcp://127.0.0.1:0', '--file-root', '/etc/hostname/x']);
  t.is(notDir.code, 2);
  t.regex(notDir.stderr, /KVS_CONFIG: cannot mkdir \/etc\/hostname\/x\S* \(file tier folder, --file-root \/etc\/hostname\/x\): not a directory \(ENOTDIR\)/);
  t.notRegex(notDir.stderr, /ENOTDIR: ENOTDIR/);

  const root = path.join(dir, 'new', 'a', 'b');
  const s = await spawnSidecar(['--endpoints', 'tcp://127.0.0.1:0', '--file-root', root, '--dram-bytes', '8MiB', '--file-bytes', '16MiB'], {}, 60_000);
  t.teardown(() => killAndWait(s.proc));
  t.regex(s.output(), new RegExp(`file tier folder ${root.replace(/[/.]/g, '\\$&')} did not exist: created it`));
  const port = /tcp:\/\/127\.0\.0\.1:(\d+)/.exec(s.output())![1];
  const taken = await cli([...base, '--endpoints', `tcp://127.0.0.1:${port}`, '--file-root', '']);
  t.is(taken.code, 2, taken.stderr);
  t.regex(taken.stderr, new RegExp(`KVS_CONFIG: (data )?endpoint tcp://127\\.0\\.0\\.1:${port} is (already )?in use`));
});

test.serial('first hour - serve says it stopped and removes its ipc socket file', async (t) => {
  t.timeout(60_000);
  const dir = tempDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sockFile = path.join(dir, 'k.sock');
  const s = await spawnSidecar(['--endpoints', `ipc://${sockFile}`, '--file-root', '', '--dram-bytes', '8MiB'], {}, 60_000);
  t.teardown(() => killAndWait(s.proc));
  t.true(existsSync(sockFile));
  t.regex(s.output(), /logs: JSON lines on stderr/);
  const exited = new Promise<number | null>((resolve) => s.proc.once('close', (code) => resolve(code)));
  s.proc.kill('SIGINT');
  t.is(await exited, 0);
  t.regex(s.output(), /kvstash sidecar stopped \(SIGINT\)/);
  t.false(existsSync(sockFile), 'the ipc socket file is removed');
});

test.serial('first hour - unreachable control plane and data socket: the address and a hint to start serve or pass --grpc', async (t) => {
  t.timeout(60_000);
  const grpcDown = await cli(['stats', '--grpc', '127.0.0.1:1', '--timeout', '2000']);
  t.is(grpcDown.code, 1);
  t.regex(grpcDown.stderr, /cannot reach the kvstash control plane at 127\.0\.0\.1:1 .*Is `kvstash serve` running\?.*--grpc <host:port>/);
  t.notRegex(grpcDown.stderr, /Resolution note/);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kvstash-fh-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const dataDown = await cli(['stats', '--data-endpoint', `ipc://${dir}/none.sock`, '--timeout', '300']);
  t.is(dataDown.code, 1);
  t.regex(dataDown.stderr, /KVS_TIMEOUT: no reply from the data socket at ipc:\/\/\S+none\.sock within 300 ms: is `kvstash serve` listening there\?/);
});

test.serial('first hour - lookup: too few tokens say the block size; --engines refuses --grpc and explains a sidecar without the KV-events index', async (t) => {
  t.timeout(90_000);
  const dir = tempDir();
  const sock = `ipc://${path.join(dir, 'k.sock')}`;
  const s = await spawnSidecar(['--endpoints', sock, '--file-root', '', '--dram-bytes', '8MiB'], {}, 60_000);
  t.teardown(async () => { await killAndWait(s.proc); rmSync(dir, { recursive: true, force: true }); });
  const short = await cli(['lookup', '--data-endpoint', sock, '--tokens', '1,2,3']);
  t.is(short.code, 0, short.stderr);
  t.regex(short.stdout, /0 of 0 blocks \(0 tokens\) available — 3 tokens make 0 full blocks of 16 \(--block-size\); only full blocks are cached/);
  const grpcToo = await cli(['lookup', '--engines', '--tokens', '1,2,3', '--grpc', '127.0.0.1:5600']);
  t.is(grpcToo.code, 2);
  t.regex(grpcToo.stderr, /--engines asks the sidecar's data socket/);
  const off = await cli(['lookup', '--engines', '--tokens', '1,2,3', '--endpoint', sock]);
  t.is(off.code, 1);
  t.regex(off.stderr, /KVS_UNKNOWN_OP: the sidecar at .* runs without the KV-events index; start serve with --vllm-events/);
  // stats | head -1: the reader goes away after one line; no EPIPE stack trace
  const piped = await firstLineOnly(['stats', '--data-endpoint', sock]);
  t.notRegex(piped.stderr, /EPIPE|at .*\.js:\d+/);
  t.regex(piped.stdout, /^kvstash\//);
});

test.serial('first hour - pin / evict / clear with a mistyped model or tenant: KVS_NS_UNKNOWN, exit 3, naming the models that exist', async (t) => {
  t.timeout(120_000);
  const dir = tempDir();
  const sock = `ipc://${path.join(dir, 'k.sock')}`;
  const s = await spawnSidecar(['--endpoints', sock, '--file-root', '', '--dram-bytes', '8MiB', '--grpc', '127.0.0.1:0'], { KVSTASH_LOG_LEVEL: 'info' }, 60_000);
  t.teardown(async () => { await killAndWait(s.proc); rmSync(dir, { recursive: true, force: true }); });
  const grpc = (await s.waitFor(/"address":"(127\.0\.0\.1:\d+)"/))[1]!;
  const c = new KvstashClient(sock);
  t.teardown(() => c.close());
  const ns = await c.hello({ model: 'llama', engine: 'vllm', layout: 'default', tenant: 'default', tp_rank: 0, tp_size: 1, pp_rank: 0, pp_size: 1 });
  const keys = blockHashes(Array.from({ length: 32 }, (_, i) => i), 16);
  await c.put(ns, keys, keys.map(() => Buffer.alloc(64, 1)));

  const [pin, evict, clear, tenant, ok] = await Promise.all([
    cli(['pin', '--grpc', grpc, '--model', 'lama', '--tag', 'x']),
    cli(['evict', '--grpc', grpc, '--model', 'lama']),
    cli(['clear', '--grpc', grpc, '--model', 'lama', '--json']),
    cli(['clear', '--grpc', grpc, '--tenant', 'nobody']),
    cli(['evict', '--grpc', grpc, '--model', 'llama', '--json']),
  ]);
  for (const r of [pin, evict, clear]) {
    t.is(r.code, 3, r.stderr);
    t.regex(r.stderr, /KVS_NS_UNKNOWN: no namespace model "lama" .* is registered; known: llama \(vllm/);
  }
  t.is(JSON.parse(clear.stdout).error.code, 'KVS_NS_UNKNOWN');
  t.is(tenant.code, 3);
  t.regex(tenant.stderr, /KVS_NS_UNKNOWN: tenant "nobody" has no registered namespace/);
  t.is(ok.code, 0, ok.stderr);
  t.is(JSON.parse(ok.stdout).evicted, 2);
});

test.serial('first hour - watch says what it watches at once and that it stopped', async (t) => {
  t.timeout(60_000);
  const dir = tempDir();
  const s = await spawnSidecar(['--endpoints', `ipc://${path.join(dir, 'k.sock')}`, '--file-root', '', '--dram-bytes', '8MiB', '--grpc', '127.0.0.1:0'], { KVSTASH_LOG_LEVEL: 'info' }, 60_000);
  t.teardown(async () => { await killAndWait(s.proc); rmSync(dir, { recursive: true, force: true }); });
  const grpc = (await s.waitFor(/"address":"(127\.0\.0\.1:\d+)"/))[1]!;
  const w = spawn(process.execPath, ['--import=tsx', CLI, 'watch', '--grpc', grpc], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => killAndWait(w));
  let err = '';
  w.stderr.on('data', (d: Buffer) => { err += d; });
  const until = Date.now() + 30_000;
  while (!err.includes('Ctrl-C stops') && Date.now() < until && w.exitCode === null) await new Promise((r) => setTimeout(r, 50));
  t.regex(err, new RegExp(`watching tier events at ${grpc.replace(/\./g, '\\.')}; Ctrl-C stops`));
  const exited = new Promise<number | null>((resolve) => w.once('close', (code) => resolve(code)));
  w.kill('SIGINT');
  t.is(await exited, 0, err);
  t.regex(err, /watch stopped after 0 events/);
});
