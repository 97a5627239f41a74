/** Lower → lower demotion of the TierStack (kept out of tier-stack.ts): a block leaving a lower tier moves down. */
import { checksum as computeChecksum } from '../checksum.js';
import type { BlockEntry, Tier } from './tier-types.js';
import type { TierStack } from './tier-stack.js';

/**
 * Before a block leaves lower tier t, copy it down if no lower tier has it and the next tier admits it.
 * Returns true when a queued job took over deleting tier t's stored copy (lower → lower demotion).
 */
export function demoteLower(s: TierStack, t: Tier, e: BlockEntry): boolean {
  const below = s.tiers.slice(t.index + 1);
  if (below.some((b) => (e.where | e.pending) & (1 << b.index))) return false;
  const now = s.now();
  const next = below.find((b) => s.admits(b, e, now));
  if (!next) return false;
  const bit = 1 << next.index;
  e.pending |= bit;
  const ok = next.writes.offer(e.size, async () => {
    try {
      const v = await t.driver.get(e.key);
      if (v && !s.closed && s.index.holds(e) && computeChecksum(v.value) === e.checksum) {
        await next.driver.put(e.key, v.value, { checksum: e.checksum });
        next.c.bytesWritten += e.size;
        s.addTo(next, e);
        s.enforceBudget(next);
      }
    } finally {
      e.pending &= ~bit;
      await t.driver.delete(e.key).catch(() => undefined);
      s.dropIfGone(e);
    }
  });
  if (!ok) {
    e.pending &= ~bit;
    return false;
  }
  t.c.demotions++;
  return true;
}
