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
 * - Eviction: while the matching files pass `budgetBytes`, the coldest file (lowest decayed heat, then least
 *   recently accessed) is unlinked. Never a file modified less than `minAgeMs` ago (an engine may still be
 *   writing it) and never a non-matching name (engines write temp names first). A failed unlink is counted.
 * - A scan (every `scanMs`) re-reads the folder, so files written or removed while inotify missed them are
 *   picked up; the report (`stats()`, op ADOPT_STATS on the data socket) says what was done.
 * - Not done yet (issue 11 part 3): demotion of cold files to NFS/S3 with a later restore into the folder, and
 *   using the engines' KV events as access signals.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdir, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { logger } from '../../connector/log.js';
import type { Sidecar, SidecarPlugin } from '../../connector/server/sidecar.js';
import { ErrorCode, KvstashError } from '../../protocol/errors.js';

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
  log?: Logger;
}

interface FileState { size: number; mtimeMs: number; heat: number; heatAt: number; lastAccess: number }

export class FolderJanitor implements SidecarPlugin {
  readonly name: string;
  readonly counters = { scans: 0, accesses: 0, evicted: 0, evictedBytes: 0, unlinkErrors: 0, skippedYoung: 0 };
  private readonly files = new Map<string, FileState>();
  private ignored = 0;
  private watcher: ChildProcess | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly re: RegExp;
  private readonly log: Logger;
  private stopped = false;

  constructor(readonly opts: JanitorOptions) {
    this.re = LAYOUTS[opts.layout]!;
    this.name = `janitor:${opts.dir}`;
    this.log = opts.log ?? logger('janitor');
  }

  attach(sidecar: Sidecar): void {
    if (!this.opts.log) this.log.level = sidecar.config.logLevel;
    let list = JANITORS.get(sidecar);
    if (!list) {
      const all: FolderJanitor[] = (list = []);
      JANITORS.set(sidecar, all);
      sidecar.registerOp('ADOPT_STATS', () => ({ adopt: all.map((j) => j.stats()) }));
    }
    list.push(this);
  }

  async start(): Promise<void> {
    await this.watch();
    await this.scan();
    this.timer = setInterval(() => void this.scan(), this.opts.scanMs ?? 5000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.watcher?.kill('SIGTERM');
    await this.running;
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
      this.files.delete(rel);
      return;
    }
    let f = this.files.get(rel);
    if (!f) {
      f = { size: 0, mtimeMs: now, heat: 0, heatAt: now, lastAccess: now };
      this.files.set(rel, f);
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
        this.files.set(rel, f);
      }
      f.size = s.size;
      f.mtimeMs = Math.max(f.mtimeMs, s.mtimeMs);
    }
    for (const rel of [...this.files.keys()]) if (!seen.has(rel)) this.files.delete(rel);
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
      try {
        await unlink(path.join(this.opts.dir, rel));
        this.files.delete(rel);
        total -= f.size;
        this.counters.evicted++;
        this.counters.evictedBytes += f.size;
      } catch (err) {
        this.counters.unlinkErrors++;
        this.log.warn({ err, file: rel }, 'adopt-dir: could not remove a file');
      }
    }
    this.log.info({ dir: this.opts.dir, bytes: total, budget: this.opts.budgetBytes, evicted: this.counters.evicted }, 'adopt-dir eviction');
  }

  stats(): Record<string, unknown> {
    let bytes = 0;
    for (const f of this.files.values()) bytes += f.size;
    return { dir: this.opts.dir, layout: this.opts.layout, files: this.files.size, bytes, budget_bytes: this.opts.budgetBytes, ignored: this.ignored, ...this.counters };
  }

  /** Files by decayed heat, hottest first (tests, reports). */
  heatList(): { file: string; heat: number }[] {
    const now = Date.now();
    return [...this.files.entries()].map(([file, f]) => ({ file, heat: this.heatOf(f, now) })).sort((a, b) => b.heat - a.heat);
  }
}

/** The janitors of each sidecar (for its ADOPT_STATS op). */
const JANITORS = new WeakMap<Sidecar, FolderJanitor[]>();
