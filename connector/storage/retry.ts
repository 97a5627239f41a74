/**
 * Retry with exponential backoff and full jitter, for drivers that talk to a server. The caller says which errors
 * are worth retrying; each attempt gets its own deadline (an AbortSignal) so one hung request cannot eat the budget.
 */
export interface RetryOptions {
  /** Extra attempts after the first. */
  retries: number;
  /** First backoff ceiling, ms; doubles per attempt up to maxDelayMs. The wait is uniform in [0, ceiling]. */
  baseDelayMs: number;
  maxDelayMs: number;
  /** Deadline of one attempt, ms. */
  attemptTimeoutMs: number;
}

export function backoffMs(attempt: number, o: Pick<RetryOptions, 'baseDelayMs' | 'maxDelayMs'>, random = Math.random): number {
  return Math.floor(random() * Math.min(o.maxDelayMs, o.baseDelayMs * 2 ** attempt));
}

/** Run `fn` until it succeeds, `retryable(err)` is false, or the retries are spent; `onRetry` is told about each retry. */
export async function withRetry<T>(
  fn: (signal: AbortSignal, attempt: number) => Promise<T>,
  o: RetryOptions,
  retryable: (err: unknown) => boolean,
  onRetry?: (err: unknown, attempt: number) => void,
): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn(AbortSignal.timeout(o.attemptTimeoutMs), attempt);
    } catch (err) {
      if (attempt >= o.retries || !retryable(err)) throw err;
      onRetry?.(err, attempt);
      await new Promise((r) => setTimeout(r, backoffMs(attempt, o)));
    }
  }
}
