/**
 * PinBook — pins of the TierStack, used by the control plane (gRPC Pin/Unpin).
 *
 * Rules:
 * - Each tag pinning a block adds one to BlockEntry.pins; the TierStack never evicts a block with pins > 0.
 * - The budget bounds the bytes of distinct pinned blocks; a pin that would exceed it pins nothing.
 * - When a pinned block leaves the index (DELETE, Clear, a lost or corrupt last copy) its pins go with it.
 * - Pins live in memory: they do not survive a sidecar restart.
 */
import type { BlockEntry } from './tier-types.js';

export class PinBook {
  readonly tags = new Map<string, Set<string>>();
  private readonly sizes = new Map<string, number>();
  private bytes = 0;
  budget = Number.POSITIVE_INFINITY;

  constructor(private readonly entryOf: (key: string) => BlockEntry | undefined) {}

  /**
   * Pin the present blocks among `keys` under `tag`. All or nothing: when the blocks not pinned yet would take
   * the pinned bytes over the budget, nothing is pinned and `exhausted` is true. `pinned` counts the present
   * blocks (now) pinned under the tag, `missing` the keys held by no tier.
   */
  pin(keys: string[], tag: string): { pinned: number; missing: number; addedBytes: number; exhausted: boolean } {
    const fresh = new Map<string, BlockEntry>();
    const tagged = this.tags.get(tag);
    let missing = 0;
    let already = 0;
    let added = 0;
    for (const k of keys) {
      const e = this.entryOf(k);
      if (!e || e.where === 0) { missing++; continue; }
      if (tagged?.has(k)) { already++; continue; }
      if (fresh.has(k)) continue;
      fresh.set(k, e);
      if (e.pins === 0) added += e.size;
    }
    if (this.bytes + added > this.budget) return { pinned: 0, missing, addedBytes: added, exhausted: true };
    let set = tagged;
    if (!set && fresh.size) this.tags.set(tag, (set = new Set()));
    for (const e of fresh.values()) {
      if (e.pins++ === 0) this.sizes.set(e.key, e.size);
      set!.add(e.key);
    }
    this.bytes += added;
    return { pinned: fresh.size + already, missing, addedBytes: added, exhausted: false };
  }

  /** Remove `tag`'s pins from the keys it pins that pass `filter` (all when absent). Returns how many. */
  unpin(tag: string, filter?: (key: string) => boolean): number {
    const set = this.tags.get(tag);
    if (!set) return 0;
    let n = 0;
    for (const k of [...set]) {
      if (filter && !filter(k)) continue;
      set.delete(k);
      n++;
      const e = this.entryOf(k);
      if (e && e.pins > 0 && --e.pins === 0 && this.sizes.has(k)) {
        this.bytes -= this.sizes.get(k)!;
        this.sizes.delete(k);
      }
    }
    if (set.size === 0) this.tags.delete(tag);
    return n;
  }

  /** A block left a tier: if it left the index (or lost its pins), drop it from the book. */
  forgetIfUnpinned(key: string): void {
    const size = this.sizes.get(key);
    if (size === undefined || (this.entryOf(key)?.pins ?? 0) > 0) return;
    this.sizes.delete(key);
    this.bytes -= size;
    for (const [tag, keys] of this.tags) if (keys.delete(key) && keys.size === 0) this.tags.delete(tag);
  }

  tagsOf(key: string): string[] {
    const out: string[] = [];
    for (const [tag, keys] of this.tags) if (keys.has(key)) out.push(tag);
    return out;
  }

  stats(): { blocks: number; bytes: number; budgetBytes: number; tags: number } {
    return { blocks: this.sizes.size, bytes: this.bytes, budgetBytes: this.budget, tags: this.tags.size };
  }
}
