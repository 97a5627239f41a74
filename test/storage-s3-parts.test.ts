import test from 'ava';
import { ErrorCode, KvstashError } from '../protocol/errors.js';
import { CircuitBreaker } from '../connector/storage/circuit.js';
import { backoffMs, withRetry } from '../connector/storage/retry.js';
import { classifyS3Error } from '../connector/storage/s3-errors.js';
import { parseS3Config } from '../connector/storage/s3-config.js';

test('storage-s3 - breaker: closed → open after N failures → half-open after the cooldown → one probe → closed', (t) => {
  let now = 0;
  const b = new CircuitBreaker({ failureThreshold: 3, cooldownMs: 100, maxCooldownMs: 400 }, () => now);
  b.failure();
  b.failure();
  t.is(b.state, 'closed');
  b.success(); // a success resets the count
  b.failure();
  b.failure();
  t.is(b.state, 'closed');
  b.failure();
  t.is(b.state, 'open');
  t.false(b.allow());
  now = 100;
  t.is(b.state, 'half-open');
  t.true(b.available);
  t.true(b.allow(), 'the probe');
  t.false(b.allow(), 'only one probe at a time');
  b.failure();
  t.is(b.state, 'open');
  now = 299;
  t.is(b.state, 'open', 'cooldown doubled to 200');
  now = 300;
  t.true(b.allow());
  b.success();
  t.is(b.state, 'closed');
  t.is(b.opens, 2);
  t.is(b.rejected, 2);
});

test('storage-s3 - backoff is full jitter under a doubling, capped ceiling; withRetry stops on non-retryable errors', async (t) => {
  const o = { baseDelayMs: 10, maxDelayMs: 50 };
  t.is(backoffMs(0, o, () => 0.999), 9);
  t.is(backoffMs(2, o, () => 0.999), 39);
  t.is(backoffMs(10, o, () => 0.999), 49);
  t.is(backoffMs(3, o, () => 0), 0);
  let calls = 0;
  await t.throwsAsync(withRetry(async () => { calls++; throw new Error('fatal'); }, { retries: 5, baseDelayMs: 1, maxDelayMs: 1, attemptTimeoutMs: 1000 }, () => false));
  t.is(calls, 1);
  calls = 0;
  const v = await withRetry(async (signal) => { t.false(signal.aborted); if (++calls < 3) throw new Error('again'); return 'ok'; }, { retries: 5, baseDelayMs: 1, maxDelayMs: 1, attemptTimeoutMs: 1000 }, () => true);
  t.is(v, 'ok');
  t.is(calls, 3);
});

test('storage-s3 - error classification: misses and refusals are healthy answers, 5xx/timeouts/connection errors are not', (t) => {
  const s3err = (name: string, status?: number) => Object.assign(new Error(name), { name, $metadata: { httpStatusCode: status } });
  const c = (e: unknown) => { const f = classifyS3Error(e); return [f.code, f.retryable, f.unhealthy]; };
  t.deepEqual(c(s3err('NoSuchKey', 404)), [ErrorCode.STORAGE, false, false]);
  t.deepEqual(c(s3err('InvalidAccessKeyId', 403)), [ErrorCode.UNAUTHENTICATED, false, false]);
  t.deepEqual(c(s3err('SignatureDoesNotMatch', 403)), [ErrorCode.UNAUTHENTICATED, false, false]);
  t.deepEqual(c(s3err('SlowDown', 503)), [ErrorCode.STORAGE, true, true]);
  t.deepEqual(c(s3err('InternalError', 500)), [ErrorCode.STORAGE, true, true]);
  t.deepEqual(c(s3err('TooManyRequests', 429)), [ErrorCode.STORAGE, true, true]);
  t.deepEqual(c(Object.assign(new Error('Request aborted'), { name: 'AbortError' })), [ErrorCode.TIMEOUT, true, true]);
  t.deepEqual(c(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED' })), [ErrorCode.STORAGE, true, true]);
  t.deepEqual(c(new KvstashError(ErrorCode.STORAGE, 'object over the limit')), [ErrorCode.STORAGE, false, false]);
  t.regex(classifyS3Error(Object.assign(new Error('Could not load credentials from any providers'), { name: 'CredentialsProviderError' })).message, /AWS_ACCESS_KEY_ID/);
});

test('storage-s3 - config: defaults follow the endpoint, bad fields are KVS_CONFIG naming them', (t) => {
  const aws = parseS3Config({ bucket: 'kv-cache' }, {});
  t.is(aws.forcePathStyle, false);
  t.is(aws.conditionalPut, true, 'AWS S3 has conditional writes');
  t.is(aws.region, 'us-east-1');
  const minio = parseS3Config({ bucket: 'kvc', endpoint: 'http://127.0.0.1:9000' }, { AWS_REGION: 'eu-west-1' });
  t.is(minio.forcePathStyle, true);
  t.is(minio.conditionalPut, false);
  t.is(minio.region, 'eu-west-1');
  for (const [raw, re] of [
    [{}, /s3\.bucket/], [{ bucket: 'Bad_Bucket' }, /s3\.bucket/], [{ bucket: 'kvc', prefix: 'x' }, /s3\.prefix/],
    [{ bucket: 'kvc', partBytes: 1000 }, /s3\.partBytes/], [{ bucket: 'kvc', accessKeyId: 'a' }, /secretAccessKey/], [{ bucket: 'kvc', retries: -1 }, /s3\.retries/],
  ] as [Record<string, unknown>, RegExp][]) {
    const e = t.throws(() => parseS3Config(raw, {})) as KvstashError;
    t.is(e.code, ErrorCode.CONFIG);
    t.regex(e.message, re);
  }
});
