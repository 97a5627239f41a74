/**
 * AuthThrottle — slows down guessing of gRPC bearer tokens (issue 9 item 8: 4,100 wrong tries/s went through).
 *
 * Rules:
 * - One token bucket per peer host (the port is ignored): `burst` failed authentications at once, refilled at
 *   `perSecond`. A failure takes one token. A call from a host whose bucket is empty is refused with
 *   KVS_RESOURCE_EXHAUSTED before its token is even compared, so a guesser gets at most `perSecond` answers
 *   a second. Successful calls take nothing.
 * - Callers on the same host share a bucket: a guesser there also delays that host's honest clients while it
 *   keeps guessing (the price of not trusting the port).
 * - At most `maxHosts` buckets are kept (oldest dropped). perSecond 0 turns the throttle off.
 */
import { ErrorCode, KvstashError } from '../../protocol/errors.js';

interface Bucket { tokens: number; at: number }

export class AuthThrottle {
  private readonly buckets = new Map<string, Bucket>();
  refused = 0;
  failures = 0;

  constructor(private readonly perSecond: number, private readonly burst: number, private readonly maxHosts = 10_000) {}

  /** "ipv4:127.0.0.1:5432" / "ipv6:[::1]:5432" / "unix:…" → the host part. */
  static hostOf(peer: string): string {
    const m = /^(?:ipv4:|ipv6:)?(\[[^\]]*\]|[^:]+(?::[^:]+)*?)(?::\d+)?$/.exec(peer);
    return m ? m[1]! : peer;
  }

  private bucket(host: string, now: number): Bucket {
    let b = this.buckets.get(host);
    if (!b) {
      b = { tokens: this.burst, at: now };
      if (this.buckets.size >= this.maxHosts) this.buckets.delete(this.buckets.keys().next().value!);
    } else {
      b.tokens = Math.min(this.burst, b.tokens + ((now - b.at) / 1000) * this.perSecond);
      b.at = now;
      this.buckets.delete(host); // re-insert: most recent last
    }
    this.buckets.set(host, b);
    return b;
  }

  /** Throw KVS_RESOURCE_EXHAUSTED when `peer` may not try now. */
  admit(peer: string, now = Date.now()): void {
    if (this.perSecond <= 0) return;
    const host = AuthThrottle.hostOf(peer);
    const b = this.bucket(host, now);
    if (b.tokens < 1) {
      this.refused++;
      const waitMs = Math.ceil(((1 - b.tokens) / this.perSecond) * 1000);
      throw new KvstashError(ErrorCode.RESOURCE_EXHAUSTED, `too many failed authentications from ${host}; retry in ${waitMs} ms`);
    }
  }

  /** Record a failed authentication from `peer`. */
  failed(peer: string, now = Date.now()): void {
    this.failures++;
    if (this.perSecond <= 0) return;
    const b = this.bucket(AuthThrottle.hostOf(peer), now);
    b.tokens = Math.max(0, b.tokens - 1);
  }
}
