/**
 * CircuitBreaker — takes a failing backend out of the path and lets one probe through to bring it back.
 *
 * closed: calls pass; `failureThreshold` consecutive failures open it.
 * open: calls are refused at once (the caller answers KVS_UNAVAILABLE) until `cooldownMs` has passed.
 * half-open: exactly one call (the probe) passes; its success closes the breaker, its failure opens it again
 * with the cooldown doubled (up to `maxCooldownMs`). Only failures that say the backend is unhealthy (timeouts,
 * 5xx, connection errors) should be reported; misses and refusals (404, 403) are successes for this purpose.
 */
export type BreakerState = 'closed' | 'open' | 'half-open';

export interface BreakerOptions {
  failureThreshold: number;
  cooldownMs: number;
  maxCooldownMs: number;
}

export class CircuitBreaker {
  private state_: BreakerState = 'closed';
  private failures = 0;
  private openedAt = 0;
  private cooldown: number;
  private probing = false;
  opens = 0;
  rejected = 0;

  constructor(private readonly o: BreakerOptions, private readonly now: () => number = Date.now) {
    this.cooldown = o.cooldownMs;
  }

  get state(): BreakerState {
    if (this.state_ === 'open' && this.now() - this.openedAt >= this.cooldown) this.state_ = 'half-open';
    return this.state_;
  }

  /** May a call go out now? In half-open, true once (the probe) until it reports back. */
  allow(): boolean {
    const s = this.state;
    if (s === 'closed') return true;
    if (s === 'half-open' && !this.probing) {
      this.probing = true;
      return true;
    }
    this.rejected++;
    return false;
  }

  /** True if a call could go out now (without claiming the probe). */
  get available(): boolean {
    const s = this.state;
    return s === 'closed' || (s === 'half-open' && !this.probing);
  }

  success(): void {
    this.failures = 0;
    this.probing = false;
    this.cooldown = this.o.cooldownMs;
    this.state_ = 'closed';
  }

  failure(): void {
    this.failures++;
    if (this.state_ === 'half-open' || this.probing) {
      this.probing = false;
      this.cooldown = Math.min(this.cooldown * 2, this.o.maxCooldownMs);
      this.trip();
    } else if (this.state_ === 'closed' && this.failures >= this.o.failureThreshold) {
      this.trip();
    }
  }

  private trip(): void {
    this.state_ = 'open';
    this.openedAt = this.now();
    this.opens++;
  }

  /** Seconds the breaker has been open (0 when closed). */
  openForMs(): number {
    return this.state_ === 'closed' ? 0 : this.now() - this.openedAt;
  }
}
