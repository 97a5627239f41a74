/**
 * Sidecar plugins and their host — the contract between the sidecar core and what plugs into it (data-socket
 * auth, the gRPC control plane, metrics, tier events, the vLLM KV-events index, the LMCache lm:// server, yours).
 *
 * Rules:
 * - A plugin sees the sidecar only through PluginHost: it never holds the Sidecar itself.
 * - `attach(host)` runs in `Sidecar.use()`, before the data socket exists: add hooks and register ops there.
 *   `start(host)` runs after the data socket is bound, in `use()` order; `stop()` runs in reverse order and
 *   must not throw for a plugin that never started.
 * - Hooks are lists, never single slots: every guard runs (in `use()` order; the first to throw refuses the
 *   request), every observer is called, every socket setup is applied. Only the principal resolver is
 *   singular, and a second one is refused (KVS_CONFIG), never silently replaced.
 * - Ops registered with `registerOp` are capitals, not a core op, and unique (else KVS_CONFIG). Their handlers
 *   validate their own fields (KVS_BAD_FIELD) and run after the guards (with namespace undefined).
 * - `tiers` is a read-only view. `tierWrites` (put, delete) is for front-ends that store blocks as the data socket
 *   does (the lm:// server); `tierControl` (pin, evict, clear, move) is for the control plane. A plugin that
 *   neither stores nor administers blocks has no reason to touch them.
 * - Hooks run on the request path: a guard or observer must be synchronous and cheap, and an observer must not
 *   throw (its errors are logged and dropped).
 */
import type { NamespaceRegistry } from './namespace-registry.js';
import type { Router } from 'zeromq';
import type { Limits, NamespaceDescriptor, Request } from '../../protocol/wire.js';
import type { Config } from '../config.js';
import type { TierStack } from '../tiers/tier-stack.js';
import type { Tier } from '../tiers/tier-types.js';
import type { BlockIndex } from '../tiers/block-index.js';

/** Who sent a request; plugins (auth) may attach more. */
export interface PeerContext {
  routingId: Buffer;
  /** ZeroMQ CURVE public key (z85) or other authenticated identity, when auth is on. */
  principal?: string;
}

/**
 * A plugin-registered op on the data socket (e.g. ENGINES from the vLLM events index). It receives the raw
 * header map (v, id, op and message size already checked; binary frames are refused with KVS_FRAME_MISMATCH),
 * validates its own fields (throw KvstashError KVS_BAD_FIELD), and returns the reply header fields (id/status
 * are added). The guards run before it, with no namespace.
 */
export type OpHandler = (header: Record<string, unknown>, peer: PeerContext) => Record<string, unknown> | Promise<Record<string, unknown>>;

/**
 * Called before every op but PING: with the HELLO's descriptor, the data op's registered namespace, or undefined
 * (STATS, plugin ops). Throw a KvstashError (PERMISSION_DENIED…) to refuse.
 */
export type RequestGuard = (peer: PeerContext, op: string, ns: NamespaceDescriptor | undefined) => void;

/**
 * Called once per decoded request that was admitted (not for KVS_BUSY refusals), when it is answered: its reply
 * frames, or the error code (metrics). `startedAt` is performance.now() at admission.
 */
export type RequestObserver = (req: Request, startedAt: number, frames: Buffer[], reply: Buffer[] | undefined, errorCode: string | undefined) => void;

/** Maps a request to its authenticated principal (set by an auth plugin). */
export type PrincipalResolver = (routingId: Buffer, frames: Buffer[]) => string | undefined;

/** What a plugin may read of the tier stack. */
export type TiersView = Pick<TierStack, 'lookup' | 'exists' | 'get' | 'getResident' | 'release' | 'getDram' | 'entry' | 'stats' | 'pinStats' | 'on' | 'off' | 'once'> & {
  readonly tiers: readonly Readonly<Tier>[];
  readonly index: Pick<BlockIndex, 'get' | 'has' | 'size' | 'keys' | 'values' | 'blocksIn'>;
};

/** What a front-end that stores blocks itself (the lm:// server) may do: the same puts and deletes as the data socket. */
export type TierWrites = Pick<TierStack, 'put' | 'delete'>;

