/**
 * Sidecar configuration: one table of settings, each with type, default, environment variable and flag.
 * Precedence: command-line flag > environment variable > config file (JSON) > default.
 * docs/configuration.md is generated from SETTINGS by `kvstash config --markdown` and checked by a test.
 */
import { readFileSync, statfsSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ErrorCode, KvstashError } from '../protocol/errors.js';

type Kind = 'string' | 'bytes' | 'int' | 'bool' | 'list' | 'json';

export interface Setting {
  key: string;
  kind: Kind;
  env: string;
  flag: string;
  describe: string;
  /** Default, computed on this machine (so docs print the rule, not a number). */
  def: () => unknown;
  defDoc: string;
}

function runtimeDir(): string {
  return process.env.XDG_RUNTIME_DIR || os.tmpdir();
}
function cacheDir(): string {
  return process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
}
function diskShare(dir: string): number {
  let p = dir;
  for (;;) {
    try {
      const s = statfsSync(p);
      return Math.min(Math.floor((s.bavail * s.bsize) / 2), 100 * 2 ** 30);
    } catch {
      const up = path.dirname(p);
      if (up === p) return 10 * 2 ** 30;
      p = up;
    }
  }
}

const s = (key: string, kind: Kind, def: () => unknown, defDoc: string, describe: string): Setting => ({
  key, kind, def, defDoc, describe,
  env: 'KVSTASH_' + key.replace(/([A-Z])/g, '_$1').toUpperCase(),
  flag: '--' + key.replace(/([A-Z])/g, '-$1').toLowerCase(),
});

/** /dev/shm where this host has it (Linux): the DRAM tier then lives in shared memory engines map. */
function defaultArenaDir(): string {
  try {
    return process.platform === 'linux' && statSync('/dev/shm').isDirectory() ? '/dev/shm' : '';
  } catch {
    return '';
  }
}

/** The default data-socket endpoints (ipc first). */
export function defaultEndpoints(): string[] {
  return [`ipc://${path.join(runtimeDir(), 'kvstash.sock')}`, 'tcp://127.0.0.1:5599'];
}

