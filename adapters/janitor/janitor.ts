/**
 * FolderJanitor — takes a folder an engine writes itself (one file per block) under management:
 * a byte budget with heat-based eviction and a report of what it did. `kvstash serve --adopt-dir <path>:<layout>`.
 *
 * Layouts (only files whose path relative to the folder matches are ever touched; everything else — config
 * files, temp files, other folders — is left alone and counted as `ignored`):
 * - `vllm-fs`: vLLM's `fs` secondary tier, `<model>_<12 hex>_r<rank>/<3 hex>/<2 hex>_g<group>/<hash hex>.bin`
 *   (`vllm/v1/kv_offload/tiering/fs/file_mapper.py`, FileMapper.get_file_name, vllm-project/vllm@b062ca9).
 *   vLLM's fs tier has no eviction at all.
 * - `sglang-file`: SGLang's `file` HiCache backend, `<key><suffix>.bin` directly in the folder
 *   (`sglang/srt/mem_cache/hicache_storage.py`, HiCacheFile, suffix `_<model>[_<tp rank>_<tp size>][_<pp>…]`).
 *
 * Rules:
 * - Heat: a decayed access count per file (half-life `halfLifeMs`). Accesses are seen through inotify
 *   (`inotifywait -m -r -e access,close_write,moved_to`, Debian's inotify-tools): reads by the engine, and writes.
 *   Files present at start count one access at their mtime.
 * - The engines' own KV events count as accesses too (`vllm-fs`, when the sidecar follows the engines' KV events:
 *   `--vllm-events`): a block vLLM reports stored (BlockStored, any medium: it was just computed or loaded, so the
 *   block is in use) is an access of every adopted file named by that block's hash — the fs tier names a file by the
 *   hash's hex (file_mapper.py above), the events carry its last 8 bytes as an int (PluginHost.onEngineBlocks).
 *   The one signal where inotify sees nothing (NFS). SGLang's events are not mapped to its `file` keys.
 * - Eviction: while the matching files pass `budgetBytes`, the coldest file (lowest decayed heat, then least
 *   recently accessed) is unlinked. Never a file modified less than `minAgeMs` ago (an engine may still be
 *   writing it) and never a non-matching name (engines write temp names first). A failed unlink is counted.
 * - A scan (every `scanMs`) re-reads the folder, so files written or removed while inotify missed them are
 *   picked up; the report (`stats()`, op ADOPT_STATS on the data socket) says what was done.
 * - Demotion (`demote`, `--adopt-demote <JSON driver spec>`, demote.ts): files eviction picks are first put into a
 *   kvstash storage driver (file, nfs, s3, …) and only then removed; a file whose put fails stays (the eviction
 *   round stops there and the next scan retries). The target's own listing is the manifest of demoted files, so a
 *   restarted janitor finds them again. `restore(keys)` (op ADOPT_RESTORE, `kvstash adopt restore`) puts them back,
 *   refusing bytes that fail their checksum with KVS_CHECKSUM. Restores are on request: an engine's miss on a
 *   demoted file is not seen (inotify reports no failed opens), the engine recomputes that block.
 * - `watch: false` runs without inotify (folders where it sees nothing, e.g. NFS): heat is then the file's mtime.
 * - Counters are in STATS (field `adopt`) and metrics (`kvstash_adopt_*`, label `instance` = the folder).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdir, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { logger } from '../../connector/log.js';
import type { PluginHost, SidecarPlugin } from '../../connector/server/sidecar.js';
import { ErrorCode, KvstashError } from '../../protocol/errors.js';
import { DemoteTarget, type DemoteSpec, type RestoreResult } from './demote.js';

export const LAYOUTS: Record<string, RegExp> = {
  'vllm-fs': /^[^/]+_[0-9a-f]{12}_r\d+\/[0-9a-f]{3}\/[0-9a-f]{2}_g\d+\/[0-9a-f]+\.bin$/,
  'sglang-file': /^[^/]+\.bin$/,
};

export interface AdoptSpec { dir: string; layout: string }

/** Parse `<path>:<layout>`. Throws KVS_CONFIG. */
export function parseAdoptSpec(spec: string): AdoptSpec {
  const i = spec.lastIndexOf(':');
  const dir = spec.slice(0, i);
  const layout = spec.slice(i + 1);
  if (i <= 0 || !path.isAbsolute(dir) || !LAYOUTS[layout]) {
    throw new KvstashError(ErrorCode.CONFIG, `adoptDir: expected <absolute path>:<layout> with layout one of ${Object.keys(LAYOUTS).join(', ')}, got ${JSON.stringify(spec)}`);
  }
  return { dir: path.resolve(dir), layout };
}

