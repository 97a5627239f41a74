/**
 * Storage-driver conformance kit: one suite every StorageDriver passes (the rules are in ./driver.ts).
 *
 * Two ways to run it, same cases:
 * - from ava (or any runner with `test(title, async (t) => …)`): `driverConformance(test, factory)`, one test per case;
 * - without a test runner: `runConformance(factory)` resolves a result per case (the CLI `kvstash driver-test`
 *   prints them as a table). This module does not import ava.
 *
 * `factory` returns a fresh driver per case (not yet opened; the kit opens and closes it), either bare or as a
 * DriverUnderTest that also says how to reach the same store again (`reopen`), how to build the driver in a child
 * process (`subprocess`, for the kill-mid-put case) and how to clean up. Cases use a random namespace each, so a
 * store shared between cases (one bucket, one folder) is fine; they never assume the store starts empty.
 * EXPERIMENTAL, like the contract.
 */
import type { StorageDriver } from './driver.js';
import { CASES, SkipCase, type CaseContext, type SubprocessSpec } from './conformance-cases.js';

export { SkipCase, type SubprocessSpec };

export interface DriverUnderTest {
  driver: StorageDriver;
  /** A second instance over the same store (persistence checks); absent for in-process stores like memory. */
  reopen?: () => StorageDriver | Promise<StorageDriver>;
  subprocess?: SubprocessSpec;
  cleanup?: () => unknown;
}

export type ConformanceFactory = () => StorageDriver | DriverUnderTest | Promise<StorageDriver | DriverUnderTest>;

export interface ConformanceOptions {
  /** Size of the big round trip (default 64 MiB, lowered to the driver's limit). */
  bigValueBytes?: number;
  /** Case names to leave out (reported as skipped). */
  skip?: string[];
  /** Per-case deadline, ms (default 60 s). */
  caseTimeoutMs?: number;
}

export interface Metric { name: string; value: number; unit: string }

export interface CaseResult {
  name: string;
  status: 'pass' | 'fail' | 'skip';
  ms: number;
  error?: string;
  notes: string[];
  metrics: Metric[];
}

function normalize(x: StorageDriver | DriverUnderTest): DriverUnderTest {
  return 'driver' in x && typeof (x as DriverUnderTest).driver === 'object' ? (x as DriverUnderTest) : { driver: x as StorageDriver };
}

/** Run one case against a fresh driver; never throws. */
export async function runCase(name: string, factory: ConformanceFactory, opts: ConformanceOptions = {}): Promise<CaseResult> {
  const c = CASES.find((x) => x.name === name);
  if (!c) throw new Error(`unknown conformance case ${name}`);
  const res: CaseResult = { name, status: 'pass', ms: 0, notes: [], metrics: [] };
  if (opts.skip?.includes(name)) return { ...res, status: 'skip', notes: ['left out by options'] };
  const t0 = performance.now();
  let dut: DriverUnderTest | undefined;
  const extra: StorageDriver[] = [];
  let timer: NodeJS.Timeout | undefined;
  try {
    dut = normalize(await factory());
    await dut.driver.open();
    const ctx: CaseContext = {
      driver: dut.driver,
      reopen: dut.reopen && (async () => {
        const d = await dut!.reopen!();
        extra.push(d);
        await d.open();
        return d;
      }),
      subprocess: dut.subprocess,
      bigValueBytes: Math.min(opts.bigValueBytes ?? 64 * 2 ** 20, dut.driver.limits.maxValueBytes),
      note: (s) => res.notes.push(s),
      metric: (m, value, unit) => res.metrics.push({ name: m, value, unit }),
    };
    const limit = opts.caseTimeoutMs ?? 60_000;
    await Promise.race([
      c.run(ctx),
      new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`case did not finish within ${limit} ms`)), limit); }),
    ]);
  } catch (err) {
    if (err instanceof SkipCase) {
      res.status = 'skip';
      res.notes.push(err.message);
    } else {
      res.status = 'fail';
      const e = err as { code?: string; message?: string };
      res.error = `${e.code ? e.code + ': ' : ''}${e.message ?? String(err)}`;
    }
  } finally {
    clearTimeout(timer);
    for (const d of extra) await d.close().catch(() => undefined);
    await dut?.driver.close().catch(() => undefined);
    await Promise.resolve(dut?.cleanup?.()).catch(() => undefined);
  }
  res.ms = Math.round(performance.now() - t0);
  return res;
}

/** Run every case, one after another (cases run their own concurrency). */
export async function runConformance(factory: ConformanceFactory, opts: ConformanceOptions = {}, onResult?: (r: CaseResult) => void): Promise<CaseResult[]> {
  const out: CaseResult[] = [];
  for (const c of CASES) {
    const r = await runCase(c.name, factory, opts);
    onResult?.(r);
    out.push(r);
  }
  return out;
}

export const CASE_NAMES: readonly string[] = CASES.map((c) => c.name);

/** The slice of ava's test interface the kit uses (so the kit does not import ava). */
export interface TestLike {
  (title: string, impl: (t: { pass(): void; log(...values: unknown[]): void }) => Promise<void>): void;
  skip?: (title: string, impl: (t: { pass(): void }) => void) => void;
}

/** Register one test per case: titles "<prefix> - <case>". A case skipped at run time is logged and passes. */
export function driverConformance(test: TestLike, factory: ConformanceFactory, opts: ConformanceOptions & { prefix?: string } = {}): void {
  for (const c of CASES) {
    const title = `${opts.prefix ?? 'conformance'} - ${c.name}: ${c.title}`;
    if (opts.skip?.includes(c.name) && test.skip) {
      test.skip(title, (t) => t.pass());
      continue;
    }
    test(title, async (t) => {
      const r = await runCase(c.name, factory, opts);
      for (const n of r.notes) t.log(n);
      for (const m of r.metrics) t.log(`${m.name}: ${m.value.toFixed(1)} ${m.unit}`);
      if (r.status === 'fail') throw new Error(r.error);
      if (r.status === 'skip') t.log(`SKIPPED: ${r.notes.join('; ')}`);
      t.pass();
    });
  }
}