export const SETTINGS: Setting[] = [
  s('endpoints', 'list', defaultEndpoints,
    '`ipc://$XDG_RUNTIME_DIR/kvstash.sock` (or the temp dir), `tcp://127.0.0.1:5599`', 'ZeroMQ endpoints the data socket binds (comma-separated). tcp port 0 picks a free port.'),
  s('dramBytes', 'bytes', () => Math.floor(os.totalmem() / 4), '25% of RAM', 'DRAM tier byte budget.'),
  s('fileRoot', 'string', () => path.join(cacheDir(), 'kvstash'), '`$XDG_CACHE_HOME/kvstash` (or `~/.cache/kvstash`)', 'Folder of the local-file tier; empty string disables the tier.'),
  s('fileBytes', 'bytes', () => diskShare(path.join(cacheDir(), 'kvstash')), 'half the free disk space, at most 100 GiB', 'File tier byte budget.'),
  s('fileFsync', 'bool', () => false, 'false', 'fsync each block before publishing it (survives power loss, slower). Without it a block survives a sidecar crash, not a host crash.'),
  s('fileLayout', 'string', () => 'files', 'files', '`files`: one file per block (rename-published); `segment`: an append-only segment log, sequential writes whatever the block size (faster for small blocks; see docs/storage.md "Segment log").'),
  s('fileWriteMode', 'string', () => 'through', 'through', '`through`: every stored block is also queued for the file tier; `back`: only blocks evicted from DRAM are.'),
  s('policy', 'string', () => 'lfuda', 'lfuda', 'Eviction policy: `lfuda` (LFU with dynamic ageing, frequency cap chosen online against LRU; docs/eviction.md), `heat` (the coldest of the `heatWindow` least recently used blocks) or `lru`.'),
  s('heatWindow', 'int', () => 256, '256', 'How many of the least recently used blocks the `heat` policy compares (1 = LRU). Larger keeps reused blocks in DRAM longer against a flood of new ones (bench trace, first 4,000 requests: 256 instead of 8 gives 1.4× the DRAM hits, same overall hit ratio).'),
  s('heatHalfLifeMs', 'int', () => 300_000, '300000', 'Half-life of the decayed access count (heat), ms.'),
  s('readPoolBytes', 'bytes', () => 128 * 2 ** 20, '128 MiB', 'Free memory the lower-tier hit path keeps to read blocks into again instead of allocating fresh memory per read (docs/storage.md "Hit path"); 0 turns reuse off.'),
  s('arenaDir', 'string', defaultArenaDir, '`/dev/shm` where it exists, else empty', 'Folder on a tmpfs of the shared-memory DRAM arena: same-host engines map it and load and save blocks in place (protocol/README.md "Same-host arena"). Not hugetlbfs: the sidecar writes the arena with pwrite, which hugetlbfs refuses (it would take a native mmap addon). Empty: DRAM blocks live in the sidecar heap and every client gets bytes inline.'),
  s('arenaLeaseMs', 'int', () => 5000, '5000', 'How long a same-host reader may hold the slots a GET described before they can be reused (it RELEASEs them sooner; a reader that copies later sees a generation change and treats the block as a miss).'),
  s('arenaCommitMs', 'int', () => 10_000, '10000', 'How long a same-host writer has between ALLOC and COMMIT; an uncommitted slot is reclaimed after twice this.'),
  s('arenaFileMode', 'string', () => '0600', '0600', 'File mode of each tenant\'s arena file (octal). Engines must run as the sidecar\'s user, or as a group named in arenaTenantGroups.'),
  s('arenaTenantGroups', 'json', () => ({}), '{}', 'JSON map tenant → numeric group id: that tenant\'s arena file is given to the group (mode | 0060), so engines of that tenant running as another user in the group can map it.'),
  s('maxMessageBytes', 'bytes', () => 1024 * 2 ** 20, '1 GiB', 'Largest request message (all frames) accepted.'),
  s('maxBlockBytes', 'bytes', () => 512 * 2 ** 20, '512 MiB', 'Largest single block accepted.'),
  s('maxInflightBytes', 'bytes', () => 2 * 2 ** 30, '2 GiB', 'Bytes of requests one client may have in flight; beyond it requests get KVS_BUSY.'),
  s('maxKeysPerRequest', 'int', () => 65536, '65536', 'Most keys in one request.'),
  s('namespacesPerTenant', 'int', () => 1024, '1024', 'Most namespaces one tenant may register (HELLO of a new one beyond it: KVS_RESOURCE_EXHAUSTED); 65,536 in all.'),
  s('namespaceIdleSeconds', 'int', () => 86_400, '86400', 'A namespace unused this long that holds no block is forgotten (0 = never); `kvstash drop-namespaces` removes them at once.'),
  s('writeQueueItems', 'int', () => 4096, '4096', 'Write-behind queue length per lower tier; saves beyond it are dropped and counted.'),
  s('writeQueueBytes', 'bytes', () => 2 * 2 ** 30, '2 GiB', 'Write-behind queue bytes per lower tier.'),
  s('writeConcurrency', 'int', () => 4, '4', 'Concurrent writes per lower tier.'),
  s('tiers', 'json', () => null, 'none', 'Advanced: a JSON array describing the lower tiers (replaces the file tier); see docs/configuration.md#tiers.'),
  s('logLevel', 'string', () => 'info', 'info', 'Log level: trace, debug, info, warn, error, silent.'),
];

export interface Config {
  endpoints: string[];
  dramBytes: number;
  fileRoot: string;
  fileBytes: number;
  fileFsync: boolean;
  fileLayout: 'files' | 'segment';
  fileWriteMode: 'through' | 'back';
  policy: 'lfuda' | 'heat' | 'lru';
  heatHalfLifeMs: number;
  readPoolBytes: number;
  heatWindow: number;
  maxMessageBytes: number;
  maxBlockBytes: number;
  maxInflightBytes: number;
  maxKeysPerRequest: number;
  writeQueueItems: number;
  writeQueueBytes: number;
  writeConcurrency: number;
  tiers: Record<string, unknown>[] | null;
  logLevel: string;
  arenaDir: string;
  arenaLeaseMs: number;
  arenaCommitMs: number;
  arenaFileMode: string;
  arenaTenantGroups: Record<string, number>;
  [extra: string]: unknown;
}

const UNITS: Record<string, number> = { '': 1, b: 1, k: 2 ** 10, kb: 2 ** 10, kib: 2 ** 10, m: 2 ** 20, mb: 2 ** 20, mib: 2 ** 20, g: 2 ** 30, gb: 2 ** 30, gib: 2 ** 30, t: 2 ** 40, tb: 2 ** 40, tib: 2 ** 40 };

