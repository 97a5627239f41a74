/**
 * ArenaStore — the DRAM tier's store when its bytes live in shared memory (`arenaDir`, default /dev/shm), so
 * same-host engines read and write blocks in place instead of receiving them over the socket.
 *
 * - Drop-in for the heap MemoryDriver (same synchronous DramStore calls the TierStack uses, same StorageDriver
 *   contract, checked by the conformance kit); budgets, heat and eviction stay the TierStack's.
 * - One arena file per tenant (arena-file.ts; byte layout in arena-layout.ts): a tenant's blocks are only ever in
 *   its own file, and only clients that proved they can map that file (ATTACH) get descriptors into it.
 * - A slot is reused only when nothing refers to it: not indexed (deleted or evicted), no lease on it, not
 *   allocated to a writer. Leases and allocations have deadlines and are swept, so a dead engine never pins
 *   memory for ever. A sidecar killed with -9 leaves its folder behind; the next sidecar on the host removes
 *   folders whose owner process is gone (`sweepStale`).
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import path from 'node:path';
import { ErrorCode, KvstashError } from '../../protocol/errors.js';
import {
  assertKey, assertValueSize, getManyBySingle, putManyBySingle, type BlockMeta, type DriverLimits, type ListedValue,
  type StorageDriver, type StoredValue,
} from './driver.js';
import { ArenaFile, type Slot } from './arena-file.js';
import { SlotState } from './arena-layout.js';

export interface ArenaConfig {
  dir: string;
  /** Arena file size per tenant (sparse): the DRAM budget plus room for fragmentation and leased slots. */
  bytes: number;
  chunkBytes: number;
  maxValueBytes: number;
  leaseMs: number;
  commitMs: number;
  fileMode: number;
  tenantGroups: Record<string, number>;
}

interface Entry {
  readonly arena: ArenaFile;
  readonly slot: Slot;
  checksum: string;
  refs: number;
  live: boolean;
}
interface Lease { peer: string; entries: Entry[]; until: number }
interface Alloc { peer: string; ns: string; keys: string[]; entries: (Entry | undefined)[]; until: number }

/** [data offset, generation] of a slot, or null: what a descriptor list holds per key. */
export type SlotDesc = [number, number] | null;

const OWNER = 'owner.json';

export class ArenaStore implements StorageDriver {
  readonly name = 'memory';
  readonly durable = false;
  readonly limits: DriverLimits;
  readonly folder: string;
  private readonly map = new Map<string, Entry>();
  private readonly arenas = new Map<string, ArenaFile>();
  private readonly leases = new Map<number, Lease>();
  private readonly allocs = new Map<number, Alloc>();
  private nextId = 1;
  private bytes = 0;
  private closed = false;
  private timer: NodeJS.Timeout | undefined;
  tenantOf: (ns: string) => string = () => 'default';
  readonly c = { leases: 0, leaseExpired: 0, allocs: 0, allocExpired: 0, noRoom: 0, staleSwept: 0 };

  constructor(readonly cfg: ArenaConfig) {
    this.limits = { maxValueBytes: cfg.maxValueBytes };
    this.folder = path.join(cfg.dir, `kvstash-arena-${process.pid}-${randomBytes(4).toString('hex')}`);
  }

  async open(): Promise<void> {
    this.c.staleSwept += sweepStale(this.cfg.dir);
    mkdirSync(this.folder, { mode: 0o711 });
    writeFileSync(path.join(this.folder, OWNER), JSON.stringify({ pid: process.pid }));
    this.timer = setInterval(() => this.sweep(Date.now()), Math.max(50, Math.min(this.cfg.leaseMs, this.cfg.commitMs) / 4));
    this.timer.unref();
  }

  /** The tenant's arena file, created on first use. */
  arena(tenant: string): ArenaFile {
    let a = this.arenas.get(tenant);
    if (!a) {
      this.check();
      const gid = this.cfg.tenantGroups[tenant];
      const name = createHash('sha256').update(tenant).digest('hex').slice(0, 16) + '.arena';
      a = new ArenaFile({
        path: path.join(this.folder, name), bytes: this.cfg.bytes, chunkBytes: this.cfg.chunkBytes,
        mode: gid === undefined ? this.cfg.fileMode : this.cfg.fileMode | 0o060, gid, tenant,
      });
      this.arenas.set(tenant, a);
    }
    return a;
  }
  arenaOfNs(ns: string): ArenaFile {
    return this.arena(this.tenantOf(ns));
  }

