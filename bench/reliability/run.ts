/**
 * `npm run reliability` — the reliability figures (issue 9): attacks on a live sidecar on loopback, one after
 * another, each against its own `kvstash serve` process; prints one table (attack, count, wrong bytes served,
 * acknowledged data lost, peak RSS of the sidecar, verdict). Not part of `npm test`; a few minutes.
 *
 *   npm run reliability                      # everything
 *   npm run reliability -- fuzz-lm soak      # only these (names below)
 *   RELIABILITY_SEED=7 RELIABILITY_ROUNDS=5 RELIABILITY_CASES=100000 RELIABILITY_SOAK_S=60 npm run reliability
 *
 * Exit 1 when any row fails. Every row's target: zero wrong bytes, no acknowledged-durable data lost, bounded RSS.
 */
import { formatTable } from '../../connector/table.js';
import type { Row } from './common.js';
import { damage, diskFull } from './disk.js';
import { fuzzData, fuzzLm } from './fuzz.js';
import { kill9 } from './kill9.js';
import { sigstop } from './sigstop.js';
import { slowSenders } from './slow.js';
import { soak } from './soak.js';

const env = (k: string, d: number) => (process.env[k] ? Number(process.env[k]) : d);
const seed = env('RELIABILITY_SEED', 1);
const cases = env('RELIABILITY_CASES', 100_000);

const ATTACKS: { name: string; run: () => Promise<Row | Row[]> }[] = [
  { name: 'kill9', run: () => kill9(env('RELIABILITY_ROUNDS', 5), seed) },
  { name: 'damage', run: () => damage(seed) },
  { name: 'disk-full', run: () => diskFull(seed) },
  { name: 'fuzz-lm', run: () => fuzzLm(cases, seed) },
  { name: 'fuzz-data', run: () => fuzzData(cases, seed) },
  { name: 'slow', run: () => slowSenders(seed) },
  { name: 'sigstop', run: () => sigstop() },
  { name: 'soak', run: () => soak(env('RELIABILITY_CLIENTS', 64), env('RELIABILITY_SOAK_S', 60)) },
];

const only = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const rows: Row[] = [];
const t0 = Date.now();
for (const a of ATTACKS) {
  if (only.length && !only.includes(a.name)) continue;
  const started = Date.now();
  process.stderr.write(`reliability: ${a.name} …\n`);
  try {
    const r = await a.run();
    rows.push(...(Array.isArray(r) ? r : [r]));
  } catch (err) {
    rows.push({ attack: a.name, count: 0, wrongBytes: 0, lost: '-', peakRssMiB: 0, verdict: 'FAIL', note: `harness error: ${(err as Error).message.split('\n')[0]}` });
  }
  process.stderr.write(`reliability: ${a.name} done in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
}
process.stdout.write(`\nkvstash reliability (seed ${seed}, ${((Date.now() - t0) / 1000).toFixed(0)} s)\n`);
process.stdout.write(formatTable(['attack', 'count', 'wrong bytes served', 'ack. data lost', 'peak RSS MiB', 'verdict'],
  rows.map((r, i) => [`${i + 1}. ${r.attack}`, r.count, r.wrongBytes, r.lost, r.peakRssMiB.toFixed(0), r.verdict])) + '\n\n');
for (const [i, r] of rows.entries()) process.stdout.write(`${i + 1}. ${r.note}\n`);
process.exit(rows.some((r) => r.verdict === 'FAIL') ? 1 : 0);
