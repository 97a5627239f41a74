/**
 * S3-compatible driver (AWS S3, MinIO, Ceph RGW, s3rver) on @aws-sdk/client-s3 with SigV4.
 *
 * Objects: `<prefix>v1/<ns>/<hash>`, checksum and length in user metadata (`x-amz-meta-kvs-checksum`, `-kvs-size`);
 * an object whose length differs from its declared size is incomplete (a server assembling it in place) and reads
 * as a miss. The key itself is in user metadata too (`x-amz-meta-kvs-key`) and checked on every get and head: an
 * object copied or moved under another key's name (or one without the field) is a miss, counted `misplaced`, never
 * that key's block. Quarantined values move to `<prefix>quarantine/<ns>-<hash>`.
 * - put: one PutObject (Buffer body) below `multipartThresholdBytes`, else a multipart upload — S3 publishes the
 *   object only at CompleteMultipartUpload, so a writer killed mid-upload leaves nothing visible (stale uploads are
 *   aborted at open, by age). `conditionalPut` adds `If-None-Match: *` (412 = someone stored it first = done).
 * - get: one GetObject, or parallel ranged GETs pinned to the first range's ETag (If-Match) for big values.
 * - Every request has its own deadline (AbortSignal), is retried with backoff + jitter on 5xx / throttling /
 *   timeouts / connection errors, and runs through a circuit breaker: after `breakerFailures` failed operations
 *   calls are refused (KVS_UNAVAILABLE) and `available()` is false, so the tier stack leaves the tier out of
 *   lookups and reads; after the cooldown one probe goes out and closes it again on success.
 * - Checksums are sent as Buffers with requestChecksumCalculation/responseChecksumValidation 'WHEN_REQUIRED':
 *   streamed bodies with the SDK's default aws-chunked encoding are stored with their framing by some servers.
 */
import {
  AbortMultipartUploadCommand, CompleteMultipartUploadCommand, CopyObjectCommand, CreateMultipartUploadCommand,
  DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command,
  PutObjectCommand, S3Client, UploadPartCommand, type S3ClientConfig,
} from '@aws-sdk/client-s3';
import type { Readable } from 'node:stream';
import { ErrorCode, KvstashError } from '../../protocol/errors.js';
import { CircuitBreaker } from './circuit.js';
import {
  assertKey, assertValueSize, getManyBySingle, putManyBySingle, type BlockMeta, type DriverFactory, type DriverLimits,
  type ListedValue, type StorageDriver, type StoredValue,
} from './driver.js';
import { classifyS3Error, type S3Failure } from './s3-errors.js';
import { parseS3Config, type S3DriverConfig } from './s3-config.js';
import { withRetry } from './retry.js';
import { registerBuiltinDriver } from './registry.js';

type Op = 'get' | 'put' | 'head' | 'delete' | 'list' | 'multipart' | 'copy';
const OPS: Op[] = ['get', 'put', 'head', 'delete', 'list', 'multipart', 'copy'];
const META = 'kvs-checksum';
const SIZE = 'kvs-size';
const KEY = 'kvs-key';
const notFound = (f: S3Failure) => (f.status === 404 ? null : undefined);
const complete = (m: Record<string, string> | undefined, length: number) => !!m?.[META] && m[SIZE] === String(length);

export class S3Driver implements StorageDriver {
  readonly name = 's3';
  readonly durable = true;
  readonly shared = true;
  readonly limits: DriverLimits;
  readonly client: S3Client;
  readonly breaker: CircuitBreaker;
  private closed = false;
  private readonly c: Record<string, number> = { retries: 0, timeouts: 0, bytesIn: 0, bytesOut: 0, conditionalConflicts: 0, incomplete: 0, misplaced: 0 };

  /** `clientOverrides` (not JSON config): extra S3Client settings for embedders and tests (e.g. an HTTP agent). */
  constructor(readonly config: S3DriverConfig, clientOverrides: Partial<S3ClientConfig> = {}) {
    this.limits = { maxValueBytes: config.maxValueBytes };
    for (const op of OPS) for (const s of ['ok', 'miss', 'err', 'ms']) this.c[`${op}_${s}`] = 0;
    this.breaker = new CircuitBreaker({ failureThreshold: config.breakerFailures, cooldownMs: config.breakerCooldownMs, maxCooldownMs: config.breakerMaxCooldownMs });
    this.client = new S3Client({
      region: config.region,
      endpoint: config.endpoint || undefined,
      forcePathStyle: config.forcePathStyle,
      credentials: config.accessKeyId ? { accessKeyId: config.accessKeyId, secretAccessKey: config.secretAccessKey, sessionToken: config.sessionToken || undefined } : undefined,
      maxAttempts: 1, // retries are ours (counted, jittered, inside the breaker)
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: { requestTimeout: config.requestTimeoutMs, connectionTimeout: config.connectTimeoutMs },
      ...clientOverrides,
    });
  }

