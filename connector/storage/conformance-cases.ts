/**
 * The conformance cases (run through ./conformance.ts). Each case gets an opened driver of its own and uses a
 * random namespace, so it never depends on what else is in the store. Assertions throw plain Errors.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { ErrorCode } from '../../protocol/errors.js';
import { checksum } from '../checksum.js';
import { DRIVER_ERROR_CODES, type StorageDriver, type StoredValue } from './driver.js';

/** How to build the driver under test in another process: a module whose export is a DriverFactory. */
export interface SubprocessSpec {
  /** Module path or file URL. */
  module: string;
  /** Export name of the DriverFactory (default: `default`, then `factory`). */
  export?: string;
  /** Raw config, given to the factory's parseConfig. */
  config: Record<string, unknown>;
}

/** Thrown by a case that cannot run against this driver (reported as skipped, with the reason). */
export class SkipCase extends Error {}

export interface CaseContext {
  driver: StorageDriver;
  reopen?: () => Promise<StorageDriver>;
  subprocess?: SubprocessSpec;
  bigValueBytes: number;
  note(s: string): void;
  metric(name: string, value: number, unit: string): void;
}

export interface ConformanceCase {
  name: string;
  title: string;
  run(ctx: CaseContext): Promise<void>;
}

const MiB = 2 ** 20;
export const newNs = (): string => randomBytes(16).toString('hex');
export const newKey = (ns = newNs()): string => `${ns}/${randomBytes(32).toString('hex')}`;
/** Deterministic bytes for a seed (the child process of the crash case builds the same ones). */
export const pattern = (size: number, seed: string): Buffer => Buffer.alloc(size, `kvstash:${seed}:`);
const metaOf = (v: Buffer) => ({ checksum: checksum(v) });

function fail(msg: string): never {
  throw new Error(msg);
}

function expectWhole(got: StoredValue | undefined, want: Buffer, what: string): void {
  if (!got) fail(`${what}: get returned nothing, expected ${want.length} bytes`);
  if (!Buffer.isBuffer(got.value)) fail(`${what}: value is not a Buffer`);
  if (got.value.length !== want.length) fail(`${what}: got ${got.value.length} bytes, expected ${want.length}`);
  if (!got.value.equals(want)) fail(`${what}: bytes differ from what was put`);
  if (got.meta?.checksum !== checksum(want)) fail(`${what}: meta.checksum ${got.meta?.checksum} is not the one put (${checksum(want)})`);
}

/** Nothing, or the whole value: the rule for reads racing writes. */
function expectNothingOrWhole(got: StoredValue | undefined, want: Buffer, what: string): void {
  if (got) expectWhole(got, want, `${what} (a partial value was visible)`);
}

async function expectCode(p: Promise<unknown>, code: string, what: string): Promise<void> {
  try {
    await p;
  } catch (err) {
    const c = (err as { code?: string }).code;
    if (!DRIVER_ERROR_CODES.includes(c as never)) fail(`${what}: rejected with ${c ?? 'an uncoded error'}, not a driver error code: ${(err as Error).message}`);
    if (c !== code) fail(`${what}: expected ${code}, got ${c ?? 'an uncoded error'}: ${(err as Error).message}`);
    return;
  }
  fail(`${what}: expected rejection with ${code}, but it resolved`);
}

async function listNs(d: StorageDriver, ns: string): Promise<Map<string, { size: number; checksum: string }>> {
  const out = new Map<string, { size: number; checksum: string }>();
  for await (const it of d.list()) {
    if (!/^[0-9a-f]{32}\/[0-9a-f]{64}$/.test(it.key)) fail(`list yielded a malformed key ${JSON.stringify(it.key)}`);
    if (it.key.startsWith(ns + '/')) {
      if (out.has(it.key)) fail(`list yielded ${it.key} twice`);
      out.set(it.key, { size: it.size, checksum: it.meta.checksum });
    }
  }
  return out;
}

