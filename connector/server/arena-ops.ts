/**
 * The same-host arena ops of the data socket (protocol/README.md "Same-host arena"): HELLO's `arena`, ATTACH,
 * GET with `lease`, RELEASE, ALLOC, COMMIT — over the DRAM tier's ArenaStore.
 *
 * - A peer (ZeroMQ routing id) gets descriptors into a tenant's arena only after ATTACH proved it read that
 *   arena file's token: a remote client cannot, and a client of another tenant cannot open the file (its mode).
 *   Peers that never attached, or ask without `lease`, get bytes inline as before.
 * - GET with `lease`: DRAM hits are answered with [offset, generation] under one lease; lower-tier hits are
 *   promoted into the arena first and described too; a block DRAM could not take comes inline.
 * - ALLOC hands out WRITING slots (null for a key already stored or without room); COMMIT indexes the written
 *   ones through TierStack.putInPlace (same budgets, heat and write-through as PUT) and frees the rest.
 */
import { encodeReply } from '../../protocol/codec.js';
import { ErrorCode, KvstashError } from '../../protocol/errors.js';
import { PutResult } from '../../protocol/wire.js';
import type { ArenaStore, SlotDesc } from '../storage/arena.js';
import { IN_DRAM, type TierStack } from '../tiers/tier-stack.js';

/** Peers remembered as attached; the oldest are forgotten beyond this (they re-ATTACH on KVS_ARENA). */
const MAX_PEERS = 65_536;

export class ArenaOps {
  private readonly attached = new Map<string, Set<string>>();

  constructor(private readonly store: ArenaStore, private readonly tiers: TierStack) {}

  /** HELLO's `arena` field for a namespace. */
  describe(ns: string): { id: string; path: string; bytes: number } {
    const a = this.store.arenaOfNs(ns);
    return { id: a.id, path: a.opts.path, bytes: a.bytes };
  }

  attach(peer: string, ns: string, token: Buffer): Record<string, unknown> {
    const a = this.store.arenaOfNs(ns);
    if (!a.token.equals(token)) throw new KvstashError(ErrorCode.ARENA, `ATTACH: the token does not match arena ${a.id} (${a.opts.path}); map the file HELLO named and send the 16 bytes at offset 16`);
    let set = this.attached.get(peer);
    if (!set) {
      if (this.attached.size >= MAX_PEERS) this.attached.delete(this.attached.keys().next().value!);
      this.attached.set(peer, (set = new Set()));
    }
    set.add(a.id);
    return { arena: a.id, lease_ms: this.store.cfg.leaseMs, commit_ms: this.store.cfg.commitMs };
  }

  isAttached(peer: string, ns: string): boolean {
    return this.attached.get(peer)?.has(this.store.arenaOfNs(ns).id) === true;
  }

  private need(peer: string, ns: string, op: string): void {
    if (!this.isAttached(peer, ns)) throw new KvstashError(ErrorCode.ARENA, `${op}: this client has not attached to the arena of namespace ${ns} (HELLO with shm, then ATTACH)`);
  }

  get(peer: string, id: number, keys: string[]): Buffer[] | Promise<Buffer[]> {
    const finish = (vals: (Buffer | undefined)[]): Buffer[] => {
      const sizes: number[] = new Array(keys.length).fill(-1);
      const slots: SlotDesc[] = new Array(keys.length).fill(null);
      const inline: Buffer[] = [];
      const at: number[] = [];
      for (let i = 0; i < keys.length; i++) {
        const v = vals[i];
        if (v === undefined) continue;
        if (this.store.resident(keys[i]!)) at.push(i);
        else if (v !== IN_DRAM) { // a lower-tier hit DRAM could not take: its bytes go inline
          sizes[i] = v.length;
          inline.push(v);
        }
      }
      // Blocks served from their arena slots: the buffers a lower-tier read answered are not sent, so they go back
      // to the read pool now (the inline ones go out through ZeroMQ and are not given back).
      this.tiers.release(at.map((i) => vals[i]));
      const l = this.store.lease(peer, at.map((i) => keys[i]!));
      at.forEach((i, j) => {
        slots[i] = l.slots[j]!;
        sizes[i] = l.sizes[j]!;
      });
      return encodeReply({ id, sizes, slots, lease: l.lease }, inline);
    };
    const resident = this.tiers.getResident(keys, true);
    return resident ? finish(resident) : this.tiers.get(keys, true).then(finish);
  }

  /** STATS `arena`: clients attached now (same host, served in place) and the store's counters. */
  stats(): Record<string, number> {
    return { attached_clients: this.attached.size, ...this.store.stats() };
  }

  release(peer: string, ids: number[]): number {
    return this.store.release(peer, ids);
  }

  alloc(peer: string, ns: string, keys: string[], sizes: number[]): Record<string, unknown> {
    this.need(peer, ns, 'ALLOC');
    const r = this.store.allocate(peer, ns, keys, sizes);
    return { alloc: r.alloc, slots: r.slots, present: r.present };
  }

  commit(peer: string, ns: string, alloc: number, written: boolean[] | undefined): Record<string, unknown> {
    this.need(peer, ns, 'COMMIT');
    const r = this.store.commit(peer, alloc, written, (key, size, publish) => this.tiers.putInPlace(key, size, publish));
    if (!r) throw new KvstashError(ErrorCode.ARENA, `COMMIT: allocation ${alloc} is unknown, not this client's, or expired (commit within commit_ms)`);
    return { results: r.map((x) => x ?? PutResult.DROPPED) };
  }
}
