/**
 * RespStore — Redis keys and values on the sidecar's TierStack.
 *
 * - Namespace per (tenant, database): { model "resp", engine "resp", layout "db<n>", tp 0/1, pp 0/1, tenant },
 *   registered with `sidecar.registerNamespace` on first use. Tenants come from AUTH (server.ts); databases are
 *   SELECT 0..n-1. Keys in different databases or tenants never meet.
 * - Storage key `<ns>/<sha256(key bytes) hex>`; the value is stored as the client sent it (no header), so GET
 *   answers the tier stack's buffer itself. Budgets, heat, eviction, demotion, promotion and checksums are the
 *   tier stack's, as for any block; a lower-tier copy failing its checksum is a miss.
 * - SET replaces: an existing value is deleted from every tier, then the new one is put. A put the tier stack
 *   drops (DRAM cannot hold it and no lower tier accepts it) is reported to the caller.
 * - Key names for SCAN/KEYS/DBSIZE: adapters/lmcache/key-index.ts (a journal under `<fileRoot>/resp/` when the
 *   sidecar has a file root, so they survive restarts with the blocks); keys are kept as latin1 strings, so
 *   binary keys round-trip. Blocks the tier stack drops from its last tier leave the index.
 * - TTLs are not kept: a cache evicts by heat and budget (EXPIRE/SET EX are accepted, see commands.ts).
 */
import { hash } from 'node:crypto';
import type { Logger } from 'pino';
import type { Sidecar } from '../../connector/server/sidecar.js';
import { PutResult, type NamespaceDescriptor } from '../../protocol/wire.js';
import { KeyIndex } from '../lmcache/key-index.js';
import { IN_DRAM } from '../../connector/tiers/tier-stack.js';
import { bulkPool, ValueRead, VIEW_BELOW } from './codec.js';

/** Storage keys remembered (sha256 of a key costs more than the map lookup); the cache starts over when full. */
const SK_CACHE = 65_536;
/** Longer keys are hashed every time. */
const SK_CACHE_KEY = 256;

export function respNamespace(db: number, tenant: string): NamespaceDescriptor {
  return { model: 'resp', engine: 'resp', layout: `db${db}`, tp_rank: 0, tp_size: 1, pp_rank: 0, pp_size: 1, tenant };
}

export class RespStore {
  readonly index: KeyIndex;
  private readonly nsCache = new Map<string, string>();
  private skCache = new Map<string, string>();
  private readonly ours = new Set<string>();
  private readonly onRemoved = (ev: { key: string }) => {
    if (!this.ours.has(ev.key.slice(0, 32))) return;
    queueMicrotask(() => {
      const e = this.sidecar.tiers.entry(ev.key);
      if (!e || (e.where === 0 && e.pending === 0)) this.index.remove(ev.key);
    });
  };

  constructor(private readonly sidecar: Sidecar, private readonly databases: number, indexDir: string | undefined, private readonly log: Logger) {
    this.index = new KeyIndex(indexDir, (sk) => (sidecar.tiers.entry(sk)?.where ?? 0) !== 0, log);
  }

  /** Restore the key journals of namespaces the sidecar already knows (after the tier stack rebuilt its index). */
  open(): void {
    for (const [id, d] of this.sidecar.namespaces) {
      if (d.engine !== 'resp' || d.model !== 'resp') continue;
      this.ours.add(id);
      const n = this.index.load(id, (k) => this.sk(id, Buffer.from(k, 'latin1')));
      if (n > 0) this.log.info({ tenant: d.tenant, layout: d.layout, keys: n }, 'resp keys restored');
    }
    this.sidecar.tiers.on('removed', this.onRemoved);
  }

  async close(): Promise<void> {
    this.sidecar.tiers.off('removed', this.onRemoved);
    await this.index.close();
  }

  /** Namespace id of a database of a tenant, registered on first use. */
  ns(db: number, tenant: string): string {
    const k = `${db}\0${tenant}`;
    let id = this.nsCache.get(k);
    if (!id) {
      if (db < 0 || db >= this.databases) throw new RangeError('DB index is out of range');
      id = this.sidecar.registerNamespace(respNamespace(db, tenant));
      this.ours.add(id);
      this.nsCache.set(k, id);
    }
    return id;
  }

