/**
 * LeaseBook — short pins that an engine's lookup takes on the blocks it promised (LOOKUP `lease`, `lease_ms`).
 *
 * Why: vLLM's scheduler learns "n tokens hit" from a LOOKUP and the worker GETs those blocks one or more steps
 * later. A block evicted in between turns a hit into a load error, and under vLLM's default
 * `kv_load_failure_policy: "fail"` (vllm/config/kv_transfer.py, main 2025-12) into a failed request.
 *
 * Rules:
 * - A lease is (namespace, tag): the LOOKUP's leading hit blocks are pinned under the pin tag `lease:<ns>:<tag>`
 *   (PinBook: never evicted while pinned; the pin budget applies, and a lease over it pins nothing).
 * - `lease_ms > 0` takes or renews the lease: the new hits are added, the expiry is reset to now + lease_ms.
 *   `lease_ms == 0` releases it at once (the worker sends this once its load is done).
 * - A lease ends by itself at its expiry; at most MAX_LEASES live at once (further ones are not taken: a lease
 *   only makes misses rarer, the reply is the same). Leases live in memory and die with the sidecar.
 */
import type { TierStack } from '../tiers/tier-stack.js';

export const MAX_LEASES = 65_536;
export const MAX_LEASE_MS = 600_000;
export const MAX_LEASE_TAG = 128;

export class LeaseBook {
  private readonly timers = new Map<string, NodeJS.Timeout>();
  taken = 0;
  refused = 0;

  constructor(private readonly tiers: TierStack) {}

  /** Take/renew (ms > 0) or release (ms == 0) the lease `tag` of `ns` over `keys` (storage keys). */
  apply(ns: string, tag: string, keys: string[], ms: number): void {
    const id = `lease:${ns}:${tag}`;
    const old = this.timers.get(id);
    if (ms <= 0) {
      if (old) clearTimeout(old);
      this.timers.delete(id);
      this.tiers.unpin(id);
      return;
    }
    if (!old && this.timers.size >= MAX_LEASES) { this.refused++; return; }
    if (old) clearTimeout(old);
    if (keys.length) this.tiers.pin(keys, id);
    const t = setTimeout(() => { this.timers.delete(id); this.tiers.unpin(id); }, Math.min(ms, MAX_LEASE_MS));
    t.unref();
    this.timers.set(id, t);
    this.taken++;
  }

  get live(): number {
    return this.timers.size;
  }

  close(): void {
    for (const [id, t] of this.timers) { clearTimeout(t); this.tiers.unpin(id); }
    this.timers.clear();
  }
}
