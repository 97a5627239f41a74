/** The control-plane CLI as scripts use it: subprocesses against a live `kvstash serve` with auth on; exit codes and --json. */
import test from 'ava';
import { execFile } from 'node:child_process';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { blockHashes } from '../../connector/keys.js';
import { connectAuthenticated } from '../../connector/control/auth-client.js';
import { killAndWait, repoRoot, spawnSidecar, tempDir } from '../helpers/sidecar.js';

const OPS = 'ops-token-0123456789abcdef';
const TOK_A = 'tenant-a-token-0123456789';

interface Result { code: number; stdout: string; stderr: string }
const cli = (args: string[], env: NodeJS.ProcessEnv = {}): Promise<Result> => new Promise((resolve) => {
  execFile(process.execPath, ['--import=tsx', path.join(repoRoot, 'cli', 'kvstash.ts'), ...args], { cwd: repoRoot, timeout: 40_000, env: { ...process.env, KVSTASH_TOKEN: '', ...env } },
    (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }));
});

test('control cli - stats, lookup, pin, move, clear, evict, health over gRPC: exit codes 0/1/2/3 and --json', async (t) => {
  t.timeout(120_000);
  const dir = tempDir();
  const sock = `ipc://${path.join(dir, 'k.sock')}`;
  const s = await spawnSidecar(['--endpoints', sock, '--file-root', path.join(dir, 'tier'), '--dram-bytes', '32MiB', '--file-bytes', '64MiB', '--file-write-mode', 'back',
    '--grpc', '127.0.0.1:0', '--metrics', '', '--auth-tokens', JSON.stringify({ [OPS]: '*', [TOK_A]: ['a'] })], { KVSTASH_LOG_LEVEL: 'info' });
  t.teardown(async () => { await killAndWait(s.proc); rmSync(dir, { recursive: true, force: true }); });
  const grpc = (await s.waitFor(/"address":"(127\.0\.0\.1:\d+)","tls"/))[1];
  t.truthy(grpc, s.output());
  const a = await connectAuthenticated(sock, { token: TOK_A });
  t.teardown(() => a.client.close());
  const ns = await a.client.hello({ model: 'm', engine: 'vllm', layout: 'default', tenant: 'a', tp_rank: 0, tp_size: 1, pp_rank: 0, pp_size: 1 });
  const tokens = Array.from({ length: 16 * 40 }, (_, i) => i);
  const keys = blockHashes(tokens, 16);
  await a.client.put(ns, keys, keys.map(() => Buffer.alloc(2048, 7)));
  const g = ['--grpc', grpc!];
  const sel = ['--model', 'm', '--tenant', 'a'];
  const toks = ['--tokens', tokens.slice(0, 160).join(',')];

  const [stats, statsHuman, look, denied, anon, health, down] = await Promise.all([
    cli(['stats', ...g, '--json', '--token', OPS]),
    cli(['stats', ...g], { KVSTASH_TOKEN: OPS }),
    cli(['lookup', ...g, ...sel, ...toks, '--json', '--token', TOK_A]),
    cli(['lookup', ...g, '--model', 'm', '--tenant', 'b', ...toks, '--json', '--token', TOK_A]),
    cli(['stats', ...g, '--json']),
    cli(['health', ...g, '--json', '--token', OPS]),
    cli(['health', '--grpc', '127.0.0.1:1', '--timeout', '1000', '--token', OPS]),
  ]);
  t.is(stats.code, 0, stats.stderr);
  const st = JSON.parse(stats.stdout);
  t.is(st.blocks, 40);
  t.deepEqual(st.tiers.map((x: { name: string }) => x.name), ['dram', 'file']);
  t.is(statsHuman.code, 0, statsHuman.stderr);
  t.regex(statsHuman.stdout, /tier\s+medium\s+bytes/);
  t.regex(statsHuman.stdout, /dram\s+CPU\s+80\.0 KiB/);
  t.is(look.code, 0, look.stderr);
  t.like(JSON.parse(look.stdout), { namespace: ns, blocks: 10, hit_blocks: 10, hit_tokens: 160, tiers: { dram: 10, file: 0 } });
  t.is(denied.code, 3, denied.stderr);
  t.is(JSON.parse(denied.stdout).error.code, 'KVS_PERMISSION_DENIED');
  t.regex(denied.stderr, /kvstash: KVS_PERMISSION_DENIED/);
  t.is(anon.code, 3);
  t.is(JSON.parse(anon.stdout).error.code, 'KVS_UNAUTHENTICATED');
  t.is(health.code, 0, health.stderr);
  t.is(JSON.parse(health.stdout).status, 'SERVING');
  t.is(down.code, 1);
  t.regex(down.stderr, /KVS_UNAVAILABLE|KVS_TIMEOUT/);

  const [pin, noTag, badTier] = await Promise.all([
    cli(['pin', ...g, ...sel, ...toks, '--tag', 'session:1', '--json', '--token', TOK_A]),
    cli(['pin', ...g, ...sel, '--token', TOK_A]),
    cli(['evict', ...g, '--tenant', 'a', '--tier', 'tape', '--token', OPS]),
  ]);
  t.is(pin.code, 0, pin.stderr);
  t.like(JSON.parse(pin.stdout), { pinned: 10, missing: 0, added_bytes: 10 * 2048 });
  t.is(noTag.code, 2);
  t.regex(noTag.stderr, /--tag/);
  t.is(badTier.code, 2);
  t.regex(badTier.stderr, /KVS_INVALID_ARGUMENT: unknown tier "tape"/);

  const move = await cli(['move', ...g, ...sel, '--to', 'file', '--json', '--token', TOK_A]);
  t.is(move.code, 0, move.stderr);
  t.like(JSON.parse(move.stdout), { total: 40, done: 40, changed: 30, skipped: 10, failed: 0, finished: true });
  const clear = await cli(['clear', ...g, '--tenant', 'a', '--json', '--token', OPS]);
  t.is(clear.code, 0, clear.stderr);
  t.like(JSON.parse(clear.stdout), { total: 40, changed: 30, skipped: 10, finished: true });
  t.is((await a.client.exists(ns, keys)).prefix, 10, 'only the pinned prefix is left');
});