  private objectKey(key: string): string {
    return `${this.config.prefix}v1/${key}`;
  }

  /** False while the circuit is open: the tier stack then keeps this tier out of lookups and reads. */
  available(): boolean {
    return !this.closed && this.breaker.available;
  }

  /**
   * One logical operation: breaker check, retried requests with per-attempt deadlines, counters, error mapping.
   * `miss(f)` says which failures are results (404 on a read) rather than errors.
   */
  private async call<T>(op: Op, what: string, fn: (signal: AbortSignal) => Promise<T>, miss?: (f: S3Failure) => T | undefined): Promise<T> {
    if (this.closed) throw new KvstashError(ErrorCode.UNAVAILABLE, 's3 driver is closed');
    if (!this.breaker.allow()) {
      this.c[`${op}_err`]!++;
      throw new KvstashError(ErrorCode.UNAVAILABLE, `s3 tier unavailable: circuit open for ${this.breaker.openForMs()} ms after repeated failures (${what})`);
    }
    const t0 = performance.now();
    try {
      const r = await withRetry(fn, {
        retries: this.config.retries, baseDelayMs: this.config.retryBaseMs, maxDelayMs: this.config.retryMaxMs, attemptTimeoutMs: this.config.requestTimeoutMs,
      }, (err) => classifyS3Error(err).retryable, (err) => {
        this.c.retries!++;
        if (classifyS3Error(err).code === ErrorCode.TIMEOUT) this.c.timeouts!++;
      });
      this.breaker.success();
      this.c[`${op}_ok`]!++;
      return r;
    } catch (err) {
      const f = classifyS3Error(err);
      const m = miss?.(f);
      if (m !== undefined) {
        this.breaker.success();
        this.c[`${op}_miss`]!++;
        return m;
      }
      if (f.unhealthy) this.breaker.failure();
      else this.breaker.success();
      if (f.code === ErrorCode.TIMEOUT) this.c.timeouts!++;
      this.c[`${op}_err`]!++;
      throw new KvstashError(f.code, `s3 ${what} failed: ${f.message}`, { cause: err });
    } finally {
      this.c[`${op}_ms`]! += performance.now() - t0;
    }
  }

  async open(): Promise<void> {
    // One cheap authenticated request: wrong credentials or a missing bucket fail here, with a clear code.
    await this.call('list', `list of bucket ${this.config.bucket}`, (signal) =>
      this.client.send(new ListObjectsV2Command({ Bucket: this.config.bucket, Prefix: this.config.prefix, MaxKeys: 1 }), { abortSignal: signal }));
    await this.abortStaleUploads().catch(() => undefined); // best effort: not every server lists uploads
  }

