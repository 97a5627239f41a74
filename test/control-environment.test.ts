/** docs/environment.md is generated: it must match the generator, embed `kvstash config --markdown`, and name every KVSTASH_* variable and trace category the source uses. */
import test from 'ava';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { EXTENSIONS } from '../cli/extensions.js';
import { environmentMarkdown } from '../connector/control/environment-doc.js';
import { repoRoot } from './helpers/sidecar.js';

const page = () => readFileSync(path.join(repoRoot, 'docs', 'environment.md'), 'utf8');
const REGEN = 'regenerate it: npx tsx cli/kvstash.ts env-doc > docs/environment.md';

function sources(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules' || name.startsWith('.') || name === '__pycache__') continue;
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) sources(p, out);
    else if (/\.(ts|py|mjs)$/.test(name)) out.push(p);
  }
  return out;
}

test('control environment - docs/environment.md equals the generated page', (t) => {
  t.is(page(), environmentMarkdown(EXTENSIONS.flatMap((e) => e.settings ?? [])), `docs/environment.md is out of date; ${REGEN}`);
});

test('control environment - the page embeds `kvstash config --markdown` verbatim', async (t) => {
  t.timeout(60_000);
  const { stdout } = await promisify(execFile)(process.execPath, ['--import=tsx', path.join(repoRoot, 'cli', 'kvstash.ts'), 'config', '--markdown'], { cwd: repoRoot, timeout: 30_000 });
  t.true(page().includes(stdout.trim()), REGEN);
});

test('control environment - every KVSTASH_* variable and logger category in the source is documented', (t) => {
  const doc = page();
  const files = ['cli', 'connector', 'protocol', 'adapters', 'scripts', 'bench', 'examples'].flatMap((d) => {
    try { return sources(path.join(repoRoot, d)); } catch { return []; }
  });
  const vars = new Set<string>();
  const cats = new Set<string>();
  for (const f of files) {
    const text = readFileSync(f, 'utf8');
    for (const m of text.matchAll(/\bKVSTASH_[A-Z0-9_]*[A-Z0-9]\b/g)) vars.add(m[0]);
    for (const m of text.matchAll(/\blogger\(\s*'([a-z-]+)'/g)) cats.add(m[1]!);
  }
  t.true(vars.size > 5);
  for (const v of vars) t.true(doc.includes(`\`${v}\``), `${v} is used in the source but not listed in docs/environment.md (add it to OTHER_VARIABLES in connector/control/environment-doc.ts, then ${REGEN})`);
  for (const c of cats) t.true(doc.includes(`| \`${c}\` |`), `trace category "${c}" is not listed (TRACE_CATEGORIES in connector/control/environment-doc.ts)`);
});
