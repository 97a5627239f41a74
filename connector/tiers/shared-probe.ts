/**
 * SharedProbe — how a sidecar learns about blocks that other hosts wrote to a shared tier (nfs, s3).
 *
 * The index of each sidecar holds what it wrote itself plus what it listed at start-up. When a LOOKUP misses in
 * the index, the sidecar asks the shared tiers about the missing blocks — `stat` (or `has` + `get` for drivers
 * without stat) of the next keys of the chain, a few in parallel — adopts every block found into its index, and
 * answers from the index again. It stops at the first block no shared tier holds.
 *
 * Bounds: a token bucket (`perSecond`, `burst`) caps probe requests per second; a key found absent is not asked
 * again for `negativeTtlMs` (at most `maxNegative` remembered); one LOOKUP probes at most `maxPerLookup` keys. A
 * probe that fails (server down, circuit open) counts as absent. So a miss costs at most one round trip per
 * `concurrency` keys, and a storm of misses costs at most `perSecond` requests per second.
 */
import type { ListedValue, StorageDriver } from '../storage/driver.js';

export interface SharedProbeOptions {
  perSecond: number;
  burst: number;
  negativeTtlMs: number;
  maxNegative: number;
  maxPerLookup: number;
  concurrency: number;
}

export const PROBE_DEFAULTS: SharedProbeOptions = { perSecond: 500, burst: 1000, negativeTtlMs: 1000, maxNegative: 100_000, maxPerLookup: 256, concurrency: 16 };

export interface ProbeTier {
  index: number;
  driver: StorageDriver;
}

export class SharedProbe {
  readonly opts: SharedProbeOptions;
  private tokens: number;
  private refilledAt: number;
  private readonly negative = new Map<string, number>();
  readonly c = { probes: 0, found: 0, absent: 0, limited: 0, cachedAbsent: 0, errors: 0 };

  constructor(readonly tiers: ProbeTier[], opts: Partial<SharedProbeOptions> = {}, private readonly now: () => number = Date.now) {
    this.opts = { ...PROBE_DEFAULTS, ...opts };
    this.tokens = this.opts.burst;
    this.refilledAt = now();
  }

  private take(n: number): number {
    const t = this.now();
    this.tokens = Math.min(this.opts.burst, this.tokens + ((t - this.refilledAt) / 1000) * this.opts.perSecond);
    this.refilledAt = t;
    const got = Math.min(n, Math.floor(this.tokens));
    this.tokens -= got;
    return got;
  }

  private async ask(key: string): Promise<{ tier: number; item: ListedValue } | undefined> {
    for (const t of this.tiers) {
      if (t.driver.available && !t.driver.available()) continue;
      this.c.probes++;
      try {
        let item: ListedValue | undefined;
        if (t.driver.stat) item = await t.driver.stat(key);
        else if (await t.driver.has(key)) {
          const v = await t.driver.get(key);
          item = v && { key, size: v.value.length, meta: v.meta };
        }
        if (item) return { tier: t.index, item };
      } catch {
        this.c.errors++;
      }
    }
    return undefined;
  }

  /**
   * Probe keyAt(from), keyAt(from+1), … (up to n) until one is absent; `adopt` is called for each block found.
   * Resolves how many blocks were adopted.
   */
  async extend(n: number, from: number, keyAt: (i: number) => string, adopt: (tier: number, item: ListedValue) => void): Promise<number> {
    const now = this.now();
    let adopted = 0;
    const end = Math.min(n, from + this.opts.maxPerLookup);
    for (let i = from; i < end;) {
      const batch: string[] = [];
      for (; i < end && batch.length < this.opts.concurrency; i++) {
        const k = keyAt(i);
        const until = this.negative.get(k);
        if (until !== undefined && until > now) {
          this.c.cachedAbsent++;
          break;
        }
        batch.push(k);
      }
      const allowed = this.take(batch.length);
      if (allowed < batch.length) this.c.limited += batch.length - allowed;
      const res = await Promise.all(batch.slice(0, allowed).map((k) => this.ask(k)));
      let run = true;
      for (let j = 0; j < res.length; j++) {
        const r = res[j];
        if (r) {
          this.c.found++;
          adopt(r.tier, r.item);
          adopted++;
        } else {
          this.c.absent++;
          this.remember(batch[j]!, now);
          run = false;
        }
      }
      if (!run || allowed < batch.length || batch.length === 0 || i < end && batch.length < this.opts.concurrency) break;
    }
    return adopted;
  }

  private remember(key: string, now: number): void {
    this.negative.delete(key);
    this.negative.set(key, now + this.opts.negativeTtlMs);
    if (this.negative.size > this.opts.maxNegative) this.negative.delete(this.negative.keys().next().value!);
  }

  stats(): Record<string, number> {
    return { ...this.c, negativeCached: this.negative.size };
  }
}