async function roundTrip(d: StorageDriver, size: number, what: string): Promise<void> {
  const k = newKey();
  const v = size <= 2 * MiB ? randomBytes(size) : pattern(size, k);
  await d.put(k, v, metaOf(v));
  expectWhole(await d.get(k), v, what);
  if (!(await d.has(k))) fail(`${what}: has() is false after put`);
  if (d.stat) {
    const st = await d.stat(k);
    if (!st || st.size !== size || st.meta.checksum !== checksum(v)) fail(`${what}: stat() answered ${JSON.stringify(st)}`);
  }
}

/** Run fns with at most `n` in flight. */
async function pool<T>(items: T[], n: number, fn: (x: T) => Promise<void>): Promise<void> {
  let i = 0;
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, async () => {
    while (i < items.length) await fn(items[i++]!);
  }));
}

function childPath(): string {
  const here = fileURLToPath(import.meta.url);
  return here.replace(/conformance-cases\.(ts|js)$/, 'conformance-child.$1');
}

/** Start a child that builds the driver from `spec` and puts `size` bytes under `key`; kill it `delayMs` after it starts the put. */
function killMidPut(spec: SubprocessSpec, key: string, size: number, delayMs: number): Promise<'killed' | 'finished'> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...process.execArgv, childPath(), JSON.stringify({ ...spec, key, size })], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let finished = false;
    const deadline = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`crash child did not start its put within 30 s: ${err}`)); }, 30_000);
    child.stderr.on('data', (b: Buffer) => { err += b.toString(); });
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.includes('done')) finished = true;
      if (out.includes('putting') && !child.killed) setTimeout(() => child.kill('SIGKILL'), delayMs);
    });
    child.on('exit', (code, sig) => {
      clearTimeout(deadline);
      if (sig === 'SIGKILL') resolve(finished ? 'finished' : 'killed');
      else if (code === 0) resolve('finished');
      else reject(new Error(`crash child exited with ${code}: ${err.trim().slice(-800)}`));
    });
  });
}