  private check(): void {
    if (this.closed) throw new KvstashError(ErrorCode.UNAVAILABLE, 'arena store is closed');
  }

  // ---- DramStore (synchronous; the TierStack's DRAM fast path) ------------------------------------------

  getSync(key: string): StoredValue | undefined {
    const e = this.map.get(key);
    return e ? { value: e.arena.read(e.slot), meta: { checksum: e.checksum } } : undefined;
  }
  copySyncInto(key: string, into: Buffer): boolean {
    const e = this.map.get(key);
    if (!e || into.length !== e.slot.size) return false;
    e.arena.read(e.slot, into);
    return true;
  }
  /**
   * Store value: header page and data written into a new slot at once (one pwritev), so the caller's buffer is
   * free when this returns (a first write into fresh pages may fail with ENOSPC: the put then fails).
   * False when the tenant's arena has no free slot for it.
   */
  putSync(key: string, value: Buffer, meta: BlockMeta): boolean {
    const a = this.arenaOfNs(key.slice(0, 32));
    const slot = a.alloc(value.length);
    if (!slot) {
      this.c.noRoom++;
      return false;
    }
    const e: Entry = { arena: a, slot, checksum: meta.checksum, refs: 0, live: true };
    try {
      a.writeLive(slot, value, key.slice(33), key.slice(0, 32)); // header page and data in one pwritev
    } catch { // ENOSPC: the shared-memory file system is full
      this.c.noRoom++;
      a.stamp(slot, SlotState.FREE);
      a.release(slot);
      return false;
    }
    this.indexEntry(key, e);
    return true;
  }

  deleteSync(key: string): boolean {
    const e = this.map.get(key);
    if (!e) return false;
    this.map.delete(key);
    this.bytes -= e.slot.size;
    e.live = false;
    this.unref(e, 0);
    return true;
  }
  async has(key: string): Promise<boolean> {
    assertKey(key);
    this.check();
    return this.map.has(key);
  }
  resident(key: string): boolean {
    return this.map.has(key);
  }

  private publish(key: string, e: Entry): void {
    e.arena.stamp(e.slot, SlotState.LIVE, Buffer.from(key.slice(33), 'hex'), Buffer.from(key.slice(0, 32), 'hex'));
    this.indexEntry(key, e);
  }

  private indexEntry(key: string, e: Entry): void {
    const old = this.map.get(key);
    if (old) this.deleteSync(key);
    this.map.set(key, e);
    this.bytes += e.slot.size;
  }

  private unref(e: Entry, n: number): void {
    e.refs -= n;
    if (e.refs <= 0 && !e.live) e.arena.free(e.slot);
  }

  // ---- leases (GET with descriptors) and allocations (ALLOC / COMMIT) -----------------------------------

  /** Descriptors of the resident keys, held for `leaseMs`; null for a key not in the arena. */
  lease(peer: string, keys: string[], now = Date.now()): { lease: number; slots: SlotDesc[]; sizes: number[] } {
    const entries: Entry[] = [];
    const sizes: number[] = [];
    const slots: SlotDesc[] = keys.map((k) => {
      const e = this.map.get(k);
      sizes.push(e ? e.slot.size : -1);
      if (!e) return null;
      e.refs++;
      entries.push(e);
      return [e.slot.off, e.slot.gen];
    });
    if (!entries.length) return { lease: 0, slots, sizes };
    const id = this.nextId++;
    this.leases.set(id, { peer, entries, until: now + this.cfg.leaseMs });
    this.c.leases++;
    return { lease: id, slots, sizes };
  }

  /** Release leases a peer holds; returns how many it held. */
  release(peer: string, ids: number[]): number {
    let n = 0;
    for (const id of ids) {
      const l = this.leases.get(id);
      if (!l || l.peer !== peer) continue;
      this.leases.delete(id);
      for (const e of l.entries) this.unref(e, 1);
      n++;
    }
    return n;
  }

  /** Slots for a writer; a key already resident or a value with no room gets null. */
  allocate(peer: string, ns: string, keys: string[], sizes: number[], now = Date.now()): { alloc: number; slots: SlotDesc[]; present: boolean[] } {
    const a = this.arenaOfNs(ns);
    const entries: (Entry | undefined)[] = [];
    const present: boolean[] = [];
    const slots: SlotDesc[] = keys.map((k, i) => {
      present.push(this.map.has(k));
      let slot = present[i] || sizes[i]! > this.limits.maxValueBytes ? undefined : a.alloc(sizes[i]!);
      if (slot && !a.commitMemory(slot)) {
        a.release(slot);
        slot = undefined;
      }
      if (!slot && !present[i]) this.c.noRoom++;
      entries.push(slot ? { arena: a, slot, checksum: '', refs: 1, live: false } : undefined);
      if (!slot) return null;
      a.stamp(slot, SlotState.WRITING);
      return [slot.off, slot.gen];
    });
    const id = this.nextId++;
    this.allocs.set(id, { peer, ns, keys, entries, until: now + this.cfg.commitMs });
    this.c.allocs++;
    return { alloc: id, slots, present };
  }

