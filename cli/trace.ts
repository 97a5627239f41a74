/**
 * `kvstash bench trace`: replay a request trace (Mooncake JSONL) against the real TierStack and compare kvstash's
 * eviction policy with LRU and Belady's optimum at the same capacity (connector/trace/trace-replay.ts). Also run by
 * `npm run bench` through bench/trace.ts.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { ErrorCode, KvstashError } from '../protocol/errors.js';
import { parseBytes } from '../connector/config.js';
import { formatTable, humanBytes } from '../connector/table.js';
import { WORKLOADS } from '../connector/trace/workloads.js';
import { runTraceBench, type TraceBenchOptions, type TraceBenchResult } from '../connector/trace/trace-replay.js';

const here = path.dirname(fileURLToPath(import.meta.url));
/** The repo root, from connector/ (sources) or dist/connector/ (built). */
const repoRoot = existsSync(path.resolve(here, '..', 'package.json')) ? path.resolve(here, '..') : path.resolve(here, '..', '..');
export const DEFAULT_TRACE = path.resolve(repoRoot, 'bench', 'traces', 'mooncake-conversation.jsonl');

export interface TraceFlags {
  trace: string; workloads: string; capacities: string; dram: string; ssd: string; ssdDriver: string; blockBytes: string; modelBlockBytes: string;
  ssdWriteMode: string; ssdAdmitAfter: string; halfLifeMs: string; heatWindow?: string; limit: string; json?: boolean;
}

export const ALL_WORKLOADS = 'mooncake,chat,agent,rag,sysprompt,chat@heldout';

export function traceOptions(f: TraceFlags): TraceBenchOptions {
  const int = (v: string, what: string, min: number) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new KvstashError(ErrorCode.INVALID_ARGUMENT, `${what} must be an integer ≥ ${min}, got ${v}`);
    return n;
  };
  if (f.ssdWriteMode !== 'through' && f.ssdWriteMode !== 'back') throw new KvstashError(ErrorCode.INVALID_ARGUMENT, '--ssd-write-mode must be through or back');
  if (f.ssdDriver !== 'file' && f.ssdDriver !== 'memory') throw new KvstashError(ErrorCode.INVALID_ARGUMENT, '--ssd-driver must be file or memory');
  const workloads = f.workloads.split(',').map((w) => w.trim()).filter(Boolean);
  for (const w of workloads) {
    const [gen, v] = w.split('@');
    if (!(gen === 'mooncake' && v === undefined) && !(gen! in WORKLOADS && (v === undefined || v === 'heldout'))) {
      throw new KvstashError(ErrorCode.INVALID_ARGUMENT, `unknown workload ${w} (mooncake, ${Object.keys(WORKLOADS).join(', ')}, or <generator>@heldout)`);
    }
  }
  if (workloads.includes('mooncake') && !existsSync(f.trace)) throw new KvstashError(ErrorCode.INVALID_ARGUMENT, `trace ${f.trace} does not exist`);
  const o: TraceBenchOptions = {
    trace: f.trace, workloads, capacities: f.capacities.split(',').filter((c) => c.trim() !== '').map((c) => int(c.trim(), '--capacities', 1)),
    dramBytes: parseBytes(f.dram, '--dram'), ssdBytes: parseBytes(f.ssd, '--ssd'), ssdDriver: f.ssdDriver,
    blockBytes: parseBytes(f.blockBytes, '--block-bytes'), modelBlockBytes: parseBytes(f.modelBlockBytes, '--model-block-bytes'),
    ssdWriteMode: f.ssdWriteMode, ssdAdmitAfter: int(f.ssdAdmitAfter, '--ssd-admit-after', 1), halfLifeMs: int(f.halfLifeMs, '--half-life-ms', 1), heatWindow: int(f.heatWindow ?? '256', '--heat-window', 1),
    limit: int(f.limit, '--limit', 0),
  };
  if (o.blockBytes < 8) throw new KvstashError(ErrorCode.INVALID_ARGUMENT, '--block-bytes must be at least 8');
  return o;
}

