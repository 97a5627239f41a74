/**
 * File-tier benchmark (issues 2, 15): write and read GB/s of the SSD tier against a plain sequential write and
 * read of the same bytes in one file, in the same run, in the same folder, for both on-disk layouts: `file` (one
 * file per block, temp + rename) and `segment` (append-only segment log, group commit). Three paths each: the
 * driver alone, the TierStack write-behind path (PUT into DRAM, queued writes to the tier), and reads of tier hits
 * through the TierStack (read + verify + promote, 4 blocks of a chain per GET as an engine asks). With fsync: the
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
import type { StorageDriver } from '../connector/storage/driver.js';
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

async function stack(layout: Layout, dir: string, size: number): Promise<{ w: number; r: number }> {
  const root = path.join(dir, `stack-${layout}-${size}`);
  const q = { maxItems: 100_000, maxBytes: 2 ** 40, concurrency: 4 };
  const s = new TierStack({
    tiers: [
      { name: 'dram', medium: 'CPU', driver: new MemoryDriver(), budgetBytes: 64 * 2 ** 20, writeMode: 'through', admitAfter: 1, queue: q, initialReadBps: 1e10 },
      { name: 'file', medium: 'DISK', driver: make(layout, root, false), budgetBytes: 2 ** 40, writeMode: 'through', admitAfter: 1, queue: q, initialReadBps: 1e9 },
    ],
    policy: lruPolicy, halfLifeMs: 60_000, promoteOnHit: true,
  });
  await s.open();
  const n = TOTAL / size;
  const buf = Buffer.alloc(size, 9);
  settle();
  let t0 = performance.now();
  for (let i = 0; i < n; i++) s.put(key(i), buf);
  await s.drain();
  const w = gb(performance.now() - t0);
  settle();
  t0 = performance.now();
  for (let i = 0; i < n; i += 4) await s.get([key(i), key(i + 1), key(i + 2), key(i + 3)].slice(0, n - i));
  const r = gb(performance.now() - t0);
  await s.close();
  rmSync(root, { recursive: true, force: true });
  return { w, r };
}

const dir = mkdtempSync(path.join(process.env.KVSTASH_BENCH_DIR ?? os.tmpdir(), 'kvstash-filebench-'));
const rows: (string | number)[][] = [];
try {
  for (const size of [256 << 10, 2 << 20, 32 << 20]) {
    const label = size >= 2 ** 20 ? `${size / 2 ** 20} MiB` : `${size / 1024} KiB`;
    // Best of 2 rounds, the paths interleaved in each, so drift on a shared machine hits them alike.
    let p = await plain(dir, size, false);
    const d = new Map<Layout, { w: number; r: number }>();
    const st = new Map<Layout, { w: number; r: number }>();
    for (let round = 0; round < (quick ? 1 : 2); round++) {
      if (round > 0) p = best(p, await plain(dir, size, false));
      for (const l of LAYOUTS) {
        const a = await driver(l, dir, size, false);
        d.set(l, d.has(l) ? best(d.get(l)!, a) : a);
        const b = await stack(l, dir, size);
        st.set(l, st.has(l) ? best(st.get(l)!, b) : b);
      }
    }
    for (const l of LAYOUTS) {
      rows.push([label, l, 'driver write', d.get(l)!.w.toFixed(2), p.w.toFixed(2), ratio(d.get(l)!.w, p.w)]);
      rows.push([label, l, 'driver read', d.get(l)!.r.toFixed(2), p.r.toFixed(2), ratio(d.get(l)!.r, p.r)]);
      rows.push([label, l, 'stack write-behind', st.get(l)!.w.toFixed(2), p.w.toFixed(2), ratio(st.get(l)!.w, p.w)]);
      rows.push([label, l, 'stack read+verify+promote', st.get(l)!.r.toFixed(2), p.r.toFixed(2), ratio(st.get(l)!.r, p.r)]);
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
