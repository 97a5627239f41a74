/**
 * EvictionPolicy — which block a full tier gives up. Registered by name on the sidecar's TierStack.
 *
 * Rules:
 * - A policy sees candidates in recency order (least recently used first) and picks one; it never picks a
 *   pinned block (the tier stack filters those out before asking).
 * - `score` must be cheap: eviction runs on the request path for DRAM.
 * - Chain order: the tier stack touches the blocks of a chain deepest-first, so a chain's root is the most
 *   recent; with prefix semantics evicting a root makes its whole chain useless, so roots should go last.
 */
import { LfudaOrder, type LfudaOptions } from './lfuda.js';

export interface HeatState {
  heat: number;
  heatAt: number;
}

export interface EvictionPolicy {
  readonly name: string;
  /** Pick the victim index among `candidates` (recency order, oldest first; at most `window` of them). */
  pick(candidates: readonly HeatState[], now: number): number;
  readonly window: number;
  /**
   * Policies that keep their own order (lfuda.ts) give each tier one; then `pick`/`window` are unused and the tier
   * stack tells the order every block that enters, is accessed in, or leaves the tier, and evicts its first
   * unpinned victim.
   */
  order?(view: (id: number) => PolicyEntry): TierOrder;
  /** The policy reads `seen` and wants accesses remembered past evictions (AccessHistory). */
  readonly history?: boolean;
  /** The policy reads decayed heat (HeatState): the stack keeps it (else heat reads as 0; block-table.ts). */
  readonly heat?: boolean;
}

/** What an ordering policy sees of a block (BlockEntry has these fields). */
export interface PolicyEntry extends HeatState {
  /** Row id (block-table.ts): ordering policies keep their order in columns indexed by it. */
  readonly id: number;
  readonly key: string;
  readonly seen: number;
  readonly size: number;
  readonly pins: number;
}

/** One tier's eviction order, owned by an ordering policy. */
export interface TierOrder {
  add(e: PolicyEntry): void;
  touch(e: PolicyEntry): void;
  /** Left the tier for any reason (also after `evicted`). */
  remove(e: PolicyEntry): void;
  /** The best victim (pinned or not): the first of `victims()`, cheaper. */
  first?(): PolicyEntry | undefined;
  /** Blocks in eviction order, best victim first (pinned ones included; the stack skips them). */
  victims(): IterableIterator<PolicyEntry>;
  /** The stack is evicting e because the tier is full (before remove). */
  evicted(e: PolicyEntry): void;
  /** Would a block accessed `seen` times rank above the next victim? Promotions into a full tier ask. */
  outranksVictim?(seen: number): boolean;
}

/** Decayed access count: halves every `halfLifeMs`. */
export function decayedHeat(s: HeatState, now: number, halfLifeMs: number): number {
  return s.heat * Math.pow(2, -(now - s.heatAt) / halfLifeMs);
}

export function bumpHeat(s: HeatState, now: number, halfLifeMs: number): void {
  s.heat = decayedHeat(s, now, halfLifeMs) + 1;
  s.heatAt = now;
}

export const lruPolicy: EvictionPolicy = { name: 'lru', window: 1, pick: () => 0 };

/** An ordering policy's victim: its first unpinned block; pinned ones met on the way are refreshed (not met again). */
export function firstUnpinned(order: TierOrder): PolicyEntry | undefined {
  const head = order.first?.();
  if (head && head.pins === 0) return head;
  const pinned: PolicyEntry[] = [];
  let victim: PolicyEntry | undefined;
  for (const e of order.victims()) {
    if (e.pins === 0) { victim = e; break; }
    pinned.push(e);
  }
  for (const e of pinned) order.touch(e);
  return victim;
}

/** LFU with dynamic ageing, cap chosen by set dueling against LRU (lfuda.ts). */
export function lfudaPolicy(o: LfudaOptions = {}): EvictionPolicy {
  return { name: o.cap === 1 ? 'lfuda(cap 1)' : 'lfuda', window: 1, pick: () => 0, history: true, order: (view) => new LfudaOrder(view, o) };
}

/** Among the `window` least recently used blocks, evict the coldest (lowest decayed heat); ties → older. */
export function heatPolicy(halfLifeMs: number, window = 256): EvictionPolicy {
  return {
    name: 'heat',
    window,
    heat: true,
    pick(c, now) {
      let best = 0;
      let bestHeat = Infinity;
      for (let i = 0; i < c.length; i++) {
        const h = decayedHeat(c[i]!, now, halfLifeMs);
        if (h < bestHeat) { bestHeat = h; best = i; }
      }
      return best;
    },
  };
}

