/**
 * Shared pieces of the control-plane CLI commands: connection and selector options, output (human table or
 * --json), exit codes, and the progress line.
 *
 * Exit codes (stable, for scripts): 0 ok · 1 operational error (unreachable, timeout, internal, storage) ·
 * 2 bad usage (unknown option, bad argument) · 3 refused or not found (unknown namespace or tier target,
 * authentication, permission, pin budget) · 4 health answered but not SERVING (DEGRADED / NOT_SERVING).
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { ErrorCode, KvstashError, toKvstashError } from '../protocol/errors.js';
import { ControlClient, type Msg } from '../connector/control/grpc-client.js';
import { secretValue } from '../connector/control/settings.js';

export const EXIT = { OK: 0, ERROR: 1, USAGE: 2, REFUSED: 3, NOT_SERVING: 4 } as const;

export function exitCodeOf(code: string): number {
  switch (code) {
    case ErrorCode.INVALID_ARGUMENT: case ErrorCode.CONFIG: case ErrorCode.BAD_FIELD: case ErrorCode.KEY_LENGTH: case ErrorCode.TOO_LARGE:
      return EXIT.USAGE;
    case ErrorCode.NOT_FOUND: case ErrorCode.NS_UNKNOWN: case ErrorCode.UNAUTHENTICATED: case ErrorCode.PERMISSION_DENIED: case ErrorCode.RESOURCE_EXHAUSTED:
      return EXIT.REFUSED;
    default:
      return EXIT.ERROR;
  }
}

export interface CommonOpts { grpc?: string; token?: string; tlsCa?: string; tlsCert?: string; tlsKey?: string; tlsServerName?: string; timeout: string; json?: boolean }

export function addConnectionOptions(cmd: Command): Command {
  return cmd
    .option('--grpc <host:port>', 'control-plane address (env KVSTASH_GRPC; default 127.0.0.1:5600)')
    .option('--token <token|@file>', 'bearer token (env KVSTASH_TOKEN)')
    .option('--tls-ca <file>', 'PEM CA of the server certificate: use TLS')
    .option('--tls-cert <file>', 'client certificate (mutual TLS)')
    .option('--tls-key <file>', 'client key (mutual TLS)')
    .option('--tls-server-name <name>', 'expected server name in its certificate')
    .option('--timeout <ms>', 'deadline in ms', '5000')
    .option('--json', 'print JSON (errors too: {"error": {"code", "message"}})');
}

export function grpcAddress(opts: { grpc?: string }): string {
  const a = opts.grpc ?? process.env.KVSTASH_GRPC ?? '127.0.0.1:5600';
  if (!a) throw new KvstashError(ErrorCode.INVALID_ARGUMENT, 'the gRPC control plane is disabled (grpc is empty); give --grpc <host:port>');
  return a;
}

export function controlClient(opts: CommonOpts): ControlClient {
  const timeout = Number(opts.timeout);
  if (!(timeout > 0)) throw new KvstashError(ErrorCode.INVALID_ARGUMENT, `--timeout must be a positive number of ms, got ${JSON.stringify(opts.timeout)}`);
  const token = opts.token ?? process.env.KVSTASH_TOKEN;
  return new ControlClient(grpcAddress(opts), {
    token: token ? secretValue(token) : undefined, tlsCaFile: opts.tlsCa, tlsCertFile: opts.tlsCert, tlsKeyFile: opts.tlsKey,
    tlsServerName: opts.tlsServerName, deadlineMs: timeout, streamDeadlineMs: undefined,
  });
}

/** Run a command body; print errors (as JSON with --json) and exit with the documented code. */
export async function runCommand(opts: { json?: boolean; grpc?: string }, body: () => Promise<number | void>): Promise<void> {
  let code: number;
  try {
    code = (await body()) ?? EXIT.OK;
  } catch (err) {
    const e = explainUnreachable(toKvstashError(err), opts);
    if (opts.json) process.stdout.write(JSON.stringify({ error: { code: e.code, message: e.message } }) + '\n');
    process.stderr.write(`kvstash: ${e.code}: ${e.message}\n`);
    code = exitCodeOf(e.code);
  }
  process.exit(code);
}

