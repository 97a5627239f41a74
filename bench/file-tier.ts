/**
 * File-tier benchmark (issues 2, 15): write and read GB/s of the SSD tier against a plain sequential write and
 * read of the same bytes in one file, in the same run, in the same folder, for both on-disk layouts: `file` (one
 * file per block, temp + rename) and `segment` (append-only segment log, group commit). Three paths each: the
 * driver alone, the TierStack write-behind path (PUT into DRAM, queued writes to the tier), and reads of tier hits
 * through the TierStack (read + verify + promote, 4 blocks of a chain per GET as an engine asks), three ways in one
 * stack: `old` (driver getMany, a fresh buffer per block: the path before readInto), `readInto` (the hit path of
 * tier-reads.ts: a chain's blocks read in one batch into read-pool buffers, the GET caller keeping them), and
 * `in place` (the same, the caller giving the buffers back with TierStack.release so the pool reuses them: no fresh
 * memory, no page faults). With fsync: the
 * driver's write against a plain write + one fsync of the same bytes. Reads come from the page cache for both sides (dropping caches needs a privilege CI lacks), and
 * the plain read puts each block in a new buffer, as a server handing blocks out must (a reused buffer stays
 * in the CPU cache and measures memcpy, not I/O).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, openSync, closeSync, readSync, rmSync, writeSync, fsyncSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checksum } from '../connector/checksum.js';
import { lruPolicy } from '../connector/tiers/policy.js';
import type { BlockMeta, ListedValue, ReadIntoItem, ReadIntoResult, StorageDriver, StoredValue } from '../connector/storage/driver.js';
import { FileDriver } from '../connector/storage/file.js';
import { MemoryDriver } from '../connector/storage/memory.js';
import { SegmentDriver, parseSegmentConfig } from '../connector/storage/segment.js';
import { TierStack } from '../connector/tiers/tier-stack.js';
import { formatTable, quick, ratio } from './util.js';

const NS = 'e'.repeat(32);
const key = (i: number) => `${NS}/${i.toString(16).padStart(64, '0')}`;
const TOTAL = (quick ? 256 : 1024) * 2 ** 20;
const gb = (ms: number) => TOTAL / (ms / 1000) / 1e9;
/** Flush dirty pages before each timed phase, so one phase's write-back is not billed to the next. */
const settle = () => execFileSync('sync');
type Layout = 'file' | 'segment';
const LAYOUTS: Layout[] = process.argv.includes('--segment-only') ? ['segment'] : ['file', 'segment'];
const make = (layout: Layout, root: string, fsync: boolean): StorageDriver => (layout === 'file'
  ? new FileDriver({ root, fsync, maxValueBytes: 1 << 30 })
  : new SegmentDriver(parseSegmentConfig({ root, fsync, maxValueBytes: 1 << 30 })));
const best = (a: { w: number; r: number }, b: { w: number; r: number }) => ({ w: Math.max(a.w, b.w), r: Math.max(a.r, b.r) });
type StackRun = { w: number; old: number; into: number; inPlace: number };
const bestStack = (a: StackRun, b: StackRun): StackRun => ({ w: Math.max(a.w, b.w), old: Math.max(a.old, b.old), into: Math.max(a.into, b.into), inPlace: Math.max(a.inPlace, b.inPlace) });

/** The driver with its readInto switched on or off, so one stack measures the hit path both ways. */
class Switch implements StorageDriver {
  into = true;
  constructor(private readonly d: StorageDriver) {}
  get name(): string { return this.d.name; }
  get limits(): StorageDriver['limits'] { return this.d.limits; }
  get durable(): boolean { return this.d.durable; }
  get readInto(): ((items: ReadIntoItem[]) => Promise<ReadIntoResult[]>) | undefined {
    return this.into && this.d.readInto ? (items) => this.d.readInto!(items) : undefined;
  }
  open(): Promise<void> { return this.d.open(); }
  get(k: string): Promise<StoredValue | undefined> { return this.d.get(k); }
  put(k: string, v: Buffer, m: BlockMeta): Promise<void> { return this.d.put(k, v, m); }
  has(k: string): Promise<boolean> { return this.d.has(k); }
  delete(k: string): Promise<boolean> { return this.d.delete(k); }
  getMany(ks: string[]): Promise<(StoredValue | undefined)[]> { return this.d.getMany(ks); }
  putMany(items: { key: string; value: Buffer; meta: BlockMeta }[]): Promise<boolean[]> { return this.d.putMany(items); }
  list(): AsyncIterable<ListedValue> { return this.d.list(); }
  stats(): Record<string, number> { return this.d.stats(); }
  close(): Promise<void> { return this.d.close(); }
}

async function plain(dir: string, size: number, fsync: boolean): Promise<{ w: number; r: number }> {
  const f = path.join(dir, 'plain.bin');
  const buf = Buffer.alloc(size, 3);
  const n = TOTAL / size;
  settle();
  let t0 = performance.now();
  const fd = openSync(f, 'w');
  for (let i = 0; i < n; i++) writeSync(fd, buf);
  if (fsync) fsyncSync(fd);
  closeSync(fd);
  const w = gb(performance.now() - t0);
  settle();
  t0 = performance.now();
  const rfd = openSync(f, 'r');
  // Each block lands in its own new buffer, as any server that hands blocks out (and keeps them) must.
  for (let i = 0; i < n; i++) readSync(rfd, Buffer.allocUnsafeSlow(size), 0, size, null);
  closeSync(rfd);
  const r = gb(performance.now() - t0);
  rmSync(f);
  return { w, r };
}