/**
 * AdmissionFilter — whether a lower tier takes a block (on write-through, on a later hit, on demotion).
 *
 * Rules:
 * - Asked with the block's access count (`seen`: puts + hits), decayed heat and size; must be cheap and pure.
 * - Refusing is never an error: the block stays where it is (or is dropped when it leaves DRAM).
 * - Per tier, from the tier config `admit` object; `admitAfter: n` is shorthand for `{ "minSeen": n }`.
 */
export interface AdmissionInput extends HeatState {
  seen: number;
  size: number;
}

export interface AdmissionFilter {
  readonly name: string;
  /** The filter reads decayed heat: the stack keeps it (block-table.ts). */
  readonly heat?: boolean;
  admit(block: AdmissionInput, now: number): boolean;
}

export interface AdmissionSpec {
  /** Accesses (puts + hits) before the tier takes the block: 2 = "only blocks seen at least twice". */
  minSeen?: number;
  /** Decayed heat (see decayedHeat) the block needs at admission time. */
  minHeat?: number;
  /** Largest block the tier takes, bytes. */
  maxBlockBytes?: number;
}

export function admissionFilter(spec: AdmissionSpec, halfLifeMs: number): AdmissionFilter {
  const minSeen = spec.minSeen ?? 1;
  const minHeat = spec.minHeat ?? 0;
  const maxBytes = spec.maxBlockBytes ?? Number.POSITIVE_INFINITY;
  const parts = [minSeen > 1 && `seen≥${minSeen}`, minHeat > 0 && `heat≥${minHeat}`, Number.isFinite(maxBytes) && `size≤${maxBytes}`].filter(Boolean);
  return {
    name: parts.length ? parts.join(',') : 'all',
    heat: minHeat > 0,
    admit: (b, now) => b.seen >= minSeen && b.size <= maxBytes && (minHeat <= 0 || decayedHeat(b, now, halfLifeMs) >= minHeat),
  };
}

/**
 * AccessHistory — how often each key was accessed recently, remembered after its block left the stack: a count-min
 * sketch with aging (as in TinyLFU). Admission filters need it: without it a block evicted before its second access
 * starts again at one, and "only blocks seen twice" would admit almost nothing. 4 rows × `width` counters (1 byte,
 * saturating at 15, 4 × width bytes); after 10 × width additions every counter is halved, so old popularity fades.
 * Estimates never undercount; collisions can overcount slightly.
 */
export class AccessHistory {
  private readonly rows: Uint8Array[];
  private readonly mask: number;
  private adds = 0;

  constructor(readonly width = 1 << 20) {
    if (width & (width - 1)) throw new RangeError('AccessHistory width must be a power of two');
    this.rows = Array.from({ length: 4 }, () => new Uint8Array(width));
    this.mask = width - 1;
  }

  /** Two 32-bit hashes of a storage key `<32 hex ns>/<64 hex hash>` (hash bytes 0–7, mixed with the namespace). */
  private hashes(key: string): [number, number] {
    const a = parseInt(key.substr(33, 8), 16) ^ parseInt(key.substr(0, 8), 16);
    const b = parseInt(key.substr(41, 8), 16) ^ parseInt(key.substr(24, 8), 16);
    return [a >>> 0, (b | 1) >>> 0];
  }

  /** Count one access; returns the estimate including it. Row r's counter: (a + r·b) mod width (double hashing). */
  add(key: string): number {
    const [a, b] = this.hashes(key);
    let est = 255;
    for (let r = 0; r < 4; r++) {
      const row = this.rows[r]!;
      const i = (a + Math.imul(r, b)) & this.mask;
      if (row[i]! < 15) row[i]!++;
      est = Math.min(est, row[i]!);
    }
    if (++this.adds >= 10 * this.width) {
      this.adds = 0;
      for (const row of this.rows) for (let i = 0; i < row.length; i++) row[i]! >>= 1;
    }
    return est;
  }

  estimate(key: string): number {
    let est = 255;
    const [a, b] = this.hashes(key);
    for (let r = 0; r < 4; r++) est = Math.min(est, this.rows[r]![(a + Math.imul(r, b)) & this.mask]!);
    return est;
  }
}