/**
 * grpc-js reports an unreachable server in its own words ("No connection established. Last error: … Resolution
 * note: …"); say instead which address was tried and what to do.
 */
export function explainUnreachable(e: KvstashError, opts: { grpc?: string }): KvstashError {
  if (e.code !== ErrorCode.UNAVAILABLE && e.code !== ErrorCode.TIMEOUT) return e;
  if (!/No connection established|Failed to connect|ECONNREFUSED|DNS resolution failed|Waiting for LB pick|waiting_for_connection/i.test(e.message)) return e;
  let addr = '';
  try {
    addr = grpcAddress(opts);
  } catch {
    // the address itself was the problem; keep the original message
    return e;
  }
  const why = (/(connect \w+ \S+|getaddrinfo \w+ \S+|DNS resolution failed[^.]*)/.exec(e.message)?.[1] ?? 'no connection').replace(/\.$/, '');
  return new KvstashError(e.code, `cannot reach the kvstash control plane at ${addr} (${why}). Is \`kvstash serve\` running? ` +
    'Start it (npm start, or kvstash serve), or point at it with --grpc <host:port> (env KVSTASH_GRPC); stats and lookup can also ask the data socket with --data-endpoint <ep>', { cause: e });
}

export function print(opts: { json?: boolean }, value: unknown, human: () => string): void {
  process.stdout.write(opts.json ? JSON.stringify(value, (_, v) => (Buffer.isBuffer(v) || v?.type === 'Buffer' ? Buffer.from(v).toString('hex') : v), 2) + '\n' : human() + '\n');
}

// ---- selectors -----------------------------------------------------------------------------------------

export function addSelectorOptions(cmd: Command, what: string): Command {
  return cmd
    .option('--ns <id>', `${what}: namespace id (32 hex chars)`)
    .option('--model <id>', 'namespace descriptor: model (selects a namespace; the others default as in `lookup`)')
    .option('--engine <kind>', 'namespace descriptor: engine kind', 'vllm')
    .option('--layout <fp>', 'namespace descriptor: KV layout fingerprint', 'default')
    .option('--tenant <t>', 'tenant: alone selects every namespace of the tenant; with --model it is the descriptor\'s tenant')
    .option('--tp <rank/size>', 'namespace descriptor: tensor-parallel rank/size', '0/1')
    .option('--pp <rank/size>', 'namespace descriptor: pipeline-parallel rank/size', '0/1')
    .option('--tokens <list|@file>', 'prefix as token ids (comma/space separated, or @file with a JSON array)')
    .option('--block-size <n>', 'tokens per block for --tokens', '16')
    .option('--lora <name>', 'LoRA adapter name (hash extra key)')
    .option('--cache-salt <salt>', 'cache salt (hash extra key of the first block)')
    .option('--hashes <hex,…|@file>', 'prefix as kvstash block hashes (64 hex chars each)');
}

/** " — 3 tokens make no full block of 16 …": only full blocks are cached, which "0 of 0 blocks" does not say. */
export function noFullBlockHint(tokens: number, blockSize: number): string {
  if (!(blockSize > 0) || tokens % blockSize === 0 && tokens > 0) return '';
  const full = Math.floor(tokens / blockSize);
  return ` — ${tokens} tokens make ${full} full block${full === 1 ? '' : 's'} of ${blockSize} (--block-size); only full blocks are cached`;
}

