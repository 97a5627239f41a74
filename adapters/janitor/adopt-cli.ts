/**
 * `kvstash adopt restore <folder> [--keys k1,k2]` and `kvstash adopt stats`: ask a running sidecar's folder janitors
 * (janitor.ts, data-socket ops ADOPT_RESTORE and ADOPT_STATS) to put demoted files back into an adopted folder, or
 * to report what they did. Keys are paths relative to the folder (the names the engine uses) or target keys
 * (`<32 hex>/<64 hex>`, as `adopt restore --json` prints them); no --keys restores every demoted file.
 *
 * Exit codes as the control commands (cli/support.ts): 0 ok, 1 operational error (unreachable, timeout, storage,
 * and KVS_CHECKSUM: a demoted file whose bytes fail their checksum, which is not written), 2 bad usage, 3 not found
 * (the folder is not adopted).
 */
import path from 'node:path';
import type { Command } from 'commander';
import { KvstashClient } from '../../connector/client.js';
import { defaultEndpoints } from '../../connector/config.js';
import { connectAuthenticated } from '../../connector/control/auth-client.js';
import { secretValue } from '../../connector/control/settings.js';
import { formatTable } from '../../connector/table.js';
import { ErrorCode, toKvstashError } from '../../protocol/errors.js';

interface AdoptCliOpts { endpoint?: string; timeout: string; json?: boolean; keys?: string; token?: string }

const EXIT: Record<string, number> = { [ErrorCode.BAD_FIELD]: 2, [ErrorCode.CONFIG]: 2, [ErrorCode.NOT_FOUND]: 3 };

async function withClient(opts: AdoptCliOpts, body: (c: KvstashClient) => Promise<void>): Promise<void> {
  const endpoint = opts.endpoint ?? process.env.KVSTASH_ENDPOINT ?? defaultEndpoints()[0]!;
  const token = opts.token ?? process.env.KVSTASH_TOKEN;
  let c: KvstashClient | undefined;
  let code = 0;
  try {
    // With data-socket auth on, AUTH with the token first (restore is an operator op: a token of every tenant, "*").
    c = token ? (await connectAuthenticated(endpoint, { token: secretValue(token) }, { timeoutMs: Number(opts.timeout) })).client
      : new KvstashClient(endpoint, { timeoutMs: Number(opts.timeout) });
    await body(c);
  } catch (err) {
    const e = toKvstashError(err);
    if (opts.json) process.stdout.write(JSON.stringify({ error: { code: e.code, message: e.message } }) + '\n');
    const hint = e.code === ErrorCode.UNKNOWN_OP ? ' (the sidecar runs without --adopt-dir)' : e.code === ErrorCode.TIMEOUT ? ` (is \`kvstash serve\` listening at ${endpoint}? pass --endpoint)` : '';
    process.stderr.write(`kvstash: ${e.code}: ${e.message}${hint}\n`);
    code = EXIT[e.code] ?? 1;
  } finally {
    c?.close();
  }
  process.exitCode = code;
}

function options(cmd: Command): Command {
  return cmd
    .option('--endpoint <ep>', 'data-socket endpoint of the sidecar (env KVSTASH_ENDPOINT; default its ipc socket)')
    .option('--timeout <ms>', 'deadline in ms', '30000')
    .option('--token <token|@file>', 'bearer token for data-socket AUTH when the sidecar has auth on (env KVSTASH_TOKEN)')
    .option('--json', 'print JSON (errors too: {"error": {"code", "message"}})');
}

export function adoptCommands(program: Command): void {
  const adopt = program.command('adopt').description('folders engines write themselves (--adopt-dir): restore demoted files, report');
  options(adopt.command('restore <folder>')
    .description('put demoted files back into an adopted folder, where the engine expects them (bytes failing their checksum: KVS_CHECKSUM, not written)')
    .option('--keys <list>', 'comma-separated paths relative to the folder (or target keys); default: every demoted file'))
    .action((folder: string, opts: AdoptCliOpts) => withClient(opts, async (c) => {
      const keys = opts.keys?.split(',').map((k) => k.trim()).filter(Boolean);
      const r = (await c.request({ op: 'ADOPT_RESTORE', dir: path.resolve(folder), ...(keys ? { keys } : {}) })).header;
      const rows = (r.restored ?? []) as { key: string; file?: string; bytes?: number; status: string }[];
      if (opts.json) process.stdout.write(JSON.stringify({ dir: r.dir, restored: rows }, null, 2) + '\n');
      else {
        process.stdout.write(`${rows.filter((x) => x.status === 'restored').length} file(s) restored into ${String(r.dir)}\n`);
        if (rows.length) process.stdout.write(formatTable(['status', 'file', 'bytes', 'key'], rows.map((x) => [x.status, x.file ?? '', x.bytes ?? '', x.key])) + '\n');
      }
    }));
  options(adopt.command('stats').description('what the janitors of a running sidecar did: files, bytes, evicted, demoted, restored, refused'))
    .action((opts: AdoptCliOpts) => withClient(opts, async (c) => {
      const rows = ((await c.request({ op: 'ADOPT_STATS' })).header.adopt ?? []) as Record<string, unknown>[];
      if (opts.json) { process.stdout.write(JSON.stringify(rows, null, 2) + '\n'); return; }
      const d = (r: Record<string, unknown>, k: string) => (r.demote as Record<string, unknown> | undefined)?.[k] ?? '-';
      process.stdout.write(formatTable(['folder', 'layout', 'files', 'bytes', 'budget', 'evicted', 'demoted', 'demoted now', 'restored', 'refused'],
        rows.map((r) => [String(r.dir), String(r.layout), Number(r.files), Number(r.bytes), Number(r.budget_bytes), Number(r.evicted),
          String(d(r, 'demoted')), String(d(r, 'demotedFiles')), String(d(r, 'restored')), String(d(r, 'refused'))])) + '\n');
    }));
}