export const CASES: ConformanceCase[] = [
  { name: 'empty', title: 'an empty value round-trips', run: ({ driver }) => roundTrip(driver, 0, 'empty value') },
  {
    name: 'small', title: 'small values round-trip with their meta', async run({ driver }) {
      for (const size of [1, 97, 4096, MiB + 3]) await roundTrip(driver, size, `${size}-byte value`);
    },
  },
  {
    name: 'big', title: 'a 64 MiB value round-trips', async run(ctx) {
      const t0 = performance.now();
      await roundTrip(ctx.driver, ctx.bigValueBytes, `${ctx.bigValueBytes}-byte value`);
      ctx.metric('big round trip', performance.now() - t0, 'ms');
    },
  },
  {
    name: 'missing', title: 'missing keys are results, not errors', async run({ driver }) {
      const k = newKey();
      if ((await driver.get(k)) !== undefined) fail('get of a missing key did not resolve undefined');
      if ((await driver.has(k)) !== false) fail('has of a missing key did not resolve false');
      if ((await driver.delete(k)) !== false) fail('delete of a missing key did not resolve false');
      if (driver.stat && (await driver.stat(k)) !== undefined) fail('stat of a missing key did not resolve undefined');
    },
  },
  {
    name: 'overwrite', title: 'put of the same key and bytes twice keeps one whole value', async run({ driver }) {
      const ns = newNs();
      const k = newKey(ns);
      const v = randomBytes(50_000);
      await driver.put(k, v, metaOf(v));
      await driver.put(k, Buffer.from(v), metaOf(v));
      expectWhole(await driver.get(k), v, 'after the second put');
      const l = await listNs(driver, ns);
      if (l.size !== 1 || l.get(k)?.size !== v.length) fail(`list shows ${l.size} entries for one key`);
    },
  },
  {
    name: 'delete', title: 'delete removes a value; a second delete is a miss; put again works', async run({ driver }) {
      const k = newKey();
      const v = randomBytes(10_000);
      await driver.put(k, v, metaOf(v));
      if ((await driver.delete(k)) !== true) fail('delete of a present key did not resolve true');
      if ((await driver.get(k)) !== undefined || (await driver.has(k))) fail('value still visible after delete');
      if ((await driver.delete(k)) !== false) fail('second delete did not resolve false');
      await driver.put(k, v, metaOf(v));
      expectWhole(await driver.get(k), v, 'after put following delete');
    },
  },
  {
    name: 'batch', title: 'putMany/getMany answer per key; a bad key fails only itself', async run({ driver }) {
      const ns = newNs();
      const vals = Array.from({ length: 16 }, (_, i) => randomBytes(1000 + i));
      const keys = vals.map(() => newKey(ns));
      const items = vals.map((v, i) => ({ key: keys[i]!, value: v, meta: metaOf(v) }));
      const bad = { key: 'not-a-key', value: vals[0]!, meta: metaOf(vals[0]!) };
      const res = await driver.putMany([...items.slice(0, 8), bad, ...items.slice(8)]);
      if (res.length !== 17 || res[8] !== false || res.some((r, i) => i !== 8 && r !== true)) fail(`putMany answered ${JSON.stringify(res)}`);
      const missing = newKey(ns);
      const got = await driver.getMany([keys[0]!, missing, 'bad', ...keys.slice(1)]);
      if (got.length !== 18 || got[1] !== undefined || got[2] !== undefined) fail('getMany: a missing or bad key was not undefined');
      expectWhole(got[0], vals[0]!, 'getMany[0]');
      for (let i = 1; i < 16; i++) expectWhole(got[i + 2], vals[i]!, `getMany[${i + 2}]`);
      if ((await driver.getMany([])).length !== 0 || (await driver.putMany([])).length !== 0) fail('empty batch did not answer []');
    },
  },
  {
    name: 'list', title: 'list yields every complete value (key, size, meta) for rebuild', async run({ driver }) {
      const ns = newNs();
      const vals = Array.from({ length: 12 }, (_, i) => randomBytes(i * 300));
      const keys = vals.map(() => newKey(ns));
      for (let i = 0; i < 12; i++) await driver.put(keys[i]!, vals[i]!, metaOf(vals[i]!));
      await driver.delete(keys[0]!);
      await driver.delete(keys[5]!);
      const l = await listNs(driver, ns);
      if (l.size !== 10) fail(`list shows ${l.size} values of the namespace, expected 10`);
      for (let i = 0; i < 12; i++) {
        const e = l.get(keys[i]!);
        if (i === 0 || i === 5) {
          if (e) fail('a deleted value is listed');
        } else if (!e || e.size !== vals[i]!.length || e.checksum !== checksum(vals[i]!)) fail(`value ${i} listed as ${JSON.stringify(e)}`);
      }
    },
  },
  {
    name: 'concurrent-same-key', title: 'parallel puts and gets of one key: nothing or the whole value', async run({ driver }) {
      const k = newKey();
      const v = randomBytes(2 * MiB);
      const ops: Promise<void>[] = [];
      for (let i = 0; i < 24; i++) {
        ops.push(driver.put(k, Buffer.from(v), metaOf(v)));
        ops.push(driver.get(k).then((g) => expectNothingOrWhole(g, v, `get ${i}`)));
        ops.push(driver.has(k).then(() => undefined));
      }
      await Promise.all(ops);
      expectWhole(await driver.get(k), v, 'after all puts');
    },
  },
  {
    name: 'concurrent-many-keys', title: 'parallel puts and gets of many keys keep every value intact', async run({ driver }) {
      const ns = newNs();
      const vals = Array.from({ length: 64 }, () => randomBytes(64 * 1024));
      const keys = vals.map(() => newKey(ns));
      await Promise.all(vals.map(async (v, i) => {
        const p = driver.put(keys[i]!, v, metaOf(v));
        expectNothingOrWhole(await driver.get(keys[i]!), v, `racing get ${i}`);
        await p;
        expectWhole(await driver.get(keys[i]!), v, `get ${i}`);
      }));
      const l = await listNs(driver, ns);
      if (l.size !== 64) fail(`list shows ${l.size} of 64 values`);
    },
  },
  {
    name: 'put-delete-race', title: 'racing put and delete leave either state, never a partial value', async run({ driver }) {
      const ns = newNs();
      const v = randomBytes(256 * 1024);
      const keys = Array.from({ length: 16 }, () => newKey(ns));
      await Promise.all(keys.map(async (k) => {
        await Promise.all([driver.put(k, Buffer.from(v), metaOf(v)), driver.delete(k), driver.put(k, Buffer.from(v), metaOf(v)), driver.delete(k)]);
        expectNothingOrWhole(await driver.get(k), v, 'after the race');
      }));
      const l = await listNs(driver, ns);
      for (const [k, e] of l) if (e.size !== v.length) fail(`${k} listed with ${e.size} bytes`);
    },
  },
  {
    name: 'read-while-write', title: 'gets during a big put see nothing or the whole value', async run(ctx) {
      const { driver } = ctx;
      const size = Math.min(ctx.bigValueBytes, 16 * MiB);
      for (let round = 0; round < 3; round++) {
        const k = newKey();
        const v = pattern(size, k);
        let done = false;
        const put = driver.put(k, v, metaOf(v)).finally(() => { done = true; });
        let reads = 0;
        while (!done) {
          expectNothingOrWhole(await driver.get(k), v, `read ${reads} during put`);
          await driver.has(k);
          reads++;
          await new Promise((r) => setImmediate(r)); // a driver answering from memory must not starve the put's I/O
        }
        await put;
        expectWhole(await driver.get(k), v, 'after the put');
        if (round === 0) ctx.note(`${reads} reads raced the first ${size}-byte put`);
      }
    },
  },
  {
    name: 'crash-mid-put', title: 'a writer killed mid-put leaves no partial value (child process)', async run(ctx) {
      if (!ctx.subprocess) throw new SkipCase('no subprocess spec: cannot drive this driver from a child process');
      const ns = newNs();
      const size = Math.min(ctx.bigValueBytes, 32 * MiB);
      const outcomes: string[] = [];
      const keys: string[] = [];
      for (const delay of [0, 3, 10, 40]) {
        const k = newKey(ns);
        keys.push(k);
        outcomes.push(await killMidPut(ctx.subprocess, k, size, delay));
      }
      const other = ctx.reopen ? await ctx.reopen() : ctx.driver;
      let visible = 0;
      for (const k of keys) {
        const got = await other.get(k);
        expectNothingOrWhole(got, pattern(size, k), `value of the writer killed mid-put`);
        if (got) visible++;
        if (Boolean(got) !== (await other.has(k))) fail('has() disagrees with get() after the crash');
      }
      for (const [k, e] of await listNs(other, ns)) if (e.size !== size) fail(`list shows ${k} with ${e.size} of ${size} bytes`);
      ctx.note(`kills: ${outcomes.join(', ')}; ${visible} of ${keys.length} values complete afterwards, the rest absent`);
    },
  },
  {
    name: 'bad-keys', title: 'malformed keys are refused with KVS_KEY_LENGTH', async run({ driver }) {
      const good = newKey();
      const bad: unknown[] = ['', 'abc', good.toUpperCase(), good.slice(1), good + '0', good.replace('/', '-'), `${good.slice(0, 32)}/${'g'.repeat(64)}`, 42, null];
      const v = Buffer.from('x');
      for (const k of bad) {
        const kk = k as string;
        await expectCode(driver.get(kk), ErrorCode.KEY_LENGTH, `get(${JSON.stringify(k)})`);
        await expectCode(driver.put(kk, v, metaOf(v)), ErrorCode.KEY_LENGTH, `put(${JSON.stringify(k)})`);
        await expectCode(driver.has(kk), ErrorCode.KEY_LENGTH, `has(${JSON.stringify(k)})`);
        await expectCode(driver.delete(kk), ErrorCode.KEY_LENGTH, `delete(${JSON.stringify(k)})`);
        if (driver.stat) await expectCode(driver.stat(kk), ErrorCode.KEY_LENGTH, `stat(${JSON.stringify(k)})`);
      }
    },
  },
  {
    name: 'too-large', title: 'a value over the limit is refused with KVS_TOO_LARGE before any I/O', async run(ctx) {
      const { driver } = ctx;
      const max = driver.limits.maxValueBytes;
      if (!(max <= 256 * MiB)) throw new SkipCase(`limit ${max} is over 256 MiB: configure a smaller maxValueBytes to test it`);
      const ns = newNs();
      const k = newKey(ns);
      const v = Buffer.alloc(max + 1, 1);
      await expectCode(driver.put(k, v, metaOf(v)), ErrorCode.TOO_LARGE, 'put of limit+1 bytes');
      const res = await driver.putMany([{ key: k, value: v, meta: { checksum: '0'.repeat(16) } }]);
      if (res[0] !== false) fail('putMany of an over-limit value did not answer false');
      if (await driver.has(k)) fail('the refused value is visible');
      if ((await listNs(driver, ns)).size !== 0) fail('the refused value is listed');
      const atLimit = Buffer.alloc(Math.min(max, 8 * MiB), 2);
      await driver.put(k, atLimit, metaOf(atLimit));
      expectWhole(await driver.get(k), atLimit, 'value within the limit');
    },
  },
  {
    name: 'persistence', title: 'a second instance over the same store sees acknowledged values', async run(ctx) {
      if (!ctx.reopen) throw new SkipCase('no reopen(): the store lives only in this instance');
      const k = newKey();
      const v = randomBytes(100_000);
      await ctx.driver.put(k, v, metaOf(v));
      await ctx.driver.close();
      const d2 = await ctx.reopen();
      expectWhole(await d2.get(k), v, 'read through a new instance');
    },
  },
  {
    name: 'read-into', title: 'readInto (optional) reads values byte-exact into the caller\'s buffers, per item', async run({ driver }) {
      if (!driver.readInto) throw new SkipCase('this driver has no readInto (an optional method): nothing to check');
      const ns = newNs();
      // A chain saved in one batch (drivers may lay it out back to back), with an empty value in it.
      const vals = [randomBytes(300_000), randomBytes(4096), Buffer.alloc(0), randomBytes(70_001), randomBytes(1 << 20)];
      const keys = vals.map(() => newKey(ns));
      const ok = await driver.putMany(vals.map((v, i) => ({ key: keys[i]!, value: v, meta: metaOf(v) })));
      if (ok.some((x) => !x)) fail('putMany of the chain failed');
      const missing = newKey(ns);
      // Each target is a view inside a larger buffer whose edges must stay untouched.
      const PAD = 64;
      const frames = vals.map((v) => Buffer.alloc(v.length + 2 * PAD, 0xa5));
      const into = frames.map((f, i) => f.subarray(PAD, PAD + vals[i]!.length));
      const items = [
        { key: keys[0]!, into: into[0]! }, { key: keys[1]!, into: into[1]! }, { key: missing, into: Buffer.alloc(10) },
        { key: keys[2]!, into: into[2]! }, { key: keys[3]!, into: into[3]! }, { key: keys[4]!, into: into[4]! },
      ];
      const res = await driver.readInto(items);
      if (!Array.isArray(res) || res.length !== items.length) fail(`readInto answered ${res?.length} results for ${items.length} items`);
      if (res[2] !== 'missing') fail(`a missing key (the gap) answered ${JSON.stringify(res[2])}, not 'missing'`);
      for (const [j, i] of [[0, 0], [1, 1], [3, 2], [4, 3], [5, 4]] as const) {
        const r = res[j];
        if (typeof r !== 'object') fail(`value ${i}: answered ${JSON.stringify(r)}`);
        if (r.size !== vals[i]!.length) fail(`value ${i}: size ${r.size}, expected ${vals[i]!.length}`);
        if (r.meta.checksum !== checksum(vals[i]!)) fail(`value ${i}: meta.checksum ${r.meta.checksum} is not the one put`);
        if (!into[i]!.equals(vals[i]!)) fail(`value ${i}: bytes read into the buffer differ from what was put`);
        const f = frames[i]!;
        for (const b of [...f.subarray(0, PAD), ...f.subarray(PAD + vals[i]!.length)]) if (b !== 0xa5) fail(`value ${i}: bytes outside the target buffer were written`);
      }
      // A buffer of the wrong size: the answer says the real size (and the caller ignores the bytes).
      const wrong = await driver.readInto([{ key: keys[3]!, into: Buffer.alloc(100) }]);
      const w = wrong[0];
      if (typeof w !== 'object' || w.size !== vals[3]!.length) fail(`a wrong-size buffer answered ${JSON.stringify(w)}, not the stored size ${vals[3]!.length}`);
      // A deleted value is missing; a bad key fails only itself.
      await driver.delete(keys[1]!);
      const again = await driver.readInto([{ key: 'nope', into: Buffer.alloc(1) }, { key: keys[1]!, into: Buffer.alloc(4096) }, { key: keys[0]!, into: Buffer.alloc(300_000) }]);
      if (again[0] !== 'failed') fail(`a malformed key answered ${JSON.stringify(again[0])}, not 'failed'`);
      if (again[1] !== 'missing') fail(`a deleted value answered ${JSON.stringify(again[1])}, not 'missing'`);
      if (typeof again[2] !== 'object') fail(`a value after a bad key answered ${JSON.stringify(again[2])}`);
      await driver.close();
      const closed = await driver.readInto([{ key: keys[0]!, into: Buffer.alloc(300_000) }]);
      if (closed[0] !== 'failed') fail(`readInto after close answered ${JSON.stringify(closed[0])}, not 'failed'`);
    },
  },
  {
    name: 'closed', title: 'after close every call rejects with KVS_UNAVAILABLE; close is idempotent', async run({ driver }) {
      const k = newKey();
      const v = Buffer.from('abc');
      await driver.put(k, v, metaOf(v));
      await driver.close();
      await driver.close();
      await expectCode(driver.get(k), ErrorCode.UNAVAILABLE, 'get after close');
      await expectCode(driver.put(k, v, metaOf(v)), ErrorCode.UNAVAILABLE, 'put after close');
      await expectCode(driver.has(k), ErrorCode.UNAVAILABLE, 'has after close');
      await expectCode(driver.delete(k), ErrorCode.UNAVAILABLE, 'delete after close');
    },
  },
  {
    name: 'stats', title: 'stats() are finite numbers and move with use', async run({ driver }) {
      const before = JSON.stringify(driver.stats());
      const k = newKey();
      const v = randomBytes(5000);
      await driver.put(k, v, metaOf(v));
      await driver.get(k);
      const st = driver.stats();
      for (const [name, n] of Object.entries(st)) if (typeof n !== 'number' || !Number.isFinite(n)) fail(`stats().${name} is ${n}`);
      if (JSON.stringify(st) === before) fail('no stats() counter moved after a put and a get');
    },
  },
  {
    name: 'throughput', title: 'throughput of 1 MiB puts and gets (8 in flight)', async run(ctx) {
      const { driver } = ctx;
      const ns = newNs();
      const n = 64;
      const vals = Array.from({ length: n }, (_, i) => pattern(MiB, `${ns}-${i}`));
      const keys = vals.map(() => newKey(ns));
      let t0 = performance.now();
      await pool([...vals.keys()], 8, (i) => driver.put(keys[i]!, vals[i]!, metaOf(vals[i]!)));
      const putS = (performance.now() - t0) / 1000;
      t0 = performance.now();
      await pool([...vals.keys()], 8, async (i) => expectWhole(await driver.get(keys[i]!), vals[i]!, `get ${i}`));
      const getS = (performance.now() - t0) / 1000;
      ctx.metric('put', n / putS, 'MiB/s');
      ctx.metric('get', n / getS, 'MiB/s');
      await pool(keys, 8, async (k) => { await driver.delete(k); });
    },
  },
];
