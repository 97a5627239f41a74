/**
 * VllmEventsIndex — the vLLM KV-events index: subscribes to every configured publisher (EventStream: SUB +
 * replay DEALER + sequence tracking) and keeps, per engine (endpoint) and data-parallel rank, the set of
 * block hashes resident in GPU memory (ResidencyIndex). It answers "longest resident prefix per engine" for a
 * token sequence by recomputing vLLM's `sha256_cbor` hash chain (vllm-hash.ts) with the configured
 * PYTHONHASHSEED and block size.
 *
 * Rules:
 * - Answers are only as good as the configuration: vLLM must run with `--prefix-caching-hash-algo sha256_cbor`,
 *   the same fixed `PYTHONHASHSEED` and the same `--block-size`; otherwise every lookup answers 0 blocks.
 *   BlockStored events whose block_size differs from the configured one are counted per engine.
 * - Lookups are synchronous over in-memory state and never wait for a replay in progress.
 * - `start()` only connects sockets (a publisher that is not up yet is picked up when it appears).
 */
import { ErrorCode, KvstashError } from '../../protocol/errors.js';
import { hashKey, type KvEventBatch } from '../../protocol/vllm-events.js';
import { EventStream, type StreamStats } from './event-stream.js';
import { GPU, ResidencyIndex, type EngineHit, type EngineSummary } from './residency.js';
import { noneHash, vllmEventHashes, type MmItem } from './vllm-hash.js';

export interface VllmPublisher {
  /** Live PUB endpoint to connect a SUB to (`bind:<ep>` to bind instead). */
  endpoint: string;
  /** The publisher's replay ROUTER endpoint, when vLLM was given `replay_endpoint`. */
  replay?: string;
}

export interface VllmEventsIndexOptions {
  publishers: VllmPublisher[];
  topic?: string;
  /** PYTHONHASHSEED of the engines (default "0"). */
  hashSeed?: string;
  /** vLLM `--block-size` (default 16). */
  blockSize?: number;
  /** Cap of resident hashes kept per engine and medium (default 262144, ~25 MiB). */
  maxBlocksPerEngine?: number;
  /** Deadline of one replay exchange, ms (default 3000). */
  replayTimeoutMs?: number;
  replayBackoffMs?: number;
}

export interface PrefixQuery {
  tokens: ArrayLike<number>;
  lora?: string | null;
  cacheSalt?: string | null;
  mm?: readonly MmItem[];
}

export interface EnginesAnswer {
  /** Full blocks in the query. */
  blocks: number;
  block_size: number;
  engines: (EngineHit & { hit_tokens: number })[];
}

export class VllmEventsIndex {
  readonly residency: ResidencyIndex;
  readonly blockSize: number;
  private readonly seed: Buffer;
  private readonly streams: EventStream[];
  private readonly storedListeners: ((engine: string, medium: string, keys: bigint[]) => void)[] = [];

  constructor(readonly opts: VllmEventsIndexOptions) {
    this.blockSize = opts.blockSize ?? 16;
    if (!Number.isSafeInteger(this.blockSize) || this.blockSize <= 0) throw new KvstashError(ErrorCode.CONFIG, `vLLM block size must be a positive integer, got ${opts.blockSize}`);
    const eps = opts.publishers.map((p) => p.endpoint);
    if (new Set(eps).size !== eps.length) throw new KvstashError(ErrorCode.CONFIG, `vLLM event endpoints must be distinct, got ${eps.join(', ')}`);
    this.seed = noneHash(opts.hashSeed ?? '0');
    this.residency = new ResidencyIndex({ maxBlocksPerEngine: opts.maxBlocksPerEngine }, this.blockSize);
    const sink = { apply: (ep: string, batch: KvEventBatch) => this.apply(ep, batch), drop: (ep: string) => this.residency.drop(ep) };
    this.streams = opts.publishers.map((p) => new EventStream({
      endpoint: p.endpoint, replayEndpoint: p.replay, topic: opts.topic, replayTimeoutMs: opts.replayTimeoutMs, replayBackoffMs: opts.replayBackoffMs,
    }, sink));
  }

  private apply(endpoint: string, batch: KvEventBatch): void {
    this.residency.apply(endpoint, batch);
    if (!this.storedListeners.length) return;
    for (const ev of batch.events) {
      if (ev.type !== 'BlockStored') continue;
      const keys = ev.block_hashes.map(hashKey);
      for (const l of this.storedListeners) l(endpoint, ev.medium ?? GPU, keys);
    }
  }

  /** Called with the blocks of every BlockStored event applied (replays included), after the index took them. */
  onStored(listener: (engine: string, medium: string, keys: bigint[]) => void): void {
    this.storedListeners.push(listener);
  }

  async start(): Promise<void> {
    for (const s of this.streams) await s.start();
  }

  async stop(): Promise<void> {
    await Promise.all(this.streams.map((s) => s.stop()));
  }

  /** The uint64 event hashes vLLM would report for the full blocks of a query. */
  hashes(q: PrefixQuery): bigint[] {
    return vllmEventHashes(q.tokens, { blockSize: this.blockSize, noneHash: this.seed, lora: q.lora, cacheSalt: q.cacheSalt, mm: q.mm });
  }

  /** Longest resident GPU prefix of the query per engine and DP rank, best first. */
  lookup(q: PrefixQuery): EnginesAnswer {
    const keys = this.hashes(q);
    const engines = this.residency.lookup(keys).map((e) => ({ ...e, hit_tokens: e.hit_blocks * this.blockSize }));
    return { blocks: keys.length, block_size: this.blockSize, engines };
  }

  streamStats(): StreamStats[] {
    return this.streams.map((s) => s.stats());
  }

  engineSummary(): EngineSummary[] {
    return this.residency.summary();
  }
}
