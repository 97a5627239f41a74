/**
 * `npm run bench`: runs every benchmark below as its own process, one after another, and prints their tables.
 * Figures are reported as ratios against a ceiling measured in the same run (this machine is shared and noisy).
 * `npm run bench -- <name…>` runs only the named ones; `--quick` asks each for a shorter run.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
const py = process.env.KVSTASH_PYTHON || '/usr/bin/python3';
const node = (f: string) => [process.execPath, path.join(here, f)];

export const BENCHES: { name: string; cmd: string[] }[] = [
  { name: 'sidecar', cmd: node('sidecar.js') },
  { name: 'file-tier', cmd: node('file-tier.js') },
  { name: 'index', cmd: [process.execPath, '--expose-gc', path.join(here, 'index-memory.js')] },
  { name: 'lmcache', cmd: node('lmcache.js') },
  { name: 'sglang', cmd: [py, 'bench/sglang.py'] },
  { name: 'python-connector', cmd: [py, 'bench/python-connector.py'] },
  { name: 'arena', cmd: [py, 'bench/arena.py'] },
  { name: 'trace', cmd: node('trace.js') },
  { name: 'drivers', cmd: node('drivers.js') },
  { name: 'resp', cmd: node('resp.js') },
];

const args = process.argv.slice(2);
const only = args.filter((a) => !a.startsWith('--'));
const extra = args.filter((a) => a.startsWith('--'));
const unknown = only.filter((n) => !BENCHES.some((b) => b.name === n));
if (unknown.length) {
  process.stderr.write(`npm run bench: no benchmark named ${unknown.join(', ')}; the benchmarks are ${BENCHES.map((b) => b.name).join(', ')} (bench/README.md)\n`);
  process.exit(2);
}
let failed = 0;
for (const b of BENCHES) {
  if (only.length && !only.includes(b.name)) continue;
  // each bench prints its table when done (seconds to minutes; --quick is shorter): say what runs now
  process.stdout.write(`\n=== bench: ${b.name} === (running: ${b.cmd.map((c) => path.basename(c)).slice(-1)[0]}${extra.length ? ' ' + extra.join(' ') : ''}; its table follows when it finishes)\n`);
  const r = spawnSync(b.cmd[0]!, [...b.cmd.slice(1), ...extra], { stdio: 'inherit', cwd: repo, env: { ...process.env, KVSTASH_PYTHON: py } });
  if (r.status !== 0) {
    failed++;
    process.stdout.write(`bench ${b.name} FAILED (exit ${r.status})\n`);
  }
}
process.exit(failed ? 1 : 0);
