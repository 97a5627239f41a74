/**
 * The npm package as a user gets it: `npm pack` (prepack builds dist/), install the tarball into an empty
 * project, run its `kvstash` command and import its public entries. Dependencies come from npm's cache when
 * it has them (`--prefer-offline`).
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { repoRoot, tempDir } from '../helpers/sidecar.js';

const run = promisify(execFile);
const npm = (args: string[], cwd: string) => run('npm', args, { cwd, timeout: 240_000, maxBuffer: 64 << 20, env: { ...process.env, npm_config_audit: 'false', npm_config_fund: 'false' } });
const version = (JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version;

test('package - npm pack ships dist/ and no tests; the installed tarball runs `kvstash --version` and exports the public entries', async (t) => {
  t.timeout(300_000);
  const dir = tempDir('kvstash-pack-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const packed = await npm(['pack', '--json', '--pack-destination', dir], repoRoot);
  const [info] = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('['))) as { filename: string; files: { path: string }[] }[];
  const files = info!.files.map((f) => f.path);
  t.true(files.includes('dist/cli/kvstash.js'), 'bin target is packed');
  t.true(files.includes('dist/connector/index.d.ts'), 'declarations are packed');
  t.true(files.includes('protocol/kvstash.proto'));
  t.deepEqual(files.filter((f) => /(^|\/)(test|\.ci|examples)\/|\.test\.|^dist\/bench\/|^dist\/test\//.test(f)), [], 'no tests, CI or benches');

  const app = path.join(dir, 'app');
  mkdirSync(app);
  writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', type: 'module', private: true }));
  await npm(['install', '--prefer-offline', '--no-package-lock', path.join(dir, info!.filename)], app);

  const bin = path.join(app, 'node_modules', '.bin', 'kvstash');
  const v = await run(bin, ['--version'], { cwd: app, timeout: 30_000 });
  t.is(v.stdout.trim(), version);
  const help = await run(bin, ['serve', '--help'], { cwd: app, timeout: 30_000 });
  t.regex(help.stdout, /--dram-bytes/);

  writeFileSync(path.join(app, 'use.mjs'), [
    "import { KvstashClient, ErrorCode, VERSION, Op } from 'kvstash';",
    "import { KvstashError } from 'kvstash/errors';",
    "import { PROTOCOL_VERSION } from 'kvstash/wire';",
    "import { driverConformance, defaultRegistry } from 'kvstash/driver';",
    "console.log(JSON.stringify({ client: typeof KvstashClient, code: ErrorCode.TIMEOUT, VERSION, op: typeof Op, err: typeof KvstashError, proto: PROTOCOL_VERSION, kit: typeof driverConformance, reg: typeof defaultRegistry }));",
  ].join('\n'));
  const used = await run(process.execPath, ['use.mjs'], { cwd: app, timeout: 30_000 });
  t.deepEqual(JSON.parse(used.stdout), { client: 'function', code: 'KVS_TIMEOUT', VERSION: version, op: 'object', err: 'function', proto: 1, kit: 'function', reg: 'function' });
});