export interface JanitorOptions extends AdoptSpec {
  budgetBytes: number;
  minAgeMs?: number;
  scanMs?: number;
  halfLifeMs?: number;
  /** Demote files to this storage driver instead of deleting them. */
  demote?: DemoteSpec;
  /** Watch the folder with inotifywait (default true). */
  watch?: boolean;
  log?: Logger;
}

interface FileState { size: number; mtimeMs: number; heat: number; heatAt: number; lastAccess: number }

export class FolderJanitor implements SidecarPlugin {
  readonly name: string;
  readonly counters = { scans: 0, accesses: 0, eventAccesses: 0, evicted: 0, evictedBytes: 0, unlinkErrors: 0, skippedYoung: 0 };
  private readonly files = new Map<string, FileState>();
  /** vllm-fs: last 16 hex digits of a file's block hash → its paths (one per rank and group). */
  private readonly byHash = new Map<string, Set<string>>();
  private ignored = 0;
  private watcher: ChildProcess | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly re: RegExp;
  private readonly log: Logger;
  private stopped = false;
  /** Where evicted files go (with `demote`); opened by start(). */
  readonly target: DemoteTarget | undefined;

  constructor(readonly opts: JanitorOptions) {
    this.re = LAYOUTS[opts.layout]!;
    this.name = `janitor:${opts.dir}`;
    this.log = opts.log ?? logger('janitor');
    this.target = opts.demote && new DemoteTarget(opts.dir, opts.layout, opts.demote, this.re);
  }

  attach(host: PluginHost): void {
    if (!this.opts.log) this.log.level = host.config.logLevel;
    let list = JANITORS.get(host);
    if (!list) {
      const all: FolderJanitor[] = (list = []);
      JANITORS.set(host, all);
      host.registerOp('ADOPT_STATS', () => ({ adopt: all.map((j) => j.stats()) }));
      host.registerOp('ADOPT_RESTORE', (h) => restoreOp(all, h), { operator: true }); // writes into an engine's folder
      host.addStatsSource({
        name: 'adopt', counters: METRIC_COUNTERS, gauges: METRIC_GAUGES,
        rows: () => all.map((j) => ({ instance: j.opts.dir, values: j.metricValues() })),
      });
    }
    list.push(this);
    if (this.opts.layout === 'vllm-fs') host.onEngineBlocks((b) => this.engineStored(b.keys));
  }

  /** Blocks an engine reported stored (its KV events): an access of each adopted file named by one of them. */
  engineStored(keys: readonly bigint[]): void {
    const now = Date.now();
    for (const k of keys) {
      const rels = this.byHash.get(k.toString(16).padStart(16, '0'));
      if (!rels) continue;
      for (const rel of rels) {
        const f = this.files.get(rel);
        if (!f) continue;
        this.bump(f, now);
        this.counters.eventAccesses++;
      }
    }
  }

  private track(rel: string, f: FileState): void {
    this.files.set(rel, f);
    const h = hashTail(this.opts.layout, rel);
    if (h === undefined) return;
    let set = this.byHash.get(h);
    if (!set) this.byHash.set(h, (set = new Set()));
    set.add(rel);
  }