  sk(ns: string, key: Buffer): string {
    if (key.length > SK_CACHE_KEY) return ns + '/' + hash('sha256', key, 'hex');
    const k = ns + key.toString('latin1');
    let sk = this.skCache.get(k);
    if (sk === undefined) {
      sk = ns + '/' + hash('sha256', key, 'hex');
      if (this.skCache.size >= SK_CACHE) this.skCache = new Map();
      this.skCache.set(k, sk);
    }
    return sk;
  }

  /**
   * get() for a reply written right away: a value in the shared-memory DRAM arena comes as a ValueRead that the
   * connection reads straight into its output buffer (valid only until the next command runs).
   */
  getForReply(ns: string, key: Buffer): Buffer | ValueRead | undefined | Promise<Buffer | undefined> {
    const dram = this.sidecar.tiers.dram;
    if (!dram.copySyncInto) return this.get(ns, key);
    const sk = this.sk(ns, key);
    const tiers = this.sidecar.tiers;
    const r = tiers.getResident([sk], true);
    if (!r) return tiers.get([sk]).then((v) => v[0]);
    const v = r[0];
    if (v !== IN_DRAM) return v;
    const size = tiers.entry(sk)!.size;
    return new ValueRead(size, (into) => {
      if (!dram.copySyncInto!(sk, into)) throw new Error(`resp: ${sk} left DRAM before its reply was written`);
    });
  }

  /** The value, undefined on a miss, or a promise when it must be read from a lower tier. */
  get(ns: string, key: Buffer): Buffer | undefined | Promise<Buffer | undefined> {
    const sk = this.sk(ns, key);
    const r = this.sidecar.tiers.getResident([sk]);
    if (r) return r[0];
    return this.sidecar.tiers.get([sk]).then((v) => v[0]);
  }

  has(ns: string, key: Buffer): boolean {
    return (this.sidecar.tiers.entry(this.sk(ns, key))?.where ?? 0) !== 0;
  }

  /** Bytes of a stored value (0 when absent). */
  sizeOf(ns: string, key: Buffer): number {
    const e = this.sidecar.tiers.entry(this.sk(ns, key));
    return e && e.where !== 0 ? e.size : 0;
  }

  /** Store a value (ownership passes: the caller must not use it afterwards). False when the tier stack dropped it. */
  set(ns: string, key: Buffer, value: Buffer): boolean {
    const sk = this.sk(ns, key);
    const tiers = this.sidecar.tiers;
    if (tiers.entry(sk)) tiers.delete([sk]);
    if (value.length < VIEW_BELOW) {
      // A short argument may be a view of a socket chunk (codec.ts): keep an exact copy, not the chunk.
      const own = Buffer.allocUnsafeSlow(value.length);
      value.copy(own);
      value = own;
    }
    const r = tiers.put(sk, value);
    // The arena copied a large value and no lower tier queued it: the buffer goes back to the parser's pool.
    if (!tiers.dram.keepsValues && tiers.tiers.length === 1) bulkPool.give(value);
    if (r === PutResult.STORED || r === PutResult.PRESENT) {
      this.index.add(ns, sk, key.toString('latin1'));
      return true;
    }
    this.index.remove(sk);
    return false;
  }

  del(ns: string, keys: Buffer[]): number {
    let n = 0;
    for (const k of keys) {
      const sk = this.sk(ns, k);
      n += this.sidecar.tiers.delete([sk]);
      this.index.remove(sk);
    }
    return n;
  }

  keys(ns: string): string[] {
    return this.index.list(ns);
  }

  /** Remove every key of a namespace from every tier; returns how many. */
  flush(ns: string): number {
    const keys = this.keys(ns);
    const { removed } = this.sidecar.tiers.clear((k) => k.startsWith(ns + '/'), { includePinned: true });
    for (const k of keys) this.index.remove(this.sk(ns, Buffer.from(k, 'latin1')));
    return removed;
  }

  /** Namespace ids of this store (INFO keyspace, FLUSHALL). */
  namespaces(): { id: string; desc: NamespaceDescriptor }[] {
    return [...this.ours].map((id) => ({ id, desc: this.sidecar.namespaces.get(id)! })).filter((x) => x.desc);
  }
}
