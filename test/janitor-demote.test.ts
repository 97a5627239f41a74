/**
 * Folder janitor with demotion (--adopt-demote): real files in an SGLang `file`-backend folder and a vLLM `fs`-tier
 * folder, the real file driver (and the real S3 driver against a real s3rver process) as the target. Files eviction
 * picks go to the target and come back byte-exact; a restore whose stored bytes fail their checksum is refused with
 * KVS_CHECKSUM and writes nothing; the folder stays within its budget; a restarted janitor finds the demoted files
 * again from the target's own listing; the sidecar op, STATS, metrics and the `kvstash adopt` CLI expose it.
 * Runs without inotify (`watch: false`): heat comes from the files' mtimes, so the oldest files are the coldest.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { janitorExtension } from '../adapters/janitor/cli-extension.js';
import { parseDemoteSpec, type DemoteSpec } from '../adapters/janitor/demote.js';
import { FolderJanitor } from '../adapters/janitor/janitor.js';
import { KvstashClient } from '../connector/client.js';
import { loadConfig } from '../connector/config.js';
import { logger } from '../connector/log.js';
import { AccessPolicy } from '../connector/control/auth.js';
import { connectAuthenticated } from '../connector/control/auth-client.js';
import { DataAuthPlugin } from '../connector/control/data-auth.js';
import { MetricsPlugin } from '../connector/control/metrics.js';
import { Sidecar, type SidecarPlugin } from '../connector/server/sidecar.js';
import { ErrorCode, KvstashError } from '../protocol/errors.js';
import { startS3rver } from './helpers/s3rver.js';
import { repoRoot, tempDir, uniqueIpc } from './helpers/sidecar.js';

const KB = 1024;

/** Write `n` files of `size` random bytes, file i older than file i+1 (so colder). Returns name → bytes. */
function fill(dir: string, name: (i: number) => string, n: number, size: number): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (let i = 0; i < n; i++) {
    const rel = name(i);
    const abs = path.join(dir, rel);
    mkdirSync(path.dirname(abs), { recursive: true });
    const bytes = randomBytes(size);
    writeFileSync(abs, bytes);
    const t = (Date.now() - (n - i) * 3_600_000) / 1000;
    utimesSync(abs, t, t);
    out.set(rel, bytes);
  }
  return out;
}

function folderBytes(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { recursive: true, withFileTypes: true })) if (e.isFile()) n += readFileSync(path.join(e.parentPath, e.name)).length;
  return n;
}

const sglang = (i: number) => `${(i * 7919).toString(16).padStart(64, '0')}_Qwen-Qwen2.5-0.5B_0_1.bin`;

function setup(t: { teardown: (f: () => unknown) => void }) {
  const dir = tempDir('kvstash-adopt-');
  const root = tempDir('kvstash-demote-');
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }); rmSync(root, { recursive: true, force: true }); });
  return { dir, root, spec: parseDemoteSpec(JSON.stringify({ driver: 'file', root })) };
}

const quiet = logger('janitor');
quiet.level = 'silent';

function janitor(dir: string, spec: DemoteSpec, budgetBytes: number, layout = 'sglang-file'): FolderJanitor {
  return new FolderJanitor({ dir, layout, budgetBytes, minAgeMs: 60_000, scanMs: 3_600_000, watch: false, demote: spec, log: quiet });
}

test('janitor demote - evicted files go to the file driver and come back byte-exact; the budget is kept', async (t) => {
  const { dir, spec } = setup(t);
  const files = fill(dir, sglang, 8, 64 * KB);
  writeFileSync(path.join(dir, 'engine.tmp'), 'not the layout'); // never touched
  const j = janitor(dir, spec, 3 * 64 * KB);
  t.teardown(() => j.stop());
  await j.start();
  const names = [...files.keys()];
  // The five oldest went to the target, the three newest stay; the folder is within budget.
  for (const [i, rel] of names.entries()) t.is(existsSync(path.join(dir, rel)), i >= 5, rel);
  t.true(existsSync(path.join(dir, 'engine.tmp')));
  t.true(folderBytes(dir) - 'not the layout'.length <= 3 * 64 * KB);
  t.like(j.stats(), { files: 3, evicted: 0, demote: { demoted: 5, demotedBytes: 5 * 64 * KB, demotedFiles: 5, refused: 0 } });
  // Restore one by its name in the folder, then the rest.
  const r1 = await j.restore([names[2]!]);
  t.deepEqual(r1.map((r) => [r.file, r.status, r.bytes]), [[names[2], 'restored', 64 * KB]]);
  t.true(readFileSync(path.join(dir, names[2]!)).equals(files.get(names[2]!)!));
  const rest = await j.restore();
  t.deepEqual(rest.map((r) => r.file).sort(), [names[0], names[1], names[3], names[4]].sort());
  for (const [rel, bytes] of files) t.true(readFileSync(path.join(dir, rel)).equals(bytes), `${rel} byte-exact`);
  t.like(j.target!.stats(), { demotedFiles: 0, restored: 5, restoredBytes: 5 * 64 * KB });
  t.deepEqual(readdirSync(dir).filter((n) => n.includes('kvstash-restore')), [], 'no temp files left');
  // Over budget again: the next scan demotes the oldest again (restored files are young: minAgeMs keeps them).
  j.opts.minAgeMs = 0;
  await j.scan();
  t.true(folderBytes(dir) - 'not the layout'.length <= 3 * 64 * KB);
  t.is(j.target!.demoted.size, 5);
});