  private async abortStaleUploads(): Promise<void> {
    const r = await this.client.send(new ListMultipartUploadsCommand({ Bucket: this.config.bucket, Prefix: `${this.config.prefix}v1/` }), { abortSignal: AbortSignal.timeout(this.config.requestTimeoutMs) });
    for (const u of r.Uploads ?? []) {
      if (u.Key && u.UploadId && u.Initiated && Date.now() - u.Initiated.getTime() > this.config.staleUploadMs) {
        await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.config.bucket, Key: u.Key, UploadId: u.UploadId })).catch(() => undefined);
      }
    }
  }

  async get(key: string): Promise<StoredValue | undefined> {
    assertKey(key);
    const Key = this.objectKey(key);
    const Bucket = this.config.bucket;
    const threshold = this.config.rangedReadThresholdBytes;
    const first = await this.call('get', `get ${key}`, async (signal) => {
      const r = await this.client.send(new GetObjectCommand({ Bucket, Key }), { abortSignal: signal });
      const total = r.ContentLength ?? 0;
      // An object whose length is not the one its writer declared is still being written (servers that assemble
      // multipart objects in place, like s3rver) or is not ours: a miss, never a partial value.
      if (!complete(r.Metadata, total)) {
        (r.Body as Readable | undefined)?.destroy();
        this.c.incomplete!++;
        return null;
      }
      if (r.Metadata?.[KEY] !== key) {
        (r.Body as Readable | undefined)?.destroy();
        this.c.misplaced!++;
        return null;
      }
      if (total > this.limits.maxValueBytes) throw new KvstashError(ErrorCode.STORAGE, `s3 object ${Key} is ${total} bytes, over the limit`);
      // Big value: keep only the first part of this response and fetch the rest as parallel ranges.
      const want = threshold > 0 && total >= threshold ? Math.min(this.config.partBytes, total) : total;
      const body = await readBody(r.Body as Readable, want, want === total);
      return { body, total, etag: r.ETag, checksum: r.Metadata?.[META] ?? '' };
    }, notFound);
    if (!first) return undefined;
    let value = first.body;
    if (first.total > value.length) {
      value = Buffer.allocUnsafe(first.total);
      first.body.copy(value, 0);
      const starts: number[] = [];
      for (let s = first.body.length; s < first.total; s += this.config.partBytes) starts.push(s);
      let gone = false;
      await pool(starts, this.config.partConcurrency, async (s) => {
        const end = Math.min(s + this.config.partBytes, first.total) - 1;
        const part = await this.call('get', `ranged get ${key}`, async (signal) => {
          const r = await this.client.send(new GetObjectCommand({ Bucket, Key, Range: `bytes=${s}-${end}`, IfMatch: first.etag }), { abortSignal: signal });
          return Buffer.from(await r.Body!.transformToByteArray());
        }, (f) => (f.status === 404 || f.status === 412 ? null : undefined));
        if (!part || part.length !== end - s + 1) gone = true;
        else part.copy(value, s);
      });
      if (gone) return undefined; // deleted or replaced between ranges: a miss, never a mixed value
    }
    this.c.bytesIn! += value.length;
    return { value, meta: { checksum: first.checksum } };
  }

  async put(key: string, value: Buffer, meta: BlockMeta): Promise<void> {
    assertKey(key);
    assertValueSize(value, this.limits);
    const Key = this.objectKey(key);
    const Bucket = this.config.bucket;
    const Metadata = { [META]: meta.checksum, [SIZE]: String(value.length), [KEY]: key };
    const IfNoneMatch = this.config.conditionalPut ? '*' : undefined;
    // 412: the object exists (someone stored these bytes first); 409: a concurrent conditional write won. Both mean done.
    const exists = (f: S3Failure) => (IfNoneMatch && (f.status === 412 || f.status === 409) ? (this.c.conditionalConflicts!++, true) : undefined);
    if (value.length < this.config.multipartThresholdBytes) {
      await this.call('put', `put ${key}`, async (signal) => {
        await this.client.send(new PutObjectCommand({ Bucket, Key, Body: value, Metadata, IfNoneMatch, ContentLength: value.length }), { abortSignal: signal });
        return true;
      }, exists);
      this.c.bytesOut! += value.length;
      return;
    }
    const up = await this.call('multipart', `start upload of ${key}`, (signal) =>
      this.client.send(new CreateMultipartUploadCommand({ Bucket, Key, Metadata }), { abortSignal: signal }));
    const UploadId = up.UploadId!;
    try {
      const n = Math.ceil(value.length / this.config.partBytes);
      const parts: { ETag: string; PartNumber: number }[] = new Array(n);
      await pool([...Array(n).keys()], this.config.partConcurrency, async (i) => {
        const Body = value.subarray(i * this.config.partBytes, (i + 1) * this.config.partBytes);
        const r = await this.call('multipart', `upload part ${i + 1}/${n} of ${key}`, (signal) =>
          this.client.send(new UploadPartCommand({ Bucket, Key, UploadId, PartNumber: i + 1, Body, ContentLength: Body.length }), { abortSignal: signal }));
        parts[i] = { ETag: r.ETag!, PartNumber: i + 1 };
      });
      await this.call('multipart', `complete upload of ${key}`, async (signal) => {
        await this.client.send(new CompleteMultipartUploadCommand({ Bucket, Key, UploadId, MultipartUpload: { Parts: parts }, IfNoneMatch }), { abortSignal: signal });
        return true;
      }, exists);
      this.c.bytesOut! += value.length;
    } catch (err) {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket, Key, UploadId }), { abortSignal: AbortSignal.timeout(this.config.requestTimeoutMs) }).catch(() => undefined);
      throw err;
    }
  }

  async stat(key: string): Promise<ListedValue | undefined> {
    assertKey(key);
    const r = await this.call('head', `head ${key}`, (signal) =>
      this.client.send(new HeadObjectCommand({ Bucket: this.config.bucket, Key: this.objectKey(key) }), { abortSignal: signal }), notFound);
    if (r && !complete(r.Metadata, r.ContentLength ?? 0)) this.c.incomplete!++;
    else if (r && r.Metadata?.[KEY] !== key) {
      this.c.misplaced!++;
      return undefined;
    }
    return r && complete(r.Metadata, r.ContentLength ?? 0) ? { key, size: r.ContentLength!, meta: { checksum: r.Metadata![META]! } } : undefined;
  }

  async has(key: string): Promise<boolean> {
    return (await this.stat(key)) !== undefined;
  }

  async delete(key: string): Promise<boolean> {
    if (!(await this.has(key))) return false; // S3 deletes answer 204 either way: HEAD tells what was there
    await this.call('delete', `delete ${key}`, (signal) =>
      this.client.send(new DeleteObjectCommand({ Bucket: this.config.bucket, Key: this.objectKey(key) }), { abortSignal: signal }), notFound);
    return true;
  }

  async quarantine(key: string): Promise<void> {
    assertKey(key);
    const Bucket = this.config.bucket;
    const dest = `${this.config.prefix}quarantine/${key.replace('/', '-')}`;
    await this.call('copy', `quarantine ${key}`, (signal) =>
      this.client.send(new CopyObjectCommand({ Bucket, Key: dest, CopySource: `${Bucket}/${this.objectKey(key)}` }), { abortSignal: signal }), notFound).catch(() => undefined);
    await this.delete(key).catch(() => undefined);
  }

  getMany(keys: string[]): Promise<(StoredValue | undefined)[]> {
    return getManyBySingle(this, keys);
  }

  putMany(items: { key: string; value: Buffer; meta: BlockMeta }[]): Promise<boolean[]> {
    return putManyBySingle(this, items);
  }

  async *list(): AsyncIterable<ListedValue> {
    const Prefix = `${this.config.prefix}v1/`;
    let ContinuationToken: string | undefined;
    do {
      const page = await this.call('list', 'list', (signal) =>
        this.client.send(new ListObjectsV2Command({ Bucket: this.config.bucket, Prefix, ContinuationToken }), { abortSignal: signal }));
      const keys = (page.Contents ?? []).map((o) => o.Key!.slice(Prefix.length)).filter((k) => /^[0-9a-f]{32}\/[0-9a-f]{64}$/.test(k));
      const found: (ListedValue | undefined)[] = new Array(keys.length);
      // Listings carry no user metadata: one HEAD per value for its checksum (rebuild cost, see docs/storage.md).
      await pool([...keys.keys()], this.config.listConcurrency, async (i) => { found[i] = await this.stat(keys[i]!).catch(() => undefined); });
      for (const f of found) if (f) yield f;
      ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (ContinuationToken);
  }

  stats(): Record<string, number> {
    const s = this.breaker.state;
    return { ...this.c, breakerState: s === 'closed' ? 0 : s === 'open' ? 1 : 2, breakerOpens: this.breaker.opens, breakerRejected: this.breaker.rejected };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.client.destroy();
  }
}

