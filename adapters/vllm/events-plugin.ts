/**
 * VllmEventsPlugin — runs the vLLM KV-events index inside the sidecar and serves the data-socket op ENGINES.
 *
 * ENGINES request fields (besides v, id, op):
 * - `tokens`: array of uint token ids (< 2^32, at most MAX_ENGINES_TOKENS); may be empty (then only the
 *   engine list with resident-block counts comes back).
 * - `lora` (string, optional): LoRA adapter name; `cache_salt` (string, optional).
 * Reply fields:
 * - `blocks`: full blocks in the query; `block_size`;
 * - `engines`: `[{engine, dp_rank, hit_blocks, hit_tokens, blocks}]`, best first — `engine` is the publisher
 *   endpoint as configured, `hit_blocks` the leading query blocks resident in that engine's GPU memory,
 *   `blocks` the number of GPU blocks it holds;
 * - `streams`: per publisher endpoint the sequence tracking counters (EventStream stats).
 * Bad fields → KVS_BAD_FIELD. The op never waits on a publisher.
 */
import { ErrorCode, KvstashError } from '../../protocol/errors.js';
import type { PluginHost, SidecarPlugin } from '../../connector/server/sidecar.js';
import { VllmEventsIndex, type VllmEventsIndexOptions } from './events-index.js';

export const ENGINES_OP = 'ENGINES';
export const MAX_ENGINES_TOKENS = 1 << 20;

function optString(h: Record<string, unknown>, name: string): string | undefined {
  const v = h[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new KvstashError(ErrorCode.BAD_FIELD, `ENGINES: "${name}" must be a string, got ${typeof v}`);
  return v;
}

function tokensField(v: unknown): number[] {
  if (!Array.isArray(v)) throw new KvstashError(ErrorCode.BAD_FIELD, `ENGINES: "tokens" must be an array of token ids, got ${v === null ? 'nil' : typeof v}`);
  if (v.length > MAX_ENGINES_TOKENS) throw new KvstashError(ErrorCode.BAD_FIELD, `ENGINES: ${v.length} tokens is over the limit of ${MAX_ENGINES_TOKENS}`);
  for (const t of v) {
    if (typeof t !== 'number' || !Number.isInteger(t) || t < 0 || t >= 2 ** 32) {
      throw new KvstashError(ErrorCode.BAD_FIELD, `ENGINES: "tokens" must hold integers in [0, 2^32), got ${JSON.stringify(t)}`);
    }
  }
  return v as number[];
}

export class VllmEventsPlugin implements SidecarPlugin {
  readonly name = 'vllm-events';
  readonly index: VllmEventsIndex;

  constructor(opts: VllmEventsIndexOptions) {
    this.index = new VllmEventsIndex(opts);
  }

  async start(sidecar: PluginHost): Promise<void> {
    sidecar.registerOp(ENGINES_OP, (h) => {
      const tokens = tokensField(h.tokens);
      const answer = this.index.lookup({ tokens, lora: optString(h, 'lora'), cacheSalt: optString(h, 'cache_salt') });
      return { ...answer, streams: this.index.streamStats() };
    });
    this.index.onStored((engine, medium, keys) => sidecar.publishEngineBlocks({ engine, medium, keys }));
    await this.index.start();
  }

  async stop(): Promise<void> {
    await this.index.stop();
  }
}
