/** The `kvstash` CLI as a user runs it: serve prints where it listens, stats/lookup talk to it, exit codes. */
import test from 'ava';
import { execFile } from 'node:child_process';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { KvstashClient } from '../../connector/client.js';
import { blockHashes } from '../../connector/keys.js';
import { killAndWait, repoRoot, spawnSidecar, tempDir } from '../helpers/sidecar.js';

const run = promisify(execFile);
const cli = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  run(process.execPath, ['--import=tsx', path.join(repoRoot, 'cli', 'kvstash.ts'), ...args], { cwd: repoRoot, timeout: 120_000, env: { ...process.env, ...env } })
    .then((r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }))
    .catch((e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }));

test('cli - serve prints endpoints and tiers; lookup reports a stored prefix over the data socket', async (t) => {
  t.timeout(300_000);
  const dir = tempDir();
  const sock = `ipc://${path.join(dir, 'k.sock')}`;
  const s = await spawnSidecar(['--endpoints', `${sock},tcp://127.0.0.1:0`, '--file-root', path.join(dir, 'tier'), '--dram-bytes', '32MiB', '--file-bytes', '64MiB', '--grpc', '', '--metrics', '']);
  t.teardown(async () => { await killAndWait(s.proc); rmSync(dir, { recursive: true, force: true }); });
  t.regex(s.output(), /listening on ipc:\/\/.*k\.sock, tcp:\/\/127\.0\.0\.1:\d+/);
  t.regex(s.output(), /tiers: dram \(memory, 32\.0 MiB\) → file \(file, 64\.0 MiB\)/);

  const c = new KvstashClient(sock);
  t.teardown(() => c.close());
  const tokens = Array.from({ length: 64 }, (_, i) => i + 1);
  const ns = await c.hello({ model: 'cli-model', engine: 'vllm', layout: 'default', tenant: 'default', tp_rank: 0, tp_size: 1, pp_rank: 0, pp_size: 1 });
  const keys = blockHashes(tokens, 16);
  await c.put(ns, keys.slice(0, 3), keys.slice(0, 3).map(() => Buffer.alloc(100)));

  const r = await cli(['lookup', '--data-endpoint', sock, '--endpoint', sock, '--model', 'cli-model', '--tokens', tokens.join(','), '--json']);
  t.is(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { hit_blocks: number; hit_tokens: number };
  t.is(j.hit_blocks, 3);
  t.is(j.hit_tokens, 48);
});

test('cli - bad usage exits 2, an unreachable sidecar exits 1 with a coded message', async (t) => {
  t.timeout(300_000);
  const bad = await cli(['serve', '--policy', 'fifo', '--endpoints', 'ipc:///tmp/kvstash-never.sock']);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /KVS_CONFIG/);
  const unknown = await cli(['frobnicate']);
  t.is(unknown.code, 2);
  const down = await cli(['stats', '--data-endpoint', 'ipc:///tmp/kvstash-nobody-here.sock', '--timeout', '300']);
  t.is(down.code, 1);
  t.regex(down.stderr + down.stdout, /KVS_TIMEOUT|KVS_UNAVAILABLE/);
  const help = await cli(['serve', '--help']);
  t.is(help.code, 0);
  t.regex(help.stdout, /--dram-bytes/);
});

test('cli - lookup with a broken JSON token list is bad usage (exit 2, KVS_INVALID_ARGUMENT)', async (t) => {
  t.timeout(300_000);
  const r = await cli(['lookup', '--data-endpoint', 'ipc:///tmp/kvstash-nobody-here.sock', '--tokens', '[1,']);
  t.is(r.code, 2);
  t.regex(r.stderr, /KVS_INVALID_ARGUMENT/);
});

test('cli - config --markdown prints the settings table that docs/configuration.md embeds', async (t) => {
  const r = await cli(['config', '--markdown']);
  t.is(r.code, 0);
  const { readFileSync } = await import('node:fs');
  const doc = readFileSync(path.join(repoRoot, 'docs', 'configuration.md'), 'utf8');
  const table = r.stdout.trim();
  t.true(doc.includes(table), 'docs/configuration.md is out of date: paste `kvstash config --markdown` into it');
});
