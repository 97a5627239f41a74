/**
 * KeyIndex — the LMCache key strings the `lm://` server holds, per namespace, in insertion order, for LIST.
 * (Storage keys are sha256(key string), so the strings cannot be recovered from the tier index.)
 *
 * Rules:
 * - Memory: one entry per key whose block the tier stack holds. `remove` (called when the tier stack drops a
 *   block from its last tier) and `list` (which filters with `holds`) keep stale keys out.
 * - Persistence (only when a directory is given, `<fileRoot>/lmcache/`): each new key is appended to
 *   `<dir>/<ns>.keys` as one JSON string per line. Appends are batched and written asynchronously, one write
 *   in flight at a time; `close` flushes. `load` reads a journal, keeps the keys whose block survived (the tier
 *   stack rebuilt its index from the file tier first) and rewrites the journal compacted (temp + rename).
 * - A crash can lose the appends of the last few milliseconds: those keys are still served by GET and EXIST,
 *   they are only missing from LIST after the restart. A torn last line is skipped.
 */
import { appendFile } from 'node:fs/promises';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';

export class KeyIndex {
  private readonly byNs = new Map<string, Map<string, string>>();
  private pending = new Map<string, string[]>();
  private scheduled = false;
  private flushing: Promise<void> = Promise.resolve();

  constructor(private readonly dir: string | undefined, private readonly holds: (storageKey: string) => boolean, private readonly log?: Logger) {
    if (dir) mkdirSync(dir, { recursive: true });
  }

  private file(ns: string): string {
    return path.join(this.dir!, `${ns}.keys`);
  }

  /** Read and compact the journal of `ns`. `storageKeyOf` maps a key string to its storage key. */
  load(ns: string, storageKeyOf: (key: string) => string): number {
    if (!this.dir) return 0;
    let text = '';
    try {
      text = readFileSync(this.file(ns), 'utf8');
    } catch {
      return 0;
    }
    const m = this.map(ns);
    for (const line of text.split('\n')) {
      if (!line) continue;
      let key: unknown;
      try {
        key = JSON.parse(line);
      } catch {
        continue; // torn last line after a crash
      }
      if (typeof key !== 'string') continue;
      const sk = storageKeyOf(key);
      if (this.holds(sk)) m.set(sk, key);
    }
    try {
      const f = this.file(ns);
      writeFileSync(`${f}.tmp`, [...m.values()].map((k) => JSON.stringify(k) + '\n').join(''));
      renameSync(`${f}.tmp`, f);
    } catch (err) {
      this.log?.warn({ err, ns }, 'could not compact the lm:// key journal');
    }
    return m.size;
  }

  private map(ns: string): Map<string, string> {
    let m = this.byNs.get(ns);
    if (!m) this.byNs.set(ns, (m = new Map()));
    return m;
  }

  add(ns: string, storageKey: string, key: string): void {
    const m = this.map(ns);
    if (m.has(storageKey)) return;
    m.set(storageKey, key);
    if (!this.dir) return;
    let lines = this.pending.get(ns);
    if (!lines) this.pending.set(ns, (lines = []));
    lines.push(JSON.stringify(key) + '\n');
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => void this.flush());
    }
  }

  remove(storageKey: string): void {
    this.byNs.get(storageKey.slice(0, 32))?.delete(storageKey);
  }

  has(ns: string, storageKey: string): boolean {
    return this.byNs.get(ns)?.has(storageKey) ?? false;
  }

  /** Keys of `ns` whose block is still held, in insertion order. */
  list(ns: string): string[] {
    const m = this.byNs.get(ns);
    if (!m) return [];
    const out: string[] = [];
    for (const [sk, key] of m) {
      if (this.holds(sk)) out.push(key);
      else m.delete(sk);
    }
    return out;
  }

  /** Write the batched appends (one write in flight at a time). */
  flush(): Promise<void> {
    this.scheduled = false;
    const batch = this.pending;
    this.pending = new Map();
    if (batch.size === 0) return this.flushing;
    this.flushing = this.flushing.then(async () => {
      for (const [ns, lines] of batch) {
        try {
          await appendFile(this.file(ns), lines.join(''));
        } catch (err) {
          this.log?.warn({ err, ns }, 'could not append to the lm:// key journal');
        }
      }
    });
    return this.flushing;
  }

  async close(): Promise<void> {
    await this.flush();
  }
}
