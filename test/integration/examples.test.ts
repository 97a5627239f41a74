/** Examples run as tests: the Node quick start against a real sidecar. */
import test from 'ava';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { repoRoot, startSidecar } from '../helpers/sidecar.js';

test('examples - node-client quickstart stores, finds and verifies a prompt\'s blocks', async (t) => {
  const r = await startSidecar({ dramBytes: '64MiB' });
  t.teardown(r.stop);
  const { stdout } = await promisify(execFile)(process.execPath, ['--import=tsx', path.join(repoRoot, 'examples/node-client/quickstart.ts'), r.endpoint], { cwd: repoRoot, timeout: 30_000 });
  const out = JSON.parse(stdout.trim().split('\n').pop()!) as { hit_blocks: number; verified: boolean; stored: number[] };
  t.deepEqual(out.stored, [0, 0, 0, 0, 0, 0]);
  t.is(out.hit_blocks, 6);
  t.true(out.verified);
});

test('examples - the Python README\'s client example runs as written against a sidecar', async (t) => {
  const r = await startSidecar({ dramBytes: '64MiB' });
  t.teardown(r.stop);
  const readme = readFileSync(path.join(repoRoot, 'adapters', 'python', 'README.md'), 'utf8');
  const code = /```python\n([\s\S]*?)```/.exec(readme)?.[1];
  t.truthy(code, 'a python block in adapters/python/README.md');
  const py = process.env.KVSTASH_PYTHON || '/usr/bin/python3';
  const { stdout } = await promisify(execFile)(py, ['-c', code!], {
    cwd: repoRoot, timeout: 30_000, env: { ...process.env, PYTHONPATH: path.join(repoRoot, 'adapters', 'python'), KVSTASH_ENDPOINT: r.endpoint },
  });
  t.is(stdout.trim(), '6 True');
});