/** What the control plane may change in the tier stack. */
export type TierControl = Pick<TierStack, 'pin' | 'unpin' | 'setPinBudget' | 'evictFrom' | 'clear' | 'move' | 'drain'>;

/**
 * Figures a plugin shows in STATS (a field `name` holding its rows) and in metrics: each counter as
 * `kvstash_<name>_<counter>_total`, each gauge as `kvstash_<name>_<gauge>`, one series per row (label `instance`).
 * Names are fixed when the source is added; `rows()` runs at every STATS and scrape, so it must be cheap.
 */
export interface StatsSource {
  readonly name: string;
  readonly counters: readonly string[];
  readonly gauges: readonly string[];
  rows(): { instance: string; values: Record<string, number | string> }[];
}

/**
 * Blocks an engine reports it has just stored (its own KV events): the engine (publisher endpoint), the medium
 * ("GPU", "CPU", …) and 64-bit block keys — vLLM's int block hash, or the last 8 bytes of a digest read big-endian
 * (protocol/vllm-events.ts hashKey). A block an engine stores is in use: plugins that manage engine-owned storage
 * (the folder janitor) take it as an access.
 */
export interface EngineBlocks { engine: string; medium: string; keys: readonly bigint[] }

export interface PluginHost {
  readonly config: Config;
  readonly limits: Limits;
  /** Registered namespaces by id. */
  readonly namespaces: ReadonlyMap<string, NamespaceDescriptor>;
  /** Bound data-socket endpoints (after start). */
  readonly endpoints: string[];
  /** Request counters of the data socket (read them; the sidecar writes them). */
  readonly counters: { readonly requests: number; readonly errors: number; readonly byOp: Readonly<Record<string, number>>; readonly byCode: Readonly<Record<string, number>> };
  readonly tiers: TiersView;
  readonly tierWrites: TierWrites;
  readonly tierControl: TierControl;
  /** The sidecar's STATS reply (server, uptime, blocks, namespaces, requests, errors, tiers). */
  stats(): Record<string, unknown>;
  addGuard(guard: RequestGuard): void;
  addObserver(observer: RequestObserver): void;
  /**
   * Engine block reports: plugins that learn them (the vLLM KV-events index) publish, others listen. Listeners run
   * synchronously in publish order; they must be cheap, and their errors are logged and dropped.
   */
  publishEngineBlocks(blocks: EngineBlocks): void;
  onEngineBlocks(listener: (blocks: EngineBlocks) => void): void;
  /** Socket options before bind (CURVE). */
  addSocketSetup(setup: (router: Router) => void): void;
  setPrincipalResolver(resolve: PrincipalResolver): void;
  /**
   * `operator: true` marks an op that changes what the sidecar holds for everyone (restores files into an engine's
   * folder, …): with data-socket auth on, only a principal of every tenant ("*") may call it (KVS_PERMISSION_DENIED).
   */
  registerOp(name: string, handler: OpHandler, opts?: { operator?: boolean }): void;
  /** Was `op` registered with `operator: true`? (the auth guard asks) */
  isOperatorOp(op: string): boolean;
  /** Add a StatsSource (name lowercase, unique, not a core STATS field; else KVS_CONFIG). */
  addStatsSource(source: StatsSource): void;
  readonly statsSources: readonly StatsSource[];
  /**
   * Register (or find) a namespace; returns its id. Refuses past the namespace caps (KVS_RESOURCE_EXHAUSTED).
   * `keep`: never expire it when empty (the lm:// server's own namespaces).
   */
  registerNamespace(descriptor: NamespaceDescriptor, keep?: boolean): string;
  /** The namespace registry (quotas, expiry, drops: connector/server/namespace-registry.ts), for the control plane. */
  readonly nsRegistry: NamespaceRegistry;
  /** Of these namespace ids, those that still hold blocks in some tier. */
  namespacesWithBlocks(ids: Set<string>): Set<string>;
}

export interface SidecarPlugin {
  readonly name: string;
  /** Called by `Sidecar.use()`, before the data socket exists: add hooks, register ops. */
  attach?(host: PluginHost): void;
  start(host: PluginHost): Promise<void>;
  stop(): Promise<void>;
}