/** Read `want` bytes of a response body; `whole`: the body must end exactly there. */
async function readBody(body: Readable, want: number, whole: boolean): Promise<Buffer> {
  const out = Buffer.allocUnsafe(want);
  let n = 0;
  let extra = false;
  // Leaving the loop early (break) destroys the stream: the rest of a big body is fetched as ranges instead.
  for await (const chunk of body as AsyncIterable<Buffer>) {
    const take = Math.min(chunk.length, want - n);
    chunk.copy(out, n, 0, take);
    n += take;
    if (take < chunk.length) {
      extra = true;
      break;
    }
    if (!whole && n === want) break;
  }
  if (n !== want) throw Object.assign(new Error(`response body ended after ${n} of ${want} bytes`), { code: 'ECONNRESET' });
  if (whole && extra) throw new Error(`response body is longer than its Content-Length (${want})`);
  return out;
}

async function pool<T>(items: T[], n: number, fn: (x: T) => Promise<void>): Promise<void> {
  let i = 0;
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, async () => {
    while (i < items.length) await fn(items[i++]!);
  }));
}

export const s3DriverFactory: DriverFactory<S3DriverConfig> = {
  name: 's3',
  parseConfig: (raw) => parseS3Config(raw),
  create: (c) => new S3Driver(c),
};

registerBuiltinDriver(s3DriverFactory);