async function driver(layout: Layout, dir: string, size: number, fsync: boolean): Promise<{ w: number; r: number }> {
  const root = path.join(dir, `drv-${layout}-${size}-${fsync}`);
  const d = make(layout, root, fsync);
  await d.open();
  const buf = Buffer.alloc(size, 5);
  const meta = { checksum: checksum(buf) };
  const n = TOTAL / size;
  const conc = 4;
  settle();
  let t0 = performance.now();
  for (let i = 0; i < n; i += conc) await Promise.all(Array.from({ length: Math.min(conc, n - i) }, (_, j) => d.put(key(i + j), buf, meta)));
  const w = gb(performance.now() - t0);
  settle();
  t0 = performance.now();
  for (let i = 0; i < n; i += conc) await Promise.all(Array.from({ length: Math.min(conc, n - i) }, (_, j) => d.get(key(i + j))));
  const r = gb(performance.now() - t0);
  await d.close();
  rmSync(root, { recursive: true, force: true });
  return { w, r };
}

async function stack(layout: Layout, dir: string, size: number): Promise<StackRun> {
  const root = path.join(dir, `stack-${layout}-${size}`);
  const q = { maxItems: 100_000, maxBytes: 2 ** 40, concurrency: 4 };
  const lower = new Switch(make(layout, root, false));
  const s = new TierStack({
    tiers: [
      { name: 'dram', medium: 'CPU', driver: new MemoryDriver(), budgetBytes: 64 * 2 ** 20, writeMode: 'through', admitAfter: 1, queue: q, initialReadBps: 1e10 },
      { name: 'file', medium: 'DISK', driver: lower, budgetBytes: 2 ** 40, writeMode: 'through', admitAfter: 1, queue: q, initialReadBps: 1e9 },
    ],
    policy: lruPolicy, halfLifeMs: 60_000, promoteOnHit: true,
  });
  await s.open();
  const n = TOTAL / size;
  const buf = Buffer.alloc(size, 9);
  settle();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) s.put(key(i), buf);
  await s.drain();
  const w = gb(performance.now() - t0);
  // Each pass reads the 1 GiB once (DRAM holds 64 MiB, so nearly every block is a file-tier hit).
  const pass = async (into: boolean, release: boolean): Promise<number> => {
    lower.into = into;
    settle();
    const t1 = performance.now();
    for (let i = 0; i < n; i += 4) {
      const vals = await s.get([key(i), key(i + 1), key(i + 2), key(i + 3)].slice(0, n - i));
      if (vals.some((v) => v?.length !== size)) throw new Error('a block was not served');
      if (release) s.release(vals);
    }
    return gb(performance.now() - t1);
  };
  const old = await pass(false, false);
  const into = await pass(true, false);
  const inPlace = await pass(true, true);
  const failures = s.stats()[1]!.checksumFailures;
  if (failures) throw new Error(`${failures} checksum failures`);
  await s.close();
  rmSync(root, { recursive: true, force: true });
  return { w, old, into, inPlace };
}

const dir = mkdtempSync(path.join(process.env.KVSTASH_BENCH_DIR ?? os.tmpdir(), 'kvstash-filebench-'));
const rows: (string | number)[][] = [];
try {
  for (const size of [256 << 10, 2 << 20, 32 << 20]) {
    const label = size >= 2 ** 20 ? `${size / 2 ** 20} MiB` : `${size / 1024} KiB`;
    // Best of 2 rounds, the paths interleaved in each, so drift on a shared machine hits them alike.
    let p = await plain(dir, size, false);
    const d = new Map<Layout, { w: number; r: number }>();
    const st = new Map<Layout, StackRun>();
    for (let round = 0; round < (quick ? 1 : 2); round++) {
      if (round > 0) p = best(p, await plain(dir, size, false));
      for (const l of LAYOUTS) {
        const a = await driver(l, dir, size, false);
        d.set(l, d.has(l) ? best(d.get(l)!, a) : a);
        const b = await stack(l, dir, size);
        st.set(l, st.has(l) ? bestStack(st.get(l)!, b) : b);
      }
    }
    for (const l of LAYOUTS) {
      rows.push([label, l, 'driver write', d.get(l)!.w.toFixed(2), p.w.toFixed(2), ratio(d.get(l)!.w, p.w)]);
      rows.push([label, l, 'driver read', d.get(l)!.r.toFixed(2), p.r.toFixed(2), ratio(d.get(l)!.r, p.r)]);
      rows.push([label, l, 'stack write-behind', st.get(l)!.w.toFixed(2), p.w.toFixed(2), ratio(st.get(l)!.w, p.w)]);
      for (const [what, v] of [['old', st.get(l)!.old], ['readInto', st.get(l)!.into], ['in place', st.get(l)!.inPlace]] as const) {
        rows.push([label, l, `stack read+verify+promote, ${what}`, v.toFixed(2), p.r.toFixed(2), ratio(v, p.r)]);
      }
    }
  }
  for (const size of [256 << 10, 2 << 20]) {
    const label = size >= 2 ** 20 ? `${size / 2 ** 20} MiB` : `${size / 1024} KiB`;
    const pf = await plain(dir, size, true);
    for (const l of LAYOUTS) {
      const df = await driver(l, dir, size, true);
      rows.push([label, l, 'driver write, fsync', df.w.toFixed(2), pf.w.toFixed(2), ratio(df.w, pf.w)]);
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
process.stdout.write(`File tier vs plain sequential I/O of the same ${TOTAL / 2 ** 20} MiB, GB/s (target ratio ≥ 0.8)\n`);
process.stdout.write(formatTable(['block', 'layout', 'path', 'kvstash', 'plain', 'ratio'], rows) + '\n');
