/**
 * CLI extension of the storage layer:
 * - `kvstash driver-test <module|built-in> --config <json file or inline>`: the conformance kit against a driver,
 *   printed as a pass/fail table (exit 0 all passed, 1 a case failed, 2 bad usage/config);
 * - `kvstash bench trace …`: replays a request trace against the real TierStack (connector/trace/trace-replay.ts).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Command } from 'commander';
import { ErrorCode, KvstashError } from '../protocol/errors.js';
import type { CliExtension } from './extension.js';
import { formatTable } from '../connector/table.js';
import { runConformance, type CaseResult, type ConformanceFactory, type SubprocessSpec } from '../connector/storage/conformance.js';
import type { DriverFactory } from '../connector/storage/driver.js';
import { loadDriverFactory } from '../connector/storage/load-driver.js';
import { defaultRegistry } from '../connector/storage/registry.js';
import '../connector/storage/nfs.js'; // built-ins register themselves
import '../connector/storage/s3.js';
import { traceCommand } from './trace.js';

const ext = /\.ts$/.test(import.meta.url) ? 'ts' : 'js';
/** Built-in drivers a child process can load (the crash case), by module and export. */
const BUILTIN_MODULES: Record<string, [string, string]> = {
  file: [`../connector/storage/file.${ext}`, 'fileDriverFactory'],
  nfs: [`../connector/storage/nfs.${ext}`, 'nfsDriverFactory'],
  s3: [`../connector/storage/s3.${ext}`, 's3DriverFactory'],
};

function readConfig(spec: string | undefined): Record<string, unknown> {
  if (!spec) return {};
  const text = spec.trim().startsWith('{') ? spec : readFileSync(spec, 'utf8');
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new KvstashError(ErrorCode.CONFIG, `--config: not JSON (${(err as Error).message})`, { cause: err });
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new KvstashError(ErrorCode.CONFIG, '--config must be a JSON object');
  return v as Record<string, unknown>;
}

/** Resolve `target` (a module path, or the name of a built-in driver) to a factory and a child-process spec. */
export async function resolveDriver(target: string, exportName?: string): Promise<{ factory: DriverFactory<unknown>; module?: string; exportName?: string }> {
  const looksLikePath = /[/\\]|\.(m?js|ts)$/.test(target);
  if (!looksLikePath) {
    const registry = defaultRegistry();
    if (!registry.names().includes(target)) {
      throw new KvstashError(ErrorCode.CONFIG, `"${target}" is neither a module path nor a built-in driver (${registry.names().join(', ')})`);
    }
    const m = BUILTIN_MODULES[target];
    return { factory: registry.get(target), module: m && new URL(m[0], import.meta.url).href, exportName: m?.[1] };
  }
  const abs = path.resolve(target);
  if (!existsSync(abs)) throw new KvstashError(ErrorCode.CONFIG, `driver module ${abs} does not exist`);
  if (/\.[mc]?ts$/.test(abs) && !typeScriptLoaderActive()) rerunWithTsx(abs);
  const url = pathToFileURL(abs).href;
  return { factory: await loadDriverFactory(url, exportName), module: url, exportName };
}

/** Whether this process can import .ts files (started through tsx, as in the repository's tests). */
function typeScriptLoaderActive(): boolean {
  return /\.ts$/.test(import.meta.url) || [...process.execArgv, process.env.NODE_OPTIONS ?? ''].some((a) => /\btsx\b/.test(a));
}

/**
 * A driver written in TypeScript: plain node cannot import it (ERR_UNKNOWN_FILE_EXTENSION). Run this same command
 * again under tsx when tsx can be found (next to the driver, or beside kvstash), else say how to proceed.
 */
