/**
 * `kvstash lookup --engines`: asks a running sidecar's vLLM KV-events index (data-socket op ENGINES, see
 * events-plugin.ts) which engines hold the longest prefix of a token sequence in GPU memory, and prints a
 * table per engine (or the reply as JSON). The block size and hash seed are the sidecar's (`vllmBlockSize`,
 * `vllmHashSeed`), not the lookup command's `--block-size`.
 * A sidecar without the index answers KVS_UNKNOWN_OP; that error is passed on (exit code 1).
 */
import { KvstashClient } from '../../connector/client.js';
import { formatTable } from '../../connector/table.js';

export interface EnginesLookupOptions {
  endpoint: string;
  tokens: number[];
  lora?: string;
  cacheSalt?: string;
  timeoutMs?: number;
  json?: boolean;
  out?: NodeJS.WritableStream;
}

export interface EngineRow {
  engine: string;
  dp_rank: number;
  hit_blocks: number;
  hit_tokens: number;
  blocks: number;
}

export interface EnginesReply {
  blocks: number;
  block_size: number;
  engines: EngineRow[];
  streams: Record<string, unknown>[];
}

/** Send ENGINES to the sidecar and return its answer. */
export async function queryEngines(opts: EnginesLookupOptions): Promise<EnginesReply> {
  const c = new KvstashClient(opts.endpoint, { timeoutMs: opts.timeoutMs ?? 3000 });
  try {
    const r = await c.request({ op: 'ENGINES', tokens: opts.tokens, ...(opts.lora ? { lora: opts.lora } : {}), ...(opts.cacheSalt ? { cache_salt: opts.cacheSalt } : {}) });
    const h = r.header;
    return { blocks: h.blocks as number, block_size: h.block_size as number, engines: (h.engines ?? []) as EngineRow[], streams: (h.streams ?? []) as Record<string, unknown>[] };
  } finally {
    c.close();
  }
}

/** The `lookup --engines` action: query, then print a table (or JSON). */
export async function printEnginesLookup(opts: EnginesLookupOptions): Promise<void> {
  const out = opts.out ?? process.stdout;
  const r = await queryEngines(opts);
  if (opts.json) {
    out.write(JSON.stringify(r, null, 2) + '\n');
    return;
  }
  out.write(`query: ${r.blocks} full blocks of ${r.block_size} tokens; ${r.engines.length} engine(s) known\n`);
  if (r.engines.length === 0) return;
  out.write(formatTable(['engine', 'dp rank', 'hit blocks', 'hit tokens', 'GPU blocks'],
    r.engines.map((e) => [e.engine, e.dp_rank, e.hit_blocks, e.hit_tokens, e.blocks])) + '\n');
}