test('janitor demote - a restore whose bytes fail their checksum is refused (KVS_CHECKSUM) and writes nothing', async (t) => {
  const { dir, root, spec } = setup(t);
  const files = fill(dir, sglang, 3, 16 * KB);
  const j = janitor(dir, spec, 16 * KB);
  t.teardown(() => j.stop());
  await j.start();
  const [a, b, c] = [...files.keys()];
  t.false(existsSync(path.join(dir, a!)));
  // Flip the last byte of a's stored value in the file driver's block file.
  const key = j.target!.keyOf(a!);
  const [ns, hash] = key.split('/') as [string, string];
  const block = path.join(root, 'v1', ns, hash.slice(0, 2), `${hash}.kvb`);
  const raw = readFileSync(block);
  raw[raw.length - 1]! ^= 0xff;
  writeFileSync(block, raw);
  const err = await t.throwsAsync(j.restore([a!]), { instanceOf: KvstashError });
  t.is(err?.code, ErrorCode.CHECKSUM);
  t.false(existsSync(path.join(dir, a!)), 'nothing written');
  t.deepEqual(readdirSync(dir), [c], 'no temp or partial file');
  t.true(j.target!.demoted.has(key), 'the bad copy stays in the target for inspection');
  // Restoring all: the good file comes back, the bad one is refused, the error says so.
  const err2 = await t.throwsAsync(j.restore(), { instanceOf: KvstashError });
  t.is(err2?.code, ErrorCode.CHECKSUM);
  t.true(readFileSync(path.join(dir, b!)).equals(files.get(b!)!));
  t.false(existsSync(path.join(dir, a!)));
  t.like(j.target!.counters, { refused: 2, restored: 1 });
  // A name outside the layout is a bad field, not a restore.
  await t.throwsAsync(j.restore(['../escape.bin']), { code: ErrorCode.BAD_FIELD });
});

test('janitor demote - a restarted janitor finds the demoted files again from the target listing (vllm-fs layout)', async (t) => {
  const { dir, spec } = setup(t);
  const vllm = (i: number) => `org_model_0123456789ab_r0/a1b/2c_g0/a1b2c${String(i).padStart(59, '0')}.bin`;
  const files = fill(dir, vllm, 6, 32 * KB);
  const a = janitor(dir, spec, 2 * 32 * KB, 'vllm-fs');
  await a.start();
  t.is(a.target!.demoted.size, 4);
  await a.stop();
  const b = janitor(dir, spec, 2 * 32 * KB, 'vllm-fs');
  t.teardown(() => b.stop());
  await b.start();
  t.like(b.stats(), { files: 2, demote: { demotedFiles: 4, demoted: 0 } });
  const back = await b.restore();
  t.is(back.length, 4);
  for (const [rel, bytes] of files) t.true(readFileSync(path.join(dir, rel)).equals(bytes), `${rel} byte-exact`);
  // Another folder (another namespace) in the same target sees none of them.
  const other = tempDir('kvstash-adopt-');
  t.teardown(() => rmSync(other, { recursive: true, force: true }));
  const c = janitor(other, spec, 1e9, 'vllm-fs');
  t.teardown(() => c.stop());
  await c.start();
  t.is(c.target!.demoted.size, 0);
});

