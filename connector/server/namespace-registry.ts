/**
 * NamespaceRegistry — the namespaces a sidecar knows (HELLO registers them; data ops name them by id).
 *
 * Rules (issue 9 item 5):
 * - At most `max` namespaces in all (MAX_NAMESPACES) and `perTenant` per tenant; a HELLO of a new descriptor
 *   beyond either gets KVS_RESOURCE_EXHAUSTED. Re-registering a known descriptor always succeeds.
 * - A namespace is "used" when registered, re-registered or named by a data op (`touch`). A namespace unused
 *   for `idleMs` that holds no block in the index expires (`sweep`); one that holds blocks never expires.
 *   `keep` namespaces (registered by plugins, e.g. the lm:// server's) never expire. idleMs 0 = never.
 * - `drop(ids)` removes registrations (the control plane's DropNamespaces, after it cleared their blocks).
 *   A data op naming a dropped or expired namespace gets KVS_NS_UNKNOWN; the engine's client re-sends HELLO.
 * - Persisted to `<fileRoot>/namespaces.json` (written once per burst, 50 ms after a change, off the request
 *   path; write to a temp file, then rename: never torn). Last use is not persisted: after a restart every
 *   namespace counts as used at start-up.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { ErrorCode, KvstashError } from '../../protocol/errors.js';
import type { NamespaceDescriptor } from '../../protocol/wire.js';
import { namespaceId } from '../keys.js';

export interface NamespaceRegistryOptions {
  /** The map to keep them in (the sidecar's `namespaces`); default a new one. */
  map?: Map<string, NamespaceDescriptor>;
  /** Persist here (namespaces.json); undefined = memory only. */
  file: string | undefined;
  max: number;
  perTenant: number;
  idleMs: number;
  log: Logger;
}

export class NamespaceRegistry {
  readonly map: Map<string, NamespaceDescriptor>;
  readonly counters = { refusedQuota: 0, expired: 0, dropped: 0 };
  private readonly lastUsed = new Map<string, number>();
  private readonly perTenant = new Map<string, number>();
  private readonly keep = new Set<string>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: NamespaceRegistryOptions) {
    this.map = opts.map ?? new Map();
  }

  register(d: NamespaceDescriptor, keep = false): string {
    const desc: NamespaceDescriptor = {
      model: d.model, engine: d.engine, layout: d.layout, tp_rank: d.tp_rank, tp_size: d.tp_size,
      pp_rank: d.pp_rank, pp_size: d.pp_size, tenant: d.tenant,
    };
    const id = namespaceId(desc);
    if (!this.map.has(id)) {
      if (this.map.size >= this.opts.max) {
        this.counters.refusedQuota++;
        throw new KvstashError(ErrorCode.RESOURCE_EXHAUSTED, `this sidecar already holds ${this.opts.max} namespaces`);
      }
      const n = this.perTenant.get(desc.tenant) ?? 0;
      if (n >= this.opts.perTenant) {
        this.counters.refusedQuota++;
        throw new KvstashError(ErrorCode.RESOURCE_EXHAUSTED, `tenant ${JSON.stringify(desc.tenant)} already holds ${n} namespaces (namespacesPerTenant); drop unused ones (kvstash drop-namespaces) or wait for empty ones to expire`);
      }
      this.add(id, desc);
      this.save();
    }
    if (keep) this.keep.add(id);
    this.lastUsed.set(id, Date.now());
    return id;
  }

  touch(id: string, now = Date.now()): void {
    this.lastUsed.set(id, now);
  }

  /** Namespaces of a tenant. */
  ofTenant(tenant: string): string[] {
    return [...this.map].filter(([, d]) => d.tenant === tenant).map(([id]) => id);
  }

  /** Expire namespaces idle for idleMs that hold no block (`withBlocks` lists those that hold some). */
  sweep(withBlocks: (candidates: Set<string>) => Set<string>, now = Date.now()): string[] {
    if (this.opts.idleMs <= 0) return [];
    const idle = new Set<string>();
    for (const id of this.map.keys()) if (!this.keep.has(id) && now - (this.lastUsed.get(id) ?? 0) >= this.opts.idleMs) idle.add(id);
    if (idle.size === 0) return [];
    const busy = withBlocks(idle);
    const gone = [...idle].filter((id) => !busy.has(id));
    for (const id of gone) this.remove(id);
    this.counters.expired += gone.length;
    if (gone.length) {
      this.opts.log.info({ expired: gone.length, idle_ms: this.opts.idleMs }, 'empty idle namespaces expired');
      this.save();
    }
    return gone;
  }

  drop(ids: Iterable<string>): number {
    let n = 0;
    for (const id of ids) if (this.remove(id)) n++;
    this.counters.dropped += n;
    if (n) this.save();
    return n;
  }

  load(): void {
    const f = this.opts.file;
    if (!f) return;
    try {
      const all = JSON.parse(readFileSync(f, 'utf8')) as Record<string, NamespaceDescriptor>;
      const now = Date.now();
      for (const [id, d] of Object.entries(all)) {
        if (namespaceId(d) !== id || this.map.has(id)) continue;
        this.add(id, d);
        this.lastUsed.set(id, now);
      }
    } catch {
      /* first start */
    }
  }

  /** Write now if a write is pending (at stop). */
  flush(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.write();
    }
  }

  private add(id: string, d: NamespaceDescriptor): void {
    this.map.set(id, d);
    this.perTenant.set(d.tenant, (this.perTenant.get(d.tenant) ?? 0) + 1);
  }

  private remove(id: string): boolean {
    const d = this.map.get(id);
    if (!d) return false;
    this.map.delete(id);
    this.lastUsed.delete(id);
    this.keep.delete(id);
    const n = (this.perTenant.get(d.tenant) ?? 1) - 1;
    if (n > 0) this.perTenant.set(d.tenant, n);
    else this.perTenant.delete(d.tenant);
    return true;
  }

  /** Persist soon: a burst of HELLOs (an engine fleet starting) is written once, off the request path. */
  private save(): void {
    if (!this.opts.file || this.timer) return;
    this.timer = setTimeout(() => this.write(), 50);
    this.timer.unref();
  }

  private write(): void {
    this.timer = undefined;
    const f = this.opts.file;
    if (!f) return;
    try {
      mkdirSync(path.dirname(f), { recursive: true });
      writeFileSync(`${f}.tmp`, JSON.stringify(Object.fromEntries(this.map), null, 1));
      // rename is atomic: a crash never leaves a torn namespaces.json
      renameSync(`${f}.tmp`, f);
    } catch (err) {
      this.opts.log.warn({ err }, 'could not persist namespaces');
    }
  }
}
