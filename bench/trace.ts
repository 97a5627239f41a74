/**
 * Trace-replay benchmark (`npm run bench -- trace`): the Mooncake conversation trace against the real TierStack
 * (DRAM budget + file tier in a temp folder) — hit ratio per tier and overall for kvstash's policy and for LRU,
 * against Belady's offline optimum at the same capacity (the ceiling), plus SSD bytes written. Same code and flags
 * as `kvstash bench trace` (cli/trace.ts); `--quick` replays the first 3000 requests.
 */
import { Command } from 'commander';
import { traceCommand } from '../cli/trace.js';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const program = new Command('bench').exitOverride();
traceCommand(program);
await program.parseAsync(['node', 'bench', 'bench', 'trace', ...args.filter((a) => a !== '--quick'), ...(quick ? ['--limit', '3000'] : [])]);