function rerunWithTsx(abs: string): never {
  let tsx: string | undefined;
  for (const from of [path.join(path.dirname(abs), 'x.js'), path.join(process.cwd(), 'x.js'), fileURLToPath(import.meta.url)]) {
    try {
      tsx = createRequire(from).resolve('tsx');
      break;
    } catch {
      // not here
    }
  }
  if (!tsx) {
    throw new KvstashError(ErrorCode.CONFIG, `${abs} is TypeScript and node cannot import it as is: compile it to .js (tsc) and pass the .js file, ` +
      `or install tsx (npm i -D tsx) and run node --import tsx $(command -v kvstash) ${process.argv.slice(2).join(' ')}`);
  }
  const r = spawnSync(process.execPath, ['--import', pathToFileURL(tsx).href, ...process.execArgv, ...process.argv.slice(1)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}

export function conformanceFactoryFor(f: DriverFactory<unknown>, raw: Record<string, unknown>, module?: string, exportName?: string): ConformanceFactory {
  const config = f.parseConfig(raw); // bad config fails here, once, before any case
  const subprocess: SubprocessSpec | undefined = module ? { module, export: exportName, config: raw } : undefined;
  const persistent = f.name !== 'memory';
  return () => ({ driver: f.create(config), reopen: persistent ? () => f.create(config) : undefined, subprocess });
}

function printResults(results: CaseResult[], json: boolean): void {
  if (json) {
    process.stdout.write(JSON.stringify(results, null, 2) + '\n');
    return;
  }
  const details = (r: CaseResult) => [r.error, ...r.notes, ...r.metrics.map((m) => `${m.name} ${m.value.toFixed(1)} ${m.unit}`)].filter(Boolean).join('; ');
  const rows = results.map((r) => [r.name, r.status === 'pass' ? 'PASS' : r.status === 'skip' ? 'skip' : 'FAIL', r.ms]);
  const lines = formatTable(['case', 'result', 'ms'], rows).split('\n');
  process.stdout.write(lines.map((l, i) => (i >= 2 && details(results[i - 2]!) ? `${l}  ${details(results[i - 2]!)}` : l)).join('\n') + '\n');
  const n = (s: string) => results.filter((r) => r.status === s).length;
  process.stdout.write(`${n('pass')} passed, ${n('fail')} failed, ${n('skip')} skipped\n`);
}

function driverTestCommand(program: Command): void {
  program.command('driver-test')
    .description('run the storage-driver conformance kit against a driver module (or a built-in driver name)')
    .argument('<driver>', 'path to a module whose default export (or `factory`) is a DriverFactory, or a built-in name: memory, file, nfs, s3')
    .option('--config <json|file>', 'driver config: inline JSON object or a JSON file', '{}')
    .option('--export <name>', 'named export holding the DriverFactory')
    .option('--only <cases>', 'comma-separated case names')
    .option('--big-value-bytes <n>', 'size of the big round trip (default 64 MiB, capped at the driver limit)')
    .option('--case-timeout <ms>', 'deadline per case', '120000')
    .option('--json', 'print JSON')
    .action(async (target: string, opts: { config: string; export?: string; only?: string; bigValueBytes?: string; caseTimeout: string; json?: boolean }) => {
      const raw = readConfig(opts.config);
      const { factory, module, exportName } = await resolveDriver(target, opts.export);
      const cf = conformanceFactoryFor(factory, raw, module, exportName);
      const only = opts.only?.split(',').map((s) => s.trim()).filter(Boolean);
      const { CASE_NAMES } = await import('../connector/storage/conformance.js');
      const unknown = only?.filter((c) => !CASE_NAMES.includes(c));
      if (unknown?.length) throw new KvstashError(ErrorCode.CONFIG, `unknown case(s) ${unknown.join(', ')}; cases: ${CASE_NAMES.join(', ')}`);
      const results = await runConformance(cf, {
        skip: only ? CASE_NAMES.filter((c) => !only.includes(c)) : undefined,
        bigValueBytes: opts.bigValueBytes ? Number(opts.bigValueBytes) : undefined,
        caseTimeoutMs: Number(opts.caseTimeout),
      }, opts.json ? undefined : (r) => (!only || only.includes(r.name)) && process.stderr.write(`${r.status === 'fail' ? 'FAIL' : r.status} ${r.name}\n`));
      printResults(results.filter((r) => !only || only.includes(r.name)), opts.json === true);
      if (results.some((r) => r.status === 'fail')) process.exitCode = 1;
    });
}

export const storageExtension: CliExtension = {
  name: 'storage',
  commands(program) {
    driverTestCommand(program);
    traceCommand(program);
  },
};