  /**
   * Take an allocation back from its writer. `adopt(i, key, size, publish)` decides per written slot (the TierStack
   * indexes it and calls publish() when DRAM takes it); slots not published are freed.
   */
  commit(peer: string, id: number, written: boolean[] | undefined, adopt: (key: string, size: number, publish: () => void) => number): (number | undefined)[] | undefined {
    const al = this.allocs.get(id);
    if (!al || al.peer !== peer) return undefined;
    this.allocs.delete(id);
    return al.keys.map((key, i) => {
      const e = al.entries[i];
      if (!e) return undefined;
      let r: number | undefined;
      if (written === undefined || written[i]) r = adopt(key, e.slot.size, () => { e.live = true; this.publish(key, e); });
      this.unref(e, 1);
      return r;
    });
  }

  private sweep(now: number): void {
    for (const [id, l] of this.leases) {
      if (l.until > now) continue;
      this.leases.delete(id);
      this.c.leaseExpired++;
      for (const e of l.entries) this.unref(e, 1);
    }
    for (const [id, al] of this.allocs) {
      // A writer may still be copying until its deadline: its slots are reused only after twice that.
      if (al.until + this.cfg.commitMs > now) continue;
      this.allocs.delete(id);
      this.c.allocExpired++;
      for (const e of al.entries) if (e) this.unref(e, 1);
    }
  }

  // ---- StorageDriver -----------------------------------------------------------------------------------

  async get(key: string): Promise<StoredValue | undefined> {
    assertKey(key);
    this.check();
    return this.getSync(key);
  }
  async put(key: string, value: Buffer, meta: BlockMeta): Promise<void> {
    assertKey(key);
    assertValueSize(value, this.limits);
    this.check();
    if (!this.putSync(key, value, meta)) throw new KvstashError(ErrorCode.STORAGE, `arena has no room for ${value.length} bytes`);
  }
  async delete(key: string): Promise<boolean> {
    assertKey(key);
    this.check();
    return this.deleteSync(key);
  }
  getMany(keys: string[]): Promise<(StoredValue | undefined)[]> {
    return getManyBySingle(this, keys);
  }
  putMany(items: { key: string; value: Buffer; meta: BlockMeta }[]): Promise<boolean[]> {
    return putManyBySingle(this, items);
  }
  async *list(): AsyncIterable<ListedValue> {
    this.check();
    for (const [key, e] of [...this.map]) yield { key, size: e.slot.size, meta: { checksum: e.checksum } };
  }
  stats(): Record<string, number> {
    let allocated = 0;
    for (const a of this.arenas.values()) allocated += a.allocated;
    return {
      entries: this.map.size, bytes: this.bytes, arenas: this.arenas.size, arena_allocated_bytes: allocated,
      leases_active: this.leases.size, allocs_pending: this.allocs.size, leases: this.c.leases, lease_expired: this.c.leaseExpired,
      allocs: this.c.allocs, alloc_expired: this.c.allocExpired, no_room: this.c.noRoom, stale_arenas_swept: this.c.staleSwept,
    };
  }
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    for (const a of this.arenas.values()) a.close();
    rmSync(this.folder, { recursive: true, force: true });
  }
}

/** Remove arena folders in `dir` whose owner process is gone (a sidecar killed with -9). Returns how many. */
export function sweepStale(dir: string): number {
  if (!existsSync(dir)) return 0;
  let n = 0;
  for (const name of readdirSync(dir)) {
    if (!name.startsWith('kvstash-arena-')) continue;
    const folder = path.join(dir, name);
    let pid = 0;
    try {
      pid = (JSON.parse(readFileSync(path.join(folder, OWNER), 'utf8')) as { pid: number }).pid;
    } catch {
      pid = Number(name.split('-')[2]);
    }
    if (pid > 0 && pid !== process.pid && alive(pid)) continue;
    if (pid === process.pid) continue;
    rmSync(folder, { recursive: true, force: true });
    n++;
  }
  return n;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
