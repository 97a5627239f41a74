/**
 * kvstash wire protocol v1 — the contract between the sidecar (ZeroMQ ROUTER) and its clients (DEALER).
 * The full specification with every field and code is protocol/README.md; this file is its typed mirror.
 *
 * Rules:
 * - A message is a ZeroMQ multipart message: frame 0 is a msgpack map (the header), frames 1..n are raw
 *   block bytes. Block bytes are never msgpack-encoded. The ROUTER side sees the peer identity in front.
 * - Requests carry a client-chosen `id` (uint, unique among that client's in-flight requests); the reply
 *   echoes it. Replies may come back in any order, so clients pipeline freely.
 * - Every reply has `status`: "OK", or "ERR" with a stable `code` (protocol/errors.ts) and a `message`.
 * - Block keys are 32-byte hashes, sent concatenated in one binary field `keys` (n × 32 bytes), in chain order.
 * - Data ops name a namespace id `ns` (32 lowercase hex chars) obtained from HELLO. A block is identified by
 *   (ns, key); blocks of different namespaces never match.
 * - PUT is idempotent: keys are content addresses, a second PUT of a key is answered "present".
 * - GET answers per key; a key that is absent, failed its checksum, or could not be read is a miss (-1),
 *   never an error of the whole request.
 * - Limits (max message bytes, max block bytes, max in-flight bytes per client) are announced in HELLO.
 */

export const PROTOCOL_VERSION = 1;
export const KEY_BYTES = 32;

export const Op = {
  HELLO: 'HELLO',
  LOOKUP: 'LOOKUP',
  PUT: 'PUT',
  GET: 'GET',
  EXISTS: 'EXISTS',
  DELETE: 'DELETE',
  STATS: 'STATS',
  PING: 'PING',
  /** Same-host arena (protocol/README.md "Same-host arena"): prove the arena file is mapped. */
  ATTACH: 'ATTACH',
  /** Same-host arena: end leases taken by GET with `lease`. */
  RELEASE: 'RELEASE',
  /** Same-host arena: slots to write blocks into, then COMMIT. */
  ALLOC: 'ALLOC',
  COMMIT: 'COMMIT',
} as const;
export type Op = (typeof Op)[keyof typeof Op];
export const ALL_OPS: ReadonlySet<string> = new Set(Object.values(Op));

/** What makes KV bytes incompatible. All fields are part of the namespace id. */
export interface NamespaceDescriptor {
  /** Model id, e.g. "meta-llama/Llama-3.1-8B-Instruct". */
  model: string;
  /** Engine kind: "vllm", "sglang", "lmcache", or any other short name. */
  engine: string;
  /** KV layout fingerprint: dtype, tokens per block, layers, KV heads, head dim, tensor layout. */
  layout: string;
  tp_rank: number;
  tp_size: number;
  pp_rank: number;
  pp_size: number;
  /** Tenant; "default" when the deployment has none. */
  tenant: string;
}

interface RequestBase {
  v: number;
  id: number;
  op: Op;
}

export interface HelloRequest extends RequestBase {
  op: 'HELLO';
  /** Free-form client name for logs and stats. */
  client?: string;
  namespace: NamespaceDescriptor;
  /** The client is on the sidecar's host and can map its DRAM arena: the reply names the tenant's arena. */
  shm?: boolean;
}
export interface LookupRequest extends RequestBase {
  op: 'LOOKUP';
  ns: string;
  keys: Buffer;
  /** Start warming lower-tier hits into DRAM (answer is not delayed). */
  prefetch?: boolean;
  /** Lease tag (1..128 chars): pin the leading hit blocks for `lease_ms` (connector/server/leases.ts). */
  lease?: string;
  /** Lease length in ms (0..600000); 0 releases the lease `lease` of this namespace. */
  lease_ms?: number;
}
export interface PutRequest extends RequestBase {
  op: 'PUT';
  ns: string;
  keys: Buffer;
  /** Byte length of each block frame, in key order. */
  sizes: number[];
  /** Optional xxh64 (seed 0) of each block as 16 lowercase hex chars; verified on arrival. */
  sums?: string[];
}
export interface KeysRequest extends RequestBase {
  op: 'GET' | 'EXISTS' | 'DELETE';
  ns: string;
  keys: Buffer;
  /** GET from an attached same-host client: answer DRAM hits with slot descriptors under a lease, not bytes. */
  lease?: boolean;
}
export interface AttachRequest extends RequestBase {
  op: 'ATTACH';
  ns: string;
  /** The 16-byte token read from the arena file's header (offset 16). */
  token: Buffer;
}
export interface ReleaseRequest extends RequestBase {
  op: 'RELEASE';
  leases: number[];
}
export interface AllocRequest extends RequestBase {
  op: 'ALLOC';
  ns: string;
  keys: Buffer;
  sizes: number[];
}
export interface CommitRequest extends RequestBase {
  op: 'COMMIT';
  ns: string;
  alloc: number;
  /** Per key of the ALLOC: true if its slot was written (default: every slot given). */
  written?: boolean[];
}
export interface StatsRequest extends RequestBase {
  op: 'STATS' | 'PING';
}
export type Request = HelloRequest | LookupRequest | PutRequest | KeysRequest | StatsRequest | AttachRequest | ReleaseRequest | AllocRequest | CommitRequest;

