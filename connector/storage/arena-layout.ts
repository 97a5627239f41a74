/**
 * Shared-memory arena — the byte layout both sides read (the sidecar writes it; engines' processes map it with
 * mmap: adapters/python/kvstash/arena.py mirrors these constants). Protocol use: protocol/README.md "Same-host
 * arena".
 *
 * File: `<arenaDir>/kvstash-arena-<pid>-<rand>/<tenant hash>.arena`, one per tenant, sparse, mode `arenaFileMode`
 * (0600 by default: only the sidecar's user maps it; `arenaTenantGroups` gives one tenant's file to a group).
 *
 * File header (first 4 KiB page), little-endian:
 *   0  8 bytes  magic "KVSARENA"
 *   8  u32      layout version (1)
 *  12  u32      pid of the sidecar that owns the file
 *  16  16 bytes attach token: a client proves it mapped this file by sending it back (op ATTACH)
 *  32  u32      page size (4096)       36  u32  slot header bytes (96)       40  u32  chunk bytes (slots of one
 *               size class share a chunk; engines register the arena with CUDA chunk by chunk, as they use it)
 *
 * Slots: every slot is one header page followed by its data; a descriptor's offset is the data's offset, so
 * the header is at `offset - 4096`. Slot header:
 *   0  u32  magic 0x534c4f54 ("SLOT")   4  u32  state: 0 FREE, 1 WRITING (allocated to a writer), 2 LIVE
 *   8  u64  generation (grows on every state change; never reused)
 *  16  u64  value length
 *  32  32 bytes block key (hash)        64  16 bytes namespace id (raw)       80..95 reserved
 *
 * Rules for readers (the reader copies first, then checks):
 * - A copy of a slot is valid only if, AFTER the copy, the header says LIVE, with the descriptor's generation,
 *   key and namespace. Anything else — the lease ran out and the slot was reused, or it is another key's slot —
 *   is a miss: the bytes copied are discarded, never served.
 * - The sidecar never reuses a slot while a lease on it is held. A freed slot is stamped FREE with a new
 *   generation by the end of the sidecar's current task, unless it is reused first; on reuse the new owner's
 *   header (WRITING for an engine writer; for a value the sidecar writes itself, LIVE together with the data in
 *   one pwritev) carries a newer generation before or with the new bytes. So a reader racing a reuse always sees
 *   a generation other than its descriptor's.
 * Rules for writers (ALLOC → write → COMMIT): a writer writes only the data of the slots it was given, only
 * before its allocation's deadline (`commit_ms` after the ALLOC reply); the sidecar reclaims an uncommitted
 * slot only after twice that deadline.
 */

export const ARENA_MAGIC = 'KVSARENA';
export const ARENA_VERSION = 1;
export const PAGE = 4096;
export const ARENA_FILE_HEADER_BYTES = PAGE;
export const SLOT_HEADER_BYTES = 96;
export const SLOT_MAGIC = 0x534c4f54;

export const SlotState = { FREE: 0, WRITING: 1, LIVE: 2 } as const;
export type SlotState = (typeof SlotState)[keyof typeof SlotState];

/** Data bytes reserved for a value of `size` bytes: 4 KiB pages below 64 KiB, else 1/8 of its power of two. */
export function dataStride(size: number): number {
  const s = Math.max(size, 1);
  if (s <= 64 * 1024) return Math.ceil(s / PAGE) * PAGE;
  const step = Math.max(PAGE, 2 ** Math.floor(Math.log2(s)) / 8);
  return Math.ceil(s / step) * step;
}
