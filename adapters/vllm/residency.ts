/**
 * ResidencyIndex — which block hashes each vLLM engine (publisher endpoint × data-parallel rank) holds, built
 * from decoded KV event batches. Pure state: no sockets, no clocks (EventStream feeds it).
 *
 * Rules:
 * - Hashes are filed under their uint64 key (`hashKey`): int hashes as they are, raw digests by their last
 *   8 bytes — the same value vLLM reports in int mode, so both event forms and `vllmEventHashes` agree.
 * - `medium` "GPU" or null (releases before vLLM #19737 had no medium; the engine's own pool is GPU) is the
 *   resident set that lookups answer for. Other media (from connectors) are kept in their own sets, only counted.
 * - A hash is resident while at least one KV-cache group (`group_idx`, null = 0) holds it: a BlockRemoved of
 *   a sliding-window group does not hide the full-attention copy. Groups ≥ 30 share one bit.
 * - AllBlocksCleared empties every medium of that engine; `drop(endpoint)` forgets all its ranks (restart,
 *   unrepairable gap, undecodable batch). After a drop the index under-reports until new events arrive:
 *   always the safe direction for a router.
 * - Bounded memory: at most `maxBlocksPerEngine` hashes per engine and medium (oldest stored first out, and
 *   counted as `evicted`); at most `maxRanksPerEndpoint` ranks per endpoint (batches of further ranks are
 *   ignored and counted). ~100 bytes per hash in V8, so the default 262,144 is ~25 MiB per engine.
 * - Batches of one endpoint must be applied in sequence order (EventStream guarantees it).
 */
import { hashKey, type KvEventBatch } from '../../protocol/vllm-events.js';

export const GPU = 'GPU';

export interface ResidencyOptions {
  maxBlocksPerEngine?: number;
  maxRanksPerEndpoint?: number;
}

export interface EngineHit {
  engine: string;
  dp_rank: number;
  /** Leading query blocks resident in GPU memory. */
  hit_blocks: number;
  /** Resident GPU blocks of this engine. */
  blocks: number;
}

export interface EngineSummary {
  engine: string;
  dp_rank: number;
  /** Resident hashes per medium. */
  media: Record<string, number>;
  evicted: number;
  /** A BlockStored whose block_size differs from the configured one (lookups cannot match those blocks). */
  blockSizeMismatches: number;
}

interface Engine {
  endpoint: string;
  rank: number;
  /** medium → (hash key → bitmask of KV-cache groups holding it). */
  media: Map<string, Map<bigint, number>>;
  evicted: number;
  blockSizeMismatches: number;
}

const groupBit = (g: number | null): number => 1 << Math.min(Math.max(g ?? 0, 0), 30);

export class ResidencyIndex {
  readonly maxBlocksPerEngine: number;
  readonly maxRanksPerEndpoint: number;
  /** Batches ignored because their endpoint already had `maxRanksPerEndpoint` ranks. */
  rankOverflows = 0;
  private readonly engines = new Map<string, Map<number, Engine>>();

  constructor(opts: ResidencyOptions = {}, readonly blockSize?: number) {
    this.maxBlocksPerEngine = opts.maxBlocksPerEngine ?? 262_144;
    this.maxRanksPerEndpoint = opts.maxRanksPerEndpoint ?? 256;
  }

  private engine(endpoint: string, rank: number): Engine | undefined {
    let ranks = this.engines.get(endpoint);
    if (!ranks) this.engines.set(endpoint, (ranks = new Map()));
    let e = ranks.get(rank);
    if (!e) {
      if (ranks.size >= this.maxRanksPerEndpoint) {
        this.rankOverflows++;
        return undefined;
      }
      e = { endpoint, rank, media: new Map(), evicted: 0, blockSizeMismatches: 0 };
      ranks.set(rank, e);
    }
    return e;
  }

  private set(e: Engine, medium: string | null): Map<bigint, number> {
    const m = medium ?? GPU;
    let s = e.media.get(m);
    if (!s) e.media.set(m, (s = new Map()));
    return s;
  }

  apply(endpoint: string, batch: KvEventBatch): void {
    const e = this.engine(endpoint, batch.data_parallel_rank ?? 0);
    if (!e) return;
    for (const ev of batch.events) {
      if (ev.type === 'AllBlocksCleared') {
        e.media.clear();
      } else if (ev.type === 'BlockStored') {
        if (this.blockSize !== undefined && ev.block_size !== this.blockSize) e.blockSizeMismatches++;
        const s = this.set(e, ev.medium);
        const bit = groupBit(ev.group_idx);
        for (const h of ev.block_hashes) {
          const k = hashKey(h);
          const prev = s.get(k);
          if (prev !== undefined) {
            s.set(k, prev | bit);
            continue;
          }
          if (s.size >= this.maxBlocksPerEngine) {
            s.delete(s.keys().next().value!);
            e.evicted++;
          }
          s.set(k, bit);
        }
      } else {
        const s = e.media.get(ev.medium ?? GPU);
        if (!s) continue;
        const bit = groupBit(ev.group_idx);
        for (const h of ev.block_hashes) {
          const k = hashKey(h);
          const prev = s.get(k);
          if (prev === undefined) continue;
          const left = prev & ~bit;
          if (left === 0) s.delete(k);
          else s.set(k, left);
        }
      }
    }
  }

  /** Forget everything known about an endpoint (all its ranks). */
  drop(endpoint: string): void {
    const ranks = this.engines.get(endpoint);
    if (ranks) for (const e of ranks.values()) e.media.clear();
  }

  /** Leading resident GPU blocks of `keys` (uint64 event hashes in chain order), per engine, best first. */
  lookup(keys: readonly bigint[]): EngineHit[] {
    const out: EngineHit[] = [];
    for (const ranks of this.engines.values()) {
      for (const e of ranks.values()) {
        const s = e.media.get(GPU);
        let hit = 0;
        if (s) while (hit < keys.length && s.has(keys[hit]!)) hit++;
        out.push({ engine: e.endpoint, dp_rank: e.rank, hit_blocks: hit, blocks: s?.size ?? 0 });
      }
    }
    return out.sort((a, b) => b.hit_blocks - a.hit_blocks || (a.engine < b.engine ? -1 : a.engine > b.engine ? 1 : a.dp_rank - b.dp_rank));
  }

  /** The resident hash keys of one engine and medium, in insertion order (tests, debugging). */
  resident(endpoint: string, rank = 0, medium = GPU): bigint[] {
    return [...(this.engines.get(endpoint)?.get(rank)?.media.get(medium)?.keys() ?? [])];
  }

  summary(): EngineSummary[] {
    const out: EngineSummary[] = [];
    for (const ranks of this.engines.values()) {
      for (const e of ranks.values()) {
        const media: Record<string, number> = {};
        for (const [m, s] of e.media) media[m] = s.size;
        out.push({ engine: e.endpoint, dp_rank: e.rank, media, evicted: e.evicted, blockSizeMismatches: e.blockSizeMismatches });
      }
    }
    return out;
  }
}
