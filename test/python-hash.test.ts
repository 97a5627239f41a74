import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import fc from 'fast-check';
import { blockHashes, namespaceId, type HashExtras } from '../connector/keys.js';
import type { NamespaceDescriptor } from '../protocol/wire.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const py = process.env.KVSTASH_PYTHON || '/usr/bin/python3';
const env = { ...process.env, PYTHONPATH: path.join(repo, 'adapters', 'python') };
const vectors = JSON.parse(readFileSync(path.join(repo, 'protocol', 'vectors', 'block-hash.json'), 'utf8')) as {
  chains: { tokens: number[]; block_size: number; lora: string | null; cache_salt: string | null; mm: HashExtras['mm']; hashes: string[] }[];
  namespaces: { descriptor: NamespaceDescriptor; id: string }[];
};

test('python-hash - TypeScript matches the shared vectors file', (t) => {
  t.true(vectors.chains.length >= 8);
  for (const c of vectors.chains) {
    const got = blockHashes(c.tokens, c.block_size, { lora: c.lora, cacheSalt: c.cache_salt, mm: c.mm }).map((h) => h.toString('hex'));
    t.deepEqual(got, c.hashes);
  }
  for (const n of vectors.namespaces) t.is(namespaceId(n.descriptor), n.id);
  const r = spawnSync(process.execPath, ['--import=tsx', path.join(repo, 'scripts', 'gen-hash-vectors.ts'), '--check'], { cwd: repo, encoding: 'utf8', timeout: 30_000 });
  t.is(r.status, 0, r.stderr);
});

test('python-hash - kvstash.hashing passes the shared vectors', (t) => {
  const r = spawnSync(py, [path.join(repo, 'adapters', 'python', 'tests', 'test_hashing.py')], { cwd: repo, env, encoding: 'utf8', timeout: 30_000 });
  t.is(r.status, 0, `${r.stdout}\n${r.stderr}`);
  t.regex(r.stderr, /Ran [1-9]\d* tests/);
});

test('python-hash - Python msgpack reads the wire protocol golden examples and re-encodes requests byte for byte', (t) => {
  const r = spawnSync(py, [path.join(repo, 'adapters', 'python', 'tests', 'test_golden.py')], { cwd: repo, env, encoding: 'utf8', timeout: 30_000 });
  t.is(r.status, 0, `${r.stdout}\n${r.stderr}`);
  t.regex(r.stderr, /Ran [1-9]\d* tests/);
});

const PY_RANDOM = `
import json, sys
from kvstash.hashing import MultimodalItem, block_hashes, namespace_id
out = []
for c in json.load(sys.stdin):
    mm = [MultimodalItem(m["identifier"], m["offset"], m["length"]) for m in c["mm"]]
    out.append({"hashes": [h.hex() for h in block_hashes(c["tokens"], c["block_size"], lora=c["lora"], cache_salt=c["salt"], mm=mm)],
                "ns": namespace_id(c["ns"])})
json.dump(out, sys.stdout)
`;

test('python-hash - random inputs hash the same in Python and TypeScript', (t) => {
  const str = fc.string({ unit: 'binary', maxLength: 12 }).filter((s) => !/[\ud800-\udfff]/.test(s));
  const caseArb = fc.record({
    tokens: fc.array(fc.integer({ min: 0, max: 2 ** 32 - 1 }), { maxLength: 70 }),
    block_size: fc.integer({ min: 1, max: 17 }),
    lora: fc.option(str, { nil: null }),
    salt: fc.option(str, { nil: null }),
    mm: fc.array(fc.record({ identifier: str, offset: fc.integer({ min: 0, max: 80 }), length: fc.integer({ min: 1, max: 30 }) }), { maxLength: 3 }),
    ns: fc.record({
      model: str, engine: str, layout: str, tenant: str,
      tp_rank: fc.nat(7), tp_size: fc.integer({ min: 1, max: 8 }), pp_rank: fc.nat(3), pp_size: fc.integer({ min: 1, max: 4 }),
    }),
  });
  const cases = fc.sample(caseArb, { numRuns: 200, seed: 20261126 });
  const r = spawnSync(py, ['-c', PY_RANDOM], { input: JSON.stringify(cases), env, encoding: 'utf8', timeout: 30_000 });
  t.is(r.status, 0, r.stderr);
  const got = JSON.parse(r.stdout) as { hashes: string[]; ns: string }[];
  t.is(got.length, cases.length);
  let blocks = 0;
  cases.forEach((c, i) => {
    const want = blockHashes(c.tokens, c.block_size, { lora: c.lora, cacheSalt: c.salt, mm: c.mm }).map((h) => h.toString('hex'));
    blocks += want.length;
    t.deepEqual(got[i]!.hashes, want, `case ${i}`);
    t.is(got[i]!.ns, namespaceId(c.ns as NamespaceDescriptor), `namespace ${i}`);
  });
  t.true(blocks > 100);
});