/** Per-key result of a PUT. */
export const PutResult = {
  STORED: 0,
  PRESENT: 1,
  /** Not stored: over budget, write queue full, or in-flight limit. It is a cache: the caller moves on. */
  DROPPED: 2,
  /** The frame did not match the checksum sent in `sums`. */
  BAD_CHECKSUM: 3,
} as const;
export type PutResult = (typeof PutResult)[keyof typeof PutResult];

export interface ReplyBase {
  v: number;
  id: number;
  status: 'OK' | 'ERR';
  code?: string;
  message?: string;
}
export interface HelloReply extends ReplyBase {
  ns: string;
  server: string;
  /** Protocol version the sidecar speaks (1). */
  protocol: number;
  tiers: string[];
  limits: { max_message_bytes: number; max_block_bytes: number; max_inflight_bytes: number };
  /** When asked with `shm` and the DRAM tier is an arena: the namespace's tenant arena. */
  arena?: { id: string; path: string; bytes: number };
}
/** A slot of the arena: [data offset, generation], or null (miss, or sent inline). */
export type SlotDescriptor = [number, number] | null;
export interface LookupReply extends ReplyBase {
  /** Leading blocks present in some tier. */
  hit: number;
  /** Of those leading blocks, how many have their fastest copy in each tier (tier name → count). */
  tiers: Record<string, number>;
  /** Estimated milliseconds to load the hit blocks, per tier, at the tier's measured bandwidth. */
  load_ms?: Record<string, number>;
  /** Per tier: leading blocks whose fastest copy is in that tier or a faster one (load-or-recompute decisions). */
  depth?: Record<string, number>;
}
export interface PutReply extends ReplyBase {
  results: PutResult[];
}
export interface GetReply extends ReplyBase {
  /** Byte length per key, -1 for a miss. Frames follow for the hits only, in key order. */
  sizes: number[];
  /** GET with `lease` from an attached client: per key, where it lies in the arena (hits with null come inline). */
  slots?: SlotDescriptor[];
  /** The lease holding those slots (0: none); RELEASE it after copying, or it ends after `lease_ms`. */
  lease?: number;
}
export interface AttachReply extends ReplyBase {
  arena: string;
  lease_ms: number;
  commit_ms: number;
}
export interface AllocReply extends ReplyBase {
  alloc: number;
  slots: SlotDescriptor[];
  /** Per key: already stored (no slot needed). */
  present: boolean[];
}
export interface CommitReply extends ReplyBase {
  /** PutResult per key of the ALLOC (DROPPED for keys that got no slot or were not written). */
  results: PutResult[];
}
export interface ExistsReply extends ReplyBase {
  exists: boolean[];
  /** Leading keys that exist. */
  prefix: number;
}
export interface DeleteReply extends ReplyBase {
  deleted: number;
}
export interface StatsReply extends ReplyBase {
  stats: Record<string, unknown>;
}

export interface Limits {
  maxMessageBytes: number;
  maxBlockBytes: number;
  maxInflightBytes: number;
  maxKeysPerRequest: number;
}
