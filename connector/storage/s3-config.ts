/** Config of the S3-compatible driver (connector/storage/s3.ts): fields, defaults, parser. */
import { ErrorCode, KvstashError } from '../../protocol/errors.js';

export interface S3DriverConfig {
  bucket: string;
  /** Object-name prefix; values live under `<prefix>v1/<ns>/<hash>`. */
  prefix: string;
  /** Custom endpoint (MinIO, Ceph, s3rver, …); empty = AWS. */
  endpoint: string;
  region: string;
  /** Path-style addressing (`endpoint/bucket/key`) instead of virtual-hosted (`bucket.endpoint/key`). */
  forcePathStyle: boolean;
  /** Static credentials; empty = the AWS SDK's default chain (AWS_ACCESS_KEY_ID/…, profile files, instance roles). */
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken: string;
  /** Values of at least this many bytes are uploaded in parts (invisible until the upload completes). */
  multipartThresholdBytes: number;
  partBytes: number;
  /** Parts uploaded / ranges read in parallel per value. */
  partConcurrency: number;
  /** Values of at least this many bytes are read as parallel ranged GETs; 0 = always one GET. */
  rangedReadThresholdBytes: number;
  /** Send `If-None-Match: *` so an existing object is never rewritten (AWS S3 since 2024; not s3rver). */
  conditionalPut: boolean;
  /** Deadline of one HTTP request, ms (AbortSignal). */
  requestTimeoutMs: number;
  connectTimeoutMs: number;
  /** Retries of a failed request (5xx, throttling, timeouts, connection errors), with backoff and full jitter. */
  retries: number;
  retryBaseMs: number;
  retryMaxMs: number;
  /** Consecutive failed operations that open the circuit breaker; cooldown before the half-open probe. */
  breakerFailures: number;
  breakerCooldownMs: number;
  breakerMaxCooldownMs: number;
  /** Incomplete multipart uploads older than this are aborted at open (other hosts' live uploads are younger). */
  staleUploadMs: number;
  /** Parallel HEADs while listing (S3 listings carry no metadata, so each value's checksum costs one HEAD). */
  listConcurrency: number;
  maxValueBytes: number;
}

export const S3_DEFAULTS: Omit<S3DriverConfig, 'bucket' | 'endpoint' | 'forcePathStyle' | 'conditionalPut' | 'region' | 'accessKeyId' | 'secretAccessKey' | 'sessionToken'> = {
  prefix: 'kvstash/', multipartThresholdBytes: 16 * 2 ** 20, partBytes: 8 * 2 ** 20, partConcurrency: 4,
  rangedReadThresholdBytes: 32 * 2 ** 20, requestTimeoutMs: 30_000, connectTimeoutMs: 3_000, retries: 3, retryBaseMs: 50,
  retryMaxMs: 2_000, breakerFailures: 5, breakerCooldownMs: 5_000, breakerMaxCooldownMs: 60_000, staleUploadMs: 24 * 3600_000,
  listConcurrency: 16, maxValueBytes: 5 * 2 ** 30,
};

function bad(field: string, want: string, got: unknown): never {
  throw new KvstashError(ErrorCode.CONFIG, `s3.${field} must be ${want}, got ${JSON.stringify(got)}`);
}

export function parseS3Config(raw: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env): S3DriverConfig {
  const str = (f: string, def: string): string => {
    const v = raw[f] ?? def;
    return typeof v === 'string' ? v : bad(f, 'a string', v);
  };
  const num = (f: keyof typeof S3_DEFAULTS, min: number): number => {
    const v = raw[f] ?? S3_DEFAULTS[f];
    return typeof v === 'number' && Number.isFinite(v) && v >= min ? v : bad(f, `a number ≥ ${min}`, v);
  };
  const bool = (f: string, def: boolean): boolean => {
    const v = raw[f] ?? def;
    return typeof v === 'boolean' ? v : bad(f, 'true or false', v);
  };
  const bucket = str('bucket', '');
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) bad('bucket', 'a bucket name (3-63 chars: a-z 0-9 . -)', raw.bucket);
  const endpoint = str('endpoint', env.AWS_ENDPOINT_URL_S3 ?? env.AWS_ENDPOINT_URL ?? '');
  const prefix = str('prefix', S3_DEFAULTS.prefix);
  if (prefix !== '' && !prefix.endsWith('/')) bad('prefix', 'empty or end with "/"', prefix);
  const c: S3DriverConfig = {
    bucket, prefix, endpoint,
    region: str('region', env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? 'us-east-1'),
    // Custom endpoints (MinIO, s3rver) usually want path-style; AWS wants virtual-hosted.
    forcePathStyle: bool('forcePathStyle', endpoint !== ''),
    accessKeyId: str('accessKeyId', ''), secretAccessKey: str('secretAccessKey', ''), sessionToken: str('sessionToken', ''),
    multipartThresholdBytes: num('multipartThresholdBytes', 5 * 2 ** 20), partBytes: num('partBytes', 5 * 2 ** 20),
    partConcurrency: num('partConcurrency', 1), rangedReadThresholdBytes: num('rangedReadThresholdBytes', 0),
    conditionalPut: bool('conditionalPut', endpoint === ''),
    requestTimeoutMs: num('requestTimeoutMs', 1), connectTimeoutMs: num('connectTimeoutMs', 1), retries: num('retries', 0),
    retryBaseMs: num('retryBaseMs', 0), retryMaxMs: num('retryMaxMs', 0), breakerFailures: num('breakerFailures', 1),
    breakerCooldownMs: num('breakerCooldownMs', 1), breakerMaxCooldownMs: num('breakerMaxCooldownMs', 1),
    staleUploadMs: num('staleUploadMs', 0), listConcurrency: num('listConcurrency', 1), maxValueBytes: num('maxValueBytes', 1),
  };
  if (Boolean(c.accessKeyId) !== Boolean(c.secretAccessKey)) bad('secretAccessKey', 'given together with accessKeyId', '(only one given)');
  return c;
}
