/**
 * `kvstash bench trace`: replay a request trace (Mooncake JSONL) against the real TierStack and compare kvstash's
 * eviction policy with LRU and Belady's optimum at the same capacity (connector/trace-replay.ts). Also run by
 * `npm run bench` through bench/trace.ts.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { ErrorCode, KvstashError } from '../protocol/errors.js';
import { parseBytes } from './config.js';
import { formatTable, humanBytes } from './table.js';
import { runTraceBench, type TraceBenchOptions, type TraceBenchResult } from './trace-replay.js';

const here = path.dirname(fileURLToPath(import.meta.url));
/** The repo root, from connector/ (sources) or dist/connector/ (built). */
const repoRoot = existsSync(path.resolve(here, '..', 'package.json')) ? path.resolve(here, '..') : path.resolve(here, '..', '..');
export const DEFAULT_TRACE = path.resolve(repoRoot, 'bench', 'traces', 'mooncake-conversation.jsonl');

export interface TraceFlags {
  trace: string; dram: string; ssd: string; blockBytes: string; modelBlockBytes: string; ssdWriteMode: string;
  ssdAdmitAfter: string; halfLifeMs: string; heatWindow?: string; limit: string; json?: boolean;
}

export function traceOptions(f: TraceFlags): TraceBenchOptions {
  const int = (v: string, what: string, min: number) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new KvstashError(ErrorCode.INVALID_ARGUMENT, `${what} must be an integer ≥ ${min}, got ${v}`);
    return n;
  };
  if (f.ssdWriteMode !== 'through' && f.ssdWriteMode !== 'back') throw new KvstashError(ErrorCode.INVALID_ARGUMENT, '--ssd-write-mode must be through or back');
  if (!existsSync(f.trace)) throw new KvstashError(ErrorCode.INVALID_ARGUMENT, `trace ${f.trace} does not exist`);
  const o: TraceBenchOptions = {
    trace: f.trace, dramBytes: parseBytes(f.dram, '--dram'), ssdBytes: parseBytes(f.ssd, '--ssd'),
    blockBytes: parseBytes(f.blockBytes, '--block-bytes'), modelBlockBytes: parseBytes(f.modelBlockBytes, '--model-block-bytes'),
    ssdWriteMode: f.ssdWriteMode, ssdAdmitAfter: int(f.ssdAdmitAfter, '--ssd-admit-after', 1), halfLifeMs: int(f.halfLifeMs, '--half-life-ms', 1), heatWindow: int(f.heatWindow ?? '256', '--heat-window', 1),
    limit: int(f.limit, '--limit', 0),
  };
  if (o.blockBytes < 8) throw new KvstashError(ErrorCode.INVALID_ARGUMENT, '--block-bytes must be at least 8');
  return o;
}

export function formatTraceResult(r: TraceBenchResult, o: TraceBenchOptions): string {
  const best = r.rows.find((x) => x.policy.startsWith('Belady, offline, all'))!;
  const pct = (n: number, d: number) => (d ? ((100 * n) / d).toFixed(1) : '-');
  const rows = r.rows.map((x) => [
    x.policy, x.kind === 'replay' ? `${r.dramBlocks} + ${r.ssdBlocks}` : x.capacityBlocks, x.kind === 'replay' ? pct(x.dramHits, x.blocks) : '-', x.kind === 'replay' ? pct(x.ssdHits, x.blocks) : '-',
    pct(x.hits, x.blocks), best.hits ? (x.hits / best.hits).toFixed(2) : '-',
    x.kind === 'replay' ? x.ssdBlocksWritten : '-', x.kind === 'replay' ? humanBytes(x.ssdModelBytesWritten) : '-',
    x.kind === 'replay' ? x.badReads : '-', x.seconds.toFixed(1),
  ]);
  return [
    `trace ${path.basename(o.trace)}: ${r.requests} requests, ${r.blocks} block accesses, ${r.uniqueBlocks} distinct blocks (512 tokens each)`,
    `model: ${humanBytes(o.modelBlockBytes)} per block (8B GQA bf16: 128 KiB/token); replayed with ${humanBytes(o.blockBytes)} per block`,
    `capacity: DRAM ${humanBytes(o.dramBytes)} = ${r.dramBlocks} blocks, SSD ${humanBytes(o.ssdBytes)} = ${r.ssdBlocks} blocks (file tier, ${o.ssdWriteMode}, admit after ${o.ssdAdmitAfter}); heat half-life ${o.halfLifeMs / 1000} s of trace time, window ${o.heatWindow ?? 256}`,
    formatTable(['policy', 'capacity (blocks)', 'DRAM hit %', 'SSD hit %', 'hit %', 'vs Belady', 'SSD writes (blocks)', 'SSD written (model bytes)', 'bad reads', 's'], rows),
    'hit % = reused blocks / all blocks (prefix semantics). Offline rows are simulations at the distinct-block capacity of the stack',
    `(${o.ssdWriteMode === 'through' ? 'write-through keeps DRAM blocks on the SSD too: max(DRAM, SSD)' : 'write-back: DRAM + SSD'}); "Belady, DRAM size" bounds the DRAM hit ratio.`,
  ].join('\n');
}

export function traceCommand(program: Command): void {
  const bench = program.commands.find((c) => c.name() === 'bench') ?? program.command('bench').description('benchmarks that run inside the CLI');
  bench.command('trace')
    .description('replay a request trace against the real tier stack; hit ratios of kvstash vs LRU vs Belady, SSD bytes written')
    .option('--trace <jsonl>', 'Mooncake-format trace (timestamp, hash_ids of 512-token blocks)', DEFAULT_TRACE)
    .option('--dram <bytes>', 'DRAM capacity of the modelled system', '64GiB')
    .option('--ssd <bytes>', 'SSD (file tier) capacity of the modelled system', '1TiB')
    .option('--block-bytes <n>', 'bytes actually stored per block in the replay (scaled down)', '4096')
    .option('--model-block-bytes <n>', 'bytes per 512-token block in the modelled system', '64MiB')
    .option('--ssd-write-mode <mode>', 'through | back', 'through')
    .option('--ssd-admit-after <n>', 'accesses before the SSD takes a block', '1')
    .option('--half-life-ms <ms>', 'heat half-life, in trace time', '300000')
    .option('--heat-window <n>', 'least recently used blocks the heat policy compares', '256')
    .option('--limit <n>', 'replay only the first n requests (0 = all)', '0')
    .option('--json', 'print JSON')
    .action(async (f: TraceFlags) => {
      const o = traceOptions(f);
      if (!f.json) o.log = (l) => process.stderr.write(l + '\n');
      const r = await runTraceBench(o);
      process.stdout.write((f.json ? JSON.stringify({ options: { ...o, log: undefined }, ...r }, null, 2) : formatTraceResult(r, o)) + '\n');
      if (r.rows.some((x) => x.badReads > 0)) process.exitCode = 1;
    });
}
