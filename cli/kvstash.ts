#!/usr/bin/env node
/**
 * `kvstash` command line (commander). Core commands: serve, stats, lookup, config. Adapters and the control
 * plane add theirs through CliExtension (cli/extensions.ts).
 * Exit codes: 0 success, 1 operational error (sidecar unreachable, request failed), 2 bad usage/config.
 */
import { existsSync, rmSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { KvstashError, ErrorCode } from '../protocol/errors.js';
import { KvstashClient } from '../connector/client.js';
import { SETTINGS, loadConfig, settingsMarkdown, type Setting } from '../connector/config.js';
import { EXTENSIONS } from './extensions.js';
import { environmentMarkdown } from '../connector/control/environment-doc.js';
import { grpcLookup, grpcStats } from './control.js';
import { addConnectionOptions, noFullBlockHint, parseTokens, type CommonOpts, type SelOpts } from './support.js';
import { printEnginesLookup } from '../adapters/vllm/engines-cli.js';
import { blockHashes } from '../connector/keys.js';
import { rootLogger } from '../connector/log.js';
import { Sidecar } from '../connector/server/sidecar.js';
import { formatTable, humanBytes } from '../connector/table.js';
import { VERSION } from '../connector/version.js';

const extraSettings: Setting[] = EXTENSIONS.flatMap((e) => e.settings ?? []);

function defaultEndpoint(): string {
  return loadConfig({}, process.env, undefined, extraSettings).endpoints.find((e) => e.startsWith('ipc://')) ?? 'tcp://127.0.0.1:5599';
}

/** ZeroMQ's own words for a bad endpoint are "Protocol not supported"; say what an endpoint looks like. */
function checkEndpoints(endpoints: string[]): void {
  for (const ep of endpoints) {
    if (!/^(tcp:\/\/[^/]+:\d+|ipc:\/\/.+|inproc:\/\/.+)$/.test(ep)) {
      throw new KvstashError(ErrorCode.CONFIG, `endpoints: ${JSON.stringify(ep)} is not a ZeroMQ endpoint; expected tcp://host:port, ipc:///path/to.sock or inproc://name`);
    }
  }
}

/** Errors of binding and opening at start-up, said with the setting that caused them. */
function startError(err: unknown, fileRoot: string): unknown {
  const e = err as NodeJS.ErrnoException & { address?: string };
  if (e?.code === 'EADDRINUSE' && e.address) {
    return new KvstashError(ErrorCode.CONFIG, `data endpoint ${e.address} is already in use (another kvstash serve?): stop it, or give other --endpoints`, { cause: err });
  }
  if (typeof e?.code === 'string' && e.syscall && e.path) {
    const what = fileRoot && e.path.startsWith(fileRoot) ? ` (file tier folder, --file-root ${fileRoot})` : '';
    const reason = e.message.replace(/^[A-Z]+: /, '').replace(/, \w+ '.*'$/, '');
    return new KvstashError(ErrorCode.CONFIG, `cannot ${e.syscall} ${e.path}${what}: ${reason} (${e.code})`, { cause: err });
  }
  return err;
}

/** Data-socket failures said with the endpoint and what to do. */
function dataSocketError(err: unknown, endpoint: string, timeoutMs: number): unknown {
  const e = err as KvstashError;
  if (e?.code === ErrorCode.TIMEOUT) {
    return new KvstashError(ErrorCode.TIMEOUT, `no reply from the data socket at ${endpoint} within ${timeoutMs} ms: is \`kvstash serve\` listening there? Start it, or pass --endpoint <ep>`, { cause: err });
  }
  if (e?.code === ErrorCode.UNKNOWN_OP) {
    return new KvstashError(ErrorCode.UNKNOWN_OP, `the sidecar at ${endpoint} runs without the KV-events index; start serve with --vllm-events <engine KV-event publisher, e.g. tcp://engine:5557> (adapters/vllm/README.md)`, { cause: err });
  }
  return err;
}

function collectFlags(opts: Record<string, unknown>): Record<string, unknown> {
  const flags: Record<string, unknown> = {};
  for (const st of [...SETTINGS, ...extraSettings]) if (opts[st.key] !== undefined) flags[st.key] = opts[st.key];
  return flags;
}

export function buildProgram(): Command {
  const program = new Command('kvstash')
    .description('KV-cache sidecar for LLM inference: keeps KV blocks in DRAM → SSD → NFS → S3 and hands them back to engines')
    .version(VERSION)
    .showHelpAfterError()
    .exitOverride();

  const serve = program.command('serve').description('run the sidecar (ZeroMQ data socket over the tier stack)')
    .option('--config <file>', 'JSON config file (also KVSTASH_CONFIG)');
  for (const st of [...SETTINGS, ...extraSettings]) {
    const arg = st.kind === 'bool' ? `${st.flag} [bool]` : `${st.flag} <value>`;
    serve.addOption(new Option(arg, `${st.describe} (env ${st.env}; default ${st.defDoc.replace(/`/g, '')})`).argParser((v: string, prev: unknown) => {
      if (st.kind === 'list' && typeof prev === 'string') return `${prev},${v}`;
      return v ?? 'true';
    }));
  }
  serve.action(async (opts: Record<string, unknown>) => {
    const config = loadConfig(collectFlags(opts), process.env, opts.config as string | undefined, extraSettings);
    const log = rootLogger(config.logLevel);
    checkEndpoints(config.endpoints);
    const rootExisted = !config.fileRoot || existsSync(config.fileRoot);
    const sidecar = new Sidecar(config);
    for (const ext of EXTENSIONS) for (const p of (await ext.plugins?.(config)) ?? []) sidecar.use(p);
    const { endpoints, rebuilt } = await sidecar.start().catch((err: unknown) => { throw startError(err, config.fileRoot); });
    const tiers = sidecar.tiers.tiers.map((t) => `${t.name} (${t.driver.name}, ${humanBytes(t.budgetBytes)})`).join(' → ');
    let stopping = false;
    const stop = async (sig: string) => {
      if (stopping) return;
      stopping = true;
      log.info({ sig }, 'stopping: draining write-behind queues');
      await sidecar.stop();
      // libzmq leaves ipc socket files behind when the process exits; remove ours so the next start is clean
      for (const ep of endpoints) if (ep.startsWith('ipc://')) rmSync(ep.slice('ipc://'.length), { force: true });
      process.stdout.write(`kvstash sidecar stopped (${sig})\n`);
      process.exit(0);
    };
    // before the banner: whoever waits for it may signal at once
    process.on('SIGINT', () => void stop('SIGINT'));
    process.on('SIGTERM', () => void stop('SIGTERM'));
    process.stdout.write(`kvstash sidecar listening on ${endpoints.join(', ')}\ntiers: ${tiers}\nindex rebuilt from disk: ${rebuilt} blocks\n` +
      (rootExisted ? '' : `file tier folder ${config.fileRoot} did not exist: created it\n`) +
      'logs: JSON lines on stderr (--log-level warn quiets them); Ctrl-C stops\n');
    log.info({ endpoints, tiers: sidecar.tiers.stats().map((t) => t.name), rebuilt }, 'sidecar started');
  });

  const stats = program.command('stats').description('print tier statistics of a running sidecar (gRPC control plane; --data-endpoint: the data socket)')
    .option('--data-endpoint <ep>', 'ask the ZeroMQ data socket instead of gRPC (also when --endpoint is given)')
    .option('--endpoint <ep>', 'data-socket endpoint (implies the data socket)');
  addConnectionOptions(stats)
    .action(async (opts: { endpoint?: string; dataEndpoint?: string; timeout: string; json?: boolean }) => {
      if (!opts.endpoint && !opts.dataEndpoint) return grpcStats(opts);
      const c = new KvstashClient(opts.dataEndpoint ?? opts.endpoint!, { timeoutMs: Number(opts.timeout) });
      try {
        const st = await c.stats().catch((err: unknown) => { throw dataSocketError(err, String(opts.dataEndpoint ?? opts.endpoint), Number(opts.timeout)); });
        if (opts.json) process.stdout.write(JSON.stringify(st, null, 2) + '\n');
        else {
          const tiers = st.tiers as Record<string, number | string>[];
          process.stdout.write(`${st.server}  up ${st.uptime_s}s  blocks ${st.blocks}  namespaces ${st.namespaces}  requests ${st.requests}  errors ${st.errors}\n`);
          process.stdout.write(formatTable(['tier', 'bytes', 'budget', 'blocks', 'hits', 'misses', 'evictions', 'queue', 'dropped', 'bad sums'],
            tiers.map((t) => [t.name, humanBytes(t.bytes as number), humanBytes(t.budgetBytes as number), t.blocks, t.hits, t.misses, t.evictions, t.queueDepth, t.droppedSaves, t.checksumFailures])) + '\n');
        }
      } finally {
        c.close();
      }
    });

  const lookup = program.command('lookup').description('how many leading blocks of a token sequence the sidecar holds, per tier (gRPC; --data-endpoint: the data socket)')
    .option('--data-endpoint <ep>', 'ask the ZeroMQ data socket instead of gRPC (also when --endpoint is given)')
    .option('--endpoint <ep>', 'data-socket endpoint (implies the data socket; --engines uses it, default the local ipc socket)')
    .option('--tokens <list|@file>', 'token ids: comma/space separated, or @file (JSON array or whitespace separated)')
    .option('--block-size <n>', 'tokens per block', '16')
    .option('--model <id>', 'namespace: model', 'default')
    .option('--engine <kind>', 'namespace: engine kind', 'vllm')
    .option('--layout <fp>', 'namespace: KV layout fingerprint', 'default')
    .option('--tenant <t>', 'namespace: tenant', 'default')
    .option('--tp <rank/size>', 'namespace: tensor-parallel rank/size', '0/1')
    .option('--pp <rank/size>', 'namespace: pipeline-parallel rank/size', '0/1')
    .option('--lora <name>', 'LoRA adapter name (hash extra key)')
    .option('--cache-salt <salt>', 'cache salt (hash extra key of the first block)')
    .option('--hashes <hex,…|@file>', 'prefix as kvstash block hashes instead of --tokens (gRPC only)')
    .option('--prefetch', 'start warming lower-tier hits into DRAM (gRPC only)')
    .option('--engines', 'instead: which vLLM engines hold the prefix in GPU memory (KV-events index; sidecar block size and seed)')
    .action(async (opts: Record<string, string | boolean | undefined>) => {
      if (opts.engines) {
        if (opts.grpc) throw new KvstashError(ErrorCode.INVALID_ARGUMENT, `--engines asks the sidecar's data socket (--endpoint <ep>, default ${defaultEndpoint()}), not the gRPC control plane; drop --grpc`);
        const endpoint = String(opts.endpoint ?? opts.dataEndpoint ?? defaultEndpoint());
        return printEnginesLookup({ endpoint, tokens: parseTokens(String(opts.tokens)), lora: opts.lora as string | undefined, cacheSalt: opts.cacheSalt as string | undefined, timeoutMs: Number(opts.timeout), json: opts.json === true })
          .catch((err: unknown) => { throw dataSocketError(err, endpoint, Number(opts.timeout)); });
      }
      if (!opts.endpoint && !opts.dataEndpoint) return grpcLookup(opts as CommonOpts & SelOpts);
      const tokens = parseTokens(String(opts.tokens));
      const [tpr, tps] = String(opts.tp).split('/').map(Number);
      const [ppr, pps] = String(opts.pp).split('/').map(Number);
      const keys = blockHashes(tokens, Number(opts.blockSize), { lora: opts.lora as string | undefined, cacheSalt: opts.cacheSalt as string | undefined });
      const c = new KvstashClient(String(opts.dataEndpoint ?? opts.endpoint), { timeoutMs: Number(opts.timeout) });
      try {
        const ns = await c.hello({ model: String(opts.model), engine: String(opts.engine), layout: String(opts.layout), tenant: String(opts.tenant), tp_rank: tpr!, tp_size: tps!, pp_rank: ppr!, pp_size: pps! })
          .catch((err: unknown) => { throw dataSocketError(err, String(opts.dataEndpoint ?? opts.endpoint), Number(opts.timeout)); });
        const r = await c.lookup(ns, keys);
        const out = { namespace: ns, blocks: keys.length, hit_blocks: r.hit, hit_tokens: r.hit * Number(opts.blockSize), tiers: r.tiers, load_ms: r.loadMs };
        if (opts.json) process.stdout.write(JSON.stringify(out, null, 2) + '\n');
        else {
          process.stdout.write(`${r.hit} of ${keys.length} blocks (${out.hit_tokens} tokens) available${noFullBlockHint(tokens.length, Number(opts.blockSize))}\n`);
          process.stdout.write(formatTable(['tier', 'leading blocks', 'est. load ms'], Object.keys(r.tiers).map((t) => [t, r.tiers[t]!, (r.loadMs[t] ?? 0).toFixed(2)])) + '\n');
        }
      } finally {
        c.close();
      }
    });
  addConnectionOptions(lookup);

  program.command('config').description('print the resolved configuration, or the settings table')
    .option('--config <file>', 'JSON config file')
    .option('--markdown', 'print the settings reference as a markdown table')
    .action((opts: { config?: string; markdown?: boolean }) => {
      if (opts.markdown) process.stdout.write(settingsMarkdown(extraSettings) + '\n');
      else process.stdout.write(JSON.stringify(loadConfig({}, process.env, opts.config, extraSettings), null, 2) + '\n');
    });

  program.command('env-doc').description('print docs/environment.md: every environment variable and config field')
    .action(() => {
      process.stdout.write(environmentMarkdown(extraSettings));
    });

  for (const ext of EXTENSIONS) ext.commands?.(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  // `kvstash stats | head -1`: the reader went away; that is not an error
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
    const e = err as KvstashError;
    const message = e.code && e.message?.startsWith(`${e.code}: `) ? e.message.slice(e.code.length + 2) : e.message;
    process.stderr.write(`kvstash: ${e.code ?? 'error'}: ${message}\n`);
    process.exit(e.code === ErrorCode.CONFIG || e.code === ErrorCode.INVALID_ARGUMENT ? 2 : 1);
  }
}

void main(process.argv);
