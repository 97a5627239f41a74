/**
 * LmStore — maps LMCache's opaque key strings onto the sidecar's TierStack.
 *
 * - Namespace per header generation (LMCache objects of different generations are not interchangeable):
 *   { model "lmcache", engine "lmcache", layout "lm-<generation>", tp 0/1, pp 0/1, tenant (configured) },
 *   registered through `sidecar.registerNamespace` when a generation is first used.
 * - Storage key `<ns>/<sha256(UTF-8 key string) hex>`; the value is a stored-value.ts object (metadata + key +
 *   payload), checksummed, budgeted, evicted, demoted and promoted by the tier stack like any block.
 * - PUT of a key already held with the same bytes is a no-op ("present"); with different bytes the old object
 *   is replaced, as LMCache's own server (a dict) does.
 * - GET answers synchronously when the block is in DRAM or absent, else with a promise (lower-tier read).
 *   A stored value that does not decode or belongs to another key string is a miss (counted, logged).
 */
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { checksum } from '../../connector/checksum.js';
import { namespaceId } from '../../connector/keys.js';
import type { PluginHost } from '../../connector/server/sidecar.js';
import { PutResult, type NamespaceDescriptor } from '../../protocol/wire.js';
import { KeyIndex } from './key-index.js';
import { GENERATIONS, type Generation } from './protocol.js';
import { decodeStoredValue, type StoredObject } from './stored-value.js';

export function lmNamespace(gen: Generation, tenant: string): NamespaceDescriptor {
  return { model: 'lmcache', engine: 'lmcache', layout: `lm-${gen}`, tp_rank: 0, tp_size: 1, pp_rank: 0, pp_size: 1, tenant };
}

export class LmStore {
  readonly index: KeyIndex;
  readonly counters = { undecodable: 0 };
  private readonly nsIds: Record<Generation, string>;
  private readonly registered = new Set<Generation>();
  private readonly onRemoved = (ev: { key: string }) => {
    if (!this.ours.has(ev.key.slice(0, 32))) return;
    queueMicrotask(() => {
      const e = this.sidecar.tiers.entry(ev.key);
      if (!e || (e.where === 0 && e.pending === 0)) this.index.remove(ev.key);
    });
  };
  private readonly ours: Set<string>;

  constructor(private readonly sidecar: PluginHost, readonly tenant: string, indexDir: string | undefined, private readonly log: Logger) {
    this.nsIds = Object.fromEntries(GENERATIONS.map((g) => [g, namespaceId(lmNamespace(g, tenant))])) as Record<Generation, string>;
    this.ours = new Set(Object.values(this.nsIds));
    this.index = new KeyIndex(indexDir, (sk) => (sidecar.tiers.entry(sk)?.where ?? 0) !== 0, log);
  }

  /** Load the key journals (after the tier stack rebuilt its index) and follow block removals. */
  open(): void {
    for (const g of GENERATIONS) {
      const n = this.index.load(this.nsIds[g], (k) => this.storageKey(g, k));
      if (n > 0) {
        this.ns(g);
        this.log.info({ generation: g, keys: n }, 'lm:// keys restored');
      }
    }
    this.sidecar.tiers.on('removed', this.onRemoved);
  }

  async close(): Promise<void> {
    this.sidecar.tiers.off('removed', this.onRemoved);
    await this.index.close();
  }

  /** Namespace id of a generation, registered with the sidecar on first use. */
  ns(gen: Generation): string {
    if (!this.registered.has(gen)) {
      this.sidecar.registerNamespace(lmNamespace(gen, this.tenant), true);
      this.registered.add(gen);
    }
    return this.nsIds[gen];
  }

  storageKey(gen: Generation, key: string): string {
    return `${this.nsIds[gen]}/${createHash('sha256').update(key, 'utf8').digest('hex')}`;
  }

  /** Store a complete stored-value buffer (ownership passes to the tier stack). */
  put(gen: Generation, key: string, stored: Buffer): PutResult {
    const ns = this.ns(gen);
    const sk = this.storageKey(gen, key);
    const tiers = this.sidecar.tiers;
    const old = tiers.entry(sk);
    let sum: string | undefined;
    if (old && old.where !== 0) {
      // Same key again: keep the object if the bytes are the same, replace it otherwise (LMCache's dict does).
      sum = checksum(stored);
      const dram = old.checksum ? undefined : tiers.getDram(sk);
      const oldSum = old.checksum || (dram ? checksum(dram) : sum);
      if (old.size !== stored.length || oldSum !== sum) this.sidecar.tierWrites.delete([sk]);
    }
    const r = this.sidecar.tierWrites.put(sk, stored, sum);
    if (r === PutResult.STORED || r === PutResult.PRESENT) this.index.add(ns, sk, key);
    return r;
  }

  get(gen: Generation, key: string): StoredObject | undefined | Promise<StoredObject | undefined> {
    const sk = this.storageKey(gen, key);
    const resident = this.sidecar.tiers.getResident([sk]);
    if (resident) return this.decode(key, resident[0]);
    return this.sidecar.tiers.get([sk]).then((v) => this.decode(key, v[0]));
  }

  private decode(key: string, v: Buffer | undefined): StoredObject | undefined {
    if (!v) return undefined;
    const o = decodeStoredValue(v);
    if (o && o.key === key) return o;
    this.counters.undecodable++;
    this.log.warn({ code: 'KVS_STORAGE', key }, 'stored lm:// object does not decode or belongs to another key; answering a miss');
    return undefined;
  }

  exists(gen: Generation, key: string): boolean {
    return this.sidecar.tiers.exists([this.storageKey(gen, key)])[0]!;
  }

  list(gen: Generation): string[] {
    return this.index.list(this.nsIds[gen]);
  }
}