  private untrack(rel: string): void {
    this.files.delete(rel);
    const h = hashTail(this.opts.layout, rel);
    const set = h === undefined ? undefined : this.byHash.get(h);
    if (!set) return;
    set.delete(rel);
    if (!set.size) this.byHash.delete(h!);
  }

  async start(): Promise<void> {
    await this.target?.open();
    if (this.opts.watch !== false) await this.watch();
    await this.scan();
    this.timer = setInterval(() => void this.scan(), this.opts.scanMs ?? 5000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.watcher?.kill('SIGTERM');
    await this.running;
    await this.target?.close();
  }

  /** inotifywait, one line per event: `<event>\t<path>`. Resolves once it has set its watches. */
  private watch(): Promise<void> {
    const w = spawn('inotifywait', ['-m', '-r', '-e', 'access,close_write,moved_to,delete', '--format', '%e\t%w%f', this.opts.dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.watcher = w;
    let buf = '';
    w.stdout!.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const tab = line.indexOf('\t');
        this.onEvent(line.slice(0, tab), line.slice(tab + 1));
      }
    });
    return new Promise((resolve, reject) => {
      let err = '';
      w.stderr!.on('data', (d: Buffer) => {
        err += d.toString();
        if (err.includes('Watches established')) resolve();
      });
      w.once('error', (e) => reject(new KvstashError(ErrorCode.CONFIG, `adoptDir: cannot run inotifywait (install inotify-tools): ${e.message}`, { cause: e })));
      w.once('exit', (code) => {
        if (!this.stopped) reject(new KvstashError(ErrorCode.CONFIG, `adoptDir: inotifywait exited ${code}: ${err.trim()}`));
      });
    });
  }

  private onEvent(events: string, file: string): void {
    const rel = path.relative(this.opts.dir, file);
    if (!this.re.test(rel)) return;
    const now = Date.now();
    if (events.includes('DELETE')) {
      this.untrack(rel);
      return;
    }
    let f = this.files.get(rel);
    if (!f) {
      f = { size: 0, mtimeMs: now, heat: 0, heatAt: now, lastAccess: now };
      this.track(rel, f);
      if (!events.includes('ACCESS')) void stat(file).then((s) => { f!.size = s.size; f!.mtimeMs = s.mtimeMs; }, () => undefined);
    }
    if (events.includes('CLOSE_WRITE') || events.includes('MOVED_TO')) f.mtimeMs = now;
    this.bump(f, now);
    this.counters.accesses++;
  }

  private bump(f: FileState, now: number): void {
    const hl = this.opts.halfLifeMs ?? 10 * 60_000;
    f.heat = f.heat * Math.pow(0.5, (now - f.heatAt) / hl) + 1;
    f.heatAt = now;
    f.lastAccess = now;
  }

  private heatOf(f: FileState, now: number): number {
    return f.heat * Math.pow(0.5, (now - f.heatAt) / (this.opts.halfLifeMs ?? 10 * 60_000));
  }

  /** Re-read the folder, then evict down to the budget. Runs one at a time. */
  scan(): Promise<void> {
    if (this.running) return this.running;
    this.running = this.scanOnce().catch((err) => this.log.warn({ err, dir: this.opts.dir }, 'adopt-dir scan failed')).finally(() => { this.running = undefined; });
    return this.running;
  }

