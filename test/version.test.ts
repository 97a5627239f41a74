/** One version source: package.json's `version`; the CLI, HELLO's `server`, and the Python package all agree with it. */
import test from 'ava';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { SERVER_VERSION } from '../connector/server/sidecar.js';
import { VERSION } from '../connector/version.js';
import { repoRoot } from './helpers/sidecar.js';

const run = promisify(execFile);
const pkg = JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { version: string };
const py = process.env.KVSTASH_PYTHON || '/usr/bin/python3';

test('version - package.json is the source; VERSION and the HELLO server string carry it', (t) => {
  t.regex(pkg.version, /^\d+\.\d+\.\d+(-[\w.]+)?$/);
  t.is(VERSION, pkg.version);
  t.is(SERVER_VERSION, `kvstash/${pkg.version}`);
});

test('version - kvstash --version prints it', async (t) => {
  const r = await run(process.execPath, ['--import=tsx', path.join(repoRoot, 'cli', 'kvstash.ts'), '--version'], { cwd: repoRoot, timeout: 30_000 });
  t.is(r.stdout.trim(), pkg.version);
});

test('version - Python kvstash.__version__ equals it, and pyproject takes its version from there', async (t) => {
  const r = await run(py, ['-c', 'import kvstash; print(kvstash.__version__)'], { cwd: repoRoot, timeout: 30_000, env: { ...process.env, PYTHONPATH: path.join(repoRoot, 'adapters', 'python') } });
  t.is(r.stdout.trim(), pkg.version);
  const pyproject = readFileSync(path.join(repoRoot, 'adapters', 'python', 'pyproject.toml'), 'utf8');
  t.regex(pyproject, /dynamic = \["version"\]/);
  t.regex(pyproject, /version = \{ attr = "kvstash.__version__" \}/);
  t.notRegex(pyproject, /^version = "/m, 'no second literal version');
});
