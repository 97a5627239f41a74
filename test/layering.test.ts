/**
 * Dependencies point one way: the core (connector/, protocol/) never imports the adapters or the CLI, and
 * protocol/ imports nothing of connector/. (Import cycles are checked by `npm run check:cycles`.)
 */
import test from 'ava';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { repoRoot } from './helpers/sidecar.js';

function sources(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) sources(p, out);
    else if (name.endsWith('.ts')) out.push(p);
  }
  return out;
}

function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return [...text.matchAll(/(?:\bfrom\s+|\bimport\s*\(\s*|\bimport\s+)['"](\.{1,2}\/[^'"]+)['"]/g)].map((m) => path.relative(repoRoot, path.resolve(path.dirname(file), m[1]!)));
}

test('layering - connector/ and protocol/ import neither adapters/ nor cli/', (t) => {
  const bad: string[] = [];
  for (const dir of ['connector', 'protocol']) {
    for (const f of sources(path.join(repoRoot, dir))) {
      for (const target of importsOf(f)) if (/^(adapters|cli)\//.test(target)) bad.push(`${path.relative(repoRoot, f)} → ${target}`);
    }
  }
  t.true(sources(path.join(repoRoot, 'connector')).length > 20);
  t.deepEqual(bad, []);
});

test('layering - protocol/ stands alone (no connector/ imports)', (t) => {
  const bad = sources(path.join(repoRoot, 'protocol')).flatMap((f) => importsOf(f).filter((x) => x.startsWith('connector/')).map((x) => `${path.relative(repoRoot, f)} → ${x}`));
  t.deepEqual(bad, []);
});