  private async scanOnce(): Promise<void> {
    this.counters.scans++;
    const seen = new Set<string>();
    let ignored = 0;
    const entries = await readdir(this.opts.dir, { recursive: true, withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      if (!e.isFile()) continue;
      const abs = path.join(e.parentPath ?? (e as unknown as { path: string }).path, e.name);
      const rel = path.relative(this.opts.dir, abs);
      if (!this.re.test(rel)) { ignored++; continue; }
      const s = await stat(abs).catch(() => undefined);
      if (!s) continue;
      seen.add(rel);
      let f = this.files.get(rel);
      if (!f) {
        f = { size: s.size, mtimeMs: s.mtimeMs, heat: 0, heatAt: s.mtimeMs, lastAccess: s.mtimeMs };
        this.bump(f, s.mtimeMs);
        this.track(rel, f);
      }
      f.size = s.size;
      f.mtimeMs = Math.max(f.mtimeMs, s.mtimeMs);
    }
    for (const rel of [...this.files.keys()]) if (!seen.has(rel)) this.untrack(rel);
    this.ignored = ignored;
    await this.evict();
  }

  private async evict(): Promise<void> {
    let total = 0;
    for (const f of this.files.values()) total += f.size;
    if (total <= this.opts.budgetBytes) return;
    const now = Date.now();
    const minAge = this.opts.minAgeMs ?? 60_000;
    const order = [...this.files.entries()].sort(([, a], [, b]) => this.heatOf(a, now) - this.heatOf(b, now) || a.lastAccess - b.lastAccess);
    for (const [rel, f] of order) {
      if (total <= this.opts.budgetBytes) break;
      if (now - f.mtimeMs < minAge) { this.counters.skippedYoung++; continue; }
      if (this.target) {
        const ok = await this.target.demote(rel).catch((err: unknown) => {
          this.log.warn({ err, file: rel }, 'adopt-dir: could not demote a file; it stays until the next scan');
          return err instanceof KvstashError && err.code === ErrorCode.TOO_LARGE ? 'changed' as const : undefined; // too large: try the next one
        });
        if (ok === undefined) break; // the target failed: keep the rest too, retry next scan
        if (ok === 'changed') { this.counters.skippedYoung++; continue; } // the engine is writing it
        this.untrack(rel);
        total -= f.size;
        continue;
      }
      try {
        await unlink(path.join(this.opts.dir, rel));
        this.untrack(rel);
        total -= f.size;
        this.counters.evicted++;
        this.counters.evictedBytes += f.size;
      } catch (err) {
        this.counters.unlinkErrors++;
        this.log.warn({ err, file: rel }, 'adopt-dir: could not remove a file');
      }
    }
    this.log.info({ dir: this.opts.dir, bytes: total, budget: this.opts.budgetBytes, evicted: this.counters.evicted, demoted: this.target?.counters.demoted }, 'adopt-dir eviction');
  }

  stats(): Record<string, unknown> {
    let bytes = 0;
    for (const f of this.files.values()) bytes += f.size;
    return {
      dir: this.opts.dir, layout: this.opts.layout, files: this.files.size, bytes, budget_bytes: this.opts.budgetBytes, ignored: this.ignored, ...this.counters,
      ...(this.target ? { demote: this.target.stats() } : {}),
    };
  }

  /** The figures of STATS `adopt` and the kvstash_adopt_* metrics. */
  metricValues(): Record<string, number> {
    let bytes = 0;
    for (const f of this.files.values()) bytes += f.size;
    const t = this.target?.counters;
    let demotedStored = 0;
    for (const n of this.target?.demoted.values() ?? []) demotedStored += n;
    return {
      files: this.files.size, bytes, budget_bytes: this.opts.budgetBytes, demoted_files: this.target?.demoted.size ?? 0, demoted_stored_bytes: demotedStored,
      scans: this.counters.scans, accesses: this.counters.accesses, event_accesses: this.counters.eventAccesses, evicted: this.counters.evicted, evicted_bytes: this.counters.evictedBytes,
      demoted: t?.demoted ?? 0, demoted_bytes: t?.demotedBytes ?? 0, demote_errors: t?.demoteErrors ?? 0,
      restored: t?.restored ?? 0, restored_bytes: t?.restoredBytes ?? 0, refused: t?.refused ?? 0,
    };
  }

  /**
   * Put demoted files back into the folder: `keys` are target keys or paths relative to the folder; none = every
   * demoted file. Files whose bytes fail their checksum are refused (KVS_CHECKSUM, nothing written) after the
   * others were restored.
   */
  async restore(keys?: string[]): Promise<RestoreResult[]> {
    const t = this.target;
    if (!t) throw new KvstashError(ErrorCode.CONFIG, `adopt restore: ${this.opts.dir} has no demotion target (--adopt-demote)`);
    const want = keys ?? [...t.demoted.keys()];
    const resolved = want.map((k) => t.resolveKey(k)); // bad names fail before anything is restored
    const out: RestoreResult[] = [];
    const refused: string[] = [];
    for (const key of resolved) {
      try {
        const r = await t.restore(key);
        out.push(r);
        if (r.file && r.status === 'restored') {
          const s = await stat(path.join(this.opts.dir, r.file)).catch(() => undefined);
          if (s) {
            const f: FileState = { size: s.size, mtimeMs: s.mtimeMs, heat: 0, heatAt: s.mtimeMs, lastAccess: s.mtimeMs };
            this.bump(f, Date.now());
            this.track(r.file, f);
          }
        }
      } catch (err) {
        if (!(err instanceof KvstashError) || err.code !== ErrorCode.CHECKSUM) throw err;
        refused.push(key);
      }
    }
    if (refused.length) {
      throw new KvstashError(ErrorCode.CHECKSUM, `adopt restore: ${refused.length} file(s) refused, their bytes fail their checksum (nothing written for them; ${out.filter((r) => r.status === 'restored').length} others restored): ${refused.join(', ')}`);
    }
    return out;
  }

  /** Files by decayed heat, hottest first (tests, reports). */
  heatList(): { file: string; heat: number }[] {
    const now = Date.now();
    return [...this.files.entries()].map(([file, f]) => ({ file, heat: this.heatOf(f, now) })).sort((a, b) => b.heat - a.heat);
  }
}

/** Last 16 hex digits of the block hash a file is named by (vllm-fs: `<hash hex>.bin`), else undefined. */
function hashTail(layout: string, rel: string): string | undefined {
  if (layout !== 'vllm-fs') return undefined;
  const hex = path.basename(rel, '.bin');
  return hex.length >= 16 ? hex.slice(-16) : hex.padStart(16, '0');
}

/** The janitors of each sidecar (for its ADOPT_STATS and ADOPT_RESTORE ops). */
const JANITORS = new WeakMap<PluginHost, FolderJanitor[]>();

const METRIC_COUNTERS = ['scans', 'accesses', 'event_accesses', 'evicted', 'evicted_bytes', 'demoted', 'demoted_bytes', 'demote_errors', 'restored', 'restored_bytes', 'refused'];
const METRIC_GAUGES = ['files', 'bytes', 'budget_bytes', 'demoted_files', 'demoted_stored_bytes'];

/** ADOPT_RESTORE {dir?: string, keys?: string[]} → {restored: RestoreResult[]}. `dir` may be left out with one adopted folder. */
async function restoreOp(all: FolderJanitor[], h: Record<string, unknown>): Promise<Record<string, unknown>> {
  const { dir, keys } = h;
  if (dir !== undefined && typeof dir !== 'string') throw new KvstashError(ErrorCode.BAD_FIELD, 'ADOPT_RESTORE: dir must be a string');
  if (keys !== undefined && (!Array.isArray(keys) || keys.some((k) => typeof k !== 'string'))) throw new KvstashError(ErrorCode.BAD_FIELD, 'ADOPT_RESTORE: keys must be a list of strings');
  const j = dir === undefined && all.length === 1 ? all[0] : all.find((x) => x.opts.dir === (dir === undefined ? undefined : path.resolve(dir)));
  if (!j) throw new KvstashError(ErrorCode.NOT_FOUND, `ADOPT_RESTORE: ${dir === undefined ? 'give dir (several folders are adopted)' : `${dir} is not an adopted folder`}; adopted: ${all.map((x) => x.opts.dir).join(', ')}`);
  return { dir: j.opts.dir, restored: await j.restore(keys as string[] | undefined) };
}
