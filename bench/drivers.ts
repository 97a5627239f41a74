/**
 * Per-driver benchmark (`npm run bench -- drivers`): throughput of a storage driver against the ceiling of the same
 * medium measured in the same run.
 * - file driver (one file per value: temp + writev + rename; read = open + read + close) vs a plain sequential write
 *   and read of the same bytes into one file, in the same folder;
 * - S3 driver (metadata, size check, retries/breaker bookkeeping, multipart above 16 MiB, ranged reads above 32 MiB)
 *   vs the raw @aws-sdk/client-s3 PutObject/GetObject of the same values, against the same s3rver process.
 * Both sides move the same values with the same concurrency. Reads come from the page cache (no privilege to drop it).
 */
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { checksum } from '../connector/checksum.js';
import { SegmentDriver } from '../examples/custom-driver/segment-driver.js';
import type { StorageDriver } from '../connector/storage/driver.js';
import { FileDriver, parseFileConfig } from '../connector/storage/file.js';
import { S3Driver } from '../connector/storage/s3.js';
import { parseS3Config } from '../connector/storage/s3-config.js';
import { startS3rver } from '../test/helpers/s3rver.js';
import { formatTable, humanBytes, quick, ratio } from './util.js';

const MiB = 2 ** 20;
const NS = 'd'.repeat(32);
const key = (i: number) => `${NS}/${(i * 2654435761 >>> 0).toString(16).padStart(8, '0')}${i.toString(16).padStart(56, '0')}`;
const mibs = (bytes: number, ms: number) => bytes / MiB / (ms / 1000);

async function pool(n: number, conc: number, fn: (i: number) => Promise<void>): Promise<void> {
  let i = 0;
  await Promise.all(Array.from({ length: Math.min(conc, n) }, async () => { while (i < n) await fn(i++); }));
}

interface Row { what: string; size: number; w: number; r: number }

/** Flush dirty pages before each timed phase, so one phase's write-back is not billed to the next. */
const settle = () => execFileSync('sync');

function plainFile(dir: string, size: number, n: number): Row {
  const f = path.join(dir, 'plain.bin');
  const buf = Buffer.alloc(size, 7);
  settle();
  let t0 = performance.now();
  const fd = openSync(f, 'w');
  for (let i = 0; i < n; i++) writeSync(fd, buf);
  closeSync(fd);
  const w = mibs(size * n, performance.now() - t0);
  settle();
  t0 = performance.now();
  const rfd = openSync(f, 'r');
  // Each value lands in its own new buffer, as a driver's get must return (a reused buffer measures memcpy).
  for (let i = 0; i < n; i++) readSync(rfd, Buffer.allocUnsafeSlow(size), 0, size, null);
  closeSync(rfd);
  const r = mibs(size * n, performance.now() - t0);
  rmSync(f);
  return { what: 'plain sequential file (ceiling)', size, w, r };
}

/**
 * A driver's put/get throughput, 4 in flight. Also run on the example vendor driver (an append-only segment
 * log) as the packed-segments alternative to the file tier's one file per block.
 */
async function driverRun(what: string, d: StorageDriver, root: string, size: number, n: number): Promise<Row> {
  await d.open();
  const v = Buffer.alloc(size, 7);
  const meta = { checksum: checksum(v) };
  settle();
  let t0 = performance.now();
  await pool(n, 4, (i) => d.put(key(i), v, meta));
  const w = mibs(size * n, performance.now() - t0);
  settle();
  t0 = performance.now();
  await pool(n, 4, async (i) => { if ((await d.get(key(i)))?.value.length !== size) throw new Error('bad read'); });
  const r = mibs(size * n, performance.now() - t0);
  await d.close();
  rmSync(root, { recursive: true, force: true });
  return { what, size, w, r };
}

async function s3Pair(size: number, n: number): Promise<Row[]> {
  const server = await startS3rver({ bucket: 'bench' });
  try {
    const raw = new S3Client({
      region: 'us-east-1', endpoint: server.endpoint, forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
      requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED',
    });
    const v = Buffer.alloc(size, 9);
    let t0 = performance.now();
    await pool(n, 4, async (i) => { await raw.send(new PutObjectCommand({ Bucket: 'bench', Key: `raw/${i}`, Body: v })); });
    const rw = mibs(size * n, performance.now() - t0);
    t0 = performance.now();
    await pool(n, 4, async (i) => {
      const r = await raw.send(new GetObjectCommand({ Bucket: 'bench', Key: `raw/${i}` }));
      if ((await r.Body!.transformToByteArray()).length !== size) throw new Error('bad raw read');
    });
    const rr = mibs(size * n, performance.now() - t0);
    raw.destroy();
    const d = new S3Driver(parseS3Config({ ...server.config, bucket: 'bench' }));
    await d.open();
    const meta = { checksum: checksum(v) };
    t0 = performance.now();
    await pool(n, 4, (i) => d.put(key(i), v, meta));
    const dw = mibs(size * n, performance.now() - t0);
    t0 = performance.now();
    await pool(n, 4, async (i) => { if ((await d.get(key(i)))?.value.length !== size) throw new Error('bad driver read'); });
    const dr = mibs(size * n, performance.now() - t0);
    await d.close();
    return [{ what: 'raw S3 client, s3rver (ceiling)', size, w: rw, r: rr }, { what: 's3 driver, s3rver (4 in flight)', size, w: dw, r: dr }];
  } finally {
    await server.stop();
  }
}

const dir = mkdtempSync(path.join(os.tmpdir(), 'kvstash-bench-drivers-'));
const rows: (string | number)[][] = [];
const add = (ceiling: Row, x: Row, n: number) => {
  rows.push([ceiling.what, humanBytes(x.size), n, ceiling.w.toFixed(0), ceiling.r.toFixed(0), '1.00', '1.00']);
  rows.push([x.what, humanBytes(x.size), n, x.w.toFixed(0), x.r.toFixed(0), ratio(x.w, ceiling.w), ratio(x.r, ceiling.r)]);
};
try {
  const fileTotal = (quick ? 256 : 1024) * MiB;
  for (const size of [256 * 1024, 4 * MiB, 64 * MiB]) {
    const n = fileTotal / size;
    const drv = await driverRun('file driver (4 in flight)', new FileDriver(parseFileConfig({ root: path.join(dir, 'drv') })), path.join(dir, 'drv'), size, n);
    const seg = await driverRun('segment log, example driver', new SegmentDriver({ dir: path.join(dir, 'seg'), segmentBytes: 1 << 30, fsync: false, maxValueBytes: 1 << 30 }), path.join(dir, 'seg'), size, n);
    const plain = plainFile(dir, size, n);
    add(plain, drv, n);
    rows.push([seg.what, humanBytes(size), n, seg.w.toFixed(0), seg.r.toFixed(0), ratio(seg.w, plain.w), ratio(seg.r, plain.r)]);
  }
  const s3Total = (quick ? 64 : 256) * MiB;
  for (const size of [MiB, 32 * MiB]) {
    const n = s3Total / size;
    const [ceiling, drv] = await s3Pair(size, n);
    add(ceiling!, drv!, n);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
process.stdout.write(formatTable(['path', 'value', 'values', 'write MiB/s', 'read MiB/s', 'write ratio', 'read ratio'], rows) + '\n');
process.stdout.write('ratio = driver / ceiling measured in the same run on the same medium (page-cache reads).\n');