export function formatTraceResult(r: TraceBenchResult, o: TraceBenchOptions): string {
  const pct = (n: number, d: number) => (d ? ((100 * n) / d).toFixed(1) : '-');
  const ratio = (n: number, d: number) => (d ? (n / d).toFixed(2) : '-');
  const rows = r.rows.map((x) => [
    x.workload, x.run === 'split' ? `${r.dramBlocks} + ${r.ssdBlocks}` : x.capacityBlocks, x.policy,
    pct(x.hits, x.blocks), pct(x.lruHits, x.blocks), pct(x.oracleHits, x.blocks), pct(x.beladyHits, x.blocks), ratio(x.hits, x.beladyHits), ratio(x.hits, x.lruHits),
    x.run === 'split' ? pct(x.dramHits, x.blocks) : '-', x.run === 'split' ? pct(x.dramBound, x.blocks) : '-', x.run === 'split' ? ratio(x.dramHits, x.dramBound) : '-',
    x.run === 'split' ? humanBytes(x.hits ? x.ssdModelBytesWritten / x.hits : 0) : '-', x.run === 'split' ? humanBytes(x.ssdModelBytesWritten) : '-',
    x.badReads, x.seconds.toFixed(1),
  ]);
  return [
    ...r.workloads.map((w) => `workload ${w.name}: ${w.requests} requests, ${w.blocks} block accesses, ${w.uniqueBlocks} distinct blocks (512 tokens each)`),
    `split: DRAM ${humanBytes(o.dramBytes)} = ${r.dramBlocks} blocks over SSD ${humanBytes(o.ssdBytes)} = ${r.ssdBlocks} blocks (${o.ssdDriver} driver, ${o.ssdWriteMode}), ${humanBytes(o.modelBlockBytes)} per model block, replayed with ${humanBytes(o.blockBytes)}`,
    formatTable(['workload', 'capacity (blocks)', 'policy', 'hit %', 'LRU %', 'LRU+oracle %', 'Belady %', 'vs Belady', 'vs LRU', 'DRAM hit %', 'DRAM bound %', 'DRAM vs bound', 'SSD written / hit', 'SSD written', 'bad reads', 's'], rows),
    'hit % = reused blocks / all blocks (prefix semantics). LRU %, LRU+oracle % (LRU caching only blocks that are used again) and Belady % are',
    'offline simulations at the same capacity',
    `(split: the distinct blocks the stack holds, ${o.ssdWriteMode === 'through' ? 'max(DRAM, SSD) under write-through' : 'DRAM + SSD'}); DRAM bound = Belady at DRAM size. Bytes are model bytes.`,
  ].join('\n');
}

export function traceCommand(program: Command): void {
  const bench = program.commands.find((c) => c.name() === 'bench') ?? program.command('bench').description('benchmarks that run inside the CLI');
  bench.command('trace')
    .description('replay a request trace against the real tier stack; hit ratios of kvstash vs LRU vs Belady, SSD bytes written')
    .option('--trace <jsonl>', 'Mooncake-format trace (timestamp, hash_ids of 512-token blocks)', DEFAULT_TRACE)
    .option('--workloads <list>', `comma-separated: mooncake and generators (connector/trace/workloads.ts), <generator>@heldout`, ALL_WORKLOADS)
    .option('--capacities <blocks>', 'one-level capacities to sweep, blocks, comma-separated (empty: none)', '1024,4096,16384')
    .option('--dram <bytes>', 'DRAM capacity of the modelled system (split run; 0 skips it)', '64GiB')
    .option('--ssd <bytes>', 'SSD (file tier) capacity of the modelled system', '1TiB')
    .option('--ssd-driver <driver>', 'file (a real file tier) | memory (same stack code, no disk)', 'memory')
    .option('--block-bytes <n>', 'bytes actually stored per block in the replay (scaled down)', '4096')
    .option('--model-block-bytes <n>', 'bytes per 512-token block in the modelled system', '64MiB')
    .option('--ssd-write-mode <mode>', 'through | back', 'through')
    .option('--ssd-admit-after <n>', 'accesses before the SSD takes a block', '1')
    .option('--half-life-ms <ms>', 'heat half-life, in trace time', '300000')
    .option('--heat-window <n>', 'least recently used blocks the heat policy compares', '256')
    .option('--limit <n>', 'replay only the first n requests of each workload (0 = all)', '0')
    .option('--json', 'print JSON')
    .action(async (f: TraceFlags) => {
      const o = traceOptions(f);
      if (!f.json) o.log = (l) => process.stderr.write(l + '\n');
      const r = await runTraceBench(o);
      process.stdout.write((f.json ? JSON.stringify({ options: { ...o, log: undefined }, ...r }, null, 2) : formatTraceResult(r, o)) + '\n');
      if (r.rows.some((x) => x.badReads > 0)) process.exitCode = 1;
    });
}