export function parseTokens(spec: string): number[] {
  const text = spec.startsWith('@') ? readFileSync(spec.slice(1), 'utf8') : spec;
  const t = text.trim();
  let arr: unknown[];
  try {
    arr = t.startsWith('[') ? JSON.parse(t) : t.split(/[\s,]+/).filter(Boolean).map(Number);
  } catch {
    throw new KvstashError(ErrorCode.INVALID_ARGUMENT, 'tokens: invalid JSON array');
  }
  if (!Array.isArray(arr) || !arr.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= 0 && x < 2 ** 32)) {
    throw new KvstashError(ErrorCode.INVALID_ARGUMENT, 'tokens must be non-negative integers below 2^32');
  }
  return arr as number[];
}

function rankSize(v: unknown, what: string): [number, number] {
  const m = /^(\d+)\/(\d+)$/.exec(String(v));
  if (!m) throw new KvstashError(ErrorCode.INVALID_ARGUMENT, `${what} must be rank/size like 0/1, got ${JSON.stringify(v)}`);
  return [Number(m[1]), Number(m[2])];
}

export type SelOpts = Record<string, string | boolean | undefined>;

export function namespaceFrom(o: SelOpts): Msg | undefined {
  if (o.ns) return { id: String(o.ns) };
  if (!o.model) return undefined;
  const [tp_rank, tp_size] = rankSize(o.tp, '--tp');
  const [pp_rank, pp_size] = rankSize(o.pp, '--pp');
  return { descriptor: { model: String(o.model), engine: String(o.engine), layout: String(o.layout), tenant: String(o.tenant ?? 'default'), tp_rank, tp_size, pp_rank, pp_size } };
}

export function prefixFrom(o: SelOpts): Msg | undefined {
  if (o.tokens && o.hashes) throw new KvstashError(ErrorCode.INVALID_ARGUMENT, 'give --tokens or --hashes, not both');
  if (o.tokens) {
    const bs = Number(o.blockSize);
    if (!Number.isInteger(bs) || bs <= 0) throw new KvstashError(ErrorCode.INVALID_ARGUMENT, `--block-size must be a positive integer, got ${JSON.stringify(o.blockSize)}`);
    return { tokens: { ids: parseTokens(String(o.tokens)), block_size: bs, lora: o.lora ?? '', cache_salt: o.cacheSalt ?? '' } };
  }
  if (o.hashes) {
    const s = String(o.hashes);
    const text = s.startsWith('@') ? readFileSync(s.slice(1), 'utf8') : s;
    const list = text.split(/[\s,]+/).filter(Boolean);
    for (const h of list) if (!/^[0-9a-fA-F]{64}$/.test(h)) throw new KvstashError(ErrorCode.INVALID_ARGUMENT, `--hashes: ${JSON.stringify(h.slice(0, 70))} is not 64 hex chars`);
    return { hashes: { hashes: list.map((h) => Buffer.from(h, 'hex')) } };
  }
  return undefined;
}

export function selectorFrom(o: SelOpts): Msg {
  const namespace = namespaceFrom(o);
  const prefix = prefixFrom(o);
  if (!namespace && !o.tenant) throw new KvstashError(ErrorCode.INVALID_ARGUMENT, 'select blocks with --ns or --model (a namespace, optionally --tokens/--hashes) or --tenant');
  return { namespace, prefix, tenant: namespace ? '' : String(o.tenant) };
}

// ---- progress ------------------------------------------------------------------------------------------

/** A plain TTY progress line on stderr (no library): redrawn with \r, only when stderr is a terminal. */
export function progressLine(label: string, enabled = process.stderr.isTTY === true): { update: (p: Msg) => void; done: () => void } {
  let shown = false;
  return {
    update(p: Msg) {
      if (!enabled || !p.total) return;
      const w = 30;
      const fill = Math.round((p.done / p.total) * w);
      process.stderr.write(`\r${label} [${'#'.repeat(fill)}${'.'.repeat(w - fill)}] ${p.done}/${p.total}  changed ${p.changed}  skipped ${p.skipped}  failed ${p.failed} `);
      shown = true;
    },
    done() {
      if (shown) process.stderr.write('\n');
    },
  };
}