test('janitor demote - S3 target (real s3rver): demote, restart, restore byte-exact', async (t) => {
  const s3 = await startS3rver();
  t.teardown(() => s3.stop());
  const dir = tempDir('kvstash-adopt-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const spec = parseDemoteSpec({ driver: 's3', ...s3.config });
  const files = fill(dir, sglang, 5, 48 * KB);
  const a = janitor(dir, spec, 2 * 48 * KB);
  await a.start();
  t.like(a.target!.counters, { demoted: 3, demoteErrors: 0 });
  await a.stop();
  const b = janitor(dir, spec, 2 * 48 * KB);
  t.teardown(() => b.stop());
  await b.start();
  t.is(b.target!.demoted.size, 3);
  await b.restore();
  for (const [rel, bytes] of files) t.true(readFileSync(path.join(dir, rel)).equals(bytes), `${rel} byte-exact`);
  t.is(b.target!.demoted.size, 0);
});

function runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import=tsx', path.join(repoRoot, 'cli', 'kvstash.ts'), ...args], { cwd: repoRoot, timeout: 60_000, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

/** A sidecar (ipc data socket, DRAM + file tiers in a temp folder) with `plugins`, then the janitor; stopped at teardown. */
async function sidecarWith(t: { teardown: (f: () => unknown) => void }, j: FolderJanitor, ...plugins: SidecarPlugin[]): Promise<string> {
  const side = tempDir();
  t.teardown(() => rmSync(side, { recursive: true, force: true }));
  const endpoint = uniqueIpc(side);
  const config = loadConfig({ endpoints: [endpoint], fileRoot: path.join(side, 'tier'), dramBytes: '16MiB', fileBytes: '64MiB', logLevel: 'silent' }, {});
  const sidecar = new Sidecar(config);
  for (const p of plugins) sidecar.use(p);
  await sidecar.use(j).start();
  t.teardown(() => sidecar.stop());
  return endpoint;
}

test('janitor demote - in a sidecar: ADOPT_RESTORE op, STATS adopt rows, kvstash_adopt_* metrics, `kvstash adopt` CLI', async (t) => {
  const { dir, spec } = setup(t);
  const files = fill(dir, sglang, 4, 8 * KB);
  const metrics = new MetricsPlugin({ address: '127.0.0.1:0', topNamespaces: 4 });
  const endpoint = await sidecarWith(t, janitor(dir, spec, 8 * KB), metrics);
  const c = new KvstashClient(endpoint, { timeoutMs: 10_000 });
  t.teardown(() => c.close());
  const st = await c.stats();
  t.like((st.adopt as { values: Record<string, number> }[])[0]!.values, { demoted: 3, demoted_files: 3, files: 1, restored: 0, refused: 0 });
  const body = await (await fetch(`http://${metrics.address}/metrics`)).text();
  t.regex(body, /kvstash_adopt_demoted_total\{instance="[^"]+"\} 3/);
  t.regex(body, /kvstash_adopt_demoted_files\{instance="[^"]+"\} 3/);
  const names = [...files.keys()];
  const r = (await c.request({ op: 'ADOPT_RESTORE', keys: [names[0]] })).header;
  t.is((r.restored as { status: string }[])[0]!.status, 'restored');
  t.true(readFileSync(path.join(dir, names[0]!)).equals(files.get(names[0]!)!));
  // The CLI, as a child process with a deadline.
  const stats = await runCli(['adopt', 'stats', '--endpoint', endpoint, '--json']);
  t.is(stats.code, 0, stats.stderr);
  t.like((JSON.parse(stats.stdout) as { demote: Record<string, number> }[])[0]!.demote, { demotedFiles: 2, restored: 1 });
  const rest = await runCli(['adopt', 'restore', dir, '--keys', `${names[1]},${names[2]}`, '--endpoint', endpoint, '--json']);
  t.is(rest.code, 0, rest.stderr);
  t.is((JSON.parse(rest.stdout) as { restored: unknown[] }).restored.length, 2);
  for (const rel of names) t.true(readFileSync(path.join(dir, rel)).equals(files.get(rel)!), `${rel} byte-exact`);
  const missing = await runCli(['adopt', 'restore', path.join(dir, 'nope'), '--endpoint', endpoint]);
  t.is(missing.code, 3, missing.stderr);
  t.regex(missing.stderr, /KVS_NOT_FOUND/);
});

test('janitor demote - with data-socket auth, ADOPT_RESTORE is for operators only (tenants "*"); `kvstash adopt restore --token`', async (t) => {
  const { dir, spec } = setup(t);
  const files = fill(dir, sglang, 3, 8 * KB);
  const OPS = 'token-ops-0123456789abcdef';
  const TENANT = 'token-a-0123456789abcdef';
  const auth = await DataAuthPlugin.create({ policy: new AccessPolicy({ [OPS]: '*', [TENANT]: ['a'] }), curveSecretKey: undefined });
  const endpoint = await sidecarWith(t, janitor(dir, spec, 8 * KB), auth);
  const names = [...files.keys()];
  t.false(existsSync(path.join(dir, names[0]!)), 'demoted');
  const tenant = (await connectAuthenticated(endpoint, { token: TENANT }, { timeoutMs: 10_000 })).client;
  t.teardown(() => tenant.close());
  const refused = await t.throwsAsync(tenant.request({ op: 'ADOPT_RESTORE', keys: [names[0]] }));
  t.is((refused as KvstashError).code, ErrorCode.PERMISSION_DENIED);
  t.false(existsSync(path.join(dir, names[0]!)), 'a tenant principal restored nothing');
  t.truthy((await tenant.request({ op: 'ADOPT_STATS' })).header.adopt, 'ADOPT_STATS stays open to any authenticated principal');
  const noAuth = await runCli(['adopt', 'restore', dir, '--keys', names[0]!, '--endpoint', endpoint]);
  t.is(noAuth.code, 1, noAuth.stderr);
  t.regex(noAuth.stderr, /KVS_UNAUTHENTICATED/);
  const asTenant = await runCli(['adopt', 'restore', dir, '--keys', names[0]!, '--endpoint', endpoint, '--token', TENANT]);
  t.regex(asTenant.stderr, /KVS_PERMISSION_DENIED/);
  const asOps = await runCli(['adopt', 'restore', dir, '--keys', names[0]!, '--endpoint', endpoint, '--token', OPS, '--json']);
  t.is(asOps.code, 0, asOps.stderr);
  t.is((JSON.parse(asOps.stdout) as { restored: { status: string }[] }).restored[0]!.status, 'restored');
  t.true(readFileSync(path.join(dir, names[0]!)).equals(files.get(names[0]!)!));
});

test('janitor demote - a target that fails its puts keeps the files (counted); bad specs are KVS_CONFIG', async (t) => {
  const { dir, root, spec } = setup(t);
  const files = fill(dir, sglang, 3, 8 * KB);
  const j = janitor(dir, spec, 1e9);
  t.teardown(() => j.stop());
  await j.start();
  // The driver's temp folder becomes a plain file: every put now fails with ENOTDIR.
  rmSync(path.join(root, 'tmp'), { recursive: true, force: true });
  writeFileSync(path.join(root, 'tmp'), 'in the way');
  j.opts.budgetBytes = 8 * KB;
  await j.scan();
  for (const [rel, bytes] of files) t.true(readFileSync(path.join(dir, rel)).equals(bytes), `${rel} kept`);
  t.like(j.target!.counters, { demoted: 0, demoteErrors: 1 });
  t.is(j.target!.demoted.size, 0);
  // Once the target works again, the next scan demotes.
  rmSync(path.join(root, 'tmp'));
  mkdirSync(path.join(root, 'tmp'));
  await j.scan();
  t.like(j.target!.counters, { demoted: 2 });
  t.is(await j.target!.demote(sglang(99)), 'gone', 'a file the engine removed meanwhile is no error');
  t.like(j.target!.counters, { demoted: 2, demoteErrors: 1 });
  for (const bad of ['{"driver":"nope"}', 'not json', '{"driver":"file"}', '{"driver":"file","root":"/x","ns":"XYZ"}', '[1]']) {
    t.throws(() => parseDemoteSpec(bad), { code: ErrorCode.CONFIG }, bad);
  }
});

test('janitor demote - settings: KVSTASH_ADOPT_DEMOTE (JSON) and --adopt-watch reach the janitors', async (t) => {
  const { dir, root } = setup(t);
  const env = { KVSTASH_ADOPT_DIR: `${dir}:sglang-file`, KVSTASH_ADOPT_DEMOTE: JSON.stringify({ driver: 'file', root }), KVSTASH_ADOPT_WATCH: 'false' };
  const config = loadConfig({}, env, undefined, janitorExtension.settings);
  const [j, ...more] = (await janitorExtension.plugins!(config)) as FolderJanitor[];
  t.is(more.length, 0);
  t.like(j!.opts, { dir, layout: 'sglang-file', watch: false, demote: { driver: 'file', config: { root } } });
  t.is(j!.target!.driver.name, 'file');
  const off = loadConfig({}, { KVSTASH_ADOPT_DIR: `${dir}:sglang-file` }, undefined, janitorExtension.settings);
  t.is(((await janitorExtension.plugins!(off)) as FolderJanitor[])[0]!.target, undefined);
});

test('janitor demote - a file over the target driver\'s maxValueBytes stays; the round goes on with the next ones', async (t) => {
  const { dir, root } = setup(t);
  const spec = parseDemoteSpec({ driver: 'file', root, maxValueBytes: 16 * KB });
  const big = fill(dir, (i) => `big${i}_m.bin`, 1, 32 * KB);
  const small = fill(dir, sglang, 2, 8 * KB);
  utimesSync(path.join(dir, 'big0_m.bin'), (Date.now() - 86_400_000) / 1000, (Date.now() - 86_400_000) / 1000); // the coldest
  const j = janitor(dir, spec, 8 * KB);
  t.teardown(() => j.stop());
  await j.start();
  t.true(existsSync(path.join(dir, 'big0_m.bin')));
  for (const rel of small.keys()) t.false(existsSync(path.join(dir, rel)), `${rel} demoted`);
  t.like(j.target!.counters, { demoted: 2, demoteErrors: 1 });
  t.is(big.size, 1);
});