/** "512MiB", "2g", "1048576" → bytes. */
export function parseBytes(v: unknown, what = 'value'): number {
  if (typeof v === 'number' && Number.isFinite(v) && v >= 0) return Math.floor(v);
  const m = typeof v === 'string' ? /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(v) : null;
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new KvstashError(ErrorCode.CONFIG, `${what}: expected a byte size like 512MiB or 2GiB, got ${JSON.stringify(v)}`);
  return Math.floor(Number(m[1]) * unit);
}

function coerce(st: Setting, v: unknown, source: string): unknown {
  const what = `${st.key} (from ${source})`;
  switch (st.kind) {
    case 'bytes': return parseBytes(v, what);
    case 'int': {
      const n = typeof v === 'string' ? Number(v) : v;
      if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) throw new KvstashError(ErrorCode.CONFIG, `${what}: expected a non-negative integer, got ${JSON.stringify(v)}`);
      return n;
    }
    case 'bool': {
      if (typeof v === 'boolean') return v;
      if (v === 'true' || v === '1' || v === 'yes') return true;
      if (v === 'false' || v === '0' || v === 'no') return false;
      throw new KvstashError(ErrorCode.CONFIG, `${what}: expected true or false, got ${JSON.stringify(v)}`);
    }
    case 'list':
      if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v;
      if (typeof v === 'string') return v.split(',').map((x) => x.trim()).filter(Boolean);
      throw new KvstashError(ErrorCode.CONFIG, `${what}: expected a list of strings, got ${JSON.stringify(v)}`);
    case 'json':
      if (typeof v === 'string') {
        try { return JSON.parse(v); } catch (err) { throw new KvstashError(ErrorCode.CONFIG, `${what}: invalid JSON`, { cause: err }); }
      }
      return v;
    case 'string':
      if (typeof v !== 'string') throw new KvstashError(ErrorCode.CONFIG, `${what}: expected a string, got ${JSON.stringify(v)}`);
      return v;
  }
}

const ENUMS: Record<string, string[]> = {
  fileWriteMode: ['through', 'back'],
  fileLayout: ['files', 'segment'],
  policy: ['lfuda', 'heat', 'lru'],
  logLevel: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'],
};

/**
 * Resolve the configuration. `flags` holds values given on the command line (keys as in SETTINGS);
 * `file` is a JSON config path (or KVSTASH_CONFIG). Unknown keys in a config file are errors.
 * Settings registered by adapters (extraSettings) resolve the same way.
 */
export function loadConfig(flags: Record<string, unknown> = {}, env: NodeJS.ProcessEnv = process.env, file?: string, extraSettings: Setting[] = []): Config {
  const all = [...SETTINGS, ...extraSettings];
  const known = new Set(all.map((x) => x.key));
  let fromFile: Record<string, unknown> = {};
  const cfgPath = file ?? env.KVSTASH_CONFIG;
  if (cfgPath) {
    try {
      fromFile = JSON.parse(readFileSync(cfgPath, 'utf8')) as Record<string, unknown>;
    } catch (err) {
      throw new KvstashError(ErrorCode.CONFIG, `cannot read config file ${cfgPath}: ${(err as Error).message}`, { cause: err });
    }
    for (const k of Object.keys(fromFile)) {
      if (!known.has(k)) throw new KvstashError(ErrorCode.CONFIG, `config file ${cfgPath}: unknown setting "${k}"`);
    }
  }
  const out: Record<string, unknown> = {};
  for (const st of all) {
    if (flags[st.key] !== undefined) out[st.key] = coerce(st, flags[st.key], st.flag);
    else if (env[st.env] !== undefined && env[st.env] !== '') out[st.key] = coerce(st, env[st.env], st.env);
    else if (fromFile[st.key] !== undefined) out[st.key] = coerce(st, fromFile[st.key], cfgPath!);
    else out[st.key] = st.def();
    const allowed = ENUMS[st.key];
    if (allowed && !allowed.includes(out[st.key] as string)) {
      throw new KvstashError(ErrorCode.CONFIG, `${st.key}: expected one of ${allowed.join(', ')}, got ${JSON.stringify(out[st.key])}`);
    }
  }
  return out as Config;
}

/** The settings table as markdown (docs/configuration.md). */
export function settingsMarkdown(extra: Setting[] = []): string {
  const rows = [...SETTINGS, ...extra].map((x) => `| \`${x.key}\` | ${x.kind} | ${x.defDoc} | \`${x.env}\` | \`${x.flag}\` | ${x.describe} |`);
  return ['| setting | type | default | environment | flag | meaning |', '|---|---|---|---|---|---|', ...rows].join('\n');
}
