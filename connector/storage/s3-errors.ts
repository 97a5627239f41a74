/**
 * What an S3 failure means for the driver: which kvstash code it becomes, whether to retry it, and whether it says
 * the backend is unhealthy (counts toward the circuit breaker). Misses (404) and refusals (403) are answers from a
 * healthy server: never retried, never trip the breaker.
 */
import { ErrorCode, KvstashError } from '../../protocol/errors.js';

export interface S3Failure {
  code: ErrorCode;
  /** HTTP status, when a response came back. */
  status?: number;
  retryable: boolean;
  unhealthy: boolean;
  message: string;
}

const AUTH = new Set(['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'ExpiredToken', 'InvalidToken', 'TokenRefreshRequired', 'AccessDenied', 'CredentialsProviderError', 'InvalidClientTokenId']);
const THROTTLE = new Set(['SlowDown', 'Throttling', 'ThrottlingException', 'RequestLimitExceeded', 'TooManyRequestsException', 'RequestThrottled', 'RequestTimeout', 'InternalError', 'ServiceUnavailable']);
const NET = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ENOTFOUND', 'UND_ERR_SOCKET', 'ERR_STREAM_PREMATURE_CLOSE']);

export function classifyS3Error(err: unknown): S3Failure {
  // Our own refusals (an object over the limit) say nothing about the server's health.
  if (err instanceof KvstashError) return { code: err.code, retryable: false, unhealthy: false, message: err.message };
  const e = err as { name?: string; code?: string; message?: string; $metadata?: { httpStatusCode?: number }; cause?: { code?: string } };
  const name = e?.name ?? '';
  const status = e?.$metadata?.httpStatusCode;
  const sys = e?.code ?? e?.cause?.code ?? '';
  const message = `${name && name !== 'Error' ? name + ': ' : ''}${e?.message ?? String(err)}${status ? ` (HTTP ${status})` : ''}`;
  if (name === 'AbortError' || name === 'TimeoutError' || sys === 'ETIMEDOUT' || /timed? ?out/i.test(e?.message ?? '')) {
    return { code: ErrorCode.TIMEOUT, status, retryable: true, unhealthy: true, message };
  }
  if (AUTH.has(name) || status === 401 || status === 403) {
    const hint = name === 'CredentialsProviderError' ? ' (no credentials: set accessKeyId/secretAccessKey or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)' : ' (credentials refused)';
    return { code: ErrorCode.UNAUTHENTICATED, status, retryable: false, unhealthy: false, message: message + hint };
  }
  if (THROTTLE.has(name) || status === 429 || (status !== undefined && status >= 500)) {
    return { code: ErrorCode.STORAGE, status, retryable: true, unhealthy: true, message };
  }
  if (status === undefined && (NET.has(sys) || NET.has(name))) {
    return { code: ErrorCode.STORAGE, status, retryable: true, unhealthy: true, message: `${message} [${sys || name}]` };
  }
  if (status === undefined) return { code: ErrorCode.STORAGE, status, retryable: false, unhealthy: true, message };
  return { code: ErrorCode.STORAGE, status, retryable: false, unhealthy: false, message };
}
