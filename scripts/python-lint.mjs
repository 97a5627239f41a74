#!/usr/bin/env node
// Python gates, run by `npm test` (`npm run lint:py`): flake8's pyflakes checks (F: unused imports, undefined
// names, …; E9: syntax errors) over every Python file in the repo, and mypy over the `kvstash` package
// (settings in adapters/python/pyproject.toml). Both come from Debian (flake8, mypy), installed idempotently by
// scripts/test-prereqs.mjs and run on Debian's /usr/bin/python3 (KVSTASH_PYTHON overrides it).
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const py = process.env.KVSTASH_PYTHON || '/usr/bin/python3';
const steps = [
  { what: 'flake8', args: ['-m', 'flake8', '--select=F,E9', '--exclude=node_modules,dist,dist-bench,.kvstash-test', '.'], cwd: root },
  { what: 'mypy', args: ['-m', 'mypy'], cwd: path.join(root, 'adapters', 'python') },
];
let failed = 0;
for (const s of steps) {
  const r = spawnSync(py, s.args, { cwd: s.cwd, stdio: 'inherit' });
  if (r.status !== 0) {
    failed++;
    process.stderr.write(`python lint: ${s.what} failed (exit ${r.status ?? r.signal}); ${py} ${s.args.join(' ')} in ${path.relative(root, s.cwd) || '.'}\n`);
  }
}
process.exit(failed ? 1 : 0);
